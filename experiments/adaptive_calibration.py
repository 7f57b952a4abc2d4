"""Fit adaptive consistency's calibrated stopping rule on a training split of recorded majority@N pools,
and replay it on the held-out problems beside the Beta rule and majority@N itself.

Input: results files of ``majority@N`` (or plain ``majority --n N``) records, e.g. the same problems run
with several seeds for more pools per problem; problems sorted by id, the first ``--train`` of them the
training split (all their pools), the rest held out, so no problem is on both sides. The table and its
epsilon are fitted on the training split only (epsilon by 5-fold cross-fitting there, see
tts/strategies/stopping.py); the held-out rows replay each rule on the held-out pools, in the order the
samples were drawn, so every rule is compared on the very same samples.

    tts run --backend hf --dataset add1 --limit 300 --n 16 --strategy majority --out runs/add1-maj16.jsonl
    .venv/bin/python experiments/adaptive_calibration.py runs/add1-maj16.jsonl --train 200 --n 16 \\
        --fitted-on "embedded SmolLM2-135M, add1, T=0.7, max_tokens 48" --out tts/strategies/calibrations/embedded-add1.json

``--rule confidence`` fits the confidence-weighted rule instead (``--adaptive-rule confidence``): its scale
(the training split's mean token confidence) and the threshold that keeps majority@N's accuracy there.
It needs records whose candidates carry ``confidence_mean`` scores (``weighted_majority`` or
``best_of_n`` with ``--verifier confidence_mean``; several strategies and seeds give more pools per
problem), and ``--out`` writes a recipe that runs it:

    tts run --backend vllm --dataset add1 --limit 100 --n 16 --seed S --verifier confidence_mean \\
        --strategy weighted_majority@16,best_of_n@16 --out runs/add1/pools-sS.jsonl      # S = 0..4
    .venv/bin/python experiments/adaptive_calibration.py runs/add1/pools-s*.jsonl --rule confidence \\
        --strategy weighted_majority@16,best_of_n@16 --train 60 --n 16 --batch 2 \\
        --out recipes/adaptive-confidence-embedded-add1.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results files of majority@N records")
    ap.add_argument("--strategy", default=None,
                    help="which strategies' records, comma-separated (default: the only one, or majority@N)")
    ap.add_argument("--rule", choices=("calibrated", "confidence"), default="calibrated",
                    help="the state table (calibrated) or the confidence-weighted Beta rule (confidence)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1, help="samples per round the table is fitted for")
    ap.add_argument("--train", type=int, required=True, help="the first TRAIN problems (by id) are the training split")
    ap.add_argument("--tolerance", type=float, default=0.005, help="accuracy the rule may lose against majority@N on training")
    ap.add_argument("--fitted-on", default="", help="what the pools are (model, dataset, sampling), stored in the table")
    ap.add_argument("--out", default=None, help="write the fitted table (JSON) here")
    args = ap.parse_args()

    from tts.results import read_records
    from tts.strategies.stopping import fit, pools_from_records, replay, replay_rule

    records = [r for path in args.results for r in read_records(path)]
    names = sorted({r["strategy"] for r in records})
    name = args.strategy or (names[0] if len(names) == 1 else f"majority@{args.n}")
    wanted = set(name.split(","))
    records = sorted((r for r in records if r["strategy"] in wanted), key=lambda r: r["id"])  # stable: files in order
    ids = sorted({r["id"] for r in records})
    if len(ids) <= args.train:
        raise SystemExit(f"{len(ids)} problems of {name} in {', '.join(args.results)}; need more than --train {args.train}")
    training_ids = set(ids[:args.train])
    train = pools_from_records([r for r in records if r["id"] in training_ids], args.n)
    held = pools_from_records([r for r in records if r["id"] not in training_ids], args.n)
    if args.rule == "confidence":
        return confidence_main(args, name, train, held, len(ids), records[0])
    table, curve = fit(train, args.n, args.batch, args.tolerance, fitted_on=args.fitted_on)
    print(f"{name}: {len(train)} training pools ({args.train} problems), {len(held)} held out ({len(ids) - args.train} problems); epsilon {table.epsilon:.4f} "
          f"(cross-fitted on training: accuracy {next(c for c in curve if c['epsilon'] == table.epsilon)['accuracy']:.3f} "
          f"vs majority {curve[0]['majority_accuracy']:.3f})")

    print_rows([("majority@%d" % args.n, replay_rule(lambda answers: False, held, args.n, 1)),
                ("adaptive, beta 0.95, batch 2", replay_rule(beta95, held, args.n, 2)),
                (f"adaptive, calibrated (batch {args.batch})", replay(table, held))], "rule")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        data = table.to_json()  # one key a line, each list on one line: small diffs when refitted
        Path(args.out).write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in data.items()) + "\n}\n")
        print(f"table: {args.out}")


def beta95(answers) -> bool:
    """The Beta rule at 0.95, the strategy's default, as a replayable stop."""
    from collections import Counter

    from tts.strategies.adaptive import beta_leader_probability

    return beta_leader_probability(Counter(a for a in answers if a is not None)) >= 0.95


