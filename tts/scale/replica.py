"""What one replica does, with no Ray in sight: hold one engine, solve the problems it is handed.

A replica (a Ray actor, see ``tts.scale.ray``) builds its backend once from a :class:`BackendSpec` (or
any picklable zero-argument callable), so a model is loaded where it runs, never shipped; then it
solves many problems concurrently on its own event loop, exactly as ``tts run`` does in one process, so
its engine batches their requests and keeps their shared prefixes cached. Each problem runs under a
ledger whose parent is the lease the driver granted it (its share of the run's budget), with the run's
per-problem budget and seed, so it samples what a single-process run samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..backends.base import Backend
from ..budget import Budget, Ledger
from ..runtime import Strategy, solve_one
from ..types import Problem, Trace


@dataclass(frozen=True)
class BackendSpec:
    """How a replica builds its engine: ``tts.backends.create(name, model, **options)``."""

    name: str
    model: str = "embedded"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self) -> Backend:
        from .. import backends

        return backends.create(self.name, self.model, **dict(self.options))


@dataclass(frozen=True)
class RunSpec:
    """What is the same for every problem of one run: the strategy, its per-problem budget, the seed."""

    strategy: Strategy
    budget: Budget | None
    seed: int


class Replica:
    """One engine and the runs it takes part in (made a Ray actor by ``tts.scale.ray``)."""

    def __init__(self, make_backend: Callable[[], Backend]):
        self.backend = make_backend()
        self.runs: dict[str, RunSpec] = {}

    async def solve(self, run_key: str, run: list, problem: Problem, lease: Budget) -> Trace:
        """Solve ``problem`` for run ``run_key``. ``run`` holds the RunSpec, or (from Ray) a reference
        to it, fetched once per run and replica (a strategy may hold a verifier's weights)."""
        spec = self.runs.get(run_key)
        if spec is None:
            value = run[0]
            spec = value if isinstance(value, RunSpec) else await value
            self.runs[run_key] = spec
        ledger = Ledger(budget=lease).child(spec.budget)
        return await solve_one(problem, spec.strategy, self.backend, ledger, spec.seed)

    def forget(self, run_key: str) -> None:
        self.runs.pop(run_key, None)

    def pid(self) -> int:
        return os.getpid()

    async def close(self) -> None:
        await self.backend.aclose()
