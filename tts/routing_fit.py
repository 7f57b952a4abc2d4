"""Fitting a routing policy on a training split and scoring it on held-out problems.

This is the analysis half of the compute-optimal sweep (``experiments/compute_optimal.py``), kept apart
from the sampling half so that it can be rerun on a cached table in seconds, tested on synthetic tables
with known answers (tests/test_routing_fit.py) and reused by any script that has a result table:

* :func:`fit` takes the table (:class:`~tts.routing.Row` per problem and setting), each problem's pass@1
  and its probe features, and fits on the training split the difficulty bins and three routings to
  compare: one fixed setting per budget ("fixed best"), a setting per bin of the model's own pass@1
  ("oracle bins", an upper bound: it needs the answers) and a setting per bin of the probe feature
  ("predicted bins", the only one that can run on a new question; its :class:`~tts.routing.Policy` is
  what ``tts run --strategy auto`` loads).
* :func:`evaluate` scores the routings on the held-out problems against best-of-N and majority voting, in
  generated tokens and in FLOPs, and says how much compute each saves at equal accuracy.

Like :mod:`tts.routing`, these are functions of plain data: no file, no model, no configuration object.
Where the table comes from, what is cached and how the results are shown is the script's business.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

from .routing import (
    LINEAR_INPUTS, SAMPLING, Binning, Point, Policy, Predictor, Row, Rule, Saving, cells, compute_saved, cost_to_reach, evaluate_at,
    routed_rows, select,
)

#: the routings :func:`fit` returns, in the order reports show them
ROUTINGS = ("fixed best", "oracle bins", "predicted bins")
#: the strategies a routing is compared with (each curve starts at ``single``, its k = 1)
BASELINES = ("majority", "best_of_n")


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Rank correlation, ties sharing their mean rank; NaN pairs are dropped, and fewer than three pairs
    or a constant side give NaN (no evidence either way, which :func:`fit` never picks)."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return r

    pairs = [(x, y) for x, y in zip(xs, ys) if x == x and y == y]
    if len(pairs) < 3:
        return float("nan")
    rx, ry = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    try:
        return statistics.correlation(rx, ry)
    except statistics.StatisticsError:
        return float("nan")


def fit_linear(features: Mapping[str, Mapping[str, float]], pass1: Mapping[str, float], problems: Sequence[str],
               inputs: Sequence[str] = LINEAR_INPUTS) -> tuple[tuple[tuple[str, float], ...], float]:
    """Least-squares weights and intercept predicting pass@1 from the ``inputs`` base features over
    ``problems`` (those with every input finite). A problem the weights are then applied to and that lacks
    an input gets NaN, which the bins treat as the hardest."""
    import numpy as np

    usable = [p for p in problems if all(math.isfinite(features[f][p]) for f in inputs)]
    if len(usable) < len(inputs) + 2:
        raise ValueError(f"a linear predictor needs at least {len(inputs) + 2} problems with every feature, got {len(usable)}")
    x = np.array([[features[f][p] for f in inputs] + [1.0] for p in usable])
    y = np.array([pass1[p] for p in usable])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return tuple((f, float(w)) for f, w in zip(inputs, coef[:-1])), float(coef[-1])


def linear_values(features: Mapping[str, Mapping[str, float]], weights, intercept: float,
                  problems: Iterable[str]) -> dict[str, float]:
    return {p: intercept + sum(w * features[f][p] for f, w in weights) for p in problems}


def cross_fitted_spearman(features, pass1, train: Sequence[str], folds: int = 5) -> float:
    """The linear predictor's Spearman with pass@1 on the training split, each problem predicted by
    weights fitted without its fold: comparable with a base feature's, which is fitted on nothing."""
    predicted: dict[str, float] = {}
    for k in range(folds):
        held = train[k::folds]
        rest = [p for i, p in enumerate(train) if i % folds != k]
        weights, intercept = fit_linear(features, pass1, rest)
        predicted |= linear_values(features, weights, intercept, held)
    return spearman([predicted[p] for p in train], [pass1[p] for p in train])


