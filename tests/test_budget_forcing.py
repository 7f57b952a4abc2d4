"""Budget forcing (s1): the exact sequence of continuations on the scripted backend, composition with other
strategies, the ledger's thinking/answer split, and on the embedded model that the cap and the Waits
really happen with ledger counts that match the texts."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import run
from tts.backends.scripted import ScriptedBackend, tokenize
from tts.budget import Budget, Ledger
from tts.runtime import Generator, run_async
from tts.strategies import Majority, Single
from tts.strategies.forcing import (
    BudgetForced, BudgetForcing, after_thinking, detect_delimiters, with_forcing,
)
from tts.types import Message, Problem, SamplingParams

PROBLEM = Problem("p1", prompt="What is 3 + 4?", answer="7")
GREEDY = SamplingParams(temperature=0, max_tokens=50)
THINK = "User: What is 3 + 4?\nAssistant: <think>"  # how the scripted backend renders the forced opening


def after(prompt: str) -> str:
    """The assistant's part of a scripted prompt (what the forcing wrote and the model continued)."""
    return prompt.split("Assistant: ", 1)[-1]


def script_by_tail(thinking: list[str], answer: str = " 7"):
    """A script that plays ``thinking[k]`` for the k-th thinking request and ``answer`` after the end of
    thinking, whatever the prefix is: the test then reads the prefixes the forcing built."""
    counter = {"thinking": 0}

    def reply(prompt: str, index: int) -> str:
        tail = after(prompt)
        if "</think>" in tail:
            return answer
        k = counter["thinking"]
        counter["thinking"] += 1
        return thinking[min(k, len(thinking) - 1)]

    return reply


def solve(policy: BudgetForcing, backend: ScriptedBackend, params=GREEDY, n=None, budget=None):
    ledger = Ledger(budget=budget or Budget())
    gen = Generator(backend, ledger, seed=1)
    forced = policy.wrap(gen)
    completions = run(forced.sample(PROBLEM, params, n=n))
    return completions, forced, ledger


def steps(backend: ScriptedBackend) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(r.prefix, r.params.max_tokens, r.params.stop) for r in backend.requests]


def test_thinking_capped_at_the_maximum_then_only_the_answer():
    backend = ScriptedBackend(script_by_tail([" one two three four five six seven eight"], answer=" 7"))
    policy = BudgetForcing(max_thinking_tokens=5, answer_max_tokens=10)
    [c], forced, ledger = solve(policy, backend)
    assert steps(backend) == [
        ("<think>", 5, ("</think>",)),
        ("<think> one two three four five\n</think>\n\nFinal Answer:", 10, ()),
    ]
    assert c.text == "<think> one two three four five\n</think>\n\nFinal Answer: 7"
    assert c.num_tokens == 6 and c.finish_reason == "stop"
    assert ledger.generated_tokens == 6
    assert (ledger.thinking_tokens, ledger.answer_tokens) == (5, 1)
    assert forced.samples[0].capped and forced.samples[0].waits == 0


def test_waits_appended_exactly_k_times_when_the_model_stops_early():
    backend = ScriptedBackend(script_by_tail([" short.</think> ignored", " more.</think>", " done.</think>"],
                                             answer=" The answer is 7."))
    policy = BudgetForcing(min_thinking_tokens=100, max_waits=2, max_thinking_tokens=200, answer_max_tokens=20)
    [c], forced, ledger = solve(policy, backend)
    per_stop = len(tokenize(" short.</think>"))  # tokens up to the one completing the stop: all charged
    assert per_stop == 6
    assert steps(backend) == [
        ("<think>", 200, ("</think>",)),
        ("<think> short.\nWait", 200 - 6, ("</think>",)),
        ("<think> short.\nWait more.\nWait", 200 - 12, ("</think>",)),
        # The third end of thinking is let through (K=2 Waits used): the delimiter is written back.
        ("<think> short.\nWait more.\nWait done.</think>", 20, ()),
    ]
    assert c.text == "<think> short.\nWait more.\nWait done.</think> The answer is 7."
    assert forced.samples[0].waits == 2 and not forced.samples[0].capped
    thinking = 3 * 6
    answer = len(tokenize(" The answer is 7."))
    assert c.num_tokens == thinking + answer == ledger.generated_tokens
    assert (ledger.thinking_tokens, ledger.answer_tokens) == (thinking, answer)


