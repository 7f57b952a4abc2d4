"""The sandbox launcher: ``python -I -S -B launcher.py < job.json``, started as root by tts.sandbox.

Standard library only, and everything it needs is imported before the program is confined. It joins
the run's cgroups, makes fresh mount, PID, network, IPC, UTS and cgroup namespaces, and forks: the
parent stays outside as a supervisor that only waits and passes on the exit status; the child is PID 1
of the new namespace (so when it exits, the kernel kills everything the program started). The child
builds a private root on a size-capped tmpfs with read-only views of only what the interpreter needs,
pivots into it, becomes an unprivileged uid in a fresh user namespace with no capabilities, sets
no_new_privs, its resource limits and the seccomp filter, and only then runs its role:

``probe``      report what the confinement looks like from inside (the availability check)
``script``     run a program as ``__main__``; its exit status is the result (no grading guarantee)
``candidate``  load a program and answer calls to one function over a pipe (values via ``wire``)
``harness``    run trusted test code with that function replaced by a proxy to the candidate's
               sandbox, and report the verdict on a pipe only the grading process reads

A failure while confining exits with status 125 and one line on stderr starting ``tts-sandbox:``.
"""

import builtins
import json
import os
import signal
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bpf  # noqa: E402
import jail  # noqa: E402
import wire  # noqa: E402

SETUP_FAILED = 125
MB = 1024 * 1024
DEVICES = ("null", "zero", "full", "random", "urandom")


