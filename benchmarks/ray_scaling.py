"""Throughput of a run on 1 and 2 Ray replicas against the plain single-process run, side by side.

The same problems, strategy and seeds on three sides, each with its engine loaded and warmed first
(engine start-up and Ray's cluster start are reported apart, not counted in the run):

* ``one process``: ``tts.run`` on one hf backend in this process (torch uses every core it is given);
* ``ray x1``: a RayExecutor with one replica (one CPU reserved; Ray pins torch to one thread);
* ``ray x2``: two replicas, one CPU each.

Reported per side: wall seconds, problems/s, generated tokens/s, the ratio to the single process, and
how many problems answered exactly as the single process did (seeds are per problem, so only float
differences between batch compositions could move a token).

    .venv/bin/python benchmarks/ray_scaling.py --model testbed --dataset steps4 --limit 96 --n 8

Needs the ray extra (pip install "tts-toolkit[ray]"); on this 2-core machine the two replicas have one
core each, as the single process has both. On a GPU machine, ``--gpus-per-replica 0.5 --cpus-per-replica 4``
puts both replicas on one GPU (the hf backend picks CUDA where there is one).
"""

from __future__ import annotations

import argparse
import json
import time

import tts
from tts.scale import RayExecutor


def timed(run, problems):
    started = time.perf_counter()
    results = run(problems)
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="testbed")
    parser.add_argument("--dataset", default="steps4")
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=32, help="problems in flight (per replica with Ray)")
    parser.add_argument("--warmup", type=int, default=4, help="problems solved first on each side, not timed")
    parser.add_argument("--cpus-per-replica", type=float, default=1)
    parser.add_argument("--gpus-per-replica", type=float, default=0,
                        help="GPUs each replica reserves (0.5: two replicas share one GPU); the single process uses CUDA when there is one")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()

    problems = tts.data.load(args.dataset, limit=args.limit + args.warmup, seed=0)
    warm, timed_problems = problems[:args.warmup], problems[args.warmup:]
    strategy = tts.Majority(n=args.n, params=tts.SamplingParams(temperature=0.7, max_tokens=args.max_tokens))
    rows = []

    started = time.perf_counter()
    backend = tts.backends.create("hf", args.model)
    setup = time.perf_counter() - started
    tts.run(warm, strategy, backend, concurrency=args.concurrency)
    base, wall = timed(lambda ps: tts.run(ps, strategy, backend, concurrency=args.concurrency), timed_problems)
    rows.append(("one process", 1, setup, wall, base))
    import asyncio

    asyncio.run(backend.aclose())
    for replicas in (1, 2):
        started = time.perf_counter()
        executor = RayExecutor("hf", args.model, replicas=replicas, cpus_per_replica=args.cpus_per_replica,
                               gpus_per_replica=args.gpus_per_replica)
        executor.pids()  # the cluster up and every replica's engine loaded
        setup = time.perf_counter() - started
        try:
            tts.run(warm, strategy, executor=executor, concurrency=args.concurrency)
            results, wall = timed(lambda ps: tts.run(ps, strategy, executor=executor, concurrency=args.concurrency),
                                  timed_problems)
            per_replica = [s.problems for s in executor.stats]
        finally:
            executor.close()
        rows.append((f"ray x{replicas} {per_replica}", replicas, setup, wall, results))

    base_wall = rows[0][3]
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"{args.limit} problems of {args.dataset}, majority@{args.n}, max_tokens {args.max_tokens}, model {args.model}, "
          f"device {device}, replicas of {args.cpus_per_replica:g} CPU and {args.gpus_per_replica:g} GPU")
    print(f"{'side':<22}{'setup s':>9}{'wall s':>9}{'problems/s':>12}{'gen tok/s':>11}{'vs one':>8}{'same answers':>14}")
    out = []
    for name, replicas, setup, wall, results in rows:
        tokens = sum(int(r.trace.ledger["generated_tokens"]) for r in results)
        same = sum(a.trace.answer == b.trace.answer for a, b in zip(base, results))
        print(f"{name:<22}{setup:>9.1f}{wall:>9.2f}{len(results) / wall:>12.2f}{tokens / wall:>11.0f}"
              f"{base_wall / wall:>7.2f}x{same:>9}/{len(results)}")
        out.append({"side": name, "replicas": replicas, "setup_s": setup, "wall_s": wall, "problems": len(results),
                    "generated_tokens": tokens, "same_answers": same})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
