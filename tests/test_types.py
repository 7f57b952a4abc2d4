import dataclasses

import pytest

from tts.types import Completion, Message, Problem, SamplingParams, Trace


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n": 0}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("",)}, "stop"),
    ],
)
def test_sampling_params_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field} must be"):
        SamplingParams(**kwargs)


def test_sampling_params_are_frozen_and_replaced():
    p = SamplingParams(stop=["\n"])
    assert p.stop == ("\n",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.n = 3
    q = dataclasses.replace(p, n=4)
    assert (p.n, q.n) == (1, 4)


def test_problem_needs_exactly_one_prompt_form():
    with pytest.raises(ValueError, match="exactly one of prompt or messages"):
        Problem(id="a")
    with pytest.raises(ValueError, match="exactly one of prompt or messages"):
        Problem(id="a", prompt="x", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="Problem.id"):
        Problem(id="", prompt="x")
    with pytest.raises(ValueError, match="Message.role"):
        Problem(id="a", messages=[{"role": "robot", "content": "x"}])


def test_problem_chat_and_answer_coercion():
    p = Problem(id="a", prompt="hi", answer=4)
    assert p.answer == "4"
    assert p.chat() == (Message("user", "hi"),)
    q = Problem(id="b", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    assert q.chat()[1] == Message("user", "u")


def test_completion_checks_logprob_count_and_finish_reason():
    with pytest.raises(ValueError, match="2 entries for 3 tokens"):
        Completion("a b c", 3, "stop", logprobs=(-1.0, -1.0))
    with pytest.raises(ValueError, match="finish_reason"):
        Completion("a", 1, "eos")


def test_completion_stop_reason_defaults_to_none_and_is_checked():
    assert Completion("a", 1, "stop").stop_reason is None  # older positional constructors still work
    assert Completion("a", 1, "stop", (5,), None, 3, 0, "\n\n").stop_reason == "\n\n"
    assert Completion("a", 1, "stop", stop_reason=7).stop_reason == 7
    for bad in (True, 1.5, ("x",)):
        with pytest.raises(ValueError, match="stop_reason"):
            Completion("a", 1, "stop", stop_reason=bad)


def test_trace_chosen_must_index_a_candidate():
    with pytest.raises(ValueError, match="Trace.chosen"):
        Trace("p", "single", (), None, 0, {})
