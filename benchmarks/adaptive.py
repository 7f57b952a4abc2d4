"""Adaptive consistency and DeepConf online against plain majority voting at the same N.

Runs the three strategies side by side on the same problems, engine and seed, and prints a markdown
table of accuracy (with 95% intervals), generated tokens and wall time, plus the token saving against
majority. Target (issue 6): adaptive within 1 point of maj@N's accuracy with at most half its tokens.

    .venv/bin/python benchmarks/adaptive.py --dataset add1 --limit 100 --n 16

``--calibration NAME_OR_FILE`` adds adaptive consistency with the calibrated stopping rule (issue 24);
``--skip K`` drops the first K problems, so a table fitted on problems 0..K-1 is measured on held-out
ones only:

    .venv/bin/python benchmarks/adaptive.py --model testbed --dataset steps4 --skip 200 --limit 100 \
        --max-tokens 256 --calibration testbed-steps4 --no-deepconf

``--confidence RECIPE`` adds the confidence-weighted rule with the threshold and scale a recipe written
by ``experiments/adaptive_calibration.py --rule confidence`` holds; ``--seeds`` runs several seeds and
sums them (more samples of the same held-out problems):

    .venv/bin/python benchmarks/adaptive.py --backend vllm --dataset add1 --skip 60 --limit 40 --seeds 10,11,12 \
        --confidence recipes/adaptive-confidence-embedded-add1.yaml --no-deepconf
"""

from __future__ import annotations

import argparse
import json
import time

import tts
from tts.metrics import wilson_interval
from tts.strategies import AdaptiveConsistency, DeepConf, Majority
from tts.types import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--backend", default="hf")
    ap.add_argument("--dataset", default="add1")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="comma-separated seeds, each a full run, summed (default: --seed)")
    ap.add_argument("--confidence", default=None, help="also run the confidence rule of this recipe")
    ap.add_argument("--skip", type=int, default=0, help="drop the first SKIP problems (a calibration's training split)")
    ap.add_argument("--calibration", default=None, help="also run adaptive with this calibrated stopping table")
    ap.add_argument("--no-deepconf", action="store_true", help="leave DeepConf out")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()

    backend = tts.backends.create(args.backend, args.model)
    problems = tts.data.load(args.dataset, limit=args.skip + args.limit, seed=args.seed)[args.skip:]
    params = SamplingParams(temperature=0.7, max_tokens=args.max_tokens)
    strategies = [
        Majority(n=args.n, params=params),
        AdaptiveConsistency(n=args.n, batch=2, rule="beta", threshold=0.95, params=params),
        DeepConf(n=args.n, mode="online", keep=0.9, warmup=4, window=8, params=params),
    ]
    if args.no_deepconf:
        strategies.pop()
    if args.calibration:
        strategies.append(AdaptiveConsistency(n=args.n, rule="calibrated", adaptive_calibration=args.calibration,
                                              params=params))
    if args.confidence:
        import yaml

        recipe = yaml.safe_load(open(args.confidence))
        strategies.append(AdaptiveConsistency(n=int(recipe["n"]), batch=int(recipe["adaptive-batch"]), rule="confidence",
                                              threshold=float(recipe["adaptive-threshold"]),
                                              confidence_scale=float(recipe["adaptive-confidence-scale"]), params=params))
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    rows = []
    for strategy in strategies:
        started = time.perf_counter()
        results = [r for seed in seeds for r in tts.run(problems, strategy, backend, seed=seed)]
        wall = time.perf_counter() - started
        correct = sum(bool(r.correct) for r in results)
        low, high = wilson_interval(correct, len(results))
        rows.append({
            "strategy": strategy.name + (f" ({strategy.rule})" if getattr(strategy, "rule", "beta") != "beta" else ""),
            "accuracy": correct / len(results), "ci": [low, high],
            "generated_tokens": sum(r.trace.ledger["generated_tokens"] for r in results),
            "samples": sum(len(r.trace.candidates) for r in results),
            "wall_seconds": wall,
        })
    if hasattr(backend, "aclose"):  # the engine goes down with the run, not at interpreter exit
        import asyncio

        asyncio.run(backend.aclose())
    base = rows[0]["generated_tokens"]
    print(f"{args.dataset}, {len(problems)} problems (after {args.skip}) x seeds {seeds}, N={args.n}, model {args.model}, "
          f"backend {args.backend}\n")
    print("| strategy | accuracy (95% CI) | samples | generated tokens | tokens vs majority | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['strategy']} | {r['accuracy']:.3f} ({r['ci'][0]:.2f}-{r['ci'][1]:.2f}) | {r['samples']} | "
              f"{r['generated_tokens']:,} | {r['generated_tokens'] / base:.2f}x | {r['wall_seconds']:.1f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
