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
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

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


#: At most this many continuation requests per sample after a pool-capped first request (each costs a
#: prompt prefill, mostly served from the prefix cache, and a round trip).
REFILL_ROUNDS = 8


def _joined(head: Completion, tail: Completion) -> Completion:
    """A sample and its continuation as one completion (the continuation's prompt was head's prompt plus
    head's text, so the parts concatenate; the prompt counts are the first request's)."""
    logprobs = None if head.logprobs is None or tail.logprobs is None else head.logprobs + tail.logprobs
    return dataclasses.replace(
        head, text=head.text + tail.text, num_tokens=head.num_tokens + tail.num_tokens,
        finish_reason=tail.finish_reason, token_ids=head.token_ids + tail.token_ids, logprobs=logprobs,
        stop_reason=tail.stop_reason)


class Generator:
    """A backend handle bound to one problem's ledger. Every request goes through :meth:`sample`."""

    def __init__(self, backend: Backend, ledger: Ledger, seed: int,
                 on_sample: Callable[["Generator", list[Completion]], None] | None = None):
        self.backend = backend
        self.ledger = ledger
        self.seed = seed
        self._requests = 0
        #: every completion this problem has been answered so far, in arrival order (what progress
        #: reports count and vote over); continuations of a refilled sample are not counted twice
        self.samples_done = 0
        # called on the event loop after each answered request, with its completions: how `tts serve`
        # and tts.solve_stream report progress while a strategy searches. It must not raise or block.
        self._on_sample = on_sample

    async def sample(
        self,
        prompt: Problem | Sequence[Message] | str,
        params: SamplingParams,
        *,
        n: int | None = None,
        prefix: str = "",
    ) -> list[Completion]:
        """Sample completions, paying for them from the ledger first.

        Under a budget that cannot pay for all of a request at its worst case, the samples draw from
        one pool: each starts capped at its share of what the budget can pay, and samples the cap cut
        short are continued (in up to ``REFILL_ROUNDS`` further requests, each admitted like any other)
        with what the samples that finished early left unspent. The request may still come back with
        fewer samples (not one token each could be paid) or samples ended by the budget
        (``finish_reason`` "length"); it raises BudgetExhausted when it cannot pay for any.
        """
        if n is not None:
            params = dataclasses.replace(params, n=n)
        if params.seed is None:
            # Seeds follow the order in which this problem issues requests, so reruns are reproducible
            # whatever the other problems in flight are doing.
            params = dataclasses.replace(params, seed=derive_seed(self.seed, self._requests))
        self._requests += 1
        request = GenerationRequest(as_prompt(prompt), params, prefix)
        completions, cap = await self._request(request)
        if cap < params.max_tokens:
            completions = await self._refill(request, completions, cap)
        self.samples_done += len(completions)
        if self._on_sample is not None:
            self._on_sample(self, completions)
        return completions

    async def _refill(self, request: GenerationRequest, completions: list[Completion], cap: int) -> list[Completion]:
        """Continue the samples a pool share cut short, sharing out what the budget has left, round by
        round, until none is cut short, the budget is spent, or the rounds run out. Refill seeds derive
        from the request's seed, so reruns draw the same continuations."""
        params = request.params
        out = list(completions)
        caps = [cap] * len(out)  # the share each sample was last capped at
        last = [c.num_tokens for c in out]  # and the tokens its last request generated
        for round_ in range(1, REFILL_ROUNDS + 1):
            # cut short by its share (not by a stop, the model's end or its context length)
            cut = [i for i, c in enumerate(out) if c.finish_reason == "length" and last[i] >= caps[i]
                   and c.num_tokens < params.max_tokens]
            if not cut:
                break
            room = self.ledger.room(self.backend.count_prompt_tokens(request), params.max_tokens, self.backend.shape)
            share = room // len(cut)
            if share < 1:
                break
            jobs = []
            for i in cut:
                more = dataclasses.replace(params, n=1, max_tokens=min(share, params.max_tokens - out[i].num_tokens),
                                           seed=derive_seed(params.seed, "refill", round_, i))
                jobs.append(self._continue(dataclasses.replace(request, params=more,
                                                               prefix=request.prefix + out[i].text)))
            for i, got in zip(cut, await asyncio.gather(*jobs)):
                if got is None:  # the budget refused it (another request of this problem took the room)
                    last[i] = 0  # so it is not tried again
                    continue
                caps[i], last[i] = got[1], got[0].num_tokens
                out[i] = _joined(out[i], got[0])
        return out

    async def _continue(self, request: GenerationRequest) -> tuple[Completion, int] | None:
        try:
            completions, cap = await self._request(request)
        except BudgetExhausted:
            return None
        return (completions[0], cap) if completions else None

    async def _request(self, request: GenerationRequest) -> tuple[list[Completion], int]:
        """One admitted engine request: the completions and the max_tokens the budget let it have."""
        prompt_tokens = self.backend.count_prompt_tokens(request)
        reservation = self.ledger.admit(prompt_tokens, request.params, self.backend.shape)
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
        return list(generation.completions), reservation.params.max_tokens

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
    """Base of all strategies: settings in the constructor, nothing kept between problems.

    A strategy is a frozen dataclass whose fields made with :func:`tts.options.option` are its options
    (what flags, recipes and request bodies may set, checked against their declarations here and by
    the builder), and whose fields are its configuration: :meth:`config` derives what keys a results
    file from all of them, so none can be left out.
    """

    name: str = "strategy"
    #: the option that N sets (``--n``, or NAME@N): samples, beams, particles or simulations; None: no N
    width_option: str | None = "n"

    def __post_init__(self) -> None:
        from .options import check

        check(self)

    @classmethod
    def shared_settings(cls, params: SamplingParams, options: Mapping[str, Any]) -> dict[str, Any]:
        """Fields the registry fills from run-wide settings rather than this strategy's own options:
        the sampling params (``options`` are all the options given, for strategies that pass others on)."""
        fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        return {"params": params} if "params" in fields else {}

    async def solve(self, problem: Problem, gen: Generator) -> Trace:  # pragma: no cover - interface
        raise NotImplementedError

    def config(self) -> dict:
        """Settings that define this strategy's results (hashed to key resumable runs), derived from
        every field (:func:`tts.options.config_of`)."""
        from .options import config_of

        return {"strategy": self.name, **(config_of(self) if dataclasses.is_dataclass(self) else {})}


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


async def solve_one(problem: Problem, strategy: Strategy, backend: Backend, ledger: Ledger, seed: int,
                    on_sample: Callable[[Generator, list[Completion]], None] | None = None) -> Trace:
    """One problem under ``ledger``: the strategy's trace with the ledger's final counts. Its seed
    derives from the run seed, the problem id and the strategy, so a problem draws the same samples
    whatever else is in flight; ``on_sample`` sees every answered request (progress reports)."""
    gen = Generator(backend, ledger, derive_seed(seed, problem.id, strategy.name), on_sample)
    try:
        # the strategy sees the problem without its reference or hidden tests: graders only
        trace = await strategy.solve(problem.public(), gen)
    except BudgetExhausted as exc:
        # a strategy that lets a refusal escape (a user's, or a bug) ends this problem with no
        # answer, recorded like any budget stop; the run goes on
        trace = Trace(problem.id, strategy.name, (), None, None, {}, {"budget_stop": str(exc)})
    finally:
        ledger.stop_clock()
    return dataclasses.replace(trace, ledger=ledger.snapshot())


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
            trace = await solve_one(problem, strategy, backend, run_ledger.child(budget), seed)
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
