"""Runs spread over Ray: K actors, one engine each, driven by :func:`tts.scale.dispatch.dispatch`.

Ray Core actors rather than Ray Data or Ray Serve: a strategy makes many small dependent calls that
share prefixes, so a problem must stay on one engine for its whole search, and each engine must see
many problems at once to batch them; an actor holding a backend, solving problems concurrently on its
own event loop, is exactly that. Ray is imported only here, and only when a run starts.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any, Awaitable, Callable, Iterable, Mapping

from ..backends.base import Backend
from ..budget import Budget, Ledger
from ..runtime import Grade, Result, Strategy
from ..types import Problem, Trace
from .dispatch import MAX_RESTARTS, MAX_TRIES, ReplicaLost, ReplicaStats, dispatch
from .replica import BackendSpec, Replica, RunSpec


class ScaleError(ValueError):
    """A cluster or replica setting that cannot work (the message says why and what would)."""


_ids = itertools.count()


class RayExecutor:
    """Solve a run's problems on ``replicas`` Ray actors, each holding its own engine.

    ``backend`` is a backend name (built in each replica with ``model`` and ``engine_options``) or a
    picklable zero-argument callable returning a backend. ``address``: None or "local" starts a local
    cluster for this executor (stopped by :meth:`close`), "auto" joins the running one, and a
    "ray://host:port" or "host:port" address joins that cluster. Each replica reserves
    ``cpus_per_replica`` CPUs and ``gpus_per_replica`` GPUs; with the vllm backend and more than one GPU
    per replica, vLLM runs tensor parallel over them. The actors live until :meth:`close`, so several
    runs (the strategies of one ``tts run``) share the loaded engines.
    """

    def __init__(self, backend: str | Callable[[], Backend] = "hf", model: str = "embedded", *,
                 replicas: int = 2, cpus_per_replica: float = 1, gpus_per_replica: float = 0,
                 address: str | None = None, engine_options: Mapping[str, Any] | None = None,
                 max_tries: int = MAX_TRIES, max_restarts: int = MAX_RESTARTS,
                 init_options: Mapping[str, Any] | None = None):
        for name, value, low in (("replicas", replicas, 1), ("max_tries", max_tries, 1), ("max_restarts", max_restarts, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ScaleError(f"{name} must be an integer of at least {low}, got {value!r}")
        for name, value in (("cpus_per_replica", cpus_per_replica), ("gpus_per_replica", gpus_per_replica)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1024:
                raise ScaleError(f"{name} must be a number from 0 to 1024, got {value!r}")
        options = dict(engine_options or {})
        if isinstance(backend, str):
            if backend == "vllm" and gpus_per_replica > 1:
                options.setdefault("tensor_parallel_size", int(gpus_per_replica))
            self.make_backend: Callable[[], Backend] = BackendSpec(backend, model, options)
        elif callable(backend):
            self.make_backend = backend
        else:
            raise ScaleError(f"backend must be a backend name or a callable returning a backend, got {backend!r:.60}")
        self.replicas, self.cpus, self.gpus = replicas, cpus_per_replica, gpus_per_replica
        self.address = address
        self.max_tries, self.max_restarts = max_tries, max_restarts
        self.init_options = dict(init_options or {})
        self.actors: list[Any] = [None] * replicas
        #: what each replica slot did in the last run
        self.stats: list[ReplicaStats] = []
        self._started_ray = False
        self._actor_class = None

    # --- cluster ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Join or start the cluster, check it can hold the replicas (no actor waits for ever for
        resources that do not exist) and start them. Called by the first run; call it first to fail
        early and to load the engines while other work goes on."""
        if self._actor_class is not None:
            return
        try:
            import ray
        except ImportError:
            raise ScaleError("--ray needs Ray: pip install 'tts-toolkit[ray]'") from None
        if not ray.is_initialized():
            address = self.address or "local"
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False,
                                       "configure_logging": True}
            if address == "local":
                # the machine's own cores, never more: --replicas 4096 is refused below in one line
                # instead of 4096 engines loading at once
                options.update(num_cpus=os.cpu_count() or 1, _node_ip_address="127.0.0.1",
                               object_store_memory=int(os.environ.get("TTS_RAY_OBJECT_STORE_BYTES", 256 << 20)))
            options.update(self.init_options)
            _check_reachable(address)
            try:
                ray.init(address=address, **options)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ScaleError(f"--ray {address}: cannot reach a Ray cluster there ({str(exc).splitlines()[0][:200]})") from None
            self._started_ray = True
        have = ray.cluster_resources()
        for unit, per in (("CPU", self.cpus), ("GPU", self.gpus)):
            need = per * self.replicas
            if need > have.get(unit, 0) + 1e-9:
                raise ScaleError(f"{self.replicas} replicas of {per:g} {unit} each need {need:g} {unit}s; the cluster has "
                                 f"{have.get(unit, 0):g} (lower --replicas or --{unit.lower()}s-per-replica)")
        self._actor_class = ray.remote(Replica)
        # the replicas start loading their engines now, while the driver reads data and files
        self.actors = [self._new_actor() for _ in range(self.replicas)]

    def _new_actor(self):
        return self._actor_class.options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0,
                                         max_concurrency=1000).remote(self.make_backend)

    def pids(self) -> list[int | None]:
        """The process id of each slot's actor (for tests and operators; None for an empty slot);
        starts the replicas first if they are not running."""
        import ray

        self.start()
        out = []
        for actor in self.actors:
            try:
                out.append(None if actor is None else ray.get(actor.pid.remote(), timeout=600))
            except ray.exceptions.RayError:
                out.append(None)
        return out

    def close(self) -> None:
        """Stop the replicas (their engines with them) and the cluster this executor started."""
        if self._actor_class is None:
            return
        import ray

        for i, actor in enumerate(self.actors):
            if actor is not None:
                try:
                    ray.get(actor.close.remote(), timeout=30)
                except Exception:  # a dead or stuck replica: killed below all the same
                    pass
                ray.kill(actor, no_restart=True)
                self.actors[i] = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
        self._actor_class = None

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- runs ------------------------------------------------------------------------------------
    async def run_async(self, problems: Iterable[Problem], strategy: Strategy, *, grade: Grade | None = None,
                        grader: Callable[[Problem], Grade] | None = None, budget: Budget | None = None,
                        run_ledger: Ledger | None = None, concurrency: int = 32, seed: int = 0,
                        on_result: Callable[[Result], Awaitable[None] | None] | None = None) -> list[Result]:
        """The replicated :func:`tts.runtime.run_async`: the same arguments and results (in input order);
        ``concurrency`` is per replica. Sets :attr:`stats`."""
        import ray

        self.start()
        run_ledger = run_ledger if run_ledger is not None else Ledger()
        key = f"run-{os.getpid()}-{next(_ids)}"
        pool = _RayPool(self, key, [ray.put(RunSpec(strategy, budget, seed))])
        try:
            results, self.stats = await dispatch(
                list(problems), strategy.name, pool, concurrency=concurrency,
                grader=grader if grader is not None else (lambda _p: grade), run_ledger=run_ledger,
                on_result=on_result, max_tries=self.max_tries, max_restarts=self.max_restarts)
        finally:
            for actor in self.actors:
                if actor is not None:
                    actor.forget.remote(key)
        return results


