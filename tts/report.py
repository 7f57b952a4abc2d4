"""``tts report``: accuracy with intervals, pass@k and maj@k curves, and compute, from result files.

Input is one or more results JSONL files written by :mod:`tts.results`. For every file and strategy the
report gives accuracy with two 95% intervals (Wilson, and a seeded bootstrap over problems), pass@k and
maj@k for k = 1..N computed from each problem's candidate pool, mean generated tokens, FLOPs and wall
time, and the same broken down by ``metadata.level`` when records carry one.

Pool estimators (k <= n, the problem's number of graded candidates):

* pass@k is the unbiased estimator of Chen et al. (2021), :func:`tts.metrics.pass_at_k`.
* maj@k is the expected accuracy of a majority vote over a uniformly random size-k subset of the pool.
  Candidates vote with the vote key the run stored (boxed math: math-verify's, as the strategies vote),
  else with their normalized answer (:func:`tts.verifiers.answers.normalize_answer`); a
  candidate with no answer abstains, and a subset where everyone abstains scores 0. Ties between the top
  answers are broken uniformly at random, so a tie counts as the fraction of tied answers that are
  correct. The expectation is computed exactly (by enumerating vote counts per distinct answer, or
  subsets directly) when that is small enough, else estimated from seeded random subsets.

A problem enters the k-th point of a curve only when its pool holds at least k graded candidates; the
JSON output gives how many problems each point averages over.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import click

from .metrics import pass_at_k, wilson_interval

#: above this many enumeration steps per (problem, k) maj@k is estimated by sampling instead
EXACT_LIMIT = 20_000
#: random subsets drawn per (problem, k) when maj@k is estimated
MAJ_SAMPLES = 2_000
BOOTSTRAP_RESAMPLES = 2_000
X_AXES = ("tokens", "flops")


class ReportError(click.ClickException):
    """A missing or malformed results file: one line on stderr, exit status 2 (like the CLI's UserError)."""

    exit_code = 2


# --- pool estimators -------------------------------------------------------------------------------------

def pool_pass_at_k(correct: Sequence[bool], k: int) -> float:
    return pass_at_k(len(correct), sum(bool(c) for c in correct), k)


def _vote_value(counts: Sequence[int], quality: Sequence[float]) -> float:
    """Accuracy of a vote with ``counts`` per answer group: ties among the top groups split evenly."""
    top = max(counts, default=0)
    if top == 0:
        return 0.0
    winners = [q for c, q in zip(counts, quality) if c == top]
    return sum(winners) / len(winners)


def _groups(answers: Sequence[str | None], correct: Sequence[bool]) -> tuple[list[int], list[float], int]:
    """Sizes and correctness of each distinct voted answer, and the number of abstentions."""
    members: dict[str, list[bool]] = {}
    abstain = 0
    for answer, ok in zip(answers, correct):
        key = _normalized(answer) if answer is not None else None
        if key is None:
            abstain += 1
        else:
            members.setdefault(key, []).append(bool(ok))
    sizes = [len(v) for v in members.values()]
    # the same answer graded differently would be a grader bug; averaging keeps the estimate defined
    quality = [sum(v) / len(v) for v in members.values()]
    return sizes, quality, abstain


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int, *,
             rng: random.Random | None = None, exact_limit: int = EXACT_LIMIT,
             samples: int = MAJ_SAMPLES) -> tuple[float, bool]:
    """Expected majority-vote accuracy over random size-k subsets of the pool; ``(value, exact)``."""
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"maj_at_k: {n} answers but {len(correct)} correctness values")
    if not 1 <= k <= n:
        raise ValueError(f"maj_at_k needs 1 <= k <= n, got k={k}, n={n}")
    sizes, quality, abstain = _groups(answers, correct)
    all_sizes = sizes + [abstain]
    # number of vote-count vectors is at most the product of (min(size, k) + 1) over groups
    compositions = math.prod(min(m, k) + 1 for m in all_sizes)
    if compositions <= exact_limit:
        return _maj_by_counts(sizes, quality, abstain, k), True
    if math.comb(n, k) <= exact_limit:
        labels = [i for i, m in enumerate(sizes) for _ in range(m)] + [-1] * abstain
        total = 0.0
        for subset in itertools.combinations(labels, k):
            counts = Counter(i for i in subset if i >= 0)
            total += _vote_value([counts.get(i, 0) for i in range(len(sizes))], quality)
        return total / math.comb(n, k), True
    rng = rng or random.Random(0)
    labels = [i for i, m in enumerate(sizes) for _ in range(m)] + [-1] * abstain
    total = 0.0
    for _ in range(samples):
        counts = Counter(i for i in rng.sample(labels, k) if i >= 0)
        total += _vote_value([counts.get(i, 0) for i in range(len(sizes))], quality)
    return total / samples, False


