"""Measure the testbed policy and PRM against the exact step labels on held-out problems.

Held-out problems: ``tts.data.load(level, seed=1)`` (never trained on). The policy samples k solutions
per problem at temperature 0.7 (the CLI's default); the exact checker gives each one's first wrong step.

* policy: per level, sample accuracy, share of samples with a wrong step, per-step error rate (first
  wrong steps per step reached), steps per solution;
* PRM, ProcessBench style (threshold 0.5 on the step score, or ``--threshold auto``: the threshold that
  maximises ProcessBench F1 on other held-out problems, for a PRM that is not calibrated at 0.5): the predicted first wrong step is the first
  step scored below the threshold. Accuracy on erroneous samples (exact index), on correct ones (no step
  flagged), and their harmonic mean (ProcessBench's F1); precision / recall / F1 of the first wrong step
  (a hit is the exact index); step-level AUROC over the steps up to the first wrong one, pooled and
  among siblings (a right and a wrong step at the same index of the same problem, as search compares).

    .venv/bin/python experiments/testbed/evaluate_prm.py --out experiments/testbed/results/prm_eval.json
    .venv/bin/python experiments/testbed/evaluate_prm.py --prm probe --problems 60 --threshold auto \
        --out experiments/testbed/results/probe_eval.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common
from common import stepwise
from tts.metrics import auroc, grouped_auroc


def sibling_auroc(records: list[dict]) -> float | None:
    """Step AUROC among siblings only: a right and a wrong step at the same index of the same problem
    (what beam search compares). The pooled step AUROC also rewards knowing which problems are hard."""
    by_slot: dict[tuple, tuple[list, list]] = {}
    for r in records:
        for i, right in stepwise.judged_steps(len(r["scores"]), r["first_wrong"]):
            by_slot.setdefault((r.get("problem"), i), ([], []))[not right].append(r["scores"][i])
    return grouped_auroc(by_slot.values())[0]


def prm_metrics(records: list[dict], threshold: float) -> dict:
    tp = fp = fn = 0
    err_hit = err_n = ok_hit = ok_n = 0
    good_scores, bad_scores = [], []
    for r in records:
        truth = r["first_wrong"]
        pred = next((i for i, s in enumerate(r["scores"]) if s < threshold), None)
        if truth is None:
            ok_n += 1
            ok_hit += pred is None
        else:
            err_n += 1
            err_hit += pred == truth
        if pred is not None and pred == truth:
            tp += 1
        else:
            fp += pred is not None
            fn += truth is not None
        for i, right in stepwise.judged_steps(len(r["scores"]), truth):
            (good_scores if right else bad_scores).append(r["scores"][i])
    acc_err = err_hit / err_n if err_n else None
    acc_ok = ok_hit / ok_n if ok_n else None
    pb_f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err and acc_ok else 0.0
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    # AUROC of "this step is wrong" against 1 - score
    return {"samples": len(records), "erroneous": err_n, "acc_erroneous": acc_err, "acc_correct": acc_ok,
            "processbench_f1": pb_f1, "precision": precision, "recall": recall, "f1": f1,
            "step_auroc": auroc([1 - s for s in bad_scores], [1 - s for s in good_scores]),
            "sibling_auroc": sibling_auroc(records)}


def scored_samples(model, tok, prm, level: str, count: int, k: int, temperature: float, seed: int) -> list[dict]:
    """Policy samples of ``count`` problems of a level (dataset seed ``seed``), their exact labels and PRM
    step scores."""
    problems = stepwise.generate(level, count, seed)
    exprs = [p.metadata["expression"] for p in problems]
    texts = common.sample_solutions(model, tok, exprs, k, temperature, common.hash_seed("eval", level, seed))
    recs = []
    for p, samples in zip(problems, texts):
        scores = prm.step_scores(p, samples)
        for text, sc in zip(samples, scores):
            lab = stepwise.StepLabels.of(p.metadata["expression"], text)
            assert len(sc) == len(lab.steps) or not lab.steps
            correct = stepwise.is_complete(text) and lab.first_wrong is None
            recs.append({"level": level, "problem": p.id, "first_wrong": lab.first_wrong, "scores": sc,
                         "steps": len(lab.steps), "correct": correct})
    return recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=100, help="held-out problems per level")
    ap.add_argument("--k", type=int, default=4, help="samples per problem")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=1, help="dataset seed of the held-out problems")
    ap.add_argument("--threshold", default=0.5, type=lambda v: v if v == "auto" else float(v),
                    help="step score below which a step is called wrong, or 'auto': chosen on other problems")
    ap.add_argument("--prm", default=None, help="PRM folder (default: the committed testbed PRM), testbed-verifier, "
                                                "or probe / probe:FOLDER (a probe on the policy's own states)")
    ap.add_argument("--policy", default=None,
                    help="model folder that writes the samples (default: the testbed policy)")
    ap.add_argument("--out", type=Path, default=None, help="write the measurements here as JSON")
    args = ap.parse_args()

    common.setup(0)
    import tts.testbed

    started = time.time()
    model, tok = common.load_policy(args.policy)
    if args.prm == "probe" or (args.prm or "").startswith("probe:"):  # the probe on the policy's own states
        prm = tts.testbed.load_probe(args.prm.partition(":")[2] or None, device="cpu", max_batch=64)
    else:
        prm = tts.testbed.load_prm(args.prm, device="cpu", max_batch=64)
    if args.threshold == "auto":
        # Chosen on other problems (seed + 1), never on the ones measured: the threshold that maximises
        # ProcessBench F1 there. A PRM trained with balanced classes is not calibrated at 0.5.
        calibration = [r for level in stepwise.LEVELS
                       for r in scored_samples(model, tok, prm, level, args.problems // 2, args.k,
                                               args.temperature, args.seed + 1)]
        grid = [i / 100 for i in range(2, 99)]
        threshold = max(grid, key=lambda t: (prm_metrics(calibration, t)["processbench_f1"], -abs(t - 0.5)))
        print(f"threshold {threshold:.2f} (chosen on {len(calibration)} samples of seed {args.seed + 1})", flush=True)
    else:
        threshold = args.threshold
    levels, records = {}, []
    for level in stepwise.LEVELS:
        recs = scored_samples(model, tok, prm, level, args.problems, args.k, args.temperature, args.seed)
        reached = sum(r["steps"] if r["first_wrong"] is None else r["first_wrong"] + 1 for r in recs)
        levels[level] = {
            "policy": {"samples": len(recs), "sample_accuracy": sum(r["correct"] for r in recs) / len(recs),
                       "with_error": sum(r["first_wrong"] is not None for r in recs) / len(recs),
                       "step_error_rate": sum(r["first_wrong"] is not None for r in recs) / reached,
                       "steps": stepwise.LEVELS[level][1]},
            "prm": prm_metrics(recs, threshold),
        }
        records += recs
        print(level, json.dumps(levels[level]), f"({time.time() - started:.0f} s)", flush=True)
    result = {"held_out": {"seed": args.seed, "problems_per_level": args.problems, "k": args.k,
                           "temperature": args.temperature, "threshold": threshold},
              "levels": levels, "all": prm_metrics(records, threshold)}
    print("all", json.dumps(result["all"]))
    print(markdown(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def markdown(result: dict) -> str:
    def f(x):
        return "-" if x is None else f"{x:.2f}"

    lines = ["| level | sample acc | samples with an error | step error rate | PRM acc (erroneous) | PRM acc (correct) "
             "| ProcessBench F1 | first-wrong-step P / R / F1 | step AUROC | sibling AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = list(result["levels"].items()) + [("all", {"policy": None, "prm": result["all"]})]
    for level, m in rows:
        pol, q = m["policy"], m["prm"]
        lead = (f"{f(pol['sample_accuracy'])} | {f(pol['with_error'])} | {f(pol['step_error_rate'])}" if pol
                else "- | - | -")
        lines.append(f"| {level} | {lead} | {f(q['acc_erroneous'])} ({q['erroneous']}) | {f(q['acc_correct'])} "
                     f"({q['samples'] - q['erroneous']}) | {f(q['processbench_f1'])} | {f(q['precision'])} / "
                     f"{f(q['recall'])} / {f(q['f1'])} | {f(q['step_auroc'])} | {f(q['sibling_auroc'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
