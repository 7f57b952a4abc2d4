"""Engine processes that die with the run that started them, however it ends.

vLLM starts its engine core (and the engine core its workers) as child processes; when ``tts run`` is
killed with SIGKILL nothing of tts runs any more, and those children would live on holding the
model and its KV cache. So every such child asks the kernel, as it starts, to SIGKILL it when its
parent dies (``PR_SET_PDEATHSIG``); each level watches the one above it, so the whole tree goes.

The children are Python processes that multiprocessing starts: with the "spawn" method they import the
parent's main module (which imports tts), and with "fork" they run the fork hook registered here.
:func:`arm` sets an environment variable the children inherit, so only processes started after a tts
backend asked for it take part; the tts process itself never dies with *its* parent (``nohup`` keeps
working).
"""

from __future__ import annotations

import ctypes  # imported here, not in die_with_parent: that also runs between fork and exec
import os
import signal
import sys

ENV = "TTS_DIE_WITH_PARENT"
PR_SET_PDEATHSIG = 1
_hooked = False


def die_with_parent() -> None:
    """Ask for SIGKILL when this process's parent dies; exit at once if it already has."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


def _is_multiprocessing_child() -> bool:
    # A spawned child gets its parent's sys.argv back before it imports the main module, so argv cannot
    # tell; its process name can: multiprocessing names every process but the first.
    if "multiprocessing" not in sys.modules:
        return False
    import multiprocessing

    return multiprocessing.current_process().name != "MainProcess"


def arm() -> None:
    """Make every engine process started from now on (and its children) die with its parent."""
    os.environ[ENV] = "1"
    _hook_forks()


def _hook_forks() -> None:
    global _hooked
    if not _hooked and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=die_with_parent)
        _hooked = True


def on_import() -> None:
    """Called when tts is imported: a multiprocessing child of an armed process joins in."""
    if os.environ.get(ENV) == "1" and _is_multiprocessing_child():
        die_with_parent()
        _hook_forks()