@functools.lru_cache(maxsize=1 << 16)
def _normalized(answer: str) -> str | None:
    """normalize_answer, remembered: a report normalizes the same few answers millions of times."""
    from .verifiers.answers import normalize_answer

    return normalize_answer(answer)


def _maj_by_counts(sizes: Sequence[int], quality: Sequence[float], abstain: int, k: int) -> float:
    # many problems share a vote structure (8 samples, 2 answers split 5/3, ...): compute each once
    return _maj_by_counts_cached(tuple(sizes), tuple(quality), abstain, k)


@functools.lru_cache(maxsize=1 << 16)
def _maj_by_counts_cached(sizes: tuple, quality: tuple, abstain: int, k: int) -> float:
    """Exact expectation by enumerating how many of the k picks fall in each group (multivariate
    hypergeometric weights), which is far fewer cases than subsets when answers repeat."""
    n = sum(sizes) + abstain
    total = 0.0
    counts = [0] * len(sizes)

    def walk(i: int, left: int, weight: int) -> None:
        nonlocal total
        if i == len(sizes):
            if left <= abstain:
                total += weight * math.comb(abstain, left) * _vote_value(counts, quality)
            return
        for j in range(min(sizes[i], left) + 1):
            counts[i] = j
            walk(i + 1, left - j, weight * math.comb(sizes[i], j))
        counts[i] = 0

    walk(0, k, 1)
    return total / math.comb(n, k)


