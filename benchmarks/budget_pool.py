"""Samples drawn and accuracy under per-problem token budgets (issue 19: samples draw from one pool).

Runs majority@8 and best-of-N@8 (token confidence) with the embedded model on the hf backend under
budgets of generated tokens per problem, and prints per setting: accuracy, samples drawn per problem,
samples that finished (not cut by the budget), and generated tokens per problem.

    .venv/bin/python benchmarks/budget_pool.py --limit 30
    .venv/bin/python benchmarks/budget_pool.py --limit 30 --checkout ../tts-before   # an older version too

``--checkout`` runs the same measurement with the tts package of another folder (e.g. a git worktree
of an earlier commit) in a child process, one after the other, so the two are measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BUDGETS = (100, 200, 400, 800)


def measure(dataset: str, limit: int, budgets: tuple[int, ...]) -> list[dict]:
    import tts

    backend = tts.backends.create("hf")
    problems = tts.data.load(dataset, limit=limit, seed=0)
    rows = []
    for budget in budgets:
        for strategy in (tts.Majority(n=8), tts.BestOfN(tts.ConfidenceVerifier(), n=8)):
            results = tts.run(problems, strategy, backend, budget=tts.Budget(generated_tokens=budget), seed=0)
            drawn = [len(r.trace.candidates) for r in results]
            finished = [sum(c.finish_reason == "stop" for c in r.trace.candidates) for r in results]
            rows.append({
                "strategy": strategy.name, "budget": budget,
                "accuracy": sum(bool(r.correct) for r in results) / len(results),
                "drawn": sum(drawn) / len(results), "finished": sum(finished) / len(results),
                "generated": sum(r.trace.ledger["generated_tokens"] for r in results) / len(results),
                "over_budget": sum(r.trace.ledger["generated_tokens"] > budget for r in results),
            })
    return rows


def child(folder: str | None, args) -> list[dict]:
    """The measurement in a fresh process, importing tts from ``folder`` (None: this checkout)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from budget_pool import measure; "
            "print('ROWS ' + json.dumps(measure(sys.argv[2], int(sys.argv[3]), tuple(json.loads(sys.argv[4])))))")
    if folder:  # ahead of sys.path, and past the editable install's finder
        root = str(Path(folder).resolve())
        code = (f"import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
                f"sys.path.insert(0, {root!r}); import tts; assert tts.__file__.startswith({root!r}), tts.__file__; ") + code
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), args.dataset, str(args.limit),
                          json.dumps(list(args.budgets))], capture_output=True, text=True, env=dict(os.environ))
    lines = [line for line in out.stdout.splitlines() if line.startswith("ROWS ")]
    if out.returncode or not lines:
        sys.exit(f"measurement failed ({folder or 'this checkout'}): {out.stderr[-2000:]}")
    return json.loads(lines[-1][5:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="add1")
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    ap.add_argument("--checkout", help="also measure the tts package in this folder (an older version)")
    args = ap.parse_args()
    versions = ([(args.checkout, args.checkout)] if args.checkout else []) + [("this checkout", None)]
    print(f"{args.dataset}, {args.limit} problems, embedded model on hf, seed 0; per problem means")
    print("| version | strategy | budget | accuracy | samples drawn | finished | generated tokens | over budget |")
    print("|---|---|---|---|---|---|---|---|")
    for label, folder in versions:
        for r in child(folder, args):
            print(f"| {label} | {r['strategy']}@8 | {r['budget']} | {r['accuracy']:.3f} | {r['drawn']:.2f} | "
                  f"{r['finished']:.2f} | {r['generated']:.1f} | {r['over_budget']} |", flush=True)


if __name__ == "__main__":
    main()