def with_probes(rows: Iterable[Row], probe_cost: Mapping[str, tuple[float, float]] | None, probes: int) -> list[Row]:
    """The table as the predicted-bin policy meets it: it has always drawn its probes first. A sampling
    strategy reuses them as its first samples, so its row is unchanged (and a setting with fewer samples
    than the probes cannot occur: it is dropped); any other strategy starts from scratch and pays for the
    probes on top (``probe_cost``: problem -> (generated tokens, FLOPs) of its probes; None: free)."""
    out = []
    for r in rows:
        if r.setting.strategy in SAMPLING:
            if r.setting.n >= probes:
                out.append(r)
            continue
        if probe_cost is None:
            out.append(r)
            continue
        tokens, flops = probe_cost[r.problem]
        out.append(replace(r, generated_tokens=r.generated_tokens + tokens, flops=r.flops + flops))
    return out


@dataclass(frozen=True)
class Routing:
    """One way of routing: its rules (fitted on the training split), the bin it puts every problem in,
    and the table its rules are scored on (the predicted-bin one pays for its probes)."""

    rules: tuple[Rule, ...]
    bins: Mapping[str, int]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Fitted:
    """What :func:`fit` found. ``policy`` is the predicted-bin routing with its predictor, without
    provenance (add ``params`` and ``meta`` with :func:`dataclasses.replace` before saving it)."""

    policy: Policy
    #: the probe feature the predictor uses (chosen on the training split when fit was given "auto")
    feature: str
    oracle: Binning
    predicted: Binning
    #: by name, in :data:`ROUTINGS` order
    routings: Mapping[str, Routing]
    #: feature -> (Spearman with pass@1 on the training split, on the other problems); only the first
    #: decides, the second is there to report
    correlations: Mapping[str, tuple[float, float]]
    train: tuple[str, ...]
    budgets: tuple[float, ...]
    #: the chosen feature's value per problem (what the predicted bins cut)
    values: Mapping[str, float] = field(default_factory=dict)

    @property
    def rules(self) -> dict[str, tuple[Rule, ...]]:
        return {name: r.rules for name, r in self.routings.items()}

    @property
    def oracle_bins(self) -> Mapping[str, int]:
        return self.routings["oracle bins"].bins

    @property
    def predicted_bins(self) -> Mapping[str, int]:
        return self.routings["predicted bins"].bins


def fit(rows: Iterable[Row], pass1: Mapping[str, float], features: Mapping[str, Mapping[str, float]],
        train: Iterable[str], budgets: Sequence[float], *, probe_cost: Mapping[str, tuple[float, float]] | None = None,
        bins: int = 3, probes: int = 2, feature: str = "auto", verifier: str = "confidence_mean",
        unit: str = "generated_tokens", tolerance: float = 0.0, allocation: str = "cap") -> Fitted:
    """Fit the difficulty bins and the three routings on the ``train`` problems only.

    ``pass1`` (problem -> the model's pass@1 in the pool) names every problem; ``features`` maps each
    candidate probe feature to its value per problem (higher = easier, as
    :func:`~tts.routing.probe_feature` computes it). Bin edges are quantiles of the training problems, so
    the held-out problems are binned by edges they did not shape. ``feature="auto"`` takes the feature
    whose Spearman correlation with pass@1 is highest on the training split (a NaN correlation never
    wins), because choosing it on held-out problems would flatter the predicted-bin policy. ``verifier``
    and ``probes`` are recorded in the predictor: ``auto`` must score its probes the way the features
    were computed. The rest is passed to :func:`~tts.routing.select`; ``allocation`` applies to the bin
    routings (with one bin, "fixed best", both allocations are the same).
    """
    rows = list(rows)
    train = list(dict.fromkeys(train))
    unknown = [p for p in train if p not in pass1]
    if unknown:
        raise ValueError(f"training problems without a pass@1: {', '.join(map(repr, unknown[:3]))}")
    if not train:
        raise ValueError("no training problems to fit on")
    if not features:
        raise ValueError("no probe features to choose from")
    linear_ok = all(f in features for f in LINEAR_INPUTS)
    if feature != "auto" and feature not in features and not (feature == "linear" and linear_ok):
        raise ValueError(f"feature must be auto or one of {', '.join(features)}{', linear' if linear_ok else ''}, "
                         f"got {feature!r}")
    chosen = set(train)
    held_out = [p for p in pass1 if p not in chosen]

    def corr(values: Mapping[str, float], ids: Sequence[str]) -> float:
        return spearman([values[p] for p in ids], [pass1[p] for p in ids])

    correlations = {name: (corr(values, train), corr(values, held_out)) for name, values in features.items()}
    weights: tuple[tuple[str, float], ...] = ()
    intercept = 0.0
    values = dict(features)
    # under auto, a linear fit is tried only where it has ten problems per weight to fit on
    if linear_ok and (feature == "linear" or feature == "auto" and len(train) >= 10 * (len(LINEAR_INPUTS) + 1)):
        weights, intercept = fit_linear(features, pass1, train)
        values["linear"] = linear_values(features, weights, intercept, pass1)
        # on the training split, cross-fitted: in-sample it would win by fitting its own noise
        correlations["linear"] = (cross_fitted_spearman(features, pass1, train), corr(values["linear"], held_out))
    if feature == "auto":
        feature = max(values, key=lambda f: -2.0 if math.isnan(correlations[f][0]) else correlations[f][0])
    if feature != "linear":
        weights, intercept = (), 0.0
    value = values[feature]
    oracle = Binning.fit([pass1[p] for p in train], bins)
    predicted = Binning.fit([value[p] for p in train if value[p] == value[p]], bins)
    oracle_bins = {p: oracle.bin(pass1[p]) for p in pass1}
    predicted_bins = {p: predicted.bin(value[p]) for p in pass1}
    fixed_bins = {p: 0 for p in pass1}

    routed = with_probes(rows, probe_cost, probes)
    routings = {}
    for name, table, assigned in (("fixed best", rows, fixed_bins), ("oracle bins", rows, oracle_bins),
                                  ("predicted bins", routed, predicted_bins)):
        rules = select(table, {p: assigned[p] for p in train}, budgets, unit=unit, tolerance=tolerance,
                       allocation=allocation)
        routings[name] = Routing(tuple(rules), assigned, tuple(table))
    policy = Policy(routings["predicted bins"].rules, Predictor(probes, feature, verifier, predicted, weights, intercept),
                    unit, allocation=allocation)
    return Fitted(policy, feature, oracle, predicted, routings, correlations, tuple(train),
                  tuple(sorted(float(b) for b in budgets)), dict(value))


