"""Verifier work reserved before it runs, like generation: the one way a model-backed verifier pays.

A PRM or ORM knows its exact cost (tokens, FLOPs, forward passes) once it has tokenized its inputs,
which happens in a worker thread, while ledgers live on the event loop thread. :func:`metered` runs
the scoring function in a worker thread with a hook: the function calls :func:`admit` with its cost
before its first forward pass, the hook reserves that cost in the ledger on the loop thread (raising
BudgetExhausted there and then if the budget cannot pay), and when the function returns the actual
cost is charged against the reservation. So ``total_tokens``, ``flops``, ``engine_calls`` and
``seconds`` budgets cover verifier work before it is done, not after.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
from typing import Any, Callable

from ..budget import Ledger

_state = threading.local()

#: scoring calls of verifiers that only wait on an engine (``waits_on_engine``: the vLLM reward
#: models) that may run at once; asyncio's default pool (cores + 4 threads, which in-process models
#: keep: their threads compute) would cap how many problems' requests share the engine's batches far
#: below a run's --concurrency
SCORING_THREADS = 64
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(SCORING_THREADS, thread_name_prefix="tts-scoring")
        return _pool

Cost = tuple[int, float, int]  # tokens, FLOPs, model calls


def admit(cost: Cost) -> None:
    """Called by a scoring function before its forward passes; a no-op outside :func:`metered` (analysis
    helpers such as ``step_scores`` run without a ledger)."""
    hook = getattr(_state, "hook", None)
    if hook is not None:
        hook(cost)


async def _reserve(ledger: Ledger, cost: Cost):
    tokens, flops, calls = cost
    return ledger.reserve_verifier(int(tokens), float(flops), int(calls))


async def metered(ledger: Ledger, fn: Callable[..., tuple[Any, Cost]], *args) -> Any:
    """``fn(*args)`` in a worker thread, returning ``(value, cost)``; its cost reserved before it runs
    and charged after. Returns the value."""
    loop = asyncio.get_running_loop()
    held: dict[str, Any] = {}

    def hook(cost: Cost) -> None:
        if "reservation" in held:
            raise RuntimeError("a scoring function admitted its cost twice")
        held["reservation"] = asyncio.run_coroutine_threadsafe(_reserve(ledger, cost), loop).result()

    def work():
        _state.hook = hook
        try:
            return fn(*args)
        finally:
            _state.hook = None

    try:
        # as asyncio.to_thread does (context variables go along)
        waits = getattr(fn, "waits_on_engine", None)
        if waits is None:
            waits = getattr(getattr(fn, "__self__", None), "waits_on_engine", False)
        pool = _executor() if waits else None
        value, cost = await loop.run_in_executor(pool, functools.partial(contextvars.copy_context().run, work))
    except BaseException:
        if "reservation" in held:  # the work failed after admission: release what was held, charge nothing
            ledger.settle_verifier(held["reservation"], 0, 0.0, 0)
        raise
    if "reservation" in held:
        ledger.settle_verifier(held["reservation"], *cost)
    elif any(cost):
        # every scoring function admits before it works; one that did not would overrun budgets
        raise RuntimeError(f"{getattr(fn, '__qualname__', fn)} did work ({cost}) without admitting its cost first")
    return value