def print_rows(rows, title: str) -> None:
    """The replay rows as a markdown table with Wilson intervals."""
    from tts.metrics import wilson_interval

    print(f"| {title} | accuracy (95% CI) | samples per problem | tokens vs majority |")
    print("|---|---|---|---|")
    for label, r in rows:
        lo, hi = wilson_interval(round(r["accuracy"] * r["problems"]), r["problems"])
        print(f"| {label} | {r['accuracy']:.3f} ({lo:.2f}-{hi:.2f}) | {r['samples']:.2f} | {r['token_share']:.2f}x |")


def confidence_main(args, name: str, train, held, problems: int, record: dict) -> None:
    from tts.strategies.stopping import fit_confidence, replay_confidence, replay_rule

    scale, threshold, curve = fit_confidence(train, args.n, args.batch, args.tolerance)
    print(f"{name}: {len(train)} training pools ({args.train} problems), {len(held)} held out "
          f"({problems - args.train} problems); scale {scale:.4f} (mean token confidence), threshold {threshold}")
    print("training curve (threshold: accuracy vs majority, token share):",
          ", ".join(f"{c['threshold']}: {c['accuracy']:.3f}/{c['majority_accuracy']:.3f} {c['token_share']:.2f}x"
                    for c in curve))

    print_rows([(f"majority@{args.n}", replay_rule(lambda answers: False, held, args.n, 1)),
                (f"confidence-weighted vote of all {args.n}", replay_confidence(held, args.n, args.batch, 2.0, scale)),
                ("adaptive, beta 0.95, batch 2", replay_rule(beta95, held, args.n, 2)),
                (f"adaptive, confidence (threshold {threshold}, scale {scale:.3f}, batch {args.batch})",
                 replay_confidence(held, args.n, args.batch, threshold, scale))], "rule (held-out replay, same samples)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            f"# Adaptive consistency with the confidence-weighted rule, fitted by experiments/adaptive_calibration.py\n"
            f"# --rule confidence on {len(train)} training pools ({args.train} problems){': ' + args.fitted_on if args.fitted_on else ''}.\n"
            f"#   tts run --config {args.out}\n"
            f"model: {record.get('model', 'embedded')}\nbackend: auto  # fitted on {record.get('backend', '?')}\n"
            f"dataset: {record.get('dataset', 'add1')}\n"
            f"strategy: [adaptive]\nn: {args.n}\nadaptive-rule: confidence\nadaptive-batch: {args.batch}\n"
            f"adaptive-threshold: {threshold}\nadaptive-confidence-scale: {scale:.6f}\n")
        print(f"recipe: {args.out}")


if __name__ == "__main__":
    main()