def confine(job: dict) -> None:
    """Returns in PID 1 of the sandbox, confined; the supervisor never returns."""
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL, "asking to die with the grading process")
    for group in job["cgroups"]:
        try:
            with open(os.path.join(group, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError as exc:
            raise jail.JailError(f"joining cgroup {group}: {exc.strerror}") from None
    jail.unshare(jail.CLONE_NEWNS | jail.CLONE_NEWPID | jail.CLONE_NEWNET | jail.CLONE_NEWIPC
                 | jail.CLONE_NEWUTS | jail.CLONE_NEWCGROUP, "creating namespaces")
    pid = os.fork()
    if pid:
        supervise(pid)
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL, "asking to die with the supervisor")
    build_root(job)
    jail.drop_to(job["uid"], job["gid"])
    # Changing uid makes the kernel mark the process undumpable, which hands its /proc/self files to
    # root; the process must own them to write its user namespace's uid map.
    jail.prctl(jail.PR_SET_DUMPABLE, 1, "marking the process dumpable")
    jail.prctl(jail.PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")
    jail.enter_user_namespace(job["uid"], job["gid"])
    jail.set_limits(job["cpu_s"], job["memory_mb"] * MB, job["file_size_mb"] * MB, job["max_processes"])
    bpf.install()
    os.chdir("/work")


def supervise(pid: int) -> None:
    """Wait for the sandbox's PID 1 and exit with its status (128 + signal when it was killed)."""
    os.closerange(3, 1 << 16)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def build_root(job: dict) -> None:
    root = job["root"]
    jail.mount(None, "/", None, jail.MS_REC | jail.MS_PRIVATE, None, "making mounts private")
    jail.mount("tmpfs", root, "tmpfs", jail.MS_NOSUID, f"size={job['disk_mb']}m,nr_inodes=4096,mode=0755",
               "mounting the sandbox's tmpfs")
    for path in job["binds"]:
        if os.path.islink(path):  # /bin -> usr/bin on merged-/usr systems
            os.symlink(os.readlink(path), root + path)
        elif os.path.exists(path):
            jail.bind_readonly(path, root + path)
    for path in job["hidden"]:
        if os.path.isdir(root + path):
            jail.mount("tmpfs", root + path, "tmpfs", jail.MS_RDONLY | jail.MS_NOSUID | jail.MS_NODEV, "size=4k",
                       f"hiding {path}")
    os.makedirs(root + "/dev", exist_ok=True)
    for name in DEVICES:
        jail.bind_device("/dev/" + name, f"{root}/dev/{name}")
    os.makedirs(root + "/proc", exist_ok=True)
    jail.mount("proc", root + "/proc", "proc", jail.MS_NOSUID | jail.MS_NODEV | jail.MS_NOEXEC, None,
               "mounting /proc for the new PID namespace")
    for name in ("work", "tmp"):
        os.mkdir(f"{root}/{name}", 0o700)
        os.chown(f"{root}/{name}", job["uid"], job["gid"])
    try:
        import socket

        socket.sethostname("sandbox")
    except OSError:
        pass
    jail.pivot_root(root)


# ---------------------------------------------------------------------------------------- roles


def probe(job: dict) -> int:
    """What a program in the sandbox can see and do, for the availability check."""
    import socket

    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    facts = {
        "uid": os.getuid(), "pid": os.getpid(), "cap_eff": status.get("CapEff"), "seccomp": status.get("Seccomp"),
        "no_new_privs": status.get("NoNewPrivs"), "interfaces": _interfaces(),
        "root_entries": sorted(os.listdir("/")),
    }
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        facts["inet_socket"] = True
    except OSError:
        facts["inet_socket"] = False
    print(json.dumps(facts))
    return 0


def _interfaces() -> list[str]:
    with open("/proc/net/dev") as f:
        return sorted(line.split(":")[0].strip() for line in f.readlines()[2:])


def script(job: dict) -> int:
    code = compile(job["source"], "main.py", "exec")
    exec(code, {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__})
    return 0


def candidate(job: dict) -> int:
    """Load the program, then answer calls until the harness closes the pipe. Everything here runs beside
    untrusted code that may replace it: the harness trusts nothing it receives beyond plain values."""
    calls = os.fdopen(job["fds"]["in"], "rb")
    replies = os.fdopen(job["fds"]["out"], "wb", buffering=0)
    namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        exec(compile(job["source"], "candidate.py", "exec"), namespace)
        function = namespace.get(job["entry_point"])
        if not callable(function):
            raise NameError(f"the program defines no function {job['entry_point']!r}")
        replies.write(wire.dumps({"loaded": True}))
    except BaseException as exc:  # noqa: BLE001: whatever the program raised is its failure to load
        replies.write(wire.dumps({"load_error": _describe(exc)}))
        traceback.print_exc()
        return 1
    while True:
        message = wire.read_message(calls)
        if message is None:
            return 0
        try:
            args = wire.decode(message["args"])
            kwargs = wire.decode(message["kwargs"])
            result = function(*args, **kwargs)
            reply = {"ok": wire.encode(result)}
        except BaseException as exc:  # noqa: BLE001
            reply = {"raised": type(exc).__name__, "message": str(exc)[:500]}
        try:
            replies.write(wire.dumps(reply))
        except wire.WireError as exc:
            replies.write(wire.dumps({"raised": "ValueError", "message": str(exc)}))


class CandidateGone(BaseException):
    """The candidate's sandbox stopped answering. A BaseException, so test code that catches Exception
    cannot turn a dead candidate into a pass."""


class Proxy:
    """Stands in for the candidate's function inside the test code."""

    def __init__(self, calls, replies, name: str):
        self.calls, self.replies, self.__name__ = calls, replies, name
        self.count = 0
        self.loaded = False

    def _receive(self):
        try:
            message = wire.read_message(self.replies)
        except wire.WireError as exc:
            raise CandidateGone(f"the candidate sent an unreadable reply: {exc}") from None
        if not isinstance(message, dict):
            raise CandidateGone("the candidate stopped (exited, crashed or was killed)")
        return message

    def __call__(self, *args, **kwargs):
        if not self.loaded:
            hello = self._receive()
            if "load_error" in hello:
                raise CandidateGone(f"the program failed to load: {str(hello['load_error'])[:300]}")
            if hello.get("loaded") is not True:
                raise CandidateGone("the candidate's sandbox did not start properly")
            self.loaded = True
        try:
            self.calls.write(wire.dumps({"args": wire.encode(list(args)), "kwargs": wire.encode(kwargs)}))
            self.calls.flush()
        except BrokenPipeError:
            raise CandidateGone("the candidate stopped (exited, crashed or was killed)") from None
        self.count += 1
        reply = self._receive()
        if "ok" in reply:
            try:
                return wire.decode(reply["ok"])
            except wire.WireError as exc:
                raise CandidateGone(f"the candidate returned an unreadable value: {exc}") from None
        if "raised" in reply:
            kind = getattr(builtins, str(reply["raised"]), None)
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                kind = RuntimeError
            raise kind(str(reply.get("message", ""))[:500])
        raise CandidateGone("the candidate sent a reply of unknown form")


def harness(job: dict) -> int:
    report = os.fdopen(job["fds"]["report"], "wb", buffering=0)
    calls = os.fdopen(job["fds"]["out"], "wb")
    replies = os.fdopen(job["fds"]["in"], "rb")
    proxy = Proxy(calls, replies, job["entry_point"])
    verdict = {"passed": False}
    try:
        namespace = {"__name__": "__harness__", "__builtins__": __builtins__}
        exec(compile(job["setup"], "setup.py", "exec"), namespace)
        namespace[job["entry_point"]] = proxy
        exec(compile(job["tests"], "tests.py", "exec"), namespace)
        if job.get("call"):
            namespace[job["call"]](proxy)
        verdict = {"passed": proxy.count > 0, "calls": proxy.count}
        if not proxy.count:
            verdict["error"] = "the tests never called the function under test"
    except BaseException as exc:  # noqa: BLE001: a failing test in any form is a failed verdict
        verdict = {"passed": False, "calls": proxy.count, "error": _describe(exc)}
    report.write(json.dumps(verdict).encode() + b"\n")
    return 0


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return (type(exc).__name__ + (": " + text if text else ""))[:500]


ROLES = {"probe": probe, "script": script, "candidate": candidate, "harness": harness}


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    role = ROLES[job["role"]]
    if job.get("isolate", True):
        try:
            confine(job)
        except (jail.JailError, bpf.UnsupportedArchitecture, OSError) as exc:
            sys.stderr.write(f"tts-sandbox: {exc}\n")
            sys.stderr.flush()
            os._exit(SETUP_FAILED)
    else:  # trusted code only: limits, no isolation
        os.chdir(job["root"])
        jail.set_limits(job["cpu_s"], job["memory_mb"] * MB, job["file_size_mb"] * MB, None)
    os.environ.clear()
    os.environ.update(job["env"])
    sys.argv = ["main.py"]
    try:
        code = role(job)
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