def test_no_wait_once_the_minimum_is_reached():
    backend = ScriptedBackend(script_by_tail([" a b c d e f g h.</think>"]))
    policy = BudgetForcing(min_thinking_tokens=5, max_waits=3, max_thinking_tokens=40)
    [c], forced, _ = solve(policy, backend)
    assert [after(s[0]) if "Assistant" in s[0] else s[0] for s in steps(backend)] == [
        "<think>", "<think> a b c d e f g h.</think>"]
    assert forced.samples[0].waits == 0


def test_budget_in_waits_forces_exactly_k_without_a_token_minimum():
    backend = ScriptedBackend(script_by_tail([" long enough thinking here.</think>"]))
    policy = BudgetForcing(max_waits=1, max_thinking_tokens=100, wait_text="Hmm, wait")
    [c], forced, _ = solve(policy, backend)
    assert [s[0] for s in steps(backend)] == [
        "<think>",
        "<think> long enough thinking here.\nHmm, wait",
        "<think> long enough thinking here.\nHmm, wait long enough thinking here.</think>",
    ]
    assert forced.samples[0].waits == 1


def test_wait_that_runs_into_the_cap_ends_thinking_with_the_cue():
    backend = ScriptedBackend(script_by_tail([" a b.</think>", " c d e f g h i j k"]))
    policy = BudgetForcing(min_thinking_tokens=8, max_waits=5, max_thinking_tokens=10)
    [c], forced, ledger = solve(policy, backend)
    # " a b.</think>" costs 7 tokens, so the Wait continuation may generate only 3 before the cap.
    assert steps(backend)[1] == ("<think> a b.\nWait", 3, ("</think>",))
    assert steps(backend)[2][0] == "<think> a b.\nWait c d e\n</think>\n\nFinal Answer:"
    assert forced.samples[0].capped and forced.samples[0].waits == 1
    assert ledger.thinking_tokens == 10


def test_thinking_opener_follows_the_opening_and_is_prompt_not_thinking():
    backend = ScriptedBackend(script_by_tail([" 3 and 4 makes 7.</think>", " so 7.</think>"]))
    policy = BudgetForcing(max_thinking_tokens=30, max_waits=1, thinking_opener="\nI need to add")
    [c], forced, ledger = solve(policy, backend)
    assert [s[0] for s in steps(backend)] == [
        "<think>\nI need to add",
        "<think>\nI need to add 3 and 4 makes 7.\nWait",
        "<think>\nI need to add 3 and 4 makes 7.\nWait so 7.</think>",
    ]
    assert c.text == "<think>\nI need to add 3 and 4 makes 7.\nWait so 7.</think> 7"
    thinking = len(tokenize(" 3 and 4 makes 7.</think>")) + len(tokenize(" so 7.</think>"))
    assert (ledger.thinking_tokens, ledger.answer_tokens) == (thinking, 1)
    assert forced.samples[0].waits == 1 and not forced.samples[0].capped


def test_budget_of_zero_answers_at_once():
    backend = ScriptedBackend(script_by_tail(["never asked"], answer=" 7"))
    policy = BudgetForcing(max_thinking_tokens=0, max_waits=2, thinking_opener="\nI need to add")
    [c, _], forced, ledger = solve(policy, backend, n=2)
    # No thinking request at all; the opener is left out since no thinking follows it.
    assert steps(backend) == [("<think>\n</think>\n\nFinal Answer:", 50, ())] * 2
    assert c.text == "<think>\n</think>\n\nFinal Answer: 7"
    assert (ledger.thinking_tokens, ledger.answer_tokens) == (0, 2)
    assert [(s.waits, s.capped) for s in forced.samples] == [(0, True), (0, True)]


