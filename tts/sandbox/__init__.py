"""Running model-written code: kernel isolation, and a pass decided outside the program's reach.

Every program runs in its own sandbox (see ``launcher.py`` for the steps): fresh user, mount, PID,
network, IPC, UTS and cgroup namespaces; a private root on a size-capped tmpfs that holds read-only
views of only the interpreter and ``/usr``; an unprivileged uid chosen at random per sandbox, with no
capabilities and no_new_privs; a seccomp filter (``bpf.py``); and a cgroup that caps memory, processes
and CPU for the whole process tree (``cgroups.py``). PID 1 of the sandbox is the program itself, so
when it ends or is killed the kernel ends everything it started; the grading process also empties the
cgroup afterwards.

Tests are graded by two sandboxes that talk over pipes (:func:`run_tests`): the *candidate* sandbox
loads the program and answers calls to its function; the *harness* sandbox runs the trusted test code
with that function replaced by a proxy, so the test's comparisons, its expected values and its source
never enter the candidate's process. What crosses is plain data (``wire.py``: JSON values, decoded
into builtin types only), so a program cannot fake a pass by exiting early, overriding ``__eq__``,
tracing the test, or reading the expected values: it has to return them. The verdict travels on a pipe
that only the grading process reads.

When the machine cannot give this isolation (not Linux on x86_64, not root, no writable cgroup memory
and pids controllers, or the kernel refuses a step), running untrusted code is refused with
:class:`SandboxUnavailable`, one line naming what is missing. ``Sandbox(trusted_code_without_isolation=
True)`` runs programs with resource limits only, for code you trust.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping, Sequence

from . import cgroups

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py")
SETUP_FAILED = 125
STATUSES = ("passed", "failed", "timeout", "cpu_limit", "memory_limit", "file_size_limit", "killed")
#: what the program sees in its environment; nothing of the grading process's reaches it
BASE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/work", "TMPDIR": "/tmp"}
MB = 1024 * 1024
# Sandboxed runs at once in this process, whatever number of threads ask: a run's wall-clock timeout
# must measure the program, not the wait for a core (32 problems graded at once timed a correct
# HumanEval solution out). Callers beyond this wait for a slot before their clock starts.
_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


class SandboxUnavailable(RuntimeError):
    """This machine cannot isolate untrusted code; the message says what is missing and what to do."""


@dataclass(frozen=True)
class Sandbox:
    """Limits for one program run (the whole process tree, unless said otherwise)."""

    timeout_s: float = 10.0
    #: CPU seconds per process (the cgroup also holds the tree to one core)
    cpu_s: int = 10
    #: memory for the whole tree (cgroup), and the address-space limit of each process
    memory_mb: int = 512
    #: the largest file a process may write (its stdout and stderr included)
    file_size_mb: int = 16
    #: size of the private tmpfs that holds the working directory and /tmp
    disk_mb: int = 64
    #: processes and threads in the tree at once
    max_processes: int = 32
    #: keep at most this many characters of the program's stdout and stderr in the result
    max_output_chars: int = 4000
    #: extra environment variables to give the program (nothing from the parent is passed otherwise)
    env: Mapping[str, str] = field(default_factory=dict)
    #: run with resource limits only, no isolation: for code you trust, never for model output
    trusted_code_without_isolation: bool = False

    def __post_init__(self) -> None:
        c = "Sandbox"
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or not self.timeout_s > 0 \
                or self.timeout_s == float("inf"):
            raise ValueError(f"{c}.timeout_s must be a positive finite number, got {self.timeout_s!r}")
        for name in ("cpu_s", "memory_mb", "file_size_mb", "disk_mb", "max_processes", "max_output_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{c}.{name} must be a positive integer, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(f"{c}.memory_mb must be at least 64 (the interpreter alone needs about 30), got {self.memory_mb}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(self.env).items()):
            raise ValueError(f"{c}.env must map strings to strings, got {self.env!r}")
        if not isinstance(self.trusted_code_without_isolation, bool):
            raise ValueError(f"{c}.trusted_code_without_isolation must be True or False")
        object.__setattr__(self, "env", dict(self.env))


@dataclass(frozen=True)
class TestResult:
    passed: bool
    status: str
    returncode: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""
    #: why the tests failed, in the harness's words (the first failing assertion or error)
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"TestResult.status must be one of {', '.join(STATUSES)}, got {self.status!r}")


# ------------------------------------------------------------------------------ availability


@lru_cache(maxsize=1)
def _binds() -> list[str]:
    """Host paths the sandbox sees read-only: the system's programs and libraries, and the interpreter."""
    paths = ["/usr", "/bin", "/lib", "/lib64", "/sbin"]
    for p in (os.path.realpath(sys.base_prefix), os.path.dirname(os.path.realpath(sys.executable))):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in paths if not os.path.islink(q)):
            paths.append(p)
    return paths