@dataclass(frozen=True)
class Outcome:
    """A routing on the held-out problems at one budget, and what it saves: ``saved[(baseline, unit)]``
    compares it with that baseline's curve in that unit (see :func:`~tts.routing.compute_saved`), and
    ``intervals[(baseline, unit)]`` is the 95% bootstrap interval of that ratio (see
    :func:`saving_interval`; empty when no resamples were asked for)."""

    budget: float
    accuracy: float
    tokens: float
    flops: float
    saved: Mapping[tuple[str, str], Saving]
    intervals: Mapping[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """Held-out curves and savings. ``curves[unit][name]``: a routing's points in budget order, a
    baseline's by cost; ``outcomes[routing]``: its points by generated tokens."""

    held_out: tuple[str, ...]
    budgets: tuple[float, ...]
    curves: Mapping[str, Mapping[str, tuple[Point, ...]]]
    outcomes: Mapping[str, tuple[Outcome, ...]]
    #: the share of held-out problems whose predicted bin is their oracle bin
    bin_agreement: float


def baseline_curve(rows: Iterable[Row], problems: Sequence[str], strategy: str, unit: str) -> list[Point]:
    """A baseline's (cost, accuracy) points over ``problems``, by cost; ``single`` is its k = 1."""
    pts = [Point(c.cost(unit), c.accuracy, c.setting.label) for c in cells(rows, problems)
           if c.setting.strategy in (strategy, "single")]
    return sorted(pts, key=lambda p: p.cost)


def saving_interval(chosen: Sequence[Row], baseline: Iterable[Row], strategy: str, unit: str, *,
                    resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval of what a routing saves against a baseline at equal accuracy.

    ``chosen`` is the row the routing ran on each held-out problem (one per problem); ``baseline`` the
    plain table, read for ``strategy``'s curve (``single`` as its k = 1) over the same problems. Each
    resample draws the problems with replacement and recomputes both the routing's point and the baseline's
    curve on that draw (paired: the same problems on both sides), then the ratio as
    :func:`~tts.routing.compute_saved` does. A draw where the baseline never gets as accurate counts as an
    unbounded saving, so the upper end may be ``inf``. The routing's rules stay as fitted: this is the
    noise of the held-out problems, not of the training split.
    """
    import numpy as np

    problems = [r.problem for r in chosen]
    if len(set(problems)) != len(problems) or not problems:
        raise ValueError("saving_interval needs one chosen row per held-out problem")
    index = {p: i for i, p in enumerate(problems)}
    table: dict[object, dict[str, Row]] = {}
    for r in baseline:
        if r.problem in index and r.setting.strategy in (strategy, "single"):
            table.setdefault(r.setting, {})[r.problem] = r
    settings = [s for s, rs in table.items() if len(rs) == len(problems)]
    if not settings:
        raise ValueError(f"no {strategy} setting has results for every held-out problem")
    pol_acc = np.array([r.accuracy for r in chosen])
    pol_cost = np.array([r.cost(unit) for r in chosen])
    base_acc = np.array([[table[s][p].accuracy for s in settings] for p in problems])
    base_cost = np.array([[table[s][p].cost(unit) for s in settings] for p in problems])
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(resamples):
        draw = rng.integers(0, len(problems), len(problems))
        cost = float(pol_cost[draw].mean())
        accs, costs = base_acc[draw].mean(axis=0), base_cost[draw].mean(axis=0)
        need = cost_to_reach([Point(float(c), float(a)) for c, a in zip(costs, accs)], float(pol_acc[draw].mean()))
        ratios.append(math.inf if need is None else need / cost if cost > 0 else math.nan)
    ratios = np.array([r for r in ratios if r == r])
    tail = (1 - level) / 2 * 100
    # order statistics, not interpolation: an interval end between two unbounded draws is unbounded, not NaN
    return (float(np.percentile(ratios, tail, method="lower")),
            float(np.percentile(ratios, 100 - tail, method="higher")))


def evaluate(fitted: Fitted, rows: Iterable[Row], held_out: Iterable[str], *, budgets: Sequence[float] | None = None,
             baselines: Sequence[str] = BASELINES, resamples: int = 0, seed: int = 0) -> Evaluation:
    """Score every routing of ``fitted`` on the ``held_out`` problems at each budget (default: the ones it
    was fitted for) and compare it with each baseline read off ``rows`` (the plain table), in both units.

    Both units are reported because they disagree: a verifier's forward passes cost FLOPs but no
    generated tokens, so best-of-N looks cheaper than it is in tokens. A saving is the baseline's cost to
    reach the routing's accuracy over the routing's cost, interpolated along the baseline's curve, so the
    baselines are compared where they are strongest, not at a fixed n. ``resamples`` > 0 adds a bootstrap
    interval to every saving (:func:`saving_interval`, seeded by ``seed``).
    """
    rows = list(rows)
    held_out = list(dict.fromkeys(held_out))
    overlap = set(held_out) & set(fitted.train)
    if overlap:
        raise ValueError(f"held-out problems that were fitted on: {', '.join(map(repr, sorted(overlap)[:3]))}")
    budgets = tuple(float(b) for b in (fitted.budgets if budgets is None else budgets))
    units = ("generated_tokens", "flops")
    curves: dict[str, dict[str, tuple[Point, ...]]] = {u: {} for u in units}
    for unit in units:
        for name in baselines:
            curves[unit][name] = tuple(baseline_curve(rows, held_out, name, unit))
        for name, routing in fitted.routings.items():
            assigned = {p: routing.bins[p] for p in held_out}
            curves[unit][name] = tuple(evaluate_at(routing.rules, routing.rows, assigned, b, unit) for b in budgets)
    outcomes = {}
    for name, routing in fitted.routings.items():
        tok, fl = curves["generated_tokens"][name], curves["flops"][name]
        order = sorted(range(len(budgets)), key=lambda i: tok[i].cost)
        assigned = {p: routing.bins[p] for p in held_out}
        found = []
        for j in order:
            saved = {(base, unit): compute_saved([pt], curves[unit][base])[0]
                     for base in baselines for unit, pt in (("generated_tokens", tok[j]), ("flops", fl[j]))}
            intervals = {}
            if resamples > 0:
                chosen = routed_rows(routing.rules, routing.rows, assigned, budgets[j])
                intervals = {(base, unit): saving_interval(chosen, rows, base, unit, resamples=resamples, seed=seed)
                             for base, unit in saved}
            found.append(Outcome(budgets[j], tok[j].accuracy, tok[j].cost, fl[j].cost, saved, intervals))
        outcomes[name] = tuple(found)
    oracle, predicted = fitted.oracle_bins, fitted.predicted_bins
    agree = sum(oracle[p] == predicted[p] for p in held_out) / max(1, len(held_out))
    return Evaluation(tuple(held_out), budgets, curves, outcomes, agree)
