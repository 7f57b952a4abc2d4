"""Runs spread over a real local Ray cluster (2 CPUs, on 127.0.0.1): the same results as one process,
a replica killed with SIGKILL mid-run, a driver killed with SIGKILL and rerun, replicas that can never
work. One cluster for the module; each test's executor closes its actors so the next one has the CPUs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import tts  # noqa: E402
from tts.backends.scripted import ScriptedBackend  # noqa: E402
from tts.results import ResultsWriter, read_records, result_record  # noqa: E402
from tts.scale import RayExecutor  # noqa: E402
from tts.types import Problem  # noqa: E402

from .test_lifeline import alive as _alive  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 24


def problems(k: int = K) -> list[Problem]:
    return [Problem(id=f"q{i}", prompt=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(k)]


def write_script(path: Path, latency: float) -> str:
    # every question its own replies (a scripted backend counts draws per key): deterministic per
    # problem whichever replica solves it; some right, some wrong, so votes matter
    replies = {f"What is {i} + {i}?": [str(2 * i), str(2 * i + (i % 3)), f"The answer is {2 * i + 1}.", str(2 * i)]
               for i in range(100)}
    path.write_text(json.dumps({"replies": replies, "latency": latency}))
    return str(path)


class BrokenEngine:
    """A backend factory whose engine cannot start (a replica that fails every time)."""

    def __call__(self):
        raise RuntimeError("this engine cannot start")


class FailingEngine:
    """A backend factory whose engine starts but fails every request."""

    def __call__(self):
        def script(prompt, index):
            raise RuntimeError("the engine failed this request")

        return ScriptedBackend(script)


@pytest.fixture(scope="module")
def cluster():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the factories above travel by value
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             _node_ip_address="127.0.0.1", object_store_memory=128 << 20)
    yield
    ray.shutdown()


def by_id(results):
    return {r.problem.id: r for r in results}


def test_scripted_run_on_two_replicas_matches_one_process(cluster, tmp_path):
    script = write_script(tmp_path / "script.json", 0.02)
    strategy = tts.Majority(n=4)
    budget = tts.Budget(generated_tokens=40)
    local = tts.run(problems(), strategy, tts.backends.create("scripted", script), budget=budget, seed=3)
    with RayExecutor("scripted", script, replicas=2) as executor:
        spread = tts.run(problems(), strategy, executor=executor, budget=budget, seed=3)
        assert sum(s.problems for s in executor.stats) == K and all(s.problems > 0 for s in executor.stats)
    assert [r.problem.id for r in spread] == [r.problem.id for r in local]
    for a, b in zip(local, spread):
        assert (a.trace.answer, [c.text for c in a.trace.candidates], a.correct) == \
            (b.trace.answer, [c.text for c in b.trace.candidates], b.correct)
        assert a.trace.ledger["generated_tokens"] == b.trace.ledger["generated_tokens"]


def test_run_budget_is_hard_across_replicas(cluster, tmp_path):
    script = write_script(tmp_path / "script.json", 0.01)
    with RayExecutor("scripted", script, replicas=2) as executor:
        results = tts.run(problems(), tts.Majority(n=4), executor=executor,
                          run_budget=tts.Budget(generated_tokens=30), concurrency=4)
    spent = sum(r.trace.ledger["generated_tokens"] for r in results)
    assert len(results) == K and 0 < spent <= 30
    assert any("budget_stop" in r.trace.info for r in results)


def test_hf_testbed_on_two_replicas_against_one_process(cluster):
    pytest.importorskip("transformers")
    data = tts.data.load("steps4", limit=16, seed=0)
    strategy = tts.Majority(n=4, params=tts.SamplingParams(temperature=0.7, max_tokens=96))
    local = tts.run(data, strategy, tts.backends.create("hf", "testbed"), seed=1)
    with RayExecutor("hf", "testbed", replicas=2) as executor:
        spread = tts.run(data, strategy, executor=executor, seed=1)
    same = sum(a.trace.answer == b.trace.answer for a, b in zip(local, spread))
    texts = sum([c.text for c in a.trace.candidates] == [c.text for c in b.trace.candidates] for a, b in zip(local, spread))
    print(f"hf testbed, 2 replicas vs one process: {same}/{len(local)} answers and {texts}/{len(local)} sample sets agree")
    # Seeds are per problem and per sample row, so only batch composition (which rows share a matmul)
    # can move a float; on this CPU it has not changed a sampled token.
    assert [r.problem.id for r in spread] == [r.problem.id for r in local]
    assert same >= len(local) - 2


def test_a_replica_killed_mid_run_leaves_every_problem_exactly_once(cluster, tmp_path):
    script = write_script(tmp_path / "script.json", 0.15)
    out = tmp_path / "results.jsonl"
    strategy = tts.Majority(n=4)
    local = by_id(tts.run(problems(), strategy, tts.backends.create("scripted", script)))
    writer = ResultsWriter(out, {strategy.name: "h"}, run={"model": "scripted"})
    killed = []
    with RayExecutor("scripted", script, replicas=2) as executor:
        pids = executor.pids()  # starts the replicas

        def on_result(result):
            writer.write(result_record(result, config_hash="h", run_info={}))
            if not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        results = tts.runtime.asyncio.run(executor.run_async(problems(), strategy, grade=tts.api.same_answer,
                                                             concurrency=4, on_result=on_result))
        stats = executor.stats
        assert executor.pids()[0] not in (None, pids[0])  # restarted
    writer.close()
    ids = [r["id"] for r in read_records(out)]
    assert sorted(ids) == sorted(p.id for p in problems()) and len(ids) == K
    assert stats[0].restarts == 1 and stats[0].failures >= 1
    assert all(r.trace.answer == local[r.problem.id].trace.answer for r in results)
    assert not any("error" in r.trace.info for r in results)


def test_replicas_that_cannot_start_end_in_error_lines_not_a_hang(cluster):
    started = time.monotonic()
    with RayExecutor(BrokenEngine(), replicas=2, max_restarts=1) as executor:
        results = tts.run(problems(6), tts.Majority(n=2), executor=executor)
    assert len(results) == 6 and all("error" in r.trace.info for r in results)
    assert "cannot start" in results[0].trace.info["error"]
    assert all(r.correct is False and r.trace.answer is None for r in results)
    assert not any(s.alive for s in executor.stats)
    assert time.monotonic() - started < 120


def test_an_engine_that_fails_every_request_ends_in_error_lines(cluster):
    with RayExecutor(FailingEngine(), replicas=2) as executor:
        results = tts.run(problems(4), tts.Majority(n=2), executor=executor)
    assert all(r.trace.info.get("tries") == 3 for r in results)
    assert all("the engine failed this request" in r.trace.info["error"] for r in results)
    assert all(s.alive and s.restarts == 0 for s in executor.stats)


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.add(int(entry.name))
    return kids


def test_driver_killed_and_rerun_resumes_to_exactly_once(cluster, tmp_path):
    script = write_script(tmp_path / "script.json", 0.3)
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"question": p.prompt, "answer": p.answer}) + "\n" for p in problems(30)))
    out = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "tts.cli", "run", "--backend", "scripted", "--model", script,
               "--dataset", str(data), "--strategy", "majority", "--n", "4", "--limit", "30",
               "--concurrency", "2", "--ray", "--out", str(out)]
    env = {**os.environ, "RAY_ADDRESS": ""}
    driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and driver.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 4:
            break
        time.sleep(0.1)
    assert driver.poll() is None, driver.stdout.read().decode()[-2000:]
    cluster_processes = _children(driver.pid)
    assert cluster_processes  # the local cluster it started
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = out.read_text().count("\n")
    assert 4 <= done_before < 30
    # the cluster the driver started goes with it
    gone_by = time.monotonic() + 60
    while time.monotonic() < gone_by and any(_alive(p) for p in cluster_processes):
        time.sleep(0.5)
    assert not any(_alive(p) for p in cluster_processes)
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in rerun.stdout
    ids = [r["id"] for r in read_records(out)]
    assert len(ids) == 30 and len(set(ids)) == 30


def test_bad_ray_flags_are_one_line_and_exit_2(tmp_path):
    for args, says in ((["--ray", "not an address"], "give auto, ray://HOST:PORT"),
                       (["--ray", "127.0.0.1:1"], "nothing answers at '127.0.0.1' port 1"),
                       (["--ray", "--replicas", "0"], "--replicas")):
        done = subprocess.run([sys.executable, "-m", "tts.cli", "run", "--backend", "scripted", "--model",
                               write_script(tmp_path / "s.json", 0), "--limit", "2", *args,
                               "--out", str(tmp_path / "r.jsonl")], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.jsonl").exists()


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=80, deadline=None)
@given(address=st.one_of(st.text(max_size=40), st.from_regex(r"(ray://)?[a-z0-9.\[\]:]{0,20}:[0-9]{0,6}", fullmatch=True)))
def test_any_ray_address_is_checked_or_refused_in_one_line(address):
    from tts.scale.ray_executor import ScaleError, _check_reachable

    try:
        _check_reachable(address)
    except ScaleError as exc:
        assert "\n" not in str(exc) and repr(address) in str(exc)
    else:
        assert address in ("auto", "local") or ":" in address