@lru_cache(maxsize=1)
def _hidden() -> list[str]:
    """Folders inside the bound ones that the sandbox must not see: installed packages (a dataset's
    files, such as HumanEval's tests, may live there), each masked with an empty read-only tmpfs. The
    sandboxed interpreter has the standard library only."""
    import glob
    import site
    import sysconfig

    base = {"base": sys.base_prefix, "platbase": sys.base_prefix}
    candidates = [sysconfig.get_path("purelib", vars=base), sysconfig.get_path("platlib", vars=base),
                  *site.getsitepackages(), site.getusersitepackages(),
                  *glob.glob("/usr/lib/python3*/*-packages"), *glob.glob("/usr/local/lib/python3*/*-packages")]
    found = []
    for p in candidates:
        real = os.path.realpath(p)
        if os.path.isdir(real) and real not in found:
            found.append(real)
    return found


def _host_problem() -> str | None:
    """What this machine lacks for kernel isolation, before trying it."""
    if sys.platform != "linux":
        return f"it needs Linux namespaces and seccomp, and this is {sys.platform}"
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"its seccomp filter is written for x86_64, and this machine is {platform.machine()}"
    if os.geteuid() != 0:
        return ("it runs each program as a fresh unprivileged uid in its own namespaces and cgroup, which needs "
                "root: run tts as root (for example inside a container)")
    if cgroups.version() is None:
        return ("it caps each program's process tree with a cgroup, and no writable cgroup memory and pids "
                "controllers were found under /sys/fs/cgroup")
    return None


_UNAVAILABLE_HINT = ("; for code you trust, Sandbox(trusted_code_without_isolation=True) runs it with resource "
                     "limits only")


@lru_cache(maxsize=1)
def availability() -> str | None:
    """None when untrusted code can run here, else one line saying what is missing. Checked once per
    process: the preconditions, then a probe sandbox whose view from inside must be confined."""
    problem = _host_problem()
    if problem is None:
        problem = _probe_problem()
    return None if problem is None else f"the code sandbox is unavailable here: {problem}{_UNAVAILABLE_HINT}"


def _probe_problem() -> str | None:
    box = Sandbox(timeout_s=30.0)
    with _Workspace() as ws:
        proc = ws.start("probe", box, {})
        code, timed_out = ws.wait(proc, time.monotonic() + box.timeout_s)
        out, err = ws.output(proc, box.max_output_chars)
    if code == SETUP_FAILED:
        return _setup_line(err) or "the sandbox could not be set up"
    if timed_out or code != 0:
        return f"the probe sandbox failed (status {code}): {err.strip()[-300:]}"
    try:
        facts = json.loads(out)
    except ValueError:
        return f"the probe sandbox printed something unexpected: {out[:200]!r}"
    checks = [
        (facts.get("uid") == 65534, "it did not run as an unprivileged uid"),
        (facts.get("pid") == 1, "it did not get its own PID namespace"),
        (facts.get("cap_eff") == "0000000000000000", "it kept capabilities"),
        (facts.get("seccomp") == "2", "the seccomp filter was not in force"),
        (facts.get("no_new_privs") == "1", "no_new_privs was not set"),
        (facts.get("interfaces") == ["lo"], "it could see network interfaces"),
        (facts.get("inet_socket") is False, "it could open an internet socket"),
        ("root" not in facts.get("root_entries", ["root"]) or os.path.realpath(sys.base_prefix).startswith("/root"),
         "it could see the host's files"),
    ]
    failed = [why for ok, why in checks if not ok]
    return "the probe sandbox was not confined: " + "; ".join(failed) if failed else None


def require_isolation() -> None:
    """Raise SandboxUnavailable unless untrusted code can run here (the CLI calls this before a run)."""
    problem = availability()
    if problem is not None:
        raise SandboxUnavailable(problem)


