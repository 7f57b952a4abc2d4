"""Budgets are hard and get spent (issue 19, item 1): under every budget unit, no registered strategy's
ledger ever exceeds its budget, and samples draw from one pool, so a budget that the samples' real
lengths can pay for gets all of them, whole."""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tts.backends.scripted import ScriptedBackend, tokenize
from tts.budget import UNITS, Budget
from tts.runtime import run_async
from tts.strategies import STRATEGIES, create
from tts.types import Problem, SamplingParams
from tts.verifiers.answers import same_answer

PROBLEMS = [Problem(f"q{i}", prompt=f"What is {i} + 2?", answer=str(i + 2)) for i in range(2)]

words = st.sampled_from(["so", "we", "add", "2", "3", "then", "it", "is", ",", "."])
step = st.lists(words, min_size=1, max_size=12).map(" ".join)
reply = st.tuples(st.lists(step, min_size=1, max_size=4), st.integers(0, 9)).map(
    lambda t: "\n\n".join(t[0]) + f"\n\nThe answer is {t[1]}.")


def continuing(replies):
    """A scripted model: its k-th sample is replies[k]; given part of a reply as the assistant's text
    so far (a refill, or a tree node's prefix), it continues that reply (else starts the next one)."""
    def answer(prompt, index):
        written = prompt.split("Assistant: ", 1)[1] if "Assistant: " in prompt else ""
        for r in replies:
            if written and r.startswith(written) and len(r) > len(written):
                return r[len(written):]
        return replies[index % len(replies)]
    return answer


def solve_all(strategy, backend, budget):
    return asyncio.run(run_async(PROBLEMS, strategy, backend, grade=same_answer, budget=budget, seed=3))


# A limit in each unit small enough to bind on these replies (a prompt is about 15 scripted tokens; the
# scripted model's FLOPs are about 2e6 per token; calls are engine requests plus verifier calls).
LIMITS = {
    "generated_tokens": st.integers(1, 300),
    "total_tokens": st.integers(1, 600),
    "flops": st.floats(1e5, 2e9),
    "engine_calls": st.integers(1, 12),
    "seconds": st.floats(0.005, 0.05),
}
assert set(LIMITS) == set(UNITS)

# Wall time is measured, not reserved: a request in flight when the time runs out is cancelled, which
# the event loop does within a scheduling delay, and the strategy then still selects its answer (and
# may score what it has). On a loaded 2-core machine that is tens of milliseconds, but a stall of the
# whole process happens too: CI once measured 0.59 s against a 0.04 s limit right after the vLLM engine
# tests (an engine shutting down on the same two cores), and the same example passed when rerun. The
# slack is wide so the test checks the mechanism (a strategy that kept searching past the limit, one
# scripted batch after another, would overrun it), not the machine's scheduler.
SECONDS_SLACK = 2.0


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("name", list(STRATEGIES))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies=st.lists(reply, min_size=1, max_size=6), limit=st.data(), n=st.integers(4, 8),  # deepconf warms up on 4
       max_tokens=st.integers(1, 80))
def test_no_strategy_ever_exceeds_any_budget_unit(name, unit, replies, limit, n, max_tokens):
    value = limit.draw(LIMITS[unit], label=unit)
    strategy = create(name, n, SamplingParams(max_tokens=max_tokens, logprobs=True), {})
    latency = 0.002 if unit == "seconds" else 0.0
    backend = ScriptedBackend(continuing(replies), latency=latency)
    for result in solve_all(strategy, backend, Budget(**{unit: value})):
        spent = result.trace.ledger
        if unit == "seconds":
            assert spent["wall_seconds"] <= value + SECONDS_SLACK
        elif unit == "total_tokens":
            total = (spent["prompt_tokens"] - spent["cached_prompt_tokens"] + spent["generated_tokens"]
                     + spent["verifier_tokens"])
            assert total <= value
        else:
            assert spent[unit] <= value, (name, unit, spent)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=8), slack=st.integers(0, 50),
       name=st.sampled_from(["majority", "best_of_n", "weighted_majority"]))
def test_a_budget_the_real_lengths_can_pay_draws_every_sample_whole(lengths, slack, name):
    """Whatever max_tokens reserves at worst, n samples whose real lengths sum to at most B all finish
    under a budget of B generated tokens (before the pool, majority@8 under 400 tokens drew one)."""
    # distinct words per reply, so a continuation is unambiguous
    replies = [" ".join([f"r{i}t{k}" for k in range(length - 1)] + ["7"]) for i, length in enumerate(lengths)]
    assert [len(tokenize(r)) for r in replies] == lengths
    budget = sum(lengths) + slack
    n = len(lengths)
    strategy = create(name, n, SamplingParams(max_tokens=256, logprobs=True), {})
    backend = ScriptedBackend(continuing(replies))
    [result] = asyncio.run(run_async(PROBLEMS[:1], strategy, backend, budget=Budget(generated_tokens=budget)))
    candidates = result.trace.candidates
    assert sorted(c.text for c in candidates) == sorted(replies)
    assert all(c.finish_reason == "stop" for c in candidates)
    assert result.trace.ledger["generated_tokens"] == sum(lengths) <= budget


def test_the_readme_example_draws_eight_samples():
    # README: tts.run(problems, tts.Majority(n=8), backend, budget=tts.Budget(generated_tokens=400)) with
    # samples of about ten tokens and the default max_tokens of 256
    replies = [f"We add them , so it is {k} ." for k in range(8)]
    strategy = create("majority", 8, SamplingParams(), {})
    [result] = asyncio.run(run_async(PROBLEMS[:1], strategy, ScriptedBackend(continuing(replies)),
                                     budget=Budget(generated_tokens=400)))
    assert len(result.trace.candidates) == 8
    assert all(c.finish_reason == "stop" for c in result.trace.candidates)