def test_cap_inside_a_multi_token_delimiter_completes_it():
    # The scripted tokenizer splits "</" from "think>": the cap falls after "</", which is completed
    # instead of being left before a second delimiter.
    backend = ScriptedBackend(script_by_tail([" so 7.</think>"]))
    cut = len(tokenize(" so 7.</"))
    assert cut < len(tokenize(" so 7.</think>"))
    [c], forced, _ = solve(BudgetForcing(max_thinking_tokens=cut), backend)
    assert c.text.startswith("<think> so 7.</think>\n\nFinal Answer:")
    assert forced.samples[0].capped and forced.samples[0].thinking_tokens == cut


def test_answer_is_read_after_the_thinking():
    # The thinking states a wrong number (boxed, which the number extractor prefers); the answer is 7.
    backend = ScriptedBackend(script_by_tail([" maybe \\boxed{3} no more"], answer=" 7"))
    policy = BudgetForcing(max_thinking_tokens=7)
    trace = run(BudgetForced(inner=Single(params=GREEDY), policy=policy).solve(PROBLEM, Generator(backend, Ledger(), 1)))
    assert trace.candidates[0].text.startswith("<think> maybe \\boxed{3}")
    assert trace.answer == "7"
    assert trace.strategy == "budget_forcing"
    assert trace.info["thinking_tokens"] == 7 and trace.info["answer_tokens"] == 1
    assert trace.info["budget_forcing"]["capped"] == 1
    assert after_thinking(lambda t: t.strip() or None, "</think>")("<think>3</think> 7") == "7"


def test_answer_read_after_the_first_end_of_thinking():
    # The answer repeats the delimiter after the number (seen on SmolLM2 at a cap of 16 tokens).
    backend = ScriptedBackend(script_by_tail([" a b c d e f g"], answer=" 7.\n</think>"))
    trace = run(BudgetForced(inner=Single(params=GREEDY), policy=BudgetForcing(max_thinking_tokens=3))
                .solve(PROBLEM, Generator(backend, Ledger(), 1)))
    assert trace.candidates[0].text.endswith("Final Answer: 7.\n</think>")
    assert trace.answer == "7"


def test_composes_with_majority_over_four_forced_traces():
    # Sample k of the first request is thinking[k]: two stop early (one Wait each), two run to the cap.
    lower, upper = "abcdefghijklmnopqrstuvw", "ABCDEFGHIJKLMNOPQRSTUVW"
    first = [" x.</think>", " " + " ".join(lower), " y.</think>", " " + " ".join(upper)]

    def reply(prompt: str, index: int) -> str:
        tail = after(prompt)
        if tail == "<think>":
            return first[index]
        if tail.endswith("Wait"):
            return " so it is 7.</think>" if "x." in tail else " so it is 5.</think>"
        return " 7" if ("7" in tail or "a b" in tail) else " 5"

    backend = ScriptedBackend(reply)
    # " x.</think>" is 6 tokens, under the minimum of 7: one Wait each; the letters run into the cap of 20.
    policy = BudgetForcing(min_thinking_tokens=7, max_waits=1, max_thinking_tokens=20, answer_max_tokens=5)
    strategy = with_forcing(Majority(n=4, params=GREEDY), policy)
    assert isinstance(strategy, BudgetForced) and strategy.name == "majority+budget_forcing"
    [result] = run(run_async([PROBLEM], strategy, backend, grade=lambda a, r: a == r))
    trace = result.trace
    # One request for the four first segments; then the continuations of all four arrive together.
    assert backend.batches[:2] == [1, 4]
    assert after(backend.requests[0].prefix) == "<think>" and backend.requests[0].params.n == 4
    cue = "\n</think>\n\nFinal Answer:"
    assert sorted(r.prefix for r in backend.requests[1:5]) == sorted([
        "<think> x.\nWait", "<think> y.\nWait",
        "<think> " + " ".join(lower[:20]) + cue, "<think> " + " ".join(upper[:20]) + cue,
    ])
    # The Wait continuations end thinking themselves (15 tokens >= 7) and go on to their answers.
    assert sorted(r.prefix for r in backend.requests[5:]) == [
        "<think> x.\nWait so it is 7.</think>", "<think> y.\nWait so it is 5.</think>"]
    assert [c.answer for c in trace.candidates] == ["7", "7", "5", "5"]
    assert trace.info["budget_forcing"]["waits"].count(1) == 2 and trace.info["budget_forcing"]["capped"] == 2
    assert trace.info["votes"] in ({"7": 2.0, "5": 2.0},)
    # Every generated token is either thinking or answer, and the ledger charged exactly the texts' tokens.
    assert trace.info["thinking_tokens"] + trace.info["answer_tokens"] == trace.ledger["generated_tokens"]
    assert sum(c.num_tokens for c in trace.candidates) == trace.ledger["generated_tokens"]
    assert trace.ledger["engine_calls"] == len(backend.requests) == 1 + 4 + 2


