import asyncio
import dataclasses

import pytest

from tts.backends.base import GenerationRequest
from tts.backends.scripted import ScriptedBackend, ScriptedReply, tokenize
from tts.budget import Budget, BudgetExhausted, Ledger
from tts.runtime import Generator, Strategy, derive_seed, run_async
from tts.strategies import Majority
from tts.types import Problem, SamplingParams, Trace
from tts.verifiers.answers import same_answer

from .conftest import run


def problems(k):
    return [Problem(id=f"p{i}", prompt=f"question {i}", answer=str(i)) for i in range(k)]


def test_scripted_backend_counts_truncates_and_stops():
    backend = ScriptedBackend(["one two three four five"])
    req = GenerationRequest("q", SamplingParams(n=2, max_tokens=3, logprobs=True))
    gen = run(backend.generate(req))
    assert [c.text for c in gen.completions] == ["one two three"] * 2
    assert gen.completions[0].finish_reason == "length" and gen.completions[0].num_tokens == 3
    assert gen.prompt_tokens == len(tokenize("q"))
    stop = run(backend.generate(GenerationRequest("q", SamplingParams(stop=("three",)))))
    assert stop.completions[0].text == "one two " and stop.completions[0].num_tokens == 3
    assert stop.completions[0].logprobs is None


def test_concurrent_problems_are_batched_and_limited():
    backend = ScriptedBackend({"question": ["7"]}, latency=0.01)
    in_flight = peak = 0

    class Probe(Strategy):
        name = "probe"

        async def solve(self, problem, gen):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await gen.sample(problem, SamplingParams(n=2))
            in_flight -= 1
            return Trace(problem.id, self.name, (), None, None, {})

    run(run_async(problems(10), Probe(), backend, concurrency=4))
    assert peak == 4
    assert max(backend.batches) == 4  # the 4 problems in flight reached the engine together
    assert sum(backend.batches) == 10


def test_ledgers_match_the_engine_counts():
    backend = ScriptedBackend({"question": ["the answer is 3", "3"]})
    run_ledger = Ledger()
    results = run(run_async(problems(4), Majority(n=4), backend, run_ledger=run_ledger, grade=same_answer))
    for r in results:
        assert r.trace.ledger["generated_tokens"] == sum(c.num_tokens for c in r.trace.candidates)
        assert r.trace.ledger["engine_calls"] == 1
        assert r.trace.ledger["prompt_tokens"] == len(tokenize("User: question 0\nAssistant: "))
    assert run_ledger.generated_tokens == sum(r.trace.ledger["generated_tokens"] for r in results)
    # every problem votes "3"; only p3's reference is 3
    assert [r.correct for r in results] == [False, False, False, True]


def test_seeds_are_reproducible_and_distinct():
    seen = []
    backend = ScriptedBackend(lambda prompt, i: "x")
    original = backend.generate

    async def spy(request, on_cancel=None):
        seen.append(request.params.seed)
        return await original(request, on_cancel)

    backend.generate = spy
    gen = Generator(backend, Ledger(), seed=derive_seed(0, "p"))

    async def two():
        await gen.sample("a", SamplingParams())
        await gen.sample("a", SamplingParams())

    run(two())
    gen2 = Generator(backend, Ledger(), seed=derive_seed(0, "p"))
    run(gen2.sample("a", SamplingParams()))
    assert seen[0] != seen[1] and seen[2] == seen[0]
    assert derive_seed(1, "p") != derive_seed(0, "p")


def test_cancelled_request_is_released_and_not_charged():
    backend = ScriptedBackend(["a b c"], latency=0.05)
    ledger = Ledger(budget=Budget(generated_tokens=100))

    async def main():
        gen = Generator(backend, ledger, seed=1)
        slow = asyncio.create_task(gen.sample("q", SamplingParams(max_tokens=60)))
        fast = asyncio.create_task(gen.sample("q", SamplingParams(max_tokens=10)))
        await asyncio.sleep(0)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        done = await fast
        return done

    done = run(main())
    assert done[0].text == "a b c"
    assert ledger.generated_tokens == 3 and ledger.engine_calls == 1
    assert ledger._reserved_generated == 0 and ledger._reserved_calls == 0


def test_time_budget_cancels_a_slow_request():
    backend = ScriptedBackend(["a"], latency=1.0)
    ledger = Ledger(budget=Budget(seconds=0.05))
    gen = Generator(backend, ledger, seed=1)
    with pytest.raises(BudgetExhausted, match="seconds"):
        run(gen.sample("q", SamplingParams()))
    assert ledger._reserved_calls == 0


def test_engine_errors_propagate_and_release_reservations():
    def broken(prompt, i):
        raise RuntimeError("engine exploded")

    ledger = Ledger()
    gen = Generator(ScriptedBackend(broken), ledger, seed=1)
    with pytest.raises(RuntimeError, match="exploded"):
        run(gen.sample("q", SamplingParams()))
    assert ledger._reserved_generated == 0


def test_run_async_rejects_bad_concurrency():
    with pytest.raises(ValueError, match="concurrency"):
        run(run_async([], Majority(), ScriptedBackend(["x"]), concurrency=0))


# --- what a strategy may see, and a refusal that escapes it (issue 19, items 3 and 5) --------------------

@dataclasses.dataclass(frozen=True)
class Peeker(Strategy):
    """Tries to read what only graders may: the reference and the hidden tests."""

    name: str = "peeker"

    async def solve(self, problem, gen):
        seen = (problem.answer, dict(problem.metadata))
        return Trace(problem.id, self.name, (), repr(seen), None, {})


@dataclasses.dataclass(frozen=True)
class Reckless(Strategy):
    """Lets BudgetExhausted escape, as the README's example strategy would."""

    name: str = "reckless"

    async def solve(self, problem, gen):
        for _ in range(100):
            await gen.sample(problem, SamplingParams(n=4, max_tokens=8))
        raise AssertionError("the budget should have stopped this")


def test_strategies_never_see_the_reference_or_hidden_tests():
    problem = Problem("p", prompt="q", answer="42",
                      metadata={"test": "assert f() == 42", "canonical_solution": "return 42", "level": 3,
                                "public_tests": "assert f(1) == 1"})
    backend = ScriptedBackend(lambda prompt, i: "x")
    [result] = run(run_async([problem], Peeker(), backend, grade=same_answer))
    answer, metadata = eval(result.trace.answer)
    assert answer is None and metadata == {"level": 3, "public_tests": "assert f(1) == 1"}
    assert result.problem.answer == "42" and "test" in result.problem.metadata  # graders still have them


def test_a_budget_refusal_that_escapes_a_strategy_ends_only_that_problem():
    problems = [Problem(f"p{i}", prompt="q") for i in range(3)]
    backend = ScriptedBackend(lambda prompt, i: "a b c d e f g h")
    results = run(run_async(problems, Reckless(), backend, budget=Budget(generated_tokens=40)))
    assert [r.problem.id for r in results] == ["p0", "p1", "p2"]
    for r in results:
        assert r.trace.answer is None and "budget exhausted" in r.trace.info["budget_stop"]
        assert r.trace.ledger["generated_tokens"] <= 40
