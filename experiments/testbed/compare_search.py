"""Search against sampling on the testbed: beam search and DVTS against best-of-N and majority voting, at
equal N (equal generated tokens), on the harder stepwise levels, with two step verifiers:

* ``[prm]``: the PRM of ``--prm`` (default the testbed's trained PRM; ``--prm testbed-verifier`` for the
  stronger model read as a LikelihoodPRM); step scores combined by their minimum, best-of-N takes the
  candidate whose worst step scores best;
* ``[conf]``: the policy's own token confidence (mean logprob of a step's tokens, no second model),
  which on these samples tells a wrong step from a right one with step AUROC 0.80-0.93.

Everything goes through the toolkit: the strategies from the registry (as ``tts run`` builds them),
``tts.runtime.run_async`` on the hf backend, results files written like the CLI's
(``runs/testbed/<level>-n<N>.jsonl``, resumable), and ``tts report``'s summaries (accuracy with Wilson
and bootstrap 95% intervals, mean generated tokens). On top, paired bootstrap intervals of each search
strategy's accuracy minus best-of-N's and majority's over the same problems. The equivalent command
lines for one (level, N)::

    tts run --backend hf --model tts/testbed/policy --dataset steps4 --limit 100 --n 8 --max-tokens 256 \\
        --strategy majority,best_of_n,beam_search,dvts --prm testbed --step-delimiter "\\n" --expansions 4 \\
        --aggregation min
    tts run ... --strategy best_of_n,beam_search,dvts --step-scorer confidence_mean --step-delimiter "\\n" \\
        --expansions 4 --aggregation min

    .venv/bin/python experiments/testbed/compare_search.py --out experiments/testbed/results/search.json
    .venv/bin/python experiments/testbed/compare_search.py --prm testbed-verifier \
        --out experiments/testbed/results/search_verifier.json

Results files are resumed per strategy; a [prm] run's configuration includes a digest of the PRM's
weights, so a results folder written with another PRM is refused with an error instead of resumed (give
each PRM its own ``--runs`` folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import asyncio
import json
import random
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)

from tts import backends, data
from tts import strategies as registry
from tts.budget import Budget, Ledger
from tts.data import Grader
from tts.report import bootstrap_interval, summarize_records
from tts.results import ResultsWriter, config_hash, result_record
from tts.runtime import run_async
from tts.verifiers.registry import forget_states
from tts.types import SamplingParams
from tts.verifiers.answers import same_answer

SCORED = ("best_of_n", "beam_search", "dvts")
VERIFIERS = ("prm", "conf")
STRATEGIES = ("majority",) + tuple(f"{name}[{v}]" for v in VERIFIERS for name in SCORED)
MODEL = "tts/testbed/policy"


def run_level(engine, level: str, n: int, args) -> dict[str, list[dict]]:
    problems = data.load(level, limit=args.limit, seed=args.seed)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    # min: the testbed PRM is trained on steps up to the first wrong one, so a path is as good as its worst step
    tree = {"step_delimiter": "\n", "expansions": args.expansions, "aggregation": "min"}
    options = {"prm": {**tree, "prm": args.prm}, "conf": {**tree, "step_scorer": "confidence_mean"}}
    chosen = [registry.create("majority", n, params, {})] + [
        dataclasses.replace(registry.create(name, n, params, options[v]), name=f"{name}[{v}]")
        for v in VERIFIERS for name in SCORED]
    shared = {"model": MODEL, "backend": "hf", "dataset": level, "seed": args.seed, "budget_tokens": None,
              "run_budget_tokens": None}
    # The PRM's weights are part of a [prm] run's configuration: a retrained PRM at the same path must
    # not resume the old one's results.
    prm_weights = lambda name: {"prm_weights": args.prm_weights} if name.endswith("[prm]") else {}  # noqa: E731
    hashes = {s.name: config_hash({**shared, **s.config(), **prm_weights(s.name)}) for s in chosen}
    out = Path(args.runs) / f"{level}-n{n}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = ResultsWriter(out, hashes)
    info = {"seed": args.seed, "model": MODEL, "backend": "hf", "dataset": level}
    for s in chosen:
        todo = [p for p in problems if not writer.is_done(s.name, p.id)]
        if not todo:
            continue
        started = time.time()
        forget_states()  # each strategy pays its own verifier work (no prefix another one scored is free)
        asyncio.run(run_async(
            todo, s, engine, grader=Grader(default=same_answer), budget=Budget(), run_ledger=Ledger(),
            concurrency=args.concurrency, seed=args.seed,
            on_result=lambda r, s=s: writer.write(result_record(r, config_hash=hashes[s.name], run_info=info))))
        print(f"  {level} n={n} {s.name}: {len(todo)} problems in {time.time() - started:.0f} s", flush=True)
    records = {name: [r for r in writer.records_for([name])] for name in STRATEGIES}
    writer.close()
    return records


def weights_digest(prm: str) -> str:
    """A short digest of the PRM folder's weights (``testbed``, ``testbed-verifier``: the committed ones)."""
    import hashlib

    from tts.testbed import ALIASES

    folder = ALIASES.get(prm, Path(prm))
    return hashlib.blake2b((folder / "model.safetensors").read_bytes(), digest_size=8).hexdigest()