def test_majority_answer_wins_by_forced_traces():
    def reply(prompt: str, index: int) -> str:
        tail = after(prompt)
        if tail == "<think>":
            return [" hmm 9.</think>", " 9 or", " 8.</think>", " ok.</think>"][index]
        return " 7" if index % 4 != 3 else " 9"

    backend = ScriptedBackend(reply)
    strategy = BudgetForced(inner=Majority(n=4, params=GREEDY), policy=BudgetForcing(max_thinking_tokens=2))
    [result] = run(run_async([PROBLEM], strategy, backend, grade=lambda a, r: a == r))
    # Numbers written while thinking (9, 8) do not vote; the answers after </think> do.
    assert result.trace.answer == "7" and result.correct


def test_stop_token_id_used_when_the_delimiter_is_one_token():
    class Tok:
        chat_template = "{% if thinking %}<think>{% endif %}</think>"

        def encode(self, text, add_special_tokens=False):
            return [151668] if text == "</think>" else [1, 2, 3]

    backend = ScriptedBackend(script_by_tail([" a b</think>"]))
    backend.tokenizer = Tok()
    policy = BudgetForcing.for_backend(backend, max_thinking_tokens=10)
    assert (policy.think_start, policy.think_end) == ("<think>", "</think>")
    solve(policy, backend)
    thinking, answer = backend.requests
    assert thinking.params.stop_token_ids == (151668,) and thinking.params.stop == ("</think>",)
    assert answer.params.stop_token_ids == () and answer.params.stop == ()


def test_delimiters_from_a_tokenizer_else_configured():
    class Vocab:
        chat_template = None

        def get_vocab(self):
            return {"<|begin_of_thought|>": 5, "<|end_of_thought|>": 6, "a": 1}

    assert detect_delimiters(Vocab()) == ("<|begin_of_thought|>", "<|end_of_thought|>")
    assert BudgetForcing.from_tokenizer(Vocab()).think_end == "<|end_of_thought|>"

    class Plain:
        chat_template = "{{ messages }}"

        def get_vocab(self):
            return {"a": 1}

    assert detect_delimiters(Plain()) is None
    assert BudgetForcing.from_tokenizer(Plain(), think_start="[T]", think_end="[/T]").think_end == "[/T]"
    assert BudgetForcing.from_tokenizer(Vocab(), think_start="[T]", think_end="[/T]").think_start == "[T]"


def test_thinking_already_open_or_closed_in_the_prompt():
    # A raw prompt that opens thinking itself: nothing is written for the model.
    backend = ScriptedBackend(script_by_tail([" a b c d e f"]))
    gen = Generator(backend, Ledger(), 1)
    run(BudgetForcing(max_thinking_tokens=3).wrap(gen).sample("Q: 1+1?\n<think>", GREEDY))
    assert [r.prefix for r in backend.requests] == ["", " a b c\n</think>\n\nFinal Answer:"]
    # Thinking closed by the prefix (a search continuing the answer): passed through as is.
    backend = ScriptedBackend(["the rest"])
    forced = BudgetForcing(max_thinking_tokens=3).wrap(Generator(backend, Ledger(), 1))
    [c] = run(forced.sample(PROBLEM, GREEDY, prefix="<think> x</think> "))
    assert c.text == "the rest" and [r.prefix for r in backend.requests] == ["<think> x</think> "]
    # A system message that describes the delimiters does not count as opened or closed thinking.
    backend = ScriptedBackend(script_by_tail([" a b c d e f"]))
    chat = (Message("system", "Think inside <think></think>, then answer."), Message("user", "What is 3 + 4?"))
    run(BudgetForcing(max_thinking_tokens=3).wrap(Generator(backend, Ledger(), 1)).sample(chat, GREEDY))
    assert backend.requests[0].prefix == "<think>"