def _setup_line(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if line.startswith("tts-sandbox: "):
            return line[len("tts-sandbox: "):]
    return None


# ------------------------------------------------------------------------------ one workspace


class _Workspace:
    """The grading side of one run: a root-only temporary folder holding the mount points and job files,
    the cgroups, the processes and their output files; everything is removed on exit."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tts-sandbox-")
        self.groups: list[cgroups.Group] = []  # every group made, also one whose process failed to start
        self.procs: list[subprocess.Popen] = []  # each carries its group and output files (see start)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            _kill(proc)
        for group in self.groups:
            group.remove()
        for proc in self.procs:
            for f in proc.tts_output:
                f.close()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, role: str, box: Sandbox, job: dict, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        isolate = not box.trusted_code_without_isolation
        name = f"{role}-{len(self.procs)}"
        root = os.path.join(self.dir, name)
        os.mkdir(root, 0o700)
        group = None
        if isolate:
            try:
                group = cgroups.Group(box.memory_mb * MB, box.max_processes + 2)
            except cgroups.CgroupError as exc:
                raise SandboxUnavailable(f"the code sandbox is unavailable here: {exc}{_UNAVAILABLE_HINT}") from None
            self.groups.append(group)
        uid = 0x40000000 + secrets.randbelow(0x3FFF0000)  # an unprivileged uid nobody else uses
        job = {
            **job, "role": role, "isolate": isolate, "uid": uid, "gid": uid, "root": root,
            "cgroups": group.paths if group else [], "binds": _binds(), "hidden": _hidden(),
            "cpu_s": box.cpu_s, "memory_mb": box.memory_mb, "file_size_mb": box.file_size_mb,
            "disk_mb": box.disk_mb, "max_processes": box.max_processes,
            "env": {**BASE_ENV, **({"HOME": root, "TMPDIR": root} if not isolate else {}), **box.env},
        }
        job_path = os.path.join(self.dir, name + ".json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        out_f, err_f = tempfile.TemporaryFile(dir=self.dir), tempfile.TemporaryFile(dir=self.dir)
        with open(job_path, "rb") as stdin:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", LAUNCHER], stdin=stdin, stdout=out_f, stderr=err_f,
                pass_fds=pass_fds, cwd=root, env={"PATH": BASE_ENV["PATH"], "LANG": "C.UTF-8"},
                start_new_session=True,
            )
        os.unlink(job_path)
        proc.tts_group, proc.tts_output = group, (out_f, err_f)
        self.procs.append(proc)
        return proc

    @staticmethod
    def wait(proc: subprocess.Popen, deadline: float) -> tuple[int | None, bool]:
        try:
            return proc.wait(timeout=max(0.0, deadline - time.monotonic())), False
        except subprocess.TimeoutExpired:
            _kill(proc)
            return proc.returncode, True

    def output(self, proc: subprocess.Popen, limit: int) -> tuple[str, str]:
        out_f, err_f = proc.tts_output
        return _read_clipped(out_f, limit), _read_clipped(err_f, limit)

    def stop(self, proc: subprocess.Popen) -> None:
        _kill(proc)
        if proc.tts_group is not None:
            proc.tts_group.kill()


def _kill(proc: subprocess.Popen) -> None:
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


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


def _status(code: int | None, timed_out: bool, group: cgroups.Group | None, stderr: str) -> str:
    if timed_out:
        return "timeout"
    if group is not None and group.out_of_memory():
        return "memory_limit"
    if code == 0:
        return "passed"
    signum = code - 128 if code is not None and code > 128 else (-code if code is not None and code < 0 else None)
    if signum == signal.SIGXCPU:
        return "cpu_limit"
    if signum == signal.SIGXFSZ:
        return "file_size_limit"
    if signum is not None:
        return "killed"
    tail = stderr[-2000:]
    if "MemoryError" in tail:
        return "memory_limit"
    if "File too large" in tail or "No space left on device" in tail:
        return "file_size_limit"
    return "failed"


def _check_setup(code: int | None, stderr: str) -> None:
    if code == SETUP_FAILED and _setup_line(stderr):
        raise SandboxUnavailable(f"the code sandbox is unavailable here: {_setup_line(stderr)}{_UNAVAILABLE_HINT}")


def _ready(box: Sandbox) -> None:
    if not box.trusted_code_without_isolation:
        require_isolation()


# ------------------------------------------------------------------------------ public entry points


def run_program(source: str, sandbox: Sandbox | None = None) -> TestResult:
    """Run a Python program in a sandbox; ``passed`` means it exited with status 0. A program can always
    exit 0, so this grades nothing: use :func:`run_tests` to grade."""
    box = sandbox or Sandbox()
    _ready(box)
    with _SLOTS:
        return _run_program(source, box)


def _run_program(source: str, box: Sandbox) -> TestResult:
    start = time.perf_counter()
    with _Workspace() as ws:
        proc = ws.start("script", box, {"source": source})
        code, timed_out = ws.wait(proc, time.monotonic() + box.timeout_s)
        ws.stop(proc)
        out, err = ws.output(proc, box.max_output_chars)
        _check_setup(code, err)
        status = _status(code, timed_out, proc.tts_group, err)
    return TestResult(status == "passed", status, code, time.perf_counter() - start, out, err)


def run_tests(program: str, tests: str, sandbox: Sandbox | None = None, *, entry_point: str,
              setup: str = "", call: str | None = None) -> TestResult:
    """Grade ``program`` by ``tests``. The program is loaded in one sandbox; ``setup`` (trusted code the
    tests need, such as HumanEval's prompt with its helper functions) and then ``tests`` run in another,
    with ``entry_point`` bound to a proxy that calls the program's function; ``call`` names a function
    the tests define to be called with it (HumanEval's ``check``). Passed means the tests ran to the end
    after at least one call."""
    box = sandbox or Sandbox()
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise ValueError(f"run_tests: entry_point must be a function name, got {entry_point!r}")
    _ready(box)
    with _SLOTS:
        return _run_tests(program, tests, box, entry_point, setup, call)


def _run_tests(program: str, tests: str, box: Sandbox, entry_point: str, setup: str, call: str | None) -> TestResult:
    start = time.perf_counter()
    deadline = time.monotonic() + box.timeout_s
    to_candidate_r, to_candidate_w = os.pipe()
    to_harness_r, to_harness_w = os.pipe()
    report_r, report_w = os.pipe()
    fds = [to_candidate_r, to_candidate_w, to_harness_r, to_harness_w, report_r, report_w]
    try:
        with _Workspace() as ws:
            cand = ws.start("candidate", box, {"source": program, "entry_point": entry_point,
                                               "fds": {"in": to_candidate_r, "out": to_harness_w}},
                            pass_fds=(to_candidate_r, to_harness_w))
            harness = ws.start("harness", box, {"setup": setup, "tests": tests, "entry_point": entry_point,
                                                "call": call, "fds": {"in": to_harness_r, "out": to_candidate_w,
                                                                      "report": report_w}},
                               pass_fds=(to_harness_r, to_candidate_w, report_w))
            for fd in (to_candidate_r, to_candidate_w, to_harness_r, to_harness_w, report_w):
                os.close(fd)
                fds.remove(fd)
            code, timed_out = ws.wait(harness, deadline)
            ws.stop(harness)
            ws.stop(cand)  # the tests are over: whatever the candidate still does is discarded
            cand_code = cand.returncode
            verdict = _read_verdict(report_r)
            out, err = ws.output(cand, box.max_output_chars)
            _, h_err = ws.output(harness, box.max_output_chars)
            _check_setup(code, h_err)
            _check_setup(cand_code, err)
            passed = bool(verdict.get("passed") is True and code == 0 and not timed_out)
            if passed:
                status = "passed"
            elif timed_out:
                status = "timeout"
            else:
                status = _status(cand_code if cand_code not in (None, 0, -signal.SIGKILL) else None,
                                 False, cand.tts_group, err)
                status = "failed" if status == "passed" else status
            detail = str(verdict.get("error", ""))[:500] or (h_err.strip()[-500:] if not passed else "")
    finally:
        for fd in fds:
            os.close(fd)
    return TestResult(passed, status, code, time.perf_counter() - start, out, err, detail)


def _read_verdict(fd: int) -> dict:
    """The harness's verdict: one small JSON object; anything else counts as no verdict."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 65536)
    except (BlockingIOError, OSError):
        data = b""
    try:
        verdict = json.loads(data.split(b"\n", 1)[0]) if data else {}
    except ValueError:
        verdict = {}
    return verdict if isinstance(verdict, dict) else {}


def run_tests_many(jobs: Sequence[Mapping], sandbox: Sandbox | None = None, workers: int | None = None) -> list[TestResult]:
    """Run many :func:`run_tests` jobs (mappings of its keyword arguments: program, tests, entry_point,
    setup, call), ``workers`` at a time (default: the CPU count, at most 8)."""
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    box = sandbox or Sandbox()
    _ready(box)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_tests(sandbox=box, **job), jobs))