def paired(a: list[dict], b: list[dict], seed: int) -> dict:
    """Mean of (a correct - b correct) over the problems both answered, with a bootstrap 95% interval."""
    got_b = {r["id"]: bool(r["correct"]) for r in b}
    diffs = [float(bool(r["correct"])) - float(got_b[r["id"]]) for r in a if r["id"] in got_b]
    lo, hi = bootstrap_interval(diffs, seed=seed)
    return {"diff": sum(diffs) / len(diffs), "ci": [lo, hi], "problems": len(diffs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="steps4,steps5,steps6")
    ap.add_argument("--ns", default="4,8,16")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--prm", default="testbed", help="PRM folder (default: the committed testbed PRM)")
    ap.add_argument("--expansions", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--runs", default="runs/testbed")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    common.setup(args.seed)
    args.prm_weights = weights_digest(args.prm)

    engine = backends.create("hf", str(common.POLICY_DIR))
    result: dict = {"settings": {k: str(v) for k, v in vars(args).items() if k != "out"}, "runs": []}
    try:
        for level in args.levels.split(","):
            for n in [int(x) for x in args.ns.split(",")]:
                recs = run_level(engine, level, n, args)
                row = {"level": level, "n": n, "strategies": {}}
                for name, rs in recs.items():
                    s = summarize_records(rs, seed=args.seed, with_curves=False)
                    row["strategies"][name] = {k: s[k] for k in ("problems", "accuracy", "wilson", "bootstrap",
                                                                 "mean_generated_tokens", "wall_seconds")}
                    row["strategies"][name]["mean_verifier_tokens"] = sum(
                        (r.get("ledger") or {}).get("verifier_tokens", 0) for r in rs) / max(1, len(rs))
                for v in VERIFIERS:
                    for search in ("beam_search", "dvts"):
                        for base in (f"best_of_n[{v}]", "majority"):
                            row[f"{search}[{v}]-{base}"] = paired(recs[f"{search}[{v}]"], recs[base], args.seed)
                result["runs"].append(row)
                print("\n".join(f"[{v}] " + markdown_row(row, v) for v in VERIFIERS), flush=True)
    finally:
        asyncio.run(engine.aclose())
    print(markdown(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def markdown_row(row: dict, v: str) -> str:
    cells = []
    for name in ("majority", f"best_of_n[{v}]", f"beam_search[{v}]", f"dvts[{v}]"):
        s = row["strategies"][name]
        cells.append(f"{s['accuracy']:.2f} ({s['wilson'][0]:.2f}-{s['wilson'][1]:.2f}), {s['mean_generated_tokens']:.0f} tok")
    diffs = [f"{row[k]['diff']:+.2f} ({row[k]['ci'][0]:+.2f}, {row[k]['ci'][1]:+.2f})"
             for k in (f"beam_search[{v}]-best_of_n[{v}]", f"dvts[{v}]-best_of_n[{v}]",
                       f"beam_search[{v}]-majority", f"dvts[{v}]-majority")]
    return f"| {row['level']} | {row['n']} | " + " | ".join(cells + diffs) + " |"


def markdown(result: dict) -> str:
    tables = []
    for v in VERIFIERS:
        head = (f"| level | N | majority | best-of-N [{v}] | beam search [{v}] | DVTS [{v}] | beam - BoN | DVTS - BoN "
                "| beam - maj | DVTS - maj |")
        tables.append("\n".join([head, "|" + "---|" * 10] + [markdown_row(r, v) for r in result["runs"]]))
    return "\n\n".join(tables)


if __name__ == "__main__":
    main()