def test_prefix_thinking_counts_against_the_budget():
    backend = ScriptedBackend(script_by_tail([" five six seven eight"]))
    forced = BudgetForcing(max_thinking_tokens=6).wrap(Generator(backend, Ledger(), 1))
    [c] = run(forced.sample(PROBLEM, GREEDY, prefix="<think> one two three four"))
    # Four thinking tokens already in the prefix leave two.
    assert backend.requests[0].params.max_tokens == 2
    assert c.text.startswith(" five six\n</think>")
    assert forced.samples[0].thinking_tokens == 2 and forced.samples[0].capped


def test_budget_refusing_a_later_step_ends_the_sample_where_it_was():
    backend = ScriptedBackend(script_by_tail([" one two three four five six"]))
    policy = BudgetForcing(max_thinking_tokens=5)
    [c], forced, ledger = solve(policy, backend, budget=Budget(generated_tokens=5))
    assert len(backend.requests) == 1
    assert c.finish_reason == "length" and c.num_tokens == 5 and c.text == "<think> one two three four five"
    assert forced.samples[0].budget_stop is not None
    assert ledger.generated_tokens == 5


def test_logprobs_concatenated_over_segments():
    backend = ScriptedBackend(script_by_tail([" a.</think>", " b c d e f g"], answer=" 7"))
    policy = BudgetForcing(min_thinking_tokens=5, max_waits=1, max_thinking_tokens=8)
    [c], _, ledger = solve(policy, backend, params=dataclasses.replace(GREEDY, logprobs=True))
    assert c.logprobs is not None and len(c.logprobs) == c.num_tokens == ledger.generated_tokens


def test_seeds_reproducible_and_distinct_per_step():
    def seeds():
        backend = ScriptedBackend(script_by_tail([" a.</think>", " b.</think>"]))
        solve(BudgetForcing(min_thinking_tokens=50, max_waits=1, max_thinking_tokens=80), backend)
        return [r.params.seed for r in backend.requests]

    first = seeds()
    assert first == seeds() and len(set(first)) == len(first) == 3


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="min_thinking_tokens"):
        BudgetForcing(min_thinking_tokens=10, max_thinking_tokens=5)
    with pytest.raises(ValueError, match="max_waits"):
        BudgetForcing(max_waits=-1)
    with pytest.raises(ValueError, match="think_end"):
        BudgetForcing(think_end="")
    with pytest.raises(ValueError, match="inner"):
        BudgetForced(inner="majority")  # type: ignore[arg-type]


def test_policy_from_command_line_options():
    from tts.options import build

    assert not build(BudgetForcing, {"max_thinking_tokens": None}).given
    assert with_forcing(Single(), build(BudgetForcing, {})) == Single()  # nothing set: nothing wrapped
    policy = build(BudgetForcing, {"max_thinking_tokens": 64, "max_waits": 2, "wait_text": "Hmm"})
    assert (policy.max_thinking_tokens, policy.max_waits, policy.wait_text) == (64, 2, "Hmm")
    assert with_forcing(Single(), None) == Single()


