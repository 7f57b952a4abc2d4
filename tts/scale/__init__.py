"""Scaling a run out: the driver that spreads problems over replicas (``dispatch``), what a replica
does (``replica``), and the Ray executor (``ray_executor``; Ray is imported only when a run starts)."""

from .dispatch import MAX_RESTARTS, MAX_TRIES, Pool, ReplicaLost, ReplicaStats, dispatch
from .replica import BackendSpec, Replica, RunSpec
from .ray_executor import RayExecutor, ScaleError

__all__ = ["BackendSpec", "MAX_RESTARTS", "MAX_TRIES", "Pool", "RayExecutor", "Replica", "ReplicaLost",
           "ReplicaStats", "RunSpec", "ScaleError", "dispatch"]
