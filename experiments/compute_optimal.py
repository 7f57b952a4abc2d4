"""Compute-optimal sweep and per-question routing policy (Snell et al. 2024; Wu et al. 2024).

For one model, task and verifier it answers "at this budget, for a question this hard, which strategy?":

1. draws one pool of ``pool_n`` samples per problem (scored by the verifier; cached on disk) and computes
   single, majority@k, best-of-N@k and weighted majority@k for k = 1, 2, 4, ... pool_n from it, averaged
   over ``bootstrap`` random subsets of size k;
2. runs the strategies that cannot be read off a pool for real: sequential revisions at several ratios of
   sequential to parallel samples (``revise`` with n attempts split into n / r chains of r) and tree
   search at several widths (beam search, ...); every (problem, setting) keeps its accuracy, generated
   tokens and FLOPs as the ledger counted them;
3. bins problems by difficulty, on a training split: by the model's own pass@1 in the pool (oracle bins)
   and by a predictor that does not see the answer (verifier scores of the first ``probes`` pool samples);
4. picks the best setting per (bin, budget) on the training split and evaluates three policies on the
   held-out split (the best fixed setting per budget, oracle bins, predicted bins), reporting how much
   compute each saves against best-of-N and majority voting at equal accuracy;
5. saves the predicted-bin policy (``policy.json``, for ``tts run --strategy auto --routing-policy``),
   runs that policy for real through the ``auto`` strategy under hard per-problem token budgets on the
   held-out split, and writes tables (``report.md``, ``summary.json``) and plots (accuracy against FLOPs
   per strategy with the compute-optimal frontier, per difficulty bin; the policies on held-out problems).

The embedded model on the built-in arithmetic levels (CPU, about 30 minutes; results in
docs/performance.md, "Compute-optimal sweep"):

    python experiments/compute_optimal.py --config recipes/compute-optimal-embedded.yaml

A few minutes, for a smoke test: add ``--quick``. A GPU setup (Qwen2.5-Math-1.5B-Instruct scored by
Qwen2.5-Math-PRM-7B on MATH-500) is the same script with another recipe:

    python experiments/compute_optimal.py --config recipes/compute-optimal-qwen-math500.yaml --data-path math500.jsonl

A recipe holds `tts run` options at the top level (model, backend, dataset, data-path, limit,
temperature, top-p, max-tokens, seed, concurrency, ...) and this script's settings under
``compute_optimal:`` (see DEFAULTS below). Command-line options override both. Reruns reuse the cached
pool and runs in the output folder, so changing only the analysis (bins, budgets, tolerance) is cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from tts import backends, data  # noqa: E402
from tts.budget import Budget  # noqa: E402
from tts.data.grading import grader_for, vote_key_for  # noqa: E402
from tts.escapes import decode_escapes  # noqa: E402
from tts.routing import (  # noqa: E402
    ALLOCATIONS, BASE_FEATURES, FEATURES, Point, Row, Setting, cells, compute_saved, evaluate, fit, frontier, probe_feature,
)
from tts.verifiers.registry import resolve as verifier_from_spec  # noqa: E402
from tts.runtime import derive_seed, run_async  # noqa: E402
from tts.verifiers.registry import forget_states  # noqa: E402
from tts.strategies import Auto, BestOfN, create  # noqa: E402
from tts.strategies.select import choose  # noqa: E402
from tts.types import SamplingParams  # noqa: E402

SECTION = "compute_optimal"
#: `tts run` keys this script uses (others in a recipe, such as strategy or n, are ignored)
RUN_KEYS = {
    "model": "embedded", "backend": "hf", "dataset": "add1", "data_path": None, "split": None,
    "question_field": None, "answer_field": None, "id_field": None, "prompt_format": None,
    "limit": 40, "temperature": 0.7, "top_p": 1.0, "max_tokens": 48, "seed": 0, "concurrency": 32,
    "base_url": None, "api_key": None, "step_delimiter": None, "max_depth": None,
}
DEFAULTS: dict[str, Any] = {
    "datasets": None,  # several datasets pooled (e.g. add1, mul1, add2); default: [dataset]
    "pool_n": 16,  # samples per problem in the pool; k runs over 1, 2, 4, ... pool_n
    "bootstrap": 64,  # random subsets per (problem, k)
    "sampling": ["majority", "best_of_n", "weighted_majority"],
    "verifier": "confidence_mean",  # or qwen_prm:MODEL, math_shepherd:MODEL, rlhflow:MODEL
    # sequential/parallel ratio grid: {n: [...], revisions: [...]} (every pair) or {pairs: [[n, r], ...]};
    # revisions r=1 is plain parallel sampling, which the pool already has
    "revise": {"n": [4, 8], "revisions": [2, 4]},
    "tree": [{"strategy": "beam_search", "n": [4, 8], "options": {"expansions": 2, "step_mode": "tokens", "step_tokens": 8}}],
    "bins": 3,
    "probes": 2,
    "feature": "auto",  # mean_score, max_score, agreement, agreement_score, or auto: best on the training split
    "unit": "generated_tokens",  # or flops (the verifier's included)
    # per-problem budgets in `unit`; default: 1.1 x the mean sample length x 1, 1.4, 2, 2.8, ... pool_n
    # (flops: one verified sample's mean cost x 1, 1.4, 2, ... 4 x pool_n)
    "budgets": None,
    # how a budget is split between difficulty bins: cap (every problem keeps to it) or mean (the average
    # problem does: compute moves from hopeless and solved bins to the ones where it pays)
    "allocation": "cap",
    "train_fraction": 0.5,
    "tolerance": 0.0,
    "resamples": 1000,  # bootstrap resamples of the held-out problems for the savings' intervals (0: none)
    "auto_check": None,  # budgets for real `auto` runs on held-out problems; default: three of the budgets
    "engine_options": {},  # passed to the backend (e.g. gpu_memory_utilization for vLLM next to a PRM)
    "out": "runs/compute_optimal",
}
QUICK = {"limit": 6, "pool_n": 8, "bootstrap": 16, "revise": {"pairs": [[4, 2]]},
         "tree": [{"strategy": "beam_search", "n": [4], "options": {"expansions": 2, "step_mode": "tokens", "step_tokens": 8}}],
         "bins": 2}


# --- configuration -----------------------------------------------------------------------------------
def load_config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(RUN_KEYS) | {k: v for k, v in DEFAULTS.items()}
    if args.config:
        import yaml

        raw = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(raw, dict):
            raise SystemExit(f"error: {args.config}: a recipe is a mapping of option names to values")
        section = raw.get(SECTION) or {}
        if not isinstance(section, dict):
            raise SystemExit(f"error: {args.config}: {SECTION} must be a mapping")
        for key, value in raw.items():
            name = str(key).replace("-", "_")
            if name in RUN_KEYS:
                cfg[name] = value
        for key, value in section.items():
            name = str(key).replace("-", "_")
            if name not in DEFAULTS:
                raise SystemExit(f"error: {args.config}: unknown {SECTION} key {key!r}; choose from {', '.join(DEFAULTS)}")
            cfg[name] = value
    if args.quick:
        cfg.update(QUICK)
        cfg["out"] = str(cfg["out"]).rstrip("/") + "-quick"
    for name in list(RUN_KEYS) + ["out", "pool_n", "bootstrap", "bins", "probes", "allocation", "resamples"]:
        value = getattr(args, name, None)
        if value is not None:
            cfg[name] = value
    if cfg["step_delimiter"]:
        cfg["step_delimiter"] = decode_escapes(cfg["step_delimiter"])
    cfg["datasets"] = list(cfg["datasets"] or [cfg["dataset"]])
    if cfg["backend"] == "auto":
        cfg["backend"] = backends.default_backend_name()
    if cfg["pool_n"] < 1 or cfg["probes"] > cfg["pool_n"]:
        raise SystemExit(f"error: pool_n must be at least probes ({cfg['probes']}), got {cfg['pool_n']}")
    if cfg["allocation"] not in ALLOCATIONS:
        raise SystemExit(f"error: allocation must be one of {', '.join(ALLOCATIONS)}, got {cfg['allocation']!r}")
    if cfg["feature"] != "auto" and cfg["feature"] not in FEATURES:
        raise SystemExit(f"error: feature must be auto or one of {', '.join(FEATURES)}, got {cfg['feature']!r}")
    verifier_from_spec(cfg["verifier"])  # a bad spec fails before any model loads
    return cfg


def digest(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def sampling_params(cfg) -> SamplingParams:
    return SamplingParams(temperature=cfg["temperature"], top_p=cfg["top_p"], max_tokens=cfg["max_tokens"])


def identity(cfg) -> dict:
    """What the samples depend on (the cache key of the pool and of every real run)."""
    keys = ["model", "backend", "datasets", "data_path", "split", "question_field", "answer_field", "id_field",
            "prompt_format", "limit", "temperature", "top_p", "max_tokens", "seed"]
    return {k: cfg[k] for k in keys}


# --- problems ----------------------------------------------------------------------------------------
def load_problems(cfg):
    problems, split = [], {}
    for name in cfg["datasets"]:
        opts = {k: cfg[k] for k in ("split", "question_field", "answer_field", "id_field", "prompt_format") if cfg[k]}
        loaded = data.load(name, limit=cfg["limit"], seed=cfg["seed"], path=cfg["data_path"], **opts)
        loaded = [dataclasses.replace(p, metadata={**p.metadata, "sweep_dataset": name}) for p in loaded]
        # a stable split, stratified by dataset: the same problems are held out on every rerun
        order = sorted(loaded, key=lambda p: derive_seed(cfg["seed"], "split", p.id))
        cut = round(len(order) * cfg["train_fraction"])
        split.update({p.id: ("train" if i < cut else "test") for i, p in enumerate(order)})
        problems += loaded
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise SystemExit("error: problem ids repeat across datasets; give datasets with distinct ids")
    return problems, split


# --- cached JSONL ------------------------------------------------------------------------------------
class Cache:
    """One JSONL file per cache key; a line per finished problem, so a killed sweep resumes."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                self.lines[rec["id"]] = rec

    def write(self, rec: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        self.lines[rec["id"]] = rec


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- step 1: the pool --------------------------------------------------------------------------------
async def build_pool(cfg, problems, backend, verifier, out: Path) -> dict[str, dict]:
    cache = Cache(out / f"pool-{digest([identity(cfg), cfg['pool_n'], cfg['verifier']])}.jsonl")
    todo = [p for p in problems if p.id not in cache.lines]
    if todo:
        log(f"pool: {len(todo)} problems x {cfg['pool_n']} samples ({len(problems) - len(todo)} cached) -> {cache.path}")
        strategy = BestOfN(verifier=verifier, n=cfg["pool_n"], params=sampling_params(cfg))
        shape = backend.shape
        started, done = time.perf_counter(), 0

        def on_result(result) -> None:
            nonlocal done
            p, trace = result.problem, result.trace
            key = vote_key_for(p)
            prompt = int(trace.ledger["prompt_tokens"])
            gen_flops = [shape.flops(prompt, prompt + c.num_tokens) for c in trace.candidates]
            extra = trace.ledger["flops"] - shape.flops(0, prompt) - sum(gen_flops)  # the verifier's share
            samples = [{"answer": c.answer, "key": None if c.answer is None else (key(c.answer) if key else c.answer),
                        "correct": bool(ok), "tokens": c.num_tokens, "flops": f,
                        "score": c.scores.get(verifier.name)}
                       for c, ok, f in zip(trace.candidates, result.candidate_correct, gen_flops)]
            cache.write({"id": p.id, "dataset": p.metadata["sweep_dataset"], "prompt_tokens": prompt,
                         "prompt_flops": shape.flops(0, prompt),
                         "verifier_flops_per_sample": max(0.0, extra) / max(1, len(samples)), "samples": samples})
            done += 1
            if done % 10 == 0 or done == len(todo):
                log(f"pool: {done}/{len(todo)} problems, {time.perf_counter() - started:.0f} s")

        forget_states()  # each setting pays its own verifier work
        await run_async(todo, strategy, backend, grader=grader_for, concurrency=cfg["concurrency"],
                        seed=cfg["seed"], on_result=on_result)
    return cache.lines


def pool_rows(cfg, pool: dict[str, dict]) -> list[Row]:
    """Single, majority@k, best-of-N@k, weighted majority@k per problem, averaged over random subsets."""
    ks = [k for k in (2 ** i for i in range(20)) if k <= cfg["pool_n"]]
    rows = []
    for pid, rec in pool.items():
        samples = rec["samples"]
        rng = random.Random(derive_seed(cfg["seed"], "bootstrap", pid))
        for k in ks:
            reps = cfg["bootstrap"]
            names = ["single"] if k == 1 else cfg["sampling"]
            totals = {s: [0.0, 0.0, 0.0] for s in names}
            for _ in range(reps):
                subset = rng.sample(samples, min(k, len(samples)))
                tokens = sum(s["tokens"] for s in subset)
                flops = rec["prompt_flops"] + sum(s["flops"] for s in subset)
                for s in names:
                    correct = select_from(s, subset, rng)
                    cost_flops = flops + (rec["verifier_flops_per_sample"] * len(subset) if s != "majority" else 0.0)
                    t = totals[s]
                    t[0] += correct
                    t[1] += tokens
                    t[2] += cost_flops
            for s, (acc, tok, fl) in totals.items():
                rows.append(Row(pid, Setting(s, k), acc / reps, tok / reps, fl / reps))
    return rows


def select_from(strategy: str, subset: list[dict], rng: random.Random) -> float:
    """Whether the strategy's selection over ``subset`` is correct: the strategies' own rules
    (tts.strategies.select), ties drawn from the bootstrap's stream."""
    if strategy == "single":
        return float(subset[0]["correct"])
    scores = [s["score"] for s in subset]
    rule = {"best_of_n": "best", "majority": "majority", "weighted_majority": "weighted"}[strategy]
    chosen, _ = choose(rule, [s["key"] for s in subset], scores, rng.randrange(2**31))
    return float(subset[chosen]["correct"]) if chosen is not None else 0.0


# --- step 2: real runs -------------------------------------------------------------------------------
def real_settings(cfg) -> list[Setting]:
    out = []
    rev = cfg["revise"] or {}
    pairs = rev.get("pairs") or [(n, r) for n in rev.get("n", []) for r in rev.get("revisions", [])]
    for n, r in pairs:
        if 1 < r <= n:
            out.append(Setting.of("revise", int(n), revisions=int(r)))
    for spec in cfg["tree"] or []:
        for n in spec.get("n", []):
            out.append(Setting.of(spec["strategy"], n, **(spec.get("options") or {})))
    return out


def strategy_options(cfg, setting: Setting, verifier) -> dict:
    options = {k: cfg[k] for k in ("step_delimiter", "max_depth") if cfg[k] is not None}
    if not cfg["verifier"].startswith("confidence_"):
        options["step_scorer"] = verifier  # tree search scored by the reward model
    return options | dict(setting.options)


async def run_settings(cfg, problems, backend, verifier, out: Path) -> list[Row]:
    rows = []
    for setting in real_settings(cfg):
        cache = Cache(out / f"run-{digest([identity(cfg), setting.to_json(), cfg['verifier']])}.jsonl")
        todo = [p for p in problems if p.id not in cache.lines]
        if todo:
            log(f"{setting.label}: {len(todo)} problems ({len(problems) - len(todo)} cached)")
            strategy = create(setting.strategy, setting.n, sampling_params(cfg), strategy_options(cfg, setting, verifier))
            started = time.perf_counter()

            def on_result(result, cache=cache) -> None:
                led = result.trace.ledger
                cache.write({"id": result.problem.id, "setting": setting.label, "correct": bool(result.correct),
                             "generated_tokens": led["generated_tokens"], "flops": led["flops"],
                             "candidates": len(result.trace.candidates)})

            forget_states()  # each setting pays its own verifier work
            await run_async(todo, strategy, backend, grader=grader_for, concurrency=cfg["concurrency"],
                            seed=cfg["seed"], on_result=on_result)
            log(f"{setting.label}: done in {time.perf_counter() - started:.0f} s")
        rows += [Row(pid, setting, float(r["correct"]), r["generated_tokens"], r["flops"]) for pid, r in cache.lines.items()]
    return rows


# --- step 3-4: bins, policies, evaluation ------------------------------------------------------------
def probe_info(cfg, rec, feature_name: str | None = None) -> tuple[float, float, float]:
    """The predictor's feature and what the probes cost (tokens, FLOPs), from the first pool samples."""
    first = rec["samples"][: cfg["probes"]]
    feature = probe_feature([s["score"] for s in first], [s["key"] for s in first], feature_name or cfg["feature"],
                            [s["tokens"] for s in first])
    tokens = sum(s["tokens"] for s in first)
    flops = rec["prompt_flops"] + sum(s["flops"] for s in first) + rec["verifier_flops_per_sample"] * len(first)
    return feature, tokens, flops


def cross_fitted(fitted, swapped, rows, train, test, budgets, unit, cfg) -> list[dict]:
    """The predicted-bin policy cross-fitted over the two halves: each half routed by the policy fitted on
    the other, all problems pooled; per budget its accuracy, cost and the saving against best-of-N in
    ``unit`` with a bootstrap interval over all the problems."""
    from tts.routing import routed_rows
    from tts.routing_fit import baseline_curve, saving_interval

    everyone = list(train) + list(test)
    curve = baseline_curve(rows, everyone, "best_of_n", unit)
    out = []
    for b in budgets:
        chosen = []
        for model, held in ((fitted, test), (swapped, train)):
            routing = model.routings["predicted bins"]
            chosen += routed_rows(routing.rules, routing.rows, {p: routing.bins[p] for p in held}, b)
        point = Point(sum(r.cost(unit) for r in chosen) / len(chosen), sum(r.accuracy for r in chosen) / len(chosen))
        saved = compute_saved([point], curve)[0]
        span = saving_interval(chosen, rows, "best_of_n", unit, resamples=cfg["resamples"], seed=cfg["seed"]) \
            if cfg["resamples"] else None
        out.append({"budget": b, "accuracy": point.accuracy, "cost": point.cost, "saved": saved, "interval": span})
    return out


# --- step 5: the auto strategy for real --------------------------------------------------------------
async def auto_check(cfg, policy, problems, backend, budgets, out: Path) -> list[dict]:
    rows = []
    for budget in budgets:
        rules = {k: v for k, v in policy.to_json().items() if k != "meta"}  # not the command or date
        cache = Cache(out / f"auto-{digest([identity(cfg), rules, budget])}.jsonl")
        todo = [p for p in problems if p.id not in cache.lines]
        if todo:
            log(f"auto @ {budget:g} {cfg['unit']}: {len(todo)} held-out problems")
            # a cap policy's budget is each problem's hard limit; a mean policy's is an average to route for
            mean = policy.allocation == "mean"
            strategy = Auto(policy=policy, params=sampling_params(cfg), route_budget=budget if mean else None,
                            options={k: cfg[k] for k in ("step_delimiter", "max_depth") if cfg[k] is not None})
            cap = None if mean else Budget(**{cfg["unit"]: budget if cfg["unit"] == "flops" else int(budget)})

            def on_result(result, cache=cache) -> None:
                led = result.trace.ledger
                cache.write({"id": result.problem.id, "correct": bool(result.correct),
                             "generated_tokens": led["generated_tokens"], "flops": led["flops"],
                             "route": result.trace.info.get("route")})

            forget_states()  # each setting pays its own verifier work
            await run_async(todo, strategy, backend, grader=grader_for, budget=cap,
                            concurrency=cfg["concurrency"], seed=cfg["seed"], on_result=on_result)
        recs = [cache.lines[p.id] for p in problems]
        routes: dict[str, int] = {}
        for r in recs:
            label = (r["route"] or {}).get("rule", "?")
            routes[label] = routes.get(label, 0) + 1
        rows.append({"budget": budget, "problems": len(recs), "accuracy": sum(r["correct"] for r in recs) / len(recs),
                     "mean_tokens": sum(r["generated_tokens"] for r in recs) / len(recs),
                     "max_tokens": max(r["generated_tokens"] for r in recs),
                     "mean_flops": sum(r["flops"] for r in recs) / len(recs), "routes": routes})
    return rows


# --- tables and plots --------------------------------------------------------------------------------
def bin_range(edges, b: int) -> str:
    """The feature values of bin ``b`` (bin 0 holds the highest values)."""
    m = len(edges)
    lo = edges[m - 1 - b] if b < m else None
    hi = edges[m - b] if b > 0 else None
    if lo is None and hi is None:
        return "any"
    if hi is None:
        return f">= {lo:.2f}"
    if lo is None:
        return f"< {hi:.2f}"
    return f"{lo:.2f}-{hi:.2f}"


def fmt_ratio(saving, interval=None) -> str:
    if saving.ratio is not None:
        text = f"{saving.ratio:.1f}x"
    else:
        text = "never" if saving.at_least is None else f"never (>= {saving.at_least:.1f}x)"
    if interval:
        lo, hi = interval
        text += f" ({lo:.1f}-{'inf' if math.isinf(hi) else f'{hi:.1f}'})"
    return text


def plot_frontiers(cfg, rows, groups: dict[str, list[str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4.2), squeeze=False)
    families = sorted({r.setting.family for r in rows} - {"single"})  # single is k=1 of every sampling curve
    colors = {f: plt.cm.tab10(i % 10) for i, f in enumerate(families)}
    for ax, (title, members) in zip(axes[0], groups.items()):
        table = cells(rows, members)
        for fam in families:
            pts = sorted([c for c in table if c.setting.family == fam or (c.setting.strategy == "single" and fam in
                          ("majority", "best_of_n", "weighted_majority"))], key=lambda c: c.flops)
            if not pts:
                continue
            ax.plot([c.flops for c in pts], [c.accuracy for c in pts], "o-", ms=3, lw=1.2, color=colors[fam],
                    label=fam if ax is axes[0][0] else None)
        front = frontier(Point(c.flops, c.accuracy, c.setting.label) for c in table)
        ax.plot([p.cost for p in front], [p.accuracy for p in front], "--", color="0.25", lw=2.2, alpha=0.6,
                zorder=0, label="compute-optimal frontier" if ax is axes[0][0] else None)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{title} ({len(members)} problems)", fontsize=10)
        ax.set_xlabel("FLOPs per problem")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    fig.legend(loc="lower center", ncol=min(4, len(families) + 1), fontsize=8, frameon=False)
    fig.suptitle(f"{cfg['model']} on {'+'.join(cfg['datasets'])}: accuracy against FLOPs by oracle difficulty bin",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_policies(cfg, curves: dict[str, list[Point]], auto_rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    styles = {"majority": "o:", "best_of_n": "s:", "fixed best": "^-", "oracle bins": "D-", "predicted bins": "v-"}
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda p: p.cost)
        ax.plot([p.cost for p in pts], [p.accuracy for p in pts], styles.get(name, "o-"), ms=4, label=name)
    flops = cfg["unit"] == "flops"
    if auto_rows:
        ax.plot([r["mean_flops" if flops else "mean_tokens"] for r in auto_rows], [r["accuracy"] for r in auto_rows],
                "k*", ms=11, label="tts run --strategy auto (real runs)")
    ax.set_xscale("log")
    if not flops:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(("FLOPs" if flops else "generated tokens") + " per problem (held-out split)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("routing policies against best-of-N and majority, held-out problems", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main --------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="YAML recipe: `tts run` keys at the top level, this script's under compute_optimal:")
    ap.add_argument("--quick", action="store_true", help="a few problems and a small grid (minutes), for a smoke test")
    for name in list(RUN_KEYS) + ["out"]:
        kind = {"limit": int, "seed": int, "concurrency": int, "max_tokens": int, "max_depth": int,
                "temperature": float, "top_p": float}.get(name, str)
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    for name in ("pool_n", "bootstrap", "bins", "probes", "resamples"):
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=None)
    ap.add_argument("--allocation", choices=ALLOCATIONS, default=None,
                    help="split a budget between bins as a per-problem cap or as an average over problems")
    ap.add_argument("--figures", help="folder for the PNG plots (default: the output folder)")
    ap.add_argument("--write-default-policy", help="also write the fitted policy as this Python module")
    args = ap.parse_args()
    cfg = load_config(args)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(args.figures) if args.figures else out
    figures.mkdir(parents=True, exist_ok=True)
    command = "python experiments/compute_optimal.py " + " ".join(sys.argv[1:])
    wall_started = time.perf_counter()
    timings: dict[str, float] = {}

    problems, split = load_problems(cfg)
    train = [p.id for p in problems if split[p.id] == "train"]
    test = [p.id for p in problems if split[p.id] == "test"]
    log(f"{len(problems)} problems ({len(train)} train, {len(test)} held out) from {', '.join(cfg['datasets'])}; "
        f"model {cfg['model']} on {cfg['backend']}")
    verifier = verifier_from_spec(cfg["verifier"])
    engine_options = dict(cfg["engine_options"] or {})
    if cfg["backend"] == "openai":
        engine_options |= {"base_url": cfg["base_url"], **({"api_key": cfg["api_key"]} if cfg["api_key"] else {})}
    backend = backends.create(cfg["backend"], cfg["model"], **engine_options)
    timings["load"] = time.perf_counter() - wall_started
    try:
        t = time.perf_counter()
        pool = asyncio.run(build_pool(cfg, problems, backend, verifier, out))
        timings["pool"] = time.perf_counter() - t
        t = time.perf_counter()
        real = asyncio.run(run_settings(cfg, problems, backend, verifier, out))
        timings["real runs"] = time.perf_counter() - t

        rows = pool_rows(cfg, pool) + real
        unit = cfg["unit"]
        mean_sample = statistics.mean(s["tokens"] for rec in pool.values() for s in rec["samples"]) or 1.0
        if cfg["budgets"]:
            budgets = sorted(float(b) for b in cfg["budgets"])
        elif unit == "generated_tokens":
            steps = 2 * int(math.log2(cfg["pool_n"])) + 1
            budgets = sorted({float(round(1.1 * mean_sample * 2 ** (i / 2))) for i in range(steps)})
        else:  # FLOPs: from one verified sample's cost up to a pool's worth of tree search
            single = statistics.mean(rec["prompt_flops"] + s["flops"] + rec["verifier_flops_per_sample"]
                                     for rec in pool.values() for s in rec["samples"])
            steps = 2 * int(math.log2(cfg["pool_n"])) + 5
            budgets = sorted({float(f"{single * 2 ** (i / 2):.3g}") for i in range(steps)})

        # the analysis, as functions of the table (tts.routing.fit / evaluate): bins and routings fitted on
        # the training split, scored on the held-out one
        pass1 = {pid: sum(s["correct"] for s in rec["samples"]) / len(rec["samples"]) for pid, rec in pool.items()}
        features = {name: {pid: probe_info(cfg, rec, name)[0] for pid, rec in pool.items()} for name in BASE_FEATURES}
        probe_cost = {pid: probe_info(cfg, rec, BASE_FEATURES[0])[1:] for pid, rec in pool.items()}
        fitted = fit(rows, pass1, features, train, budgets, probe_cost=probe_cost, bins=cfg["bins"],
                     probes=cfg["probes"], feature=cfg["feature"], verifier=cfg["verifier"], unit=unit,
                     tolerance=cfg["tolerance"], allocation=cfg["allocation"])
        if cfg["feature"] == "auto":
            log(f"predictor feature: {fitted.feature} (Spearman with pass@1 on the training split "
                f"{fitted.correlations[fitted.feature][0]:.2f})")
        cfg["feature"] = fitted.feature
        policy = dataclasses.replace(
            fitted.policy,
            params={"temperature": cfg["temperature"], "top_p": cfg["top_p"], "max_tokens": cfg["max_tokens"]},
            meta={"model": cfg["model"], "backend": cfg["backend"], "datasets": cfg["datasets"],
                  "train_problems": len(train), "command": command, "created": time.strftime("%Y-%m-%d")})
        policy.save(out / "policy.json")
        if args.write_default_policy:
            policy.save(Path(args.write_default_policy))
        evaluation = evaluate(fitted, rows, test, resamples=cfg["resamples"], seed=cfg["seed"])
        # the same fit with the halves swapped, so every problem is held out once (twice the held-out problems)
        swapped = fit(rows, pass1, features, test, budgets, probe_cost=probe_cost, bins=cfg["bins"],
                      probes=cfg["probes"], feature=cfg["feature"], verifier=cfg["verifier"], unit=unit,
                      tolerance=cfg["tolerance"], allocation=cfg["allocation"])
        crossfit = cross_fitted(fitted, swapped, rows, train, test, budgets, unit, cfg)

        t = time.perf_counter()
        check_budgets = [float(b) for b in (budgets[1::2][:3] if cfg["auto_check"] is None else cfg["auto_check"])]
        test_problems = [p for p in problems if split[p.id] == "test"]
        auto_rows = asyncio.run(auto_check(cfg, policy, test_problems, backend, check_budgets, out))
        timings["auto runs"] = time.perf_counter() - t
    finally:
        if hasattr(backend, "aclose"):
            asyncio.run(backend.aclose())
    timings["total"] = time.perf_counter() - wall_started

    # --- report ------------------------------------------------------------------------------------
    oracle, predicted = fitted.oracle, fitted.predicted
    oracle_bins, predicted_bins = fitted.oracle_bins, fitted.predicted_bins
    correlations, feature = fitted.correlations, fitted.values
    rho_train, rho_test = correlations[fitted.feature]
    agree = evaluation.bin_agreement
    curves_tok = evaluation.curves["generated_tokens"]
    by_dataset: dict[str, list[str]] = {}
    for p in problems:
        by_dataset.setdefault(p.metadata["sweep_dataset"], []).append(p.id)
    lines = [f"# Compute-optimal sweep: {cfg['model']} ({cfg['backend']}) on {', '.join(cfg['datasets'])}", "",
             f"Command: `{command}`  ", f"Wall time: {timings['total'] / 60:.1f} min "
             f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'total')}).  ",
             f"{len(problems)} problems ({len(train)} train, {len(test)} held out), pool of {cfg['pool_n']} samples "
             f"per problem (temperature {cfg['temperature']}, max {cfg['max_tokens']} tokens), verifier "
             f"{cfg['verifier']}, {cfg['bootstrap']} random subsets per (problem, k); budgets in {unit} per problem.", ""]
    lines += ["## Difficulty", "", "| dataset | problems | pass@1 (pool) | oracle bins 0/1/2... | predicted bins 0/1/2... |",
              "|---|---|---|---|---|"]
    for ds, ids in by_dataset.items():
        ob = [sum(1 for p in ids if oracle_bins[p] == b) for b in range(oracle.count)]
        pb = [sum(1 for p in ids if predicted_bins[p] == b) for b in range(predicted.count)]
        lines.append(f"| {ds} | {len(ids)} | {statistics.mean(pass1[p] for p in ids):.3f} | "
                     f"{'/'.join(map(str, ob))} | {'/'.join(map(str, pb))} |")
    lines += ["", f"Oracle bin edges on pass@1 (bin 0 easiest): {', '.join(f'{e:.3f}' for e in oracle.edges) or 'none'}; "
              f"predictor ({cfg['feature']} of {cfg['verifier']} over the first {cfg['probes']} samples) edges: "
              f"{', '.join(f'{e:.3f}' for e in predicted.edges) or 'none'}. Spearman correlation of the predictor "
              f"with pass@1: {rho_train:.2f} train, {rho_test:.2f} held out; predicted bin = oracle bin for "
              f"{agree:.0%} of held-out problems.", "",
              "| predictor feature (first " + str(cfg["probes"]) + " samples) | Spearman with pass@1, train | held out |",
              "|---|---|---|"]
    lines += [f"| {name}{' (chosen)' if name == cfg['feature'] else ''} | {a:.2f} | {b:.2f} |"
              for name, (a, b) in correlations.items()]
    weights = fitted.policy.predictor.weights
    if weights:
        lines += ["", "The linear predictor (least squares on the training split; its training correlation is "
                  "cross-fitted over 5 folds): predicted pass@1 = " + f"{fitted.policy.predictor.intercept:+.3f} "
                  + " ".join(f"{w:+.3f} x {name}" for name, w in weights) + "."]
    lines += [""]

    lines += ["## Every setting, all problems (accuracy / generated tokens / FLOPs per problem)", "",
              "| setting | all | " + " | ".join(f"oracle bin {b}" for b in range(oracle.count)) + " |",
              "|---|---|" + "---|" * oracle.count]
    all_ids = list(pool)
    per_bin_ids = {b: [p for p in all_ids if oracle_bins[p] == b] for b in range(oracle.count)}
    table_all = {c.setting: c for c in cells(rows, all_ids)}
    tables_bin = {b: {c.setting: c for c in cells(rows, ids)} for b, ids in per_bin_ids.items() if ids}
    for s, c in sorted(table_all.items(), key=lambda kv: (kv[0].family, kv[0].n)):
        parts = [f"{c.accuracy:.3f} / {c.generated_tokens:.0f} / {c.flops:.2e}"]
        for b in range(oracle.count):
            cb = tables_bin.get(b, {}).get(s)
            parts.append("-" if cb is None else f"{cb.accuracy:.3f} / {cb.generated_tokens:.0f}")
        lines.append(f"| {s.label} | " + " | ".join(parts) + " |")

    lines += ["", "## Chosen setting per bin and budget (training split)", "",
              "| budget | fixed best | " + " | ".join(f"oracle bin {b}" for b in range(oracle.count)) + " | "
              + " | ".join(f"predicted bin {b}" for b in range(predicted.count)) + " |",
              "|---|---|" + "---|" * (oracle.count + predicted.count)]
    rule_at = {name: {(r.bin, r.budget): r for r in rules} for name, rules in fitted.rules.items()}

    def cell_text(r):
        return f"{r.setting.label} ({r.accuracy:.2f}{', over' if r.over_budget else ''})"

    for b in budgets:
        parts = [cell_text(rule_at["fixed best"][(0, b)])]
        parts += [cell_text(rule_at["oracle bins"][(i, b)]) if (i, b) in rule_at["oracle bins"] else "-" for i in range(oracle.count)]
        parts += [cell_text(rule_at["predicted bins"][(i, b)]) if (i, b) in rule_at["predicted bins"] else "-" for i in range(predicted.count)]
        lines.append(f"| {b:g} | " + " | ".join(parts) + " |")

    lines += ["", "## Held-out split: policies against best-of-N and majority", "",
              "Each policy point is (accuracy, mean generated tokens, mean FLOPs) on the held-out problems at one budget; "
              "'saves' is how many times more the baseline spends to be as accurate (interpolated in log compute "
              "along its curve; 'never' when it does not get there within the pool, with the lower bound its largest "
              "setting gives). In brackets: the 95% bootstrap interval over the held-out problems "
              f"({cfg['resamples']} resamples, paired: the policy and the baseline on the same draw; 'inf' when "
              "the baseline falls short of the policy in more than 2.5% of the draws)." if cfg["resamples"] else
              "setting gives).", "",
              f"Allocation: {cfg['allocation']} ("
              + ("each budget is a per-problem cap" if cfg["allocation"] == "cap" else
                 "each budget is the average over problems; a bin's setting may cost more or less") + ").", "",
              "| policy | budget | accuracy | tokens | FLOPs | vs best-of-N (tokens) | vs majority (tokens) | vs best-of-N (FLOPs) | vs majority (FLOPs) |",
              "|---|---|---|---|---|---|---|---|---|"]
    savings: dict[str, list[dict]] = {}
    for name, outcomes in evaluation.outcomes.items():
        savings[name] = []
        for o in outcomes:
            def key(base, unit_):
                return f"vs_{base}_{'tokens' if unit_ == 'generated_tokens' else unit_}"

            ratios = {key(*k): saved for k, saved in o.saved.items()}
            spans = {key(*k): span for k, span in o.intervals.items()}
            lines.append(f"| {name} | {o.budget:g} | {o.accuracy:.3f} | {o.tokens:.0f} | {o.flops:.2e} | "
                         + " | ".join(fmt_ratio(ratios[k], spans.get(k)) for k in (
                             "vs_best_of_n_tokens", "vs_majority_tokens", "vs_best_of_n_flops", "vs_majority_flops"))
                         + " |")
            savings[name].append({"budget": o.budget, "accuracy": o.accuracy, "tokens": o.tokens, "flops": o.flops}
                                 | {k: v.ratio for k, v in ratios.items()}
                                 | {k + "_interval": list(v) for k, v in spans.items()})
    lines += ["", "Baselines on the held-out split: " + "; ".join(
        f"{name}: " + ", ".join(f"{p.label} {p.accuracy:.3f} @ {p.cost:.0f}" for p in curves_tok[name])
        for name in ("majority", "best_of_n")), ""]

    lines += ["## Cross-fitted: every problem held out once", "",
              f"The predicted-bin policy fitted on each half routes the other half; all {len(problems)} problems "
              f"pooled. Saving against best-of-N in {unit} on the same problems, with its bootstrap interval.", "",
              "| budget | accuracy | cost | vs best-of-N |", "|---|---|---|---|"]
    lines += [f"| {c['budget']:g} | {c['accuracy']:.3f} | {c['cost']:.3g} | {fmt_ratio(c['saved'], c['interval'])} |"
              for c in crossfit]
    lines += [""]
    lines += ["## `auto` for real on the held-out split", "",
              ("Each budget is `--route-budget` (an average to route for, no per-problem cap)." if cfg["allocation"] == "mean"
               else f"Each budget is a hard per-problem cap in {unit}."), "",
              "| budget | problems | accuracy | mean tokens | max tokens | mean FLOPs | vs best-of-N (FLOPs) | routes |",
              "|---|---|---|---|---|---|---|---|"]
    for r in auto_rows:
        routes = ", ".join(f"{k} x{v}" for k, v in sorted(r["routes"].items(), key=lambda kv: -kv[1]))
        saved = compute_saved([Point(r["mean_flops"], r["accuracy"])], evaluation.curves["flops"]["best_of_n"])[0]
        r["vs_best_of_n_flops"] = saved.ratio
        lines.append(f"| {r['budget']:g} | {r['problems']} | {r['accuracy']:.3f} | {r['mean_tokens']:.1f} | "
                     f"{r['max_tokens']} | {r['mean_flops']:.2e} | {fmt_ratio(saved)} | {routes} |")
    lines.append("")
    report = "\n".join(lines)
    (out / "report.md").write_text(report)
    print(report)

    groups = {"all problems": all_ids} | {f"oracle bin {b}, pass@1 {bin_range(oracle.edges, b)}": ids
                                          for b, ids in per_bin_ids.items() if ids}
    plot_frontiers(cfg, rows, groups, figures / "compute_optimal_frontier.png")
    plot_policies(cfg, evaluation.curves[unit], auto_rows, figures / "compute_optimal_policies.png")
    summary = {
        "config": {k: v for k, v in cfg.items() if k != "api_key"}, "command": command, "timings": timings,
        "budgets": budgets, "oracle_edges": oracle.edges, "predicted_edges": predicted.edges,
        "spearman": {"train": rho_train, "test": rho_test}, "feature_correlations": correlations, "bin_agreement_test": agree,
        "split": split, "pass1": pass1, "feature": feature,
        "rows": [{"problem": r.problem, "setting": r.setting.label, "accuracy": r.accuracy,
                  "generated_tokens": r.generated_tokens, "flops": r.flops} for r in rows],
        "policies": {name: [r.to_json() for r in rules] for name, rules in fitted.rules.items()},
        "held_out": savings, "auto": auto_rows,
        "cross_fitted": [{"budget": c["budget"], "accuracy": c["accuracy"], "cost": c["cost"], "ratio": c["saved"].ratio,
                          "interval": c["interval"]} for c in crossfit],
        "baselines": {name: [dataclasses.asdict(p) for p in curves_tok[name]] for name in ("majority", "best_of_n")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"wrote {out / 'report.md'}, {out / 'summary.json'}, {out / 'policy.json'} and plots in {figures}; "
        f"{timings['total'] / 60:.1f} min")


if __name__ == "__main__":
    main()