# --- the embedded model ----------------------------------------------------------------------------
class RecordingGenerator(Generator):
    """A generator that keeps every request it sends and what came back (the engine's segments)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log: list[tuple[str, SamplingParams, list]] = []

    async def sample(self, prompt, params, *, n=None, prefix=""):
        completions = await super().sample(prompt, params, n=n, prefix=prefix)
        self.log.append((prefix, params, completions))
        return completions


@pytest.mark.slow
def test_cap_and_waits_really_happen_on_the_embedded_model(hf_backend):
    import asyncio

    tok = hf_backend.tokenizer
    system = Message("system", "Think step by step inside <think> </think> tags, then give the final answer.")
    capped_q = (system, Message("user", "What is 23 + 48?"))
    early_q = (system, Message("user", "What is 2 + 2?"))  # greedy, it ends thinking after 9 tokens
    greedy = SamplingParams(temperature=0, max_tokens=32)
    # Small budgets keep this to a few dozen decode steps on a shared CPU.
    cap = BudgetForcing(max_thinking_tokens=6, answer_max_tokens=4)
    wait = BudgetForcing(min_thinking_tokens=12, max_waits=1, max_thinking_tokens=14, answer_max_tokens=4)
    ledger_cap, ledger_wait = Ledger(), Ledger()
    gen_cap, gen_wait = RecordingGenerator(hf_backend, ledger_cap, 1), RecordingGenerator(hf_backend, ledger_wait, 2)
    f_cap, f_wait = cap.wrap(gen_cap), wait.wrap(gen_wait)

    async def both():
        return await asyncio.gather(f_cap.sample(capped_q, greedy), f_wait.sample(early_q, greedy))

    [c_cap], [c_wait] = run(both())
    # SmolLM2 spells "</think>" in several tokens, so thinking stops on the string, not a token id.
    assert f_cap.stop_token_id is None

    # The cap: thinking generated exactly 6 tokens, then the end of thinking and the cue were written.
    (p1, s1, [think]), (p2, s2, [answer]) = gen_cap.log
    assert p1 == "<think>" and s1.stop == ("</think>",) and s1.max_tokens == 6
    assert think.finish_reason == "length" and think.num_tokens == 6
    assert p2 == "<think>" + think.text + ("" if think.text[-1:].isspace() else "\n") + "</think>\n\nFinal Answer:"
    assert s2.max_tokens == 4 and answer.num_tokens <= 4
    assert c_cap.text == p2 + answer.text
    assert f_cap.samples[0].capped

    # The minimum: the model ended thinking early, so exactly one Wait was appended and thinking went on.
    prefixes = [p for p, _, _ in gen_wait.log]
    assert prefixes[0] == "<think>"
    early = gen_wait.log[0][2][0]
    assert early.finish_reason == "stop" and early.num_tokens < 12
    assert prefixes[1] == "<think>" + early.text + ("" if early.text[-1:].isspace() else "\n") + "Wait"
    assert gen_wait.log[1][1].max_tokens == 14 - early.num_tokens
    assert f_wait.samples[0].waits == 1 and sum(p.endswith("Wait") for p in prefixes) == 1
    assert c_wait.text.startswith(prefixes[1])

    # Ledger counts match the texts: every segment's tokens re-tokenize to what the engine reported
    # (a segment that stopped also generated the stop: the end-of-sequence token or the delimiter).
    for gen, ledger, forced, [c] in ((gen_cap, ledger_cap, f_cap, [c_cap]), (gen_wait, ledger_wait, f_wait, [c_wait])):
        segments = [seg for _, _, comps in gen.log for seg in comps]
        assert ledger.generated_tokens == sum(s.num_tokens for s in segments) == c.num_tokens
        assert ledger.thinking_tokens + ledger.answer_tokens == ledger.generated_tokens
        assert (ledger.thinking_tokens, ledger.answer_tokens) == (forced.samples[0].thinking_tokens,
                                                                  forced.samples[0].answer_tokens)
        for s in segments:
            assert len(s.token_ids) == s.num_tokens
            assert tok.decode(s.token_ids, skip_special_tokens=True).startswith(s.text)
            if s.finish_reason == "length":
                assert len(tok.encode(s.text, add_special_tokens=False)) == s.num_tokens
    assert ledger_cap.thinking_tokens == 6


def test_registered_as_budget_forcing():
    from tts.strategies import create

    strategy = create("budget_forcing", 4, GREEDY, {"min_thinking_tokens": 10, "max_thinking_tokens": 50,
                                                    "max_waits": 2, "wait_text": "Hmm", "deepconf_mode": "x"})
    assert isinstance(strategy, BudgetForced) and isinstance(strategy.inner, Single)
    assert strategy.name == "budget_forcing" and strategy.inner.params == GREEDY
    p = strategy.policy
    assert (p.min_thinking_tokens, p.max_thinking_tokens, p.max_waits, p.wait_text) == (10, 50, 2, "Hmm")
    assert create("budget_forcing", 1, GREEDY).policy == BudgetForcing()
