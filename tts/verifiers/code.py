"""Sandboxed execution of candidate programs against unit tests (HumanEval-style code grading).

Each run is a fresh ``python -I -B`` process (isolated mode: no user site, no ``PYTHON*`` variables)
started in its own session, in a new temporary working directory that is deleted afterwards. A small
bootstrap, run in the child before the candidate's code, applies the limits below; the parent enforces
a wall-clock timeout and then kills the child's whole process group (and any process left in its
session), whether the program finished or not.

What is enforced, and how strongly:

* **Guaranteed by the kernel**: CPU time (``RLIMIT_CPU``), address space (``RLIMIT_AS``, so a memory
  bomb gets ``MemoryError``), size of any file written (``RLIMIT_FSIZE``), no core dumps, the wall-clock
  timeout (SIGKILL to the process group), and a scrubbed environment: the child's environment is built
  from scratch (``PATH``, ``LANG``, ``HOME``/``TMPDIR`` pointing at the temp dir), so none of the
  parent's variables (API keys, tokens) reach it.
* **Guaranteed when ``unshare`` works on the machine** (Linux as root, or with unprivileged user
  namespaces): no network at all; the program runs in a new, empty network namespace (only a down
  loopback device). :func:`network_isolation` says which mode is in use.
* **Best effort, in-process** (a ``sys.addaudithook`` hook installed before the candidate runs; audit
  hooks cannot be removed from Python, but native code could bypass them, so ``ctypes`` and
  ``_posixsubprocess`` imports are refused too): no socket other than AF_UNIX; no
  ``subprocess``/``os.system``/``exec``/``spawn``; at most ``max_processes`` live processes in the
  sandbox's session (``os.fork`` is checked against a count of the session's processes, because
  ``RLIMIT_NPROC`` does not bind root, and as non-root it is also set); no ``os.setsid``/``setpgid``
  (which would escape the process-group kill); no writing, creating, deleting, renaming or chmod-ing
  outside the temp dir; no reading another process's ``/proc/<pid>/environ``.
* **Not guaranteed**: reading files outside the temp dir (the program runs as the same user, so it can
  read whatever that user can, apart from other processes' environments); isolation against native
  extensions or interpreter bugs. For untrusted code at scale, run this inside a container or VM too.

A program passes when it exits with status 0 within the limits.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping, Sequence

from ..budget import Ledger
from ..types import Completion, Problem

STATUSES = ("passed", "failed", "timeout", "cpu_limit", "memory_limit", "file_size_limit", "killed")


@dataclass(frozen=True)
class Sandbox:
    """Limits for one program run."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 16
    max_processes: int = 16
    #: keep at most this many characters of the program's stdout and stderr in the result
    max_output_chars: int = 4000
    #: extra environment variables to give the program (nothing from the parent is passed otherwise)
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = "Sandbox"
        if not isinstance(self.timeout_s, (int, float)) or not self.timeout_s > 0:
            raise ValueError(f"{c}.timeout_s must be a positive number, got {self.timeout_s!r}")
        for name in ("cpu_s", "memory_mb", "file_size_mb", "max_processes", "max_output_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{c}.{name} must be a positive integer, got {value!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(self.env).items()):
            raise ValueError(f"{c}.env must map strings to strings, got {self.env!r}")
        object.__setattr__(self, "env", dict(self.env))


@dataclass(frozen=True)
class TestResult:
    passed: bool
    status: str
    returncode: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"TestResult.status must be one of {', '.join(STATUSES)}, got {self.status!r}")