def bootstrap_interval(values: Sequence[float], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean, resampling problems with replacement."""
    if not values:
        return None
    import numpy as np

    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    # resamples drawn in blocks of about 4 million indices, so memory stays bounded for any file size
    block = max(1, 4_000_000 // len(data))
    means = np.concatenate([data[rng.integers(0, len(data), size=(min(block, resamples - i), len(data)))].mean(axis=1)
                            for i in range(0, resamples, block)])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


# --- reading ----------------------------------------------------------------------------------------------

def binary_bootstrap_interval(successes: int, n: int, *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                              level: float = 0.95) -> tuple[float, float] | None:
    """:func:`bootstrap_interval` of n outcomes of which ``successes`` are 1, without the outcomes:
    the mean of n draws with replacement from them is Binomial(n, successes / n) / n, so the resamples
    are drawn directly, in memory and time that do not grow with n."""
    if n == 0:
        return None
    import numpy as np

    means = np.random.default_rng(seed).binomial(n, successes / n, size=resamples) / n
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


class Tally:
    """What a report keeps of one strategy's records (or one level's): sums, and per-k sums of the
    pool curves; never the records. So ``tts report`` reads a file of any length in memory that grows
    with the largest pool, not the number of records."""

    def __init__(self) -> None:
        self.problems = self.graded = self.correct = 0
        self.generated = self.prompt = self.flops = self.wall = 0.0
        self.candidates = self.candidate_tokens = self.pool_size = 0
        self.pass_sums: list[float] = []  # index k-1: sum of pass@k over problems with >= k candidates
        self.maj_sums: list[float] = []
        self.eligible: list[int] = []
        self.maj_exact = True
        #: per run invocation (RunClock session): [first problem's start, last problem's end] in seconds
        self.sessions: dict[str, list[float]] = {}

    def add(self, record: Mapping, *, seed: int = 0) -> None:
        self.problems += 1
        ledger = record.get("ledger") or {}
        self.generated += ledger.get("generated_tokens", 0)
        self.prompt += ledger.get("prompt_tokens", 0)
        self.flops += ledger.get("flops", 0.0)
        self.wall += ledger.get("wall_seconds", 0.0)
        self._time(record.get("timing"), ledger.get("wall_seconds", 0.0))
        if record.get("correct") is None:
            return
        self.graded += 1
        self.correct += bool(record["correct"])
        graded = [c for c in record.get("candidates", []) if isinstance(c, Mapping) and c.get("correct") is not None]
        if not graded:
            return
        self.candidates += len(graded)
        self.candidate_tokens += sum(c.get("num_tokens", 0) for c in graded)
        # The stored vote key (boxed math) groups answers the way the strategy voted; else the answer itself.
        answers = [c.get("vote_key") or c.get("answer") for c in graded]
        correct = [bool(c["correct"]) for c in graded]
        n = len(graded)
        self.pool_size = max(self.pool_size, n)
        while len(self.eligible) < n:
            self.pass_sums.append(0.0)
            self.maj_sums.append(0.0)
            self.eligible.append(0)
        for k in range(1, n + 1):
            # seeded per problem and k, so a sampled estimate does not depend on what else is in the file
            rng = random.Random(f"{seed}:{record.get('id')}:{k}")
            value, exact = maj_at_k(answers, correct, k, rng=rng)
            self.maj_exact = self.maj_exact and exact
            self.maj_sums[k - 1] += value
            self.pass_sums[k - 1] += pool_pass_at_k(correct, k)
            self.eligible[k - 1] += 1

    def _time(self, timing: Any, wall: Any) -> None:
        if not isinstance(timing, Mapping):
            return
        end, session = timing.get("elapsed_s"), timing.get("session")
        if not isinstance(end, (int, float)) or isinstance(end, bool) or not math.isfinite(end) or not isinstance(session, str):
            return  # a file from before timing was recorded, or a hand-edited one: no elapsed time
        wall = wall if isinstance(wall, (int, float)) and math.isfinite(wall) else 0.0
        span = self.sessions.setdefault(session, [end - wall, end])
        span[0], span[1] = min(span[0], end - wall), max(span[1], end)

    @property
    def elapsed(self) -> float | None:
        """The run's elapsed seconds: per invocation, from the first problem's start to the last one's end,
        summed over invocations (a resumed run); None when the records carry no timing."""
        return sum(b - a for a, b in self.sessions.values()) if self.sessions else None

    @property
    def full_k(self) -> int:
        """The largest k that every problem with a pool reaches: the N a table can quote without
        counting a pool smaller than k as a miss (a beam search's pool varies in size)."""
        return sum(1 for e in self.eligible if e == self.eligible[0]) if self.eligible else 0

    def summary(self, *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES, with_curves: bool = True) -> dict:
        out: dict[str, Any] = {
            "problems": self.problems,
            "graded": self.graded,
            "accuracy": self.correct / self.graded if self.graded else None,
            "wilson": list(wilson_interval(self.correct, self.graded)) if self.graded else None,
            "bootstrap": (list(binary_bootstrap_interval(self.correct, self.graded, seed=seed, resamples=resamples))
                          if self.graded else None),
            "pool_size": self.pool_size,
            "generated_tokens": float(self.generated),
            "mean_generated_tokens": self.generated / self.problems if self.problems else 0.0,
            "mean_tokens_per_candidate": self.candidate_tokens / self.candidates if self.candidates else None,
            "prompt_tokens": float(self.prompt),
            "flops": float(self.flops),
            "mean_flops": self.flops / self.problems if self.problems else 0.0,
            "wall_seconds": float(self.wall),
            "elapsed_seconds": self.elapsed,
            "full_k": self.full_k,
        }
        if with_curves:
            out["curve"] = [{"k": k + 1, "problems": self.eligible[k], "pass_at_k": self.pass_sums[k] / self.eligible[k],
                             "maj_at_k": self.maj_sums[k] / self.eligible[k]} for k in range(len(self.eligible))]
            out["maj_exact"] = self.maj_exact
        return out


def summarize_records(records: Iterable[Mapping], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                      with_curves: bool = True) -> dict:
    """Accuracy, intervals, pool curves and compute of one strategy's records (a plain dict)."""
    tally = Tally()
    for record in records:
        tally.add(record, seed=seed)
    return tally.summary(seed=seed, resamples=resamples, with_curves=with_curves)


def _level_key(level: Any) -> tuple:
    return (0, level, "") if isinstance(level, (int, float)) and not isinstance(level, bool) else (1, 0, str(level))


def build_report(files: Sequence[str | Path], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                 each: Callable[[int, Mapping], None] | None = None) -> dict:
    """The whole report as plain data (what ``--json`` prints). Each file is read once, as a stream
    (every line checked: type, fields, digest, duplicates), into one tally per strategy and level;
    ``each(file index, record)`` sees every record on the way (``tts view`` keeps its own part)."""
    from .results import ResultsFileError, iter_records

    out_files = []
    for path in files:
        tallies: dict[str, Tally] = {}
        levels: dict[str, dict[Any, Tally]] = {}
        level_names: dict[Any, Any] = {}
        datasets: set[str] = set()
        models: set[str] = set()
        count = 0
        try:
            for rec in iter_records(path):
                count += 1
                if each is not None:
                    each(len(out_files), rec)
                name = rec["strategy"]
                tallies.setdefault(name, Tally()).add(rec, seed=seed)
                level = (rec.get("metadata") or {}).get("level")
                if level is not None:
                    key = json.dumps(level, sort_keys=True)  # any JSON value; 3 and "3" stay apart
                    level_names.setdefault(key, level)
                    levels.setdefault(name, {}).setdefault(key, Tally()).add(rec, seed=seed)
                if rec.get("dataset") is not None:
                    datasets.add(str(rec["dataset"]))
                if rec.get("model") is not None:
                    models.add(str(rec["model"]))
        except ResultsFileError as exc:
            raise ReportError(str(exc)) from None
        if not count:
            raise ReportError(f"{path}: no results in the file (empty, or only a cut-off line)")
        strategies = {}
        for name, tally in tallies.items():
            summary = tally.summary(seed=seed, resamples=resamples)
            if name in levels:
                ordered = sorted(levels[name], key=lambda k: _level_key(level_names[k]))
                summary["levels"] = {str(level_names[k]): {"level": level_names[k],
                                                            **levels[name][k].summary(seed=seed, resamples=resamples)}
                                     for k in ordered}
            strategies[name] = summary
        out_files.append({"path": str(path), "records": count, "datasets": sorted(datasets), "models": sorted(models),
                          "strategies": strategies})
    return {"files": out_files, "seed": seed, "bootstrap_resamples": resamples,
            "maj_tie_rule": "ties split evenly among the tied top answers; no-answer candidates abstain"}


# --- rendering -----------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _ci(ci: Sequence[float] | None) -> str:
    return "-" if not ci else f"{ci[0]:.2f}-{ci[1]:.2f}"


def _ks(n: int) -> list[int]:
    """Which k to show in a table: powers of two up to N, and N."""
    ks = [k for k in (2**i for i in range(12)) if k < n] + ([n] if n else [])
    return ks


def _strategy_column(table, names: Iterable[str], header: str = "strategy") -> None:
    """The strategy column: never wrapped or cut (the other columns fold first), as wide as its longest name."""
    table.add_column(header, no_wrap=True, min_width=max([len(header), *(len(n) for n in names)]))


def _at_full_k(s: Mapping) -> dict:
    """The curve point at the largest k that every problem reaches ({} without a pool)."""
    curve, k = s.get("curve") or [], s.get("full_k") or 0
    return curve[k - 1] if 0 < k <= len(curve) else {}


def _elapsed(s: Mapping) -> str:
    return "-" if s.get("elapsed_seconds") is None else f"{s['elapsed_seconds']:.1f}"


def render(report: Mapping):
    """A rich renderable of the report: per file a summary, the pool curves and the per-level table,
    and, with several files, one table comparing them side by side. Every table fits an 80-column
    terminal with strategy names whole: numbers fold before a name is cut."""
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    def table(title: str) -> Table:
        return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)

    def numbers(t: Table, columns: Iterable[str]) -> None:
        for col in columns:
            t.add_column(col, justify="right", overflow="fold")

    parts = []
    for f in report["files"]:
        names = list(f["strategies"])
        title = f["path"] + (f"  ({', '.join(f['datasets'])}" + (f"; {', '.join(f['models'])}" if f["models"] else "") + ")"
                             if f["datasets"] else "")
        main = table(escape(title) + "  (95% intervals)")
        _strategy_column(main, names)
        numbers(main, ("n", "acc", "Wilson", "bootstrap", "N"))
        compute = table("compute per problem; elapsed: the run's own time, first problem's start to last one's end")
        _strategy_column(compute, names)
        numbers(compute, ("gen tokens", "per cand", "prompt tok", "FLOPs", "elapsed s"))
        for name, s in f["strategies"].items():
            # N: the pool size every problem reaches ("8/12": some pools are larger, up to 12)
            pool = str(s.get("full_k") or 0) + ("" if s.get("full_k") == s["pool_size"] else f"/{s['pool_size']}")
            main.add_row(name, str(s["graded"]) if s["graded"] == s["problems"] else f"{s['graded']}/{s['problems']}",
                         _pct(s["accuracy"]), _ci(s["wilson"]), _ci(s["bootstrap"]), pool)
            per_cand = s.get("mean_tokens_per_candidate")
            compute.add_row(name, f"{s['mean_generated_tokens']:.1f}", "-" if per_cand is None else f"{per_cand:.1f}",
                            f"{s['prompt_tokens'] / max(s['problems'], 1):.1f}", f"{s['mean_flops']:.3g}", _elapsed(s))
        parts += [main, compute]

        n_max = max((s["pool_size"] for s in f["strategies"].values()), default=0)
        if n_max > 1:
            # long form (one row per strategy and k): fits any number of k values in 80 columns
            curves = table("pass@k / maj@k from the candidate pool (problems: how many reach k candidates; "
                           "N: the largest k every problem reaches)")
            _strategy_column(curves, names)
            numbers(curves, ("k", "problems", "pass@k", "maj@k"))
            for name, s in f["strategies"].items():
                curve = s.get("curve") or []
                by_k = {p["k"]: p for p in curve}
                everyone = curve[0]["problems"] if curve else 0
                full = s.get("full_k") or 0
                shown = sorted(set(_ks(len(curve))) | ({full} if full else set()))
                for i, k in enumerate(k for k in shown if k in by_k):
                    p = by_k[k]
                    share = str(p["problems"]) if p["problems"] == everyone else f"{p['problems']} of {everyone}"
                    curves.add_row(name if i == 0 else "", f"N={k}" if k == full and len(curve) > 1 else str(k), share,
                                   _pct(p["pass_at_k"]), _pct(p["maj_at_k"]))
            parts.append(curves)

        if any("levels" in s for s in f["strategies"].values()):
            levels = table("by level")
            _strategy_column(levels, names)
            levels.add_column("level", overflow="fold")
            numbers(levels, ("n", "acc", "95% Wilson", "pass@N", "tok/prob"))
            for name, s in f["strategies"].items():
                for key, lv in (s.get("levels") or {}).items():
                    levels.add_row(name, key, str(lv["graded"]), _pct(lv["accuracy"]), _ci(lv["wilson"]),
                                   _pct(_at_full_k(lv).get("pass_at_k")), f"{lv['mean_generated_tokens']:.0f}")
            parts.append(levels)

    if len(report["files"]) > 1:
        side = table("side by side: accuracy (95% Wilson) | mean generated tokens")
        names = list(dict.fromkeys(n for f in report["files"] for n in f["strategies"]))
        _strategy_column(side, names)
        numbers(side, (escape(Path(f["path"]).name) for f in report["files"]))
        for name in names:
            cells = []
            for f in report["files"]:
                s = f["strategies"].get(name)
                cells.append("-" if s is None else
                             f"{_pct(s['accuracy'])} ({_ci(s['wilson'])}) | {s['mean_generated_tokens']:.0f}")
            side.add_row(name, *cells)
        parts.append(side)
    return Group(*parts)


