"""Runs strategies over many problems at once, every request metered by the problem's ledger.

A strategy is written for one problem as plain async code against a :class:`Generator` bound to that
problem's ledger (``await gen.sample(problem, params)``). The runner solves many problems concurrently
under a concurrency limit; the backend sees all their requests at once and batches them. Throughput
comes from below, so strategies stay as simple as the papers that describe them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Sequence

from .backends.base import Backend, Generation, GenerationRequest
from .budget import Budget, BudgetExhausted, Ledger, Usage, generation_usage
from .types import Completion, Message, Problem, SamplingParams, Trace


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (Python's hash() is salted per process, so not that)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def as_prompt(prompt: Problem | Sequence[Message] | str) -> tuple[Message, ...] | str:
    """What a backend request takes: raw text, or chat messages (a Problem becomes its chat)."""
    chat = prompt.chat() if isinstance(prompt, Problem) else prompt
    return chat if isinstance(chat, str) else tuple(chat)


class Generator:
    """A backend handle bound to one problem's ledger. Every request goes through :meth:`sample`."""

    def __init__(self, backend: Backend, ledger: Ledger, seed: int):
        self.backend = backend
        self.ledger = ledger
        self.seed = seed
        self._requests = 0

    async def sample(
        self,
        prompt: Problem | Sequence[Message] | str,
        params: SamplingParams,
        *,
        n: int | None = None,
        prefix: str = "",
    ) -> list[Completion]:
        """Sample completions, paying for them from the ledger first.

        The request may come back with fewer samples or shorter max tokens than asked when the budget
        cannot pay for all of it; it raises BudgetExhausted when it cannot pay for any.
        """
        if n is not None:
            params = dataclasses.replace(params, n=n)
        if params.seed is None:
            # Seeds follow the order in which this problem issues requests, so reruns are reproducible
            # whatever the other problems in flight are doing.
            params = dataclasses.replace(params, seed=derive_seed(self.seed, self._requests))
        self._requests += 1
        request = GenerationRequest(as_prompt(prompt), params, prefix)
        prompt_tokens = self.backend.count_prompt_tokens(request)
        reservation = self.ledger.admit(prompt_tokens, params, self.backend.shape)
        request = dataclasses.replace(request, params=reservation.params)

        def settle(generation: Generation) -> None:
            if not reservation.settled:
                self.ledger.settle(reservation, self._usage(generation))

        timeout = self.ledger.seconds_left()
        try:
            if timeout is None:
                generation = await self.backend.generate(request, on_cancel=settle)
            else:
                generation = await asyncio.wait_for(self.backend.generate(request, on_cancel=settle), timeout)
        except asyncio.TimeoutError:
            settle(Generation((), 0))
            raise BudgetExhausted("seconds", self.ledger.seconds_limit(), self.ledger.wall_seconds) from None
        except BaseException:
            settle(Generation((), 0))  # engine errors and cancellations still release the reservation
            raise
        settle(generation)
        return list(generation.completions)

    def _usage(self, generation: Generation) -> Usage:
        if not generation.completions and generation.prompt_tokens == 0:
            return Usage(engine_calls=0)
        return generation_usage(
            self.backend.shape,
            generation.prompt_tokens,
            generation.cached_prompt_tokens,
            [c.num_tokens for c in generation.completions],
        )



class Strategy:
    """Base of all strategies: settings in the constructor, nothing kept between problems."""

    name: str = "strategy"

    async def solve(self, problem: Problem, gen: Generator) -> Trace:  # pragma: no cover - interface
        raise NotImplementedError

    def config(self) -> dict:
        """Settings that define this strategy's results (hashed to key resumable runs)."""
        return {"strategy": self.name}


@dataclass(frozen=True)
class Result:
    """A trace graded against the reference (graders see the answer; strategies never do)."""

    problem: Problem
    trace: Trace
    correct: bool | None
    candidate_correct: tuple[bool | None, ...]


Grade = Callable[[str | None, str], bool]


def grade_trace(problem: Problem, trace: Trace, grade: Grade | None) -> Result:
    if grade is None or problem.answer is None:
        return Result(problem, trace, None, tuple(None for _ in trace.candidates))
    return Result(
        problem,
        trace,
        grade(trace.answer, problem.answer),
        tuple(grade(c.answer, problem.answer) for c in trace.candidates),
    )


async def run_async(
    problems: Iterable[Problem],
    strategy: Strategy,
    backend: Backend,
    *,
    grade: Grade | None = None,
    grader: Callable[[Problem], Grade] | None = None,
    budget: Budget | None = None,
    run_ledger: Ledger | None = None,
    concurrency: int = 32,
    seed: int = 0,
    on_result: Callable[[Result], Awaitable[None] | None] | None = None,
) -> list[Result]:
    """Solve every problem with ``strategy``; results come back in input order.

    ``budget`` caps each problem; ``run_ledger`` (with its own budget) caps and counts the whole run.
    ``on_result`` is called as soon as each problem is done (to write it out, update progress).
    ``grader`` picks a grade function per problem (puzzles by checker, code by tests); it overrides
    ``grade``.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
    own_ledger = run_ledger is None
    run_ledger = run_ledger or Ledger()
    problems = list(problems)
    gate = asyncio.Semaphore(concurrency)

    async def one(problem: Problem) -> Result:
        async with gate:
            ledger = run_ledger.child(budget)
            gen = Generator(backend, ledger, derive_seed(seed, problem.id, strategy.name))
            try:
                # the strategy sees the problem without its reference or hidden tests: graders only
                trace = await strategy.solve(problem.public(), gen)
            except BudgetExhausted as exc:
                # a strategy that lets a refusal escape (a user's, or a bug) ends this problem with no
                # answer, recorded like any budget stop; the run goes on
                trace = Trace(problem.id, strategy.name, (), None, None, {}, {"budget_stop": str(exc)})
            ledger.stop_clock()
            trace = dataclasses.replace(trace, ledger=ledger.snapshot())
            grade_fn = grader(problem) if grader is not None else grade
            # Graders may run code (HumanEval) or sympy: keep them off the event loop.
            result = await asyncio.to_thread(grade_trace, problem, trace, grade_fn)
        if on_result is not None:
            maybe = on_result(result)
            if asyncio.iscoroutine(maybe):
                await maybe
        return result

    tasks = [asyncio.create_task(one(p)) for p in problems]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if own_ledger:
            run_ledger.stop_clock()
