"""One cgroup per sandboxed process tree: memory, process count and CPU capped for the whole tree, and a
list of every process in it, so nothing a program starts can outlive or outgrow its run.

cgroup v1 (a hierarchy per controller, as on this project's machines) and v2 (one unified hierarchy)
are both supported; groups live under ``tts-sandbox/`` and are removed after each run.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

ROOT = "/sys/fs/cgroup"
PARENT = "tts-sandbox"
V1_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    pass


def version() -> int | None:
    """1 or 2 when this process can create sandbox cgroups (memory and pids controllers), else None."""
    if all(os.access(os.path.join(ROOT, c), os.W_OK) for c in ("memory", "pids")):
        return 1
    controllers = os.path.join(ROOT, "cgroup.controllers")
    if os.path.exists(controllers) and os.access(ROOT, os.W_OK):
        with open(controllers) as f:
            available = f.read().split()
        if "memory" in available and "pids" in available:
            return 2
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class Group:
    """A fresh cgroup (per controller on v1) with the given limits; ``paths`` are joined by the launcher."""

    def __init__(self, memory_bytes: int, max_processes: int, cpus: float = 1.0):
        self.version = version()
        if self.version is None:
            raise CgroupError("no writable cgroup memory and pids controllers")
        name = uuid.uuid4().hex
        self.paths: list[str] = []
        try:
            if self.version == 1:
                for controller in V1_CONTROLLERS:
                    base = os.path.join(ROOT, controller)
                    if not os.access(base, os.W_OK):
                        continue  # cpu is optional: the wall-clock timeout bounds CPU time anyway
                    os.makedirs(os.path.join(base, PARENT), exist_ok=True)
                    path = os.path.join(base, PARENT, name)
                    os.mkdir(path)
                    self.paths.append(path)
                    if controller == "memory":
                        _write(os.path.join(path, "memory.limit_in_bytes"), str(memory_bytes))
                        swap = os.path.join(path, "memory.memsw.limit_in_bytes")
                        if os.path.exists(swap):
                            _write(swap, str(memory_bytes))
                    elif controller == "pids":
                        _write(os.path.join(path, "pids.max"), str(max_processes))
                    else:
                        _write(os.path.join(path, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
                        _write(os.path.join(path, "cpu.cfs_quota_us"), str(int(CPU_PERIOD_US * cpus)))
            else:
                parent = os.path.join(ROOT, PARENT)
                os.makedirs(parent, exist_ok=True)
                _write(os.path.join(ROOT, "cgroup.subtree_control"), "+memory +pids")
                _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")
                path = os.path.join(parent, name)
                os.mkdir(path)
                self.paths.append(path)
                _write(os.path.join(path, "memory.max"), str(memory_bytes))
                swap = os.path.join(path, "memory.swap.max")
                if os.path.exists(swap):
                    _write(swap, "0")
                _write(os.path.join(path, "pids.max"), str(max_processes))
        except OSError as exc:
            self.remove()
            raise CgroupError(f"creating a sandbox cgroup: {exc.strerror} ({exc.filename})") from None

    def _procs(self) -> list[int]:
        pids: set[int] = set()
        for path in self.paths:
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    pids.update(int(line) for line in f if line.strip())
            except (OSError, ValueError):
                pass
        return sorted(pids)

    def out_of_memory(self) -> bool:
        """Whether the kernel's OOM killer struck inside this group."""
        for path in self.paths:
            for name, key in (("memory.oom_control", "oom_kill"), ("memory.events", "oom_kill")):
                try:
                    with open(os.path.join(path, name)) as f:
                        for line in f:
                            parts = line.split()
                            if len(parts) == 2 and parts[0] == key and int(parts[1]) > 0:
                                return True
                except (OSError, ValueError):
                    continue
        return False

    def kill(self) -> None:
        """SIGKILL every process in the group until none is left (a process may fork while we look)."""
        for _ in range(200):
            procs = self._procs()
            if not procs:
                return
            for pid in procs:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.005)

    def remove(self) -> None:
        self.kill()
        for path in self.paths:
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)  # the last process is still being torn down