def print_report(report: Mapping, console=None) -> None:
    if console is None:
        from rich.console import Console

        console = Console(highlight=False)
    console.print(render(report))


def to_json(report: Mapping) -> str:
    return json.dumps(report, indent=2, sort_keys=False)


def _line_label(group: str, widths: Sequence[str], f: Mapping) -> str:
    """"best_of_n N=4,16, math500 (100 problems)": what a line is, without config hashes."""
    widths = [w for w in widths if w]
    data = ", ".join(f.get("datasets") or []) or Path(f["path"]).stem
    problems = max((s["problems"] for s in f["strategies"].values()), default=0)
    return f"{group}" + (f" N={','.join(widths)}" if widths else "") + f", {data} ({problems} problems)"


def plot(report: Mapping, path: str | Path, x: str = "tokens") -> Path:
    """Accuracy against mean generated tokens (or FLOPs) per problem. One line per (file, strategy): its
    widths (best_of_n@4, best_of_n@16) joined with Wilson intervals, labelled by strategy, N and
    dataset; lines of different files are never joined (their problem sets can differ). Dashed: the
    maj@k curve of each pool (k candidates cost k times the mean per candidate). The legend sits
    beside the axes, never over the data."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    line = 0
    for f in report["files"]:
        groups: dict[str, list[str]] = {}
        for name in f["strategies"]:
            groups.setdefault(name.split("@")[0], []).append(name)
        for group, members in groups.items():
            color = colors[line % len(colors)]
            points = []
            for name in members:
                s = f["strategies"][name]
                if s["accuracy"] is None:
                    continue
                xv = s["mean_generated_tokens"] if x == "tokens" else s["mean_flops"]
                points.append((xv, s["accuracy"], s["wilson"], name.split("@")[1] if "@" in name else str(s["pool_size"] or "")))
                curve = s.get("curve") or []
                per_candidate = _per_candidate(s, x)
                if len(curve) > 1 and per_candidate:
                    ax.plot([p["k"] * per_candidate for p in curve], [p["maj_at_k"] for p in curve], color=color,
                            alpha=0.5, linestyle="--", linewidth=1)
            if not points:
                continue
            points.sort()
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            err = [[y - p[2][0] for y, p in zip(ys, points)], [p[2][1] - y for y, p in zip(ys, points)]]
            ax.errorbar(xs, ys, yerr=err, fmt="o-", color=color, capsize=3,
                        label=_line_label(group, [p[3] for p in points], f))
            line += 1
    if line:
        ax.plot([], [], color="gray", linestyle="--", linewidth=1, label="maj@k from a sampled pool")
    positive = [v for ln in ax.get_lines() for v in ln.get_xdata() if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("mean generated tokens per problem" if x == "tokens" else "mean FLOPs per problem")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    ax.set_title("accuracy against compute (bars: 95% Wilson intervals)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _per_candidate(summary: Mapping, x: str) -> float | None:
    if x == "tokens":
        return summary.get("mean_tokens_per_candidate")
    n = summary.get("pool_size") or 0
    return summary["mean_flops"] / n if n and summary["mean_flops"] else None


# --- command -------------------------------------------------------------------------------------------

#: image formats --plot writes (what matplotlib's Agg backend saves)
PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


@click.command("report")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@click.option("--plot", "plot_path", default=None, help="Also draw accuracy against compute to this image file.")
@click.option("--x", "x_axis", type=click.Choice(X_AXES), default="tokens", show_default=True,
              help="What the plot's x axis counts.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and maj@k sampling.")
@click.option("--bootstrap", "resamples", type=click.IntRange(min=100), default=BOOTSTRAP_RESAMPLES,
              show_default=True, help="Bootstrap resamples for the intervals.")
def report_command(files, as_json, plot_path, x_axis, seed, resamples) -> None:
    """Summarize result files: accuracy with 95% intervals, pass@k and maj@k curves, tokens, FLOPs, wall
    time, per difficulty level; several files are also compared side by side."""
    if plot_path is not None:  # checked before any work, and never guessed (DIR must not become DIR.png)
        suffix = Path(plot_path).suffix.lower().lstrip(".")
        if Path(plot_path).is_dir():
            raise ReportError(f"--plot {plot_path} is a folder; give an image file such as {Path(plot_path) / 'accuracy.png'}")
        if suffix not in PLOT_FORMATS:
            raise ReportError(f"--plot {plot_path}: the file name must end in one of {', '.join('.' + f for f in PLOT_FORMATS)}")
        if not Path(plot_path).parent.is_dir():
            raise ReportError(f"--plot {plot_path}: no folder {Path(plot_path).parent}")
    report = build_report(files, seed=seed, resamples=resamples)
    if plot_path is not None:
        try:
            plot(report, plot_path, x=x_axis)
        except ImportError:
            raise ReportError("--plot needs matplotlib: pip install matplotlib") from None
        except OSError as exc:
            raise ReportError(f"--plot {plot_path}: {exc.strerror or exc}") from None
    if as_json:
        click.echo(to_json(report))
    else:
        print_report(report)
        if plot_path is not None:
            click.echo(f"plot: {plot_path}")