# Runs in the child before the candidate's code. argv: [config json, program path].
_BOOTSTRAP = r'''
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
path = sys.argv[2]
sys.argv = [path]
sys.dont_write_bytecode = True
MB = 1024 * 1024
def limit(which, value, hard=None):
    try:
        resource.setrlimit(which, (value, value if hard is None else hard))
    except (ValueError, OSError):
        pass
# soft < hard: the soft limit sends SIGXCPU (reported as cpu_limit), the hard one SIGKILLs a program that ignores it
limit(resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1)
limit(resource.RLIMIT_AS, cfg["memory_mb"] * MB)
limit(resource.RLIMIT_FSIZE, cfg["file_size_mb"] * MB)
limit(resource.RLIMIT_CORE, 0)
if cfg["nproc"]:
    limit(resource.RLIMIT_NPROC, cfg["nproc"])

ROOT = os.path.realpath(cfg["root"])
SID = os.getsid(0)
MAX_PROCS = cfg["max_processes"]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
BLOCKED_EVENTS = {
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile",
    "pty.spawn", "os.forkpty", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
    "socket.connect", "socket.bind", "socket.sendto", "os.kill", "os.killpg",
}
PATH_EVENTS = {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
               "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod", "shutil.rmtree", "os.removexattr", "os.setxattr"}
TWO_PATH_EVENTS = {"os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.copytree", "shutil.move"}
BLOCKED_IMPORTS = {"ctypes", "_ctypes", "_posixsubprocess", "cffi"}
_real_listdir = os.listdir
AF_UNIX = 1  # the same on Linux and macOS; importing socket here would cost every run
_in_hook = [False]

def inside(p):
    if isinstance(p, int):
        return True  # an already-open descriptor was checked when it was opened
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    real = os.path.realpath(os.path.join(ROOT, os.fspath(p)))
    return real == ROOT or real.startswith(ROOT + os.sep) or real == "/dev/null"

def session_processes():
    count = 0
    for name in _real_listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/" + name + "/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                if int(fields[3]) == SID and fields[0] != b"Z":
                    count += 1
            except OSError:
                pass
    return count

def deny(what):
    raise PermissionError("sandbox: " + what + " is not allowed")

def hook(event, args):
    if _in_hook[0]:
        return  # our own /proc reads below
    if event in BLOCKED_EVENTS:
        deny(event)
    elif event == "socket.__new__":
        if args[1] != AF_UNIX:
            deny("network sockets")
    elif event == "os.fork":
        _in_hook[0] = True
        try:
            if session_processes() >= MAX_PROCS:
                deny("more than %d processes" % MAX_PROCS)
        finally:
            _in_hook[0] = False
    elif event == "import" and args[0].split(".")[0] in BLOCKED_IMPORTS:
        deny("importing " + args[0])
    elif event == "open":
        p, mode, flags = args
        if p is None or isinstance(p, int):
            return
        s = os.fsdecode(p) if isinstance(p, bytes) else str(p)
        if s.startswith("/proc/") and s.endswith("/environ") and not s.startswith("/proc/self/"):
            if s.split("/")[2] != str(os.getpid()):
                deny("reading another process's environment")
        writing = (mode is not None and any(ch in str(mode) for ch in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & WRITE_FLAGS)
        if writing and not inside(s):
            deny("writing outside the sandbox directory: " + s)
    elif event in PATH_EVENTS:
        if args and not inside(args[0]):
            deny(event + " outside the sandbox directory")
    elif event in TWO_PATH_EVENTS:
        if not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
            deny(event + " outside the sandbox directory")

def _no_new_session(*args, **kwargs):
    deny("leaving the sandbox's process group")
os.setsid = os.setpgrp = os.setpgid = _no_new_session
sys.modules.pop("ctypes", None)
os.chdir(ROOT)
sys.path[0:0] = [ROOT]
sys.addaudithook(hook)
del json, resource
with open(path) as _f:
    _source = _f.read()
_code = compile(_source, path, "exec")
del _f, _source
exec(_code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})
'''


@lru_cache(maxsize=1)
def network_isolation() -> str:
    """How the sandbox cuts the network here: "namespace" (kernel-enforced) or "audit-hook" (best effort)."""
    return "namespace" if _unshare_prefix() else "audit-hook"


@lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """``unshare`` arguments that give the child an empty network namespace, if the machine allows it."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    # As root a plain network namespace works; otherwise a user namespace must come with it.
    for prefix in ((exe, "-n"), (exe, "-r", "-n")):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def _user_process_count() -> int:
    uid = os.getuid()
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _session_members(sid: int) -> list[int]:
    """Processes in session ``sid`` other than its (already reaped) leader."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == sid:
            continue  # a live process with pid == sid after the leader was reaped is a stranger
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) == sid:
                members.append(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return members


def _kill_session(sid: int) -> None:
    """SIGKILL whatever the program left in its session (background children, also ones that moved to
    another process group). Repeated until none is left, because a process may fork while we scan."""
    if not os.path.isdir("/proc"):
        return
    for _ in range(20):
        members = _session_members(sid)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def _read_clipped(f, limit: int) -> str:
    """The first and last ``limit // 2`` characters of an output file (never all of a huge one)."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if size <= 2 * limit:
        return _clip(f.read(), limit)
    head = f.read(limit)
    f.seek(size - limit)
    return _clip(head + f.read(), limit)


def _clip(text: bytes, limit: int) -> str:
    s = text.decode("utf-8", "replace")
    return s if len(s) <= limit else s[: limit // 2] + "\n...[clipped]...\n" + s[-limit // 2 :]


def run_program(source: str, sandbox: Sandbox | None = None) -> TestResult:
    """Run a Python program in the sandbox; it passes when it exits with status 0."""
    box = sandbox or Sandbox()
    root = tempfile.mkdtemp(prefix="tts-sandbox-")
    start = time.perf_counter()
    try:
        program = os.path.join(root, "main.py")
        with open(program, "w") as f:
            f.write(source)
        # RLIMIT_NPROC counts every process of the user, so as non-root it is set relative to what the
        # user already runs; root ignores it and relies on the fork check in the bootstrap.
        nproc = 0 if os.getuid() == 0 else _user_process_count() + box.max_processes
        cfg = {
            "cpu_s": box.cpu_s, "memory_mb": box.memory_mb, "file_size_mb": box.file_size_mb,
            "max_processes": box.max_processes, "nproc": nproc, "root": root,
        }
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": root, "TMPDIR": root, **box.env}
        cmd = [*_unshare_prefix(), sys.executable, "-I", "-B", "-c", _BOOTSTRAP, json.dumps(cfg), program]
        # Output goes to files, not pipes: the child's RLIMIT_FSIZE caps them, so a program printing in
        # a loop cannot fill this process's memory, and no pipe can block on a full buffer.
        with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
            proc = subprocess.Popen(
                cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f,
                start_new_session=True,  # its own process group and session, so all of it can be killed
            )
            timed_out = False
            try:
                proc.wait(timeout=box.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the leader is not reaped yet: its group is ours
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
            finally:
                _kill_session(proc.pid)  # background children outliving the program die too
            seconds = time.perf_counter() - start
            out = _read_clipped(out_f, box.max_output_chars)
            err = _read_clipped(err_f, box.max_output_chars)
        status = _status(proc.returncode, timed_out, err)
        return TestResult(status == "passed", status, proc.returncode, seconds, out, err)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _status(returncode: int | None, timed_out: bool, stderr: str) -> str:
    if timed_out:
        return "timeout"
    if returncode == 0:
        return "passed"
    if returncode == -signal.SIGXCPU:
        return "cpu_limit"
    if returncode == -signal.SIGXFSZ:
        return "file_size_limit"
    if returncode is not None and returncode < 0:
        return "killed"
    tail = stderr[-2000:]
    if "MemoryError" in tail:
        return "memory_limit"
    if "File too large" in tail:  # Python ignores SIGXFSZ, so the limit surfaces as EFBIG
        return "file_size_limit"
    return "failed"


def run_tests(program: str, tests: str, sandbox: Sandbox | None = None) -> TestResult:
    """Run ``program`` followed by ``tests`` (asserts, or a check function and its call)."""
    return run_program(program.rstrip() + "\n\n" + tests.rstrip() + "\n", sandbox)


def run_tests_many(
    jobs: Sequence[tuple[str, str]], sandbox: Sandbox | None = None, workers: int | None = None
) -> list[TestResult]:
    """Run many (program, tests) pairs, ``workers`` at a time (default: the CPU count, at most 8)."""
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    if workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_tests(job[0], job[1], sandbox), jobs))


_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def code_from_text(text: str) -> str:
    """The program in a model's reply: the last fenced code block, else the whole text."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def humaneval_program(problem: Mapping[str, str], completion: str) -> tuple[str, str]:
    """(program, tests) for a HumanEval problem: prompt + completion, then its check() call."""
    return problem["prompt"] + completion, problem["test"] + f"\ncheck({problem['entry_point']})\n"


@dataclass(frozen=True)
class CodeVerifier:
    """Reward verifier: 1.0 when a candidate passes the tests it is allowed to see, else 0.0.

    The tests come from ``problem.metadata[tests_key]`` (public/visible tests, never the hidden grading
    tests), the candidate's code is ``metadata[prefix_key]`` (e.g. a function signature the model
    continued) followed by the code in its reply, and ``check(entry_point)`` is appended when the
    problem names an entry point. It runs no model, so it charges the ledger nothing but wall time.
    """

    sandbox: Sandbox = field(default_factory=Sandbox)
    tests_key: str = "test"
    prefix_key: str = "prompt"
    entry_point_key: str = "entry_point"
    workers: int = 2
    name: str = "code_tests"
    needs_logprobs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"CodeVerifier.workers must be a positive integer, got {self.workers!r}")
        for key in ("tests_key", "prefix_key", "entry_point_key", "name"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"CodeVerifier.{key} must be a string, got {getattr(self, key)!r}")

    async def score(self, problem: Problem, completions: Sequence[Completion], ledger: Ledger) -> list[float]:
        meta = problem.metadata
        if self.tests_key not in meta:
            raise ValueError(f"CodeVerifier needs problem.metadata[{self.tests_key!r}] (the tests to run)")
        tests = meta[self.tests_key]
        if meta.get(self.entry_point_key):
            tests = tests + f"\ncheck({meta[self.entry_point_key]})\n"
        prefix = meta.get(self.prefix_key, "")
        jobs = [(prefix + code_from_text(c.text), tests) for c in completions]
        results = await asyncio.to_thread(run_tests_many, jobs, self.sandbox, self.workers)
        return [1.0 if r.passed else 0.0 for r in results]