class _RayPool:
    """The dispatcher's view of the executor's actors for one run."""

    def __init__(self, executor: RayExecutor, key: str, run: list):
        self.executor, self.key, self.run = executor, key, run
        self.size = executor.replicas

    def start(self, slot: int) -> None:
        if self.executor.actors[slot] is None:  # the first run, or this slot's replica was lost
            self.executor.actors[slot] = self.executor._new_actor()

    async def solve(self, slot: int, problem: Problem, lease: Budget) -> Trace:
        import ray

        actor = self.executor.actors[slot]
        try:
            return await actor.solve.remote(self.key, self.run, problem, lease)
        except ray.exceptions.RayTaskError as exc:  # the problem raised there: its own error, retried elsewhere
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            raise RuntimeError(f"{type(cause).__name__}: {str(cause).splitlines()[-1] if str(cause) else ''}"[:500]) from None
        except (ray.exceptions.RayError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            # the actor is gone (killed, out of memory, its node lost, or its engine failed to start)
            if self.executor.actors[slot] is actor:
                self.executor.actors[slot] = None
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:
                    pass
            raise ReplicaLost(_first_line(exc)) from None


def _check_reachable(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that nothing answers on is one line at once; Ray itself
    retries such an address for minutes."""
    if address in ("local", "auto"):
        return
    import socket

    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ScaleError(f"--ray {address!r}: give auto, ray://HOST:PORT or HOST:PORT (the head node's GCS port, 6379 by default)")
    if int(port) > 65535:
        raise ScaleError(f"--ray {address!r}: port {port} is not a TCP port (1-65535)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:  # refused, no such host, or a name no resolver takes (UnicodeError)
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise ScaleError(f"--ray {address!r}: nothing answers at {host!r} port {port} ({why}); start the head "
                         "with `ray start --head` or give auto for the cluster this machine belongs to") from None


def _first_line(exc: BaseException) -> str:
    """One line for a lost replica: the error its engine raised when there is one (Ray puts the
    creation task's traceback in the message, its last line the exception), else Ray's first line."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "creation task" in text and lines and re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", lines[-1]):
        return f"its engine failed to start: {lines[-1]}"[:500]
    return f"{type(exc).__name__}: {lines[0]}"[:500] if lines else type(exc).__name__
