"""The replicated run's driver, on pools of asyncio tasks that die on command: every problem exactly
once, lost replicas restarted and bounded, failing problems ending as error lines, and the run's
budget a hard cap across replicas whatever the replicas spend (property-based)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings, strategies as st

from tts.budget import Budget, BudgetExhausted, Ledger
from tts.scale import ReplicaLost, dispatch
from tts.types import Problem, Trace

from .conftest import run


def problems(k: int) -> list[Problem]:
    return [Problem(id=f"p{i}", prompt=f"question {i}", answer=str(i)) for i in range(k)]


def grade(answer, reference):
    return answer == reference


class FakePool:
    """``size`` slots; ``solve`` answers a problem with its own index after ``delay``, spending
    ``spend(lease)`` generated tokens; ``lose(slot, call)`` and ``raise_for(problem)`` decide failures."""

    def __init__(self, size, *, delay=0.001, lose=None, raise_for=None, spend=None):
        self.size = size
        self.delay, self.lose, self.raise_for, self.spend = delay, lose, raise_for, spend
        self.starts = [0] * size
        self.calls = [0] * size
        self.inflight = [0] * size
        self.most_inflight = [0] * size
        self.seen_leases: list[Budget] = []

    def start(self, slot):
        self.starts[slot] += 1

    async def solve(self, slot, problem, lease):
        self.calls[slot] += 1
        call, starts = self.calls[slot], self.starts[slot]  # as they were when this call arrived
        self.seen_leases.append(lease)
        assert problem.answer is None, "replicas get the public problem, without its reference"
        self.inflight[slot] += 1
        self.most_inflight[slot] = max(self.most_inflight[slot], self.inflight[slot])
        try:
            await asyncio.sleep(self.delay)
            if self.lose is not None and self.lose(slot, call, starts):
                raise ReplicaLost(f"slot {slot} killed")
            if self.raise_for is not None and self.raise_for(problem):
                raise RuntimeError(f"engine error on {problem.id}")
            spent = self.spend(lease) if self.spend else 3
            ledger = {**Ledger().snapshot(), "generated_tokens": spent}
            return Trace(problem.id, "fake", (), problem.id[1:], None, ledger, {"slot": slot})
        finally:
            self.inflight[slot] -= 1


def drive(pool, k, **kw):
    kw.setdefault("concurrency", 4)
    kw.setdefault("run_ledger", Ledger())
    written = []
    results, stats = run(dispatch(problems(k), "fake", pool, grader=lambda p: grade, on_result=written.append, **kw))
    return results, stats, written


def test_every_problem_once_in_input_order_spread_over_slots():
    pool = FakePool(3)
    results, stats, written = drive(pool, 40)
    assert [r.problem.id for r in results] == [f"p{i}" for i in range(40)]
    assert sorted(r.problem.id for r in written) == sorted(f"p{i}" for i in range(40))
    assert all(r.correct for r in results)  # graded here, against the reference the replicas never saw
    assert sum(s.problems for s in stats) == 40 and all(s.problems >= 10 for s in stats)
    assert max(pool.most_inflight) <= 4 and min(pool.most_inflight) >= 2  # each slot solves many at once


def test_a_lost_replica_is_restarted_and_its_problems_run_again():
    # slot 0 dies on its 3rd call, once
    pool = FakePool(2, delay=0.005, lose=lambda slot, call, starts: slot == 0 and call == 3 and starts == 1)
    results, stats, written = drive(pool, 30)
    assert sorted(r.problem.id for r in written) == sorted(f"p{i}" for i in range(30))
    assert all(r.correct for r in results)
    assert stats[0].restarts == 1 and pool.starts[0] == 2 and stats[0].failures >= 1


def test_restarts_are_bounded_and_the_other_replica_takes_over():
    pool = FakePool(2, lose=lambda slot, call, starts: slot == 0)  # slot 0 never answers
    results, stats, written = drive(pool, 40, max_restarts=2, max_tries=5)
    assert [r.trace.info.get("slot") for r in results] == [1] * 40
    assert stats[0].restarts == 2 and not stats[0].alive and pool.starts[0] == 3


def test_no_replica_left_ends_in_error_lines_not_a_hang():
    pool = FakePool(2, lose=lambda slot, call, starts: True)
    results, stats = run(asyncio.wait_for(
        dispatch(problems(10), "fake", pool, concurrency=2, grader=lambda p: grade, run_ledger=Ledger(),
                 max_restarts=1), 10))
    assert len(results) == 10 and all("error" in r.trace.info for r in results)
    assert all(r.trace.answer is None and r.correct is False for r in results)
    assert not any(s.alive for s in stats)


def test_a_problem_that_always_fails_becomes_an_error_line_after_its_tries():
    pool = FakePool(2, raise_for=lambda p: p.id == "p3")
    results, stats, written = drive(pool, 8, max_tries=3)
    bad = results[3]
    assert bad.trace.info["tries"] == 3 and "engine error on p3" in bad.trace.info["error"]
    assert all("error" not in r.trace.info for i, r in enumerate(results) if i != 3)
    assert len(written) == 8
    assert sum(pool.calls) == 7 + 3


def test_a_failed_problem_is_retried_on_another_replica():
    pool = FakePool(2)
    first = {}

    async def solve(slot, problem, lease, inner=pool.solve):
        if problem.id == "p0" and "p0" not in first:
            first["p0"] = slot
            raise RuntimeError("transient")
        return await inner(slot, problem, lease)

    pool.solve = solve
    results, _, _ = drive(pool, 4)
    assert results[0].correct and results[0].trace.info["slot"] != first["p0"]


def test_leases_share_the_run_budget_and_spent_runs_end_as_budget_stops():
    # each problem spends all of its lease: the run stops at the cap, the rest are budget stops
    ledger = Ledger(budget=Budget(generated_tokens=100))
    pool = FakePool(2, spend=lambda lease: lease.generated_tokens)
    results, _, _ = drive(pool, 50, run_ledger=ledger)
    assert ledger.generated_tokens == 100
    stopped = [r for r in results if "budget_stop" in r.trace.info]
    assert stopped and len(results) == 50
    assert all(r.trace.answer is None for r in stopped)


@settings(max_examples=60, deadline=None)
@given(cap=st.integers(1, 400), slots=st.integers(1, 4), concurrency=st.integers(1, 6), k=st.integers(1, 30),
       fraction=st.floats(0, 1), lose_every=st.integers(0, 7))
def test_the_run_budget_is_a_hard_cap_across_replicas(cap, slots, concurrency, k, fraction, lose_every):
    ledger = Ledger(budget=Budget(generated_tokens=cap))
    lose = (lambda slot, call, starts: call % lose_every == 0) if lose_every else None
    pool = FakePool(slots, delay=0, lose=lose, spend=lambda lease: int(lease.generated_tokens * fraction))
    results, _, written = drive(pool, k, run_ledger=ledger, concurrency=concurrency, max_restarts=50, max_tries=50)
    assert sorted(r.problem.id for r in written) == sorted(f"p{i}" for i in range(k))  # each exactly once
    assert ledger.generated_tokens <= cap
    assert ledger.generated_tokens + ledger._reserved_generated <= cap  # lost leases stay reserved
    assert all(1 <= lease.generated_tokens <= cap for lease in pool.seen_leases)
    assert pool.seen_leases  # the first problem always gets a share


def test_ledger_lease_shares_what_is_left_and_end_lease_charges():
    ledger = Ledger(budget=Budget(generated_tokens=100, flops=1000.0, seconds=50))
    a = ledger.lease(4)
    assert a.budget.generated_tokens == 25 and a.budget.flops == 250.0 and 0 < a.budget.seconds <= 50
    b = ledger.lease(3)
    assert b.budget.generated_tokens == 25  # 75 left over 3
    ledger.end_lease(a, {"generated_tokens": 10, "flops": 40.0, "prompt_tokens": 7})
    assert ledger.generated_tokens == 10 and ledger.prompt_tokens == 7 and ledger._reserved_generated == 25
    with pytest.raises(RuntimeError):
        ledger.end_lease(a, {})
    assert Ledger().lease(8).budget.unlimited
    spent = Ledger(budget=Budget(engine_calls=2))
    spent.lease(1)
    with pytest.raises(BudgetExhausted):
        spent.lease(1)
    parent = Ledger(budget=Budget(generated_tokens=10))
    child = parent.child(Budget(generated_tokens=1000))
    assert child.lease(1).budget.generated_tokens == 10  # the tightest limit up the chain
    assert parent._reserved_generated == 10
