"""Step-level adaptive strategies (issue 24): MUR and phi-decoding against best-of-N, majority and beam
search at about equal FLOPs on the testbed, and the certainty-probe stop on the embedded model.

``testbed``: the testbed policy (hf backend) on a stepwise level, every verifier-driven strategy with the
testbed verifier (``testbed-verifier``, a LikelihoodPRM; step scores combined by their minimum). Prints a
markdown table sorted by mean FLOPs per problem (generation and verifier FLOPs, as the ledger counts
them; each strategy starts with an empty verifier state cache, so none is scored for free on prefixes
another strategy scored), and for each MUR / phi-decoding row the paired difference in accuracy
(bootstrap 95% interval) against the best-of-N and the beam-search row nearest to it in FLOPs::

    .venv/bin/python benchmarks/step_adaptive.py testbed --level steps4 --limit 100

``probe``: budget forcing with certainty probes (``--probe-every``) against plain budget forcing on
the embedded SmolLM2-135M-Instruct (one greedy sample per problem, the one-shot thinking prompt of
experiments/budget_forcing_sweep.py), reporting accuracy, thinking, probe and generated tokens::

    .venv/bin/python benchmarks/step_adaptive.py probe --dataset add1 --limit 8 --probe-every 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# --- testbed -------------------------------------------------------------------------------------------

def testbed_configs(gammas: list[float]) -> list[tuple[str, str, int, dict]]:
    """(label, strategy, N, options) of the comparison."""
    v = {"prm": "testbed-verifier", "aggregation": "min"}
    out = [("majority@8", "majority", 8, {})]
    out += [(f"best_of_n@{n}", "best_of_n", n, v) for n in (4, 8, 16)]
    out += [(f"beam_search@{n}", "beam_search", n, {**v, "expansions": 4}) for n in (4, 8, 16)]
    out += [(f"mur@4 t={g:g}", "mur", 4, {**v, "mur_threshold": g}) for g in gammas]
    out += [(f"mur@{n} t={g:g} w=0", "mur", n, {**v, "mur_threshold": g, "mur_warmup": 0})
            for n in (4, 8) for g in gammas]
    f1 = {**v, "foresight_steps": 1}
    out += [
        ("phi@4 f=1 verifier", "phi_decoding", 4, {**f1, "phi_value": "verifier"}),
        ("phi@4 f=1 verifier T=0.05", "phi_decoding", 4, {**f1, "phi_value": "verifier", "tree_temperature": 0.05}),
        ("phi@4 f=1 likelihood", "phi_decoding", 4, {**f1, "phi_value": "likelihood"}),
        ("phi@4 f=1 both", "phi_decoding", 4, {**f1, "phi_value": "both"}),
        ("phi@4 f=end both stop=0.75", "phi_decoding", 4, {**v, "phi_value": "both", "phi_stop_agreement": 0.75}),
        ("phi@4 f=end verifier T=0.05 stop=0.75", "phi_decoding", 4,
         {**v, "phi_value": "verifier", "tree_temperature": 0.05, "phi_stop_agreement": 0.75}),
    ]
    return out


def paired(a: list[bool], b: list[bool], seed: int) -> str:
    from tts.report import bootstrap_interval

    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    lo, hi = bootstrap_interval(diffs, seed=seed)
    return f"{sum(diffs) / len(diffs):+.2f} ({lo:+.2f}, {hi:+.2f})"


def run_testbed(args) -> None:
    import tts
    from tts import strategies as registry
    from tts.metrics import wilson_interval
    from tts.types import SamplingParams

    backend = tts.backends.create("hf", "testbed")
    problems = tts.data.load(args.level, limit=args.limit, seed=args.seed)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    gammas = [float(x) for x in args.mur_thresholds.split(",")]
    rows = []
    for label, name, n, options in testbed_configs(gammas):
        if args.only and not any(label.startswith(o) for o in args.only.split(",")):
            continue
        strategy = registry.create(name, n, params, options)
        fresh_verifier_states()
        started = time.perf_counter()
        results = tts.run(problems, strategy, backend, seed=args.seed, concurrency=args.concurrency)
        wall = time.perf_counter() - started
        k = len(results)
        correct = [bool(r.correct) for r in results]
        mean = lambda key: sum(r.trace.ledger[key] for r in results) / k  # noqa: E731
        extra = ""
        if name == "mur":
            scaled = sum(r.trace.info.get("scaled_steps", 0) for r in results)
            steps = sum(len(r.trace.info.get("mur", [])) for r in results)
            extra = f"scaled {scaled}/{steps} steps"
        elif name == "phi_decoding":
            steps = sum(len(r.trace.info.get("phi", [])) for r in results)
            early = sum(any(e.get("stopped_early") for e in r.trace.info.get("phi", [])) for r in results)
            extra = f"{steps / k:.1f} steps/problem" + (f", {early} stopped early" if early else "")
        rows.append({"label": label, "strategy": name, "n": n, "accuracy": sum(correct) / k,
                     "ci": wilson_interval(sum(correct), k), "generated": mean("generated_tokens"),
                     "verifier": mean("verifier_tokens"), "flops": mean("flops"), "wall": wall,
                     "correct": correct, "note": extra})
        print(f"  {label}: {sum(correct)}/{k} in {wall:.0f} s, {rows[-1]['flops']:.3g} FLOPs/problem", flush=True)
    asyncio_close(backend)
    rows.sort(key=lambda r: r["flops"])
    base = next((r for r in rows if r["label"] == "best_of_n@8"), None)
    print(f"\n{args.level}, {len(problems)} problems (seed {args.seed}), T={args.temperature}, testbed policy, "
          "verifier testbed-verifier (min over steps)\n")
    print("| strategy | accuracy (95% CI) | gen tok | verifier tok | FLOPs/problem | FLOPs vs BoN@8 | "
          "vs nearest BoN | vs nearest beam | wall s | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs_bon = vs_beam = ""
        if r["strategy"] in ("mur", "phi_decoding"):
            for kind in ("best_of_n", "beam_search"):
                pool = [x for x in rows if x["strategy"] == kind]
                if pool:
                    near = min(pool, key=lambda x: abs(x["flops"] - r["flops"]))
                    text = f"{near['label']}: {paired(r['correct'], near['correct'], args.seed)}"
                    vs_bon, vs_beam = (text, vs_beam) if kind == "best_of_n" else (vs_bon, text)
        ratio = f"{r['flops'] / base['flops']:.2f}x" if base else ""
        print(f"| {r['label']} | {r['accuracy']:.2f} ({r['ci'][0]:.2f}-{r['ci'][1]:.2f}) | {r['generated']:.0f} | "
              f"{r['verifier']:.0f} | {r['flops']:.3g} | {ratio} | {vs_bon} | {vs_beam} | {r['wall']:.0f} | {r['note']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1, default=str) + "\n")


def fresh_verifier_states() -> None:
    """Forget the verifier's cached prefix states, so each strategy pays its own verifier forwards: the
    verifier is loaded once per process (tts.verifiers.registry) and a prefix an earlier strategy scored
    on the same problem would otherwise be free for the next one, understating its FLOPs."""
    from tts.verifiers.registry import forget_states

    forget_states()


def asyncio_close(backend) -> None:
    import asyncio

    close = getattr(backend, "aclose", None)
    if close is not None:
        asyncio.run(close())


# --- probe stop on the embedded model -------------------------------------------------------------------

def run_probe(args) -> None:
    import dataclasses

    import tts
    from tts.data.grading import grader_for
    from tts.metrics import wilson_interval
    from tts.strategies import Single
    from tts.strategies.forcing import BudgetForced, BudgetForcing
    from tts.types import SamplingParams

    sys.path.insert(0, str(REPO / "experiments"))
    import budget_forcing_sweep as sweep  # the one-shot thinking prompt the budget-forcing sweep measured

    backend = tts.backends.create("hf", args.model)
    problems = sweep.with_prompt(tts.data.load(args.dataset, limit=args.limit, seed=args.seed), "oneshot")
    params = SamplingParams(temperature=0.0, max_tokens=args.answer_tokens)
    base = dict(max_thinking_tokens=args.max_thinking_tokens, answer_max_tokens=args.answer_tokens,
                thinking_opener=sweep.OPENERS["oneshot"])
    policies = [("budget_forcing", BudgetForcing(**base)),
                (f"probe every {args.probe_every}, window {args.probe_window}",
                 BudgetForcing(**base, probe_every=args.probe_every, probe_window=args.probe_window,
                               probe_tokens=args.probe_tokens))]
    print(f"{args.dataset}, {len(problems)} problems, {args.model}, greedy, thinking cap {args.max_thinking_tokens}\n")
    print("| policy | accuracy (95% CI) | thinking tok | probe tok | generated tok | probe-stopped | capped | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    dumps = []
    for label, policy in policies:
        strategy = dataclasses.replace(BudgetForced(inner=Single(params=params), policy=policy), name=label)
        started = time.perf_counter()
        results = _run_graded(tts, problems, strategy, backend, args.seed, grader_for)
        wall = time.perf_counter() - started
        k = len(results)
        correct = sum(bool(r.correct) for r in results)
        info = [r.trace.info["budget_forcing"] for r in results]
        lo, hi = wilson_interval(correct, k)
        print(f"| {label} | {correct / k:.2f} ({lo:.2f}-{hi:.2f}) | {sum(i['thinking_tokens'] for i in info)} | "
              f"{sum(i.get('probe_tokens', 0) for i in info)} | {sum(r.trace.ledger['generated_tokens'] for r in results)} | "
              f"{sum(i.get('probe_stopped', 0) for i in info)} | {sum(i['capped'] for i in info)} | {wall:.0f} |", flush=True)
        dumps += [{"policy": label, "id": r.problem.id, "answer": r.trace.answer, "correct": r.correct,
                   "text": r.trace.candidates[0].text if r.trace.candidates else None,
                   "probe_answers": r.trace.info["budget_forcing"].get("probe_answers"),
                   "ledger": r.trace.ledger} for r in results]
    asyncio_close(backend)
    if args.json:
        Path(args.json).write_text(json.dumps(dumps, indent=1) + "\n")


def _run_graded(tts, problems, strategy, backend, seed, grader_for):
    import asyncio

    from tts.runtime import run_async

    return asyncio.run(run_async(problems, strategy, backend, grader=grader_for, seed=seed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("testbed", help="MUR and phi-decoding against best-of-N, majority and beam search")
    t.add_argument("--level", default="steps4")
    t.add_argument("--limit", type=int, default=100)
    t.add_argument("--temperature", type=float, default=0.7)
    t.add_argument("--max-tokens", type=int, default=256)
    t.add_argument("--mur-thresholds", default="0.8,0.95,0.99", help="MUR thresholds to run (comma-separated)")
    t.add_argument("--only", default="", help="run only the rows whose labels start with these (comma-separated)")
    t.add_argument("--concurrency", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", help="also write the rows as JSON here")
    p = sub.add_parser("probe", help="certainty-probe stop against plain budget forcing on the embedded model")
    p.add_argument("--model", default="embedded")
    p.add_argument("--dataset", default="add1")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--max-thinking-tokens", type=int, default=64)
    p.add_argument("--answer-tokens", type=int, default=8)
    p.add_argument("--probe-every", type=int, default=8)
    p.add_argument("--probe-window", type=int, default=2)
    p.add_argument("--probe-tokens", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write every sample's text and probe answers as JSON here")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    (run_testbed if args.mode == "testbed" else run_probe)(args)


if __name__ == "__main__":
    main()
