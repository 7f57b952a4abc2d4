"""Engine processes die with the run that started them, however it ends (issue 17)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tts import lifeline

PARENT = textwrap.dedent('''
    import multiprocessing as mp, sys, time
    import tts
    from tts import lifeline

    def child():
        time.sleep(120)

    if __name__ == "__main__":
        if sys.argv[1] == "armed":
            lifeline.arm()
        for method in ("spawn", "fork"):
            p = mp.get_context(method).Process(target=child, daemon=False)
            p.start()
            print(p.pid, flush=True)
        time.sleep(120)
''')


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(tmp_path, mode):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    # a clean environment: an engine test earlier in this session may have armed this process already
    env = {k: v for k, v in os.environ.items() if k != lifeline.ENV}
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)
    pids = [int(proc.stdout.readline()) for _ in range(2)]
    return proc, pids


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
def test_children_of_an_armed_process_die_when_it_is_killed(tmp_path):
    proc, pids = start(tmp_path, "armed")
    assert all(alive(p) for p in pids)
    proc.kill()  # SIGKILL: nothing of the parent runs any more
    proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
def test_without_arming_the_children_would_live_on(tmp_path):
    """The control: the same parent unarmed leaves both children behind (what tts did before)."""
    proc, pids = start(tmp_path, "plain")
    proc.kill()
    proc.wait()
    time.sleep(1)
    try:
        assert all(alive(p) for p in pids)
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _descendants_named(prefix: str) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.joinpath("cmdline").read_bytes().startswith(prefix.encode()) and alive(int(d.name)):
                    found.append(int(d.name))
            except OSError:
                pass
    return found


@pytest.mark.engine
def test_a_killed_vllm_run_leaves_no_engine_behind(tmp_path, embedded_model_dir):
    pytest.importorskip("vllm")
    before = set(_descendants_named("VLLM::"))
    out = tmp_path / "r.jsonl"
    tts = Path(sys.executable).with_name("tts")
    proc = subprocess.Popen([str(tts), "run", "--backend", "vllm", "--model", embedded_model_dir, "--dataset", "add2",
                             "--limit", "400", "--strategy", "majority", "--n", "8", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)  # the engine is up once the first result is written
    engines = set(_descendants_named("VLLM::")) - before
    assert engines, "the vllm run did not start an engine"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in engines) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in engines)
