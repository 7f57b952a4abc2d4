"""The driver of a run spread over replicas: one queue of problems, leases on the run's budget,
retries when a replica is lost, every problem answered exactly once.

Nothing here knows Ray. A :class:`Pool` is a row of replica slots that can be (re)started and asked to
solve one problem; :func:`dispatch` hands problems out as slots have room (a slow problem holds one slot,
never a shard), grades each trace here, where the references are, and calls ``on_result`` as each
problem ends. ``tts.scale.ray`` is the Pool on Ray actors; the tests also drive it with pools of
asyncio tasks that die on command.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol, Sequence

from ..budget import Budget, BudgetExhausted, Lease, Ledger
from ..runtime import Grade, Result, grade_trace
from ..types import Problem, Trace

#: a problem is tried at most this many times (a replica lost under it counts as a try)
MAX_TRIES = 3
#: a slot whose replica is lost is restarted at most this many times, then left empty
MAX_RESTARTS = 3


class ReplicaLost(Exception):
    """The replica's process is gone (killed, out of memory, its node lost, or it failed to start)."""


class Pool(Protocol):
    """Replica slots. ``start(slot)`` (re)starts the replica in a slot for the current run and returns
    at once (a replica that cannot start shows as :class:`ReplicaLost` on its first ``solve``);
    ``solve`` answers one problem under a lease (its share of the run's budget) with the run's
    strategy, per-problem budget and seed, or raises ReplicaLost, or the error the problem raised."""

    size: int

    def start(self, slot: int) -> None: ...

    async def solve(self, slot: int, problem: Problem, lease: Budget) -> Trace: ...


@dataclass
class ReplicaStats:
    """What one slot did in a run: problems answered, generated tokens, restarts and lost or failed tries."""

    slot: int
    problems: int = 0
    generated_tokens: int = 0
    restarts: int = 0
    failures: int = 0
    alive: bool = True
    last_error: str = ""


@dataclass
class _Job:
    index: int
    problem: Problem
    tries: int = 0
    avoid: int | None = None  # the slot it last failed on: another one is preferred
    errors: list[str] = field(default_factory=list)


def stopped_trace(problem: Problem, strategy: str, info: dict) -> Trace:
    """The trace of a problem that never reached an engine (the run's budget was spent, or it kept
    failing): no candidates, no answer, and why in ``info``; a zero ledger."""
    return Trace(problem.id, strategy, (), None, None, Ledger().snapshot(), info)


async def dispatch(
    problems: Sequence[Problem],
    strategy: str,
    pool: Pool,
    *,
    concurrency: int,
    grader: Callable[[Problem], Grade | None],
    run_ledger: Ledger,
    on_result: Callable[[Result], Awaitable[None] | None] | None = None,
    max_tries: int = MAX_TRIES,
    max_restarts: int = MAX_RESTARTS,
) -> tuple[list[Result], list[ReplicaStats]]:
    """Solve every problem on the pool's replicas, at most ``concurrency`` at once on each; results in
    input order, with what each slot did. ``strategy`` names the run's strategy (for the traces of
    problems that end here). The pool's slots are started here."""
    if concurrency < 1 or max_tries < 1 or max_restarts < 0:
        raise ValueError("concurrency and max_tries must be at least 1, max_restarts at least 0")
    stats = [ReplicaStats(slot) for slot in range(pool.size)]
    generation = [0] * pool.size
    load = [0] * pool.size
    for slot in range(pool.size):
        pool.start(slot)
    queue = deque(_Job(i, p) for i, p in enumerate(problems))
    results: list[Result | None] = [None] * len(problems)
    inflight: dict[asyncio.Task, tuple[int, int, _Job, Lease]] = {}

    async def finish(job: _Job, trace: Trace) -> None:
        # Graders may run code (HumanEval) or sympy: off the event loop, as the single-process runner does.
        result = await asyncio.to_thread(grade_trace, job.problem, trace, grader(job.problem))
        results[job.index] = result
        if on_result is not None:
            maybe = on_result(result)
            if asyncio.iscoroutine(maybe):
                await maybe

    def free_slots() -> list[int]:
        open_ = [s for s in range(pool.size) if stats[s].alive and load[s] < concurrency]
        return sorted(open_, key=lambda s: load[s])  # the least loaded first: problems spread evenly

    async def fail(job: _Job, slot: int, why: str) -> None:
        job.tries += 1
        job.avoid = slot
        job.errors.append(why)
        stats[slot].failures += 1
        if job.tries >= max_tries:
            await finish(job, stopped_trace(job.problem, strategy, {
                "error": f"failed {job.tries} times; last: {why}"[:2000], "tries": job.tries}))
        else:
            queue.appendleft(job)

    try:
        while queue or inflight:
            while queue:
                slots = free_slots()
                if not slots:
                    break
                job = queue[0]
                # a problem that failed on a slot goes to another one when another has room
                slot = next((s for s in slots if s != job.avoid), slots[0])
                try:
                    lease = run_ledger.lease(max(1, min(len(queue), sum(concurrency - load[s] for s in slots))))
                except BudgetExhausted as exc:
                    if inflight:
                        break  # what the problems in flight leave unspent comes back when they end
                    while queue:  # nothing left and nothing coming back: as the single-process runner
                        job = queue.popleft()
                        await finish(job, stopped_trace(job.problem, strategy, {"budget_stop": str(exc)}))
                    break
                queue.popleft()
                load[slot] += 1
                task = asyncio.ensure_future(pool.solve(slot, job.problem.public(), lease.budget))
                inflight[task] = (slot, generation[slot], job, lease)
            if not inflight:
                if queue:  # every slot is empty for good: the rest end as errors, not a hang
                    reasons = "; ".join(dict.fromkeys(s.last_error for s in stats if s.last_error))[:2000]
                    while queue:
                        job = queue.popleft()
                        await finish(job, stopped_trace(job.problem, strategy, {
                            "error": f"no replica left to run it: {reasons or 'all replicas were lost'}",
                            "tries": job.tries}))
                break
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                slot, gen, job, lease = inflight.pop(task)
                load[slot] -= 1
                try:
                    trace = task.result()
                except ReplicaLost as exc:
                    # its spending is unknown: the lease stays reserved, so the run's cap still holds
                    stats[slot].last_error = str(exc)[:500]
                    if gen == generation[slot] and stats[slot].alive:  # the first news of this loss
                        if stats[slot].restarts < max_restarts:
                            stats[slot].restarts += 1
                            generation[slot] += 1
                            pool.start(slot)
                        else:
                            stats[slot].alive = False
                    await fail(job, slot, f"replica {slot} lost: {exc}")
                    continue
                except Exception as exc:  # the problem itself failed there (an engine error): retry elsewhere
                    # what it spent before failing is unknown too: its lease stays reserved as well
                    await fail(job, slot, f"{type(exc).__name__}: {exc}")
                    continue
                run_ledger.end_lease(lease, trace.ledger)
                stats[slot].problems += 1
                stats[slot].generated_tokens += int(trace.ledger.get("generated_tokens", 0))
                await finish(job, trace)
    finally:
        for task in inflight:
            task.cancel()
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
    return [r for r in results if r is not None], stats
