"""Certainty probes (Dynasor-CoT) in budget forcing: every probe_every thinking tokens the answer is
asked for, thinking stops at the first point where the last probe_window probe answers agree, and the
probes' tokens are charged to the ledger. On the scripted backend with known probe answers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run
from tts.backends.scripted import ScriptedBackend
from tts.budget import Budget, Ledger
from tts.runtime import Generator, run_async
from tts.strategies import create
from tts.strategies.forcing import PROBE_TEXT, BudgetForcing
from tts.types import Problem, SamplingParams

PROBLEM = Problem("p1", prompt="What is 3 + 4?", answer="7")
PARAMS = SamplingParams(temperature=0.7, max_tokens=60)


def after(prompt: str) -> str:
    return prompt.split("Assistant: ", 1)[-1]


def script(probe_answers: list[str], answer: str = " 7", thinking: str = " a b c d e f g h"):
    """Thinking requests get ``thinking``; the k-th probe gets ``probe_answers[k]`` (the last one
    repeated); after the end of thinking, ``answer``."""
    probes = {"count": 0}

    def reply(prompt: str, index: int) -> str:
        tail = after(prompt)
        if tail.endswith(PROBE_TEXT):
            k = probes["count"]
            probes["count"] += 1
            return probe_answers[min(k, len(probe_answers) - 1)]
        if "</think>" in tail:
            return answer
        return thinking

    return reply


def kinds(backend: ScriptedBackend) -> list[str]:
    out = []
    for r in backend.requests:
        tail = after(r.prefix) if "Assistant: " in r.prefix else r.prefix
        out.append("probe" if tail.endswith(PROBE_TEXT) else "answer" if "</think>" in tail else "think")
    return out


def forced(policy: BudgetForcing, backend, budget=None, params=PARAMS, n=None):
    ledger = Ledger(budget=budget or Budget())
    gen = policy.wrap(Generator(backend, ledger, seed=1))
    completions = run(gen.sample(PROBLEM, params, n=n))
    return completions, gen, ledger


def test_thinking_stops_at_the_first_agreement_and_probe_tokens_are_charged():
    backend = ScriptedBackend(script(["5}", "7}", "7}", "9}"]))
    policy = BudgetForcing(probe_every=4, probe_window=2, max_thinking_tokens=40)
    [c], gen, ledger = forced(policy, backend)
    # think 4, probe (5), think 4, probe (7), think 4, probe (7): the last two agree, so thinking ends.
    assert kinds(backend) == ["think", "probe", "think", "probe", "think", "probe", "answer"]
    assert [r.params.max_tokens for r in backend.requests[:6:2]] == [4, 4, 4]
    [record] = gen.samples
    assert record.probes == ["5", "7", "7"] and record.probe_stopped and not record.capped
    assert record.thinking_tokens == 12 and record.probe_tokens == 6  # "7" and "}" per probe
    assert c.num_tokens == 12 + 1 and c.text.endswith("</think>\n\nFinal Answer: 7")
    assert "boxed" not in c.text  # probes are asked beside the trace, not written into it
    # Every generated token is charged: thinking, probes and the answer.
    assert ledger.generated_tokens == 12 + 6 + 1
    assert ledger.engine_calls == 7
    summary = gen.summary()
    assert summary["probe_tokens"] == 6 and summary["probes"] == [3] and summary["probe_stopped"] == 1
    # Probes are greedy, short and stop at the closing brace.
    probe = backend.requests[1].params
    assert (probe.temperature, probe.max_tokens, probe.stop) == (0.0, 16, ("}",))


def test_window_hedges_and_unfinished_probes():
    # window 3: 7 7 5 7 7 7 -> stops at the sixth probe; a hedging probe and an unclosed one never count.
    backend = ScriptedBackend(script(["7}", "7}", "5}", "7}", "wait 7}", "7}", "7}", "7}"]))
    [c], gen, _ = forced(BudgetForcing(probe_every=2, probe_window=3, max_thinking_tokens=40), backend)
    assert gen.samples[0].probes == ["7", "7", "5", "7", None, "7", "7", "7"]
    assert gen.samples[0].thinking_tokens == 16
    backend = ScriptedBackend(script(["1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20"]))
    [c], gen, _ = forced(BudgetForcing(probe_every=4, probe_window=1, max_thinking_tokens=12), backend)
    record = gen.samples[0]
    assert record.probes == [None, None] and record.capped and not record.probe_stopped
    assert record.probe_tokens == 2 * 16  # each probe ran to probe_tokens without closing


def test_probes_wait_for_the_minimum_and_never_pass_the_cap():
    backend = ScriptedBackend(script(["7}"]))
    policy = BudgetForcing(probe_every=4, probe_window=2, min_thinking_tokens=10, max_thinking_tokens=40)
    _, gen, _ = forced(policy, backend)
    # no probe before 10 thinking tokens: think 4, think 4, think 4 (12), probe, think 4, probe -> stop
    assert kinds(backend) == ["think", "think", "think", "probe", "think", "probe", "answer"]
    assert gen.samples[0].thinking_tokens == 16
    # Disagreeing probes: thinking runs to the cap (10: pieces of 4, 4, 2) and is ended for the model.
    backend = ScriptedBackend(script(["1}", "2}", "3}", "4}"]))
    _, gen, _ = forced(BudgetForcing(probe_every=4, probe_window=2, max_thinking_tokens=10), backend)
    assert [r.params.max_tokens for r, k in zip(backend.requests, kinds(backend)) if k == "think"] == [4, 4, 2]
    assert gen.samples[0].capped and gen.samples[0].thinking_tokens == 10


def test_a_model_that_ends_thinking_itself_is_not_probed_further():
    backend = ScriptedBackend(script(["7}"], thinking=" a b</think>"))
    _, gen, _ = forced(BudgetForcing(probe_every=8), backend)  # " a b</think>" is 6 scripted tokens
    assert kinds(backend) == ["think", "answer"] and gen.samples[0].probes == []


def test_majority_over_probe_stopped_samples_and_the_registered_strategy():
    backend = ScriptedBackend(script(["7}"]))
    strategy = create("budget_forcing", None, PARAMS, {"probe_every": 4, "probe_window": 2, "max_thinking_tokens": 40})
    [r] = run(run_async([PROBLEM], strategy, backend))
    info = r.trace.info["budget_forcing"]
    assert r.trace.answer == "7" and info["probe_stopped"] == 1 and info["probe_tokens"] == 4
    assert r.trace.ledger["generated_tokens"] == r.trace.info["thinking_tokens"] + r.trace.info["answer_tokens"] + 4
    # Any strategy: majority over three probe-stopped samples; each sample probes on its own.
    from tts.strategies.forcing import with_forcing

    strategy = with_forcing(create("majority", 3, PARAMS, {}), BudgetForcing(probe_every=4, probe_window=2))
    [r] = run(run_async([PROBLEM], strategy, ScriptedBackend(script(["7}"]))))
    assert r.trace.info["budget_forcing"]["probes"] == [2, 2, 2] and r.trace.answer == "7"


def test_probe_settings_are_validated():
    with pytest.raises(ValueError, match="probe_every"):
        BudgetForcing(probe_every=0)
    with pytest.raises(ValueError, match="probe_window"):
        BudgetForcing(probe_window=0)
    with pytest.raises(ValueError, match="probe_text"):
        BudgetForcing(probe_text="  ")
    assert BudgetForcing(probe_every=8).given


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers=st.lists(st.sampled_from(["7}", "5}", "wait}", "1 2 3 4 5"]), min_size=1, max_size=8),
       every=st.integers(1, 6), window=st.integers(1, 4), unit=st.sampled_from(["generated_tokens", "engine_calls", "flops"]),
       limit=st.integers(1, 60), n=st.integers(1, 3))
def test_probe_stop_never_exceeds_a_budget(answers, every, window, unit, limit, n):
    value = limit * 4e6 if unit == "flops" else limit
    strategy = create("budget_forcing", None, PARAMS, {"probe_every": every, "probe_window": window,
                                                       "probe_tokens": 3, "max_thinking_tokens": 30})
    if n > 1:
        from tts.strategies.forcing import with_forcing

        strategy = with_forcing(create("majority", n, PARAMS, {}), strategy.policy)
    [r] = asyncio.run(run_async([PROBLEM], strategy, ScriptedBackend(script(answers)), budget=Budget(**{unit: value})))
    assert r.trace.ledger[unit] <= value


@pytest.mark.slow
def test_probes_really_happen_on_the_embedded_model(hf_backend):
    """SmolLM2-135M, greedy: thinking in pieces of 4 tokens, a probe after each, thinking ended at the
    first point where two probe answers agree (or at the cap), every token in the ledger."""
    from tests.test_budget_forcing import RecordingGenerator
    from tts.types import Message

    system = Message("system", "Think step by step inside <think> </think> tags, then give the final answer.")
    chat = (system, Message("user", "What is 23 + 48?"))
    policy = BudgetForcing(probe_every=4, probe_window=2, probe_tokens=4, max_thinking_tokens=16, answer_max_tokens=4)
    ledger = Ledger()
    gen = RecordingGenerator(hf_backend, ledger, 1)
    forced = policy.wrap(gen)
    [c] = run(forced.sample(chat, SamplingParams(temperature=0, max_tokens=32)))
    record = forced.samples[0]
    probes = [(p, s, comps[0]) for p, s, comps in gen.log if p.endswith(PROBE_TEXT)]
    thinking = [(p, s, comps[0]) for p, s, comps in gen.log if not p.endswith(PROBE_TEXT) and "</think>" not in p]
    assert all(s.max_tokens == 4 for _, s, _ in thinking) and len(probes) == len(record.probes) >= 1
    # each probe reads the thinking so far: its prefix is the previous thinking pieces and the probe text
    text = "<think>"
    for (_, _, piece), (prefix, params, _) in zip(thinking, probes):
        text += piece.text
        assert prefix == text + PROBE_TEXT and params.temperature == 0 and params.stop == ("}",)
    # stopped at the first agreement: no earlier window of two agreed
    agreed = [i for i in range(1, len(record.probes)) if record.probes[i] is not None
              and record.probes[i] == record.probes[i - 1]]
    if record.probe_stopped:
        assert agreed == [len(record.probes) - 1]
    else:
        assert not agreed and (record.capped or record.thinking_tokens < 16)
    assert record.thinking_tokens <= 16
    # the ledger holds every token: thinking, probes and the answer
    assert record.probe_tokens == sum(comp.num_tokens for _, _, comp in probes)
    assert ledger.generated_tokens == record.thinking_tokens + record.answer_tokens + record.probe_tokens
    assert ledger.generated_tokens == sum(comps[0].num_tokens for _, _, comps in gen.log)
    assert c.num_tokens == record.thinking_tokens + record.answer_tokens
