"""The Python API: the same runs as the CLI, in a few lines, for scripts and agents."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import Counter
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterable

from .backends.base import TEXT_LISTENER, Backend
from .budget import Budget, Ledger
from .runtime import Generator, Grade, Result, Strategy, run_async, solve_one
from .types import Completion, Problem, Trace
from .verifiers.answers import same_answer


def _check(name: str, value, kind, what: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"tts: {name} must be {what}, got {type(value).__name__} {value!r:.60}")


def _check_common(strategy, backend, budget, seed, need_backend: bool = True) -> None:
    _check("strategy", strategy, Strategy, "a strategy object such as tts.Majority(n=8) (not a name)")
    for method in ("generate", "count_prompt_tokens") if need_backend else ():
        if not callable(getattr(backend, method, None)):
            raise TypeError(f"tts: backend must be a backend object such as tts.backends.create('hf') (not a name), "
                            f"got {type(backend).__name__} {backend!r:.60}")
    if budget is not None:
        _check("budget", budget, Budget, "a tts.Budget or None")
    _check("seed", seed, int, "an integer")


def _problems(problems) -> list[Problem]:
    if isinstance(problems, (str, bytes, Problem)) or not isinstance(problems, Iterable):
        raise TypeError("tts: problems must be a list of tts.Problem, e.g. tts.data.load('add1'), "
                        f"got {type(problems).__name__} {problems!r:.60}")
    out = list(problems)
    for i, p in enumerate(out):
        if not isinstance(p, Problem):
            raise TypeError(f"tts: problems[{i}] must be a tts.Problem, got {type(p).__name__} {p!r:.60}")
    return out


def run(
    problems: Iterable[Problem],
    strategy: Strategy,
    backend: Backend | None = None,
    *,
    budget: Budget | None = None,
    run_budget: Budget | None = None,
    grade: Grade | None = same_answer,
    concurrency: int = 32,
    seed: int = 0,
    executor=None,
) -> list[Result]:
    """Solve problems with a strategy (blocking). ``budget`` caps each problem, ``run_budget`` all of them.
    ``executor`` (a :class:`tts.RayExecutor`) spreads the problems over its replicas, each with its own
    engine, instead of ``backend`` in this process; ``concurrency`` is then per replica."""
    problems = _problems(problems)
    if executor is not None:
        if backend is not None:
            raise TypeError("tts: give a backend or an executor, not both (the executor's replicas build their own engines)")
        if not callable(getattr(executor, "run_async", None)):
            raise TypeError(f"tts: executor must be an executor such as tts.RayExecutor(...), got {type(executor).__name__}")
        _check_common(strategy, None, budget, seed, need_backend=False)
    else:
        if backend is None:
            raise TypeError("tts: run needs a backend, e.g. tts.backends.create('hf'), or an executor")
        _check_common(strategy, backend, budget, seed)
    if run_budget is not None:
        _check("run_budget", run_budget, Budget, "a tts.Budget or None")
    _check("concurrency", concurrency, int, "a positive integer")
    if concurrency < 1:
        raise ValueError(f"tts: concurrency must be a positive integer, got {concurrency}")
    _not_in_running_loop("run", "use `await tts.runtime.run_async(problems, strategy, backend, ...)` there")
    ledger = Ledger(budget=run_budget or Budget())
    if executor is not None:
        return asyncio.run(executor.run_async(problems, strategy, grade=grade, budget=budget, run_ledger=ledger,
                                              concurrency=concurrency, seed=seed))
    return asyncio.run(
        run_async(problems, strategy, backend, grade=grade, budget=budget, run_ledger=ledger,
                  concurrency=concurrency, seed=seed)
    )


async def solve_async(
    question: str | Problem, strategy: Strategy, backend: Backend, *, budget: Budget | None = None, seed: int = 0
) -> Trace:
    """Answer one question from inside a running event loop (an agent's tool call)."""
    problem = _as_problem(question)
    _check_common(strategy, backend, budget, seed)
    [result] = await run_async([problem], strategy, backend, grade=None, budget=budget, seed=seed)
    return result.trace


@dataclass(frozen=True)
class Progress:
    """What a strategy has done so far, sent after each answered engine request: samples answered,
    the answer most of them give (by the problem's answer reader) and how many give it, the tokens
    the problem's ledger has counted, and the seconds since it started."""

    samples: int
    leader: str | None
    votes: int
    generated_tokens: int
    prompt_tokens: int
    engine_calls: int
    seconds: float


@dataclass(frozen=True)
class Text:
    """A sample's text so far, as the engine generates it (only with ``stream_text=True``, and only
    from backends that stream: hf per decode step, scripted per reply)."""

    sample: int
    text: str


@dataclass(frozen=True)
class Finished:
    """The last event of :func:`solve_stream`: the strategy's trace, with its ledger."""

    trace: Trace


def _as_problem(question: str | Problem) -> Problem:
    if not isinstance(question, (str, Problem)):
        raise TypeError(f"tts: question must be a string or a tts.Problem, got {type(question).__name__}")
    return question if isinstance(question, Problem) else Problem(id="question", prompt=question)


async def solve_stream(
    question: str | Problem, strategy: Strategy, backend: Backend, *, budget: Budget | None = None, seed: int = 0,
    ledger: Ledger | None = None, extract: Callable[[str], str | None] | None = None, stream_text: bool = False,
) -> AsyncIterator[Progress | Text | Finished]:
    """Answer one question, yielding :class:`Progress` events while the strategy works and then one
    :class:`Finished` with the trace. Leaving the loop early (``break``, or cancelling the task that
    iterates) cancels the strategy, and with it every engine request it has in flight; the ledger is
    charged for what the engine computed. ``ledger`` (a parent's child, e.g. a server's) overrides
    ``budget``; ``extract`` reads the answer the leader is counted by (default: the problem's format).
    ``stream_text`` adds :class:`Text` events with the engine's text as it is generated (worth it for
    strategies that keep their one sample, such as ``single``)."""
    problem = _as_problem(question)
    _check_common(strategy, backend, budget, seed)
    from .data.grading import extractor_for

    read = extract or extractor_for(problem)
    ledger = ledger if ledger is not None else Ledger(budget=budget or Budget())
    events: asyncio.Queue[Progress | Text] = asyncio.Queue()
    answers: Counter[str] = Counter()
    started = time.perf_counter()

    def on_sample(gen: Generator, completions: list[Completion]) -> None:
        for c in completions:
            try:
                answer = read(c.text)
            except Exception:  # a reader failing on odd text must not end the search: no vote
                answer = None
            if answer is not None:
                answers[answer] += 1
        leader, votes = answers.most_common(1)[0] if answers else (None, 0)
        snap = ledger.snapshot()
        events.put_nowait(Progress(gen.samples_done, leader, votes, int(snap["generated_tokens"]),
                                   int(snap["prompt_tokens"]), int(snap["engine_calls"]),
                                   round(time.perf_counter() - started, 3)))

    context = contextvars.copy_context()
    if stream_text:
        context.run(TEXT_LISTENER.set, lambda sample, text: events.put_nowait(Text(sample, text)))
    # the task starts from a copy of this context, so only this request's engine calls see the listener
    task = context.run(asyncio.create_task, solve_one(problem, strategy, backend, ledger, seed, on_sample))
    try:
        while True:
            getter = asyncio.ensure_future(events.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                continue
            getter.cancel()
            while not events.empty():
                yield events.get_nowait()
            yield Finished(task.result())
            return
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def solve(question: str | Problem, strategy: Strategy, backend: Backend, *, budget: Budget | None = None, seed: int = 0) -> Trace:
    """Answer one question (blocking)."""
    _not_in_running_loop("solve", "use `await tts.solve_async(...)` there")
    return asyncio.run(solve_async(question, strategy, backend, budget=budget, seed=seed))


def _not_in_running_loop(name: str, hint: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"tts.{name}() cannot run inside a running event loop (an async function, Jupyter); {hint}")
