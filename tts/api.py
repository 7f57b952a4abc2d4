"""The Python API: the same runs as the CLI, in a few lines, for scripts and agents."""

from __future__ import annotations

import asyncio
from typing import Iterable

from .backends.base import Backend
from .budget import Budget, Ledger
from .runtime import Grade, Result, Strategy, run_async
from .types import Problem, Trace
from .verifiers.answers import same_answer


def run(
    problems: Iterable[Problem],
    strategy: Strategy,
    backend: Backend,
    *,
    budget: Budget | None = None,
    run_budget: Budget | None = None,
    grade: Grade | None = same_answer,
    concurrency: int = 32,
    seed: int = 0,
) -> list[Result]:
    """Solve problems with a strategy (blocking). ``budget`` caps each problem, ``run_budget`` all of them."""
    ledger = Ledger(budget=run_budget or Budget())
    return asyncio.run(
        run_async(problems, strategy, backend, grade=grade, budget=budget, run_ledger=ledger,
                  concurrency=concurrency, seed=seed)
    )


async def solve_async(
    question: str | Problem, strategy: Strategy, backend: Backend, *, budget: Budget | None = None, seed: int = 0
) -> Trace:
    """Answer one question from inside a running event loop (an agent's tool call)."""
    problem = question if isinstance(question, Problem) else Problem(id="question", prompt=question)
    [result] = await run_async([problem], strategy, backend, grade=None, budget=budget, seed=seed)
    return result.trace


def solve(question: str | Problem, strategy: Strategy, backend: Backend, *, budget: Budget | None = None, seed: int = 0) -> Trace:
    """Answer one question (blocking)."""
    return asyncio.run(solve_async(question, strategy, backend, budget=budget, seed=seed))
