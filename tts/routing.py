"""Compute-optimal routing (Snell et al. 2024): which strategy to run for a question of a given difficulty
under a given budget.

The pieces, in the order a sweep uses them (``experiments/compute_optimal.py``):

* :class:`Setting` names a strategy and its settings the way the strategy registry builds it
  (``revise`` with n=8 and ``revisions=4``); :class:`Row` is one problem's outcome under one setting:
  its (expected) correctness, generated tokens and FLOPs. A list of rows is a result table.
* :class:`Binning` cuts a difficulty feature into bins with edges fitted on a training split
  (:func:`fit_edges`): the model's own pass@1 from a sample pool (oracle bins, which need the answers) or a
  :class:`Predictor` feature computed from verifier scores of a few cheap probe samples (no answers).
  Bin 0 is the easiest (highest feature value).
* :func:`select` picks, for every bin and budget, a setting per bin in one of two ways
  (:data:`ALLOCATIONS`): ``cap``, the most accurate setting whose average cost in that bin fits the budget
  (the budget is a per-problem cap), or ``mean``, the settings that together are most accurate while the
  population's average cost fits the budget (:func:`allocate`: compute moves from bins where it buys
  little, the hopeless and the already solved, to the bins where it pays, as in Snell et al.). :class:`Policy` holds the choices and the predictor and is
  saved as versioned JSON (:meth:`Policy.save`, :meth:`Policy.load`, malformed files give one-line
  :class:`PolicyError` messages). ``tts run --strategy auto`` (strategies/auto.py) loads one.
* :func:`frontier` is the compute-optimal frontier of (cost, accuracy) points, :func:`evaluate_at` one
  point of a policy's curve, and :func:`compute_saved` says how much less compute a policy needs than a
  baseline (best-of-N, majority) at equal accuracy.
* :mod:`tts.routing_fit` puts these together: ``fit`` (bins and policies on a training split) and
  ``evaluate`` (held-out curves and compute saved), the analysis of the sweep as functions of tables.

This module imports no strategy and no engine: it is bookkeeping over tables, so it is tested on
synthetic tables with known optima (tests/test_routing.py).
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

FORMAT = "tts-routing-policy"
VERSION = 1
UNITS = ("generated_tokens", "flops")
#: what a predictor may read off its probes (:func:`probe_feature`)
BASE_FEATURES = ("mean_score", "max_score", "agreement", "agreement_score", "length")
#: a predictor's feature: one of the base features, or ``linear``, a combination of them fitted on a
#: training split (:class:`Predictor`'s weights)
FEATURES = BASE_FEATURES + ("linear",)
#: the base features a linear predictor combines (routing_fit.fit_linear)
LINEAR_INPUTS = ("mean_score", "agreement", "length")
#: how a budget is split between bins: a per-problem cap for each, or an average over all problems
ALLOCATIONS = ("cap", "mean")
#: strategies that are parallel samples plus a selection rule: a policy's probe samples count towards them
SAMPLING = ("single", "majority", "best_of_n", "weighted_majority")


#: the most probe samples a policy may ask for per question
MAX_PROBES = 64
#: the keys each part of a policy file may have (anything else is a typo, refused)
POLICY_KEYS = {"format", "version", "unit", "allocation", "predictor", "params", "meta", "rules"}
PREDICTOR_KEYS = {"probes", "feature", "verifier", "edges", "weights", "intercept"}
RULE_KEYS = {"bin", "budget", "strategy", "n", "options", "accuracy", "cost", "over_budget"}


def _unknown_keys(obj: Mapping, allowed: set, where: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; choose from {', '.join(sorted(allowed))}")


class PolicyError(ValueError):
    """A routing policy that cannot be used; the message is one line naming the file and the field."""


# --- settings and result tables ----------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """A strategy as the registry builds it: ``create(strategy, n, params, dict(options))``."""

    strategy: str
    n: int = 1
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str) or not self.strategy:
            raise ValueError(f"Setting.strategy must be a non-empty string, got {self.strategy!r}")
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"Setting.n must be a positive integer, got {self.n!r}")
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", tuple(sorted(self.options.items())))

    @classmethod
    def of(cls, strategy: str, n: int = 1, **options: Any) -> "Setting":
        return cls(strategy, n, tuple(sorted(options.items())))

    @property
    def label(self) -> str:
        """``majority@8``, ``revise@8[revisions=4]``: short, unique, sortable, one line."""
        return f"{self.strategy}@{self.n}" + self._extra()

    @property
    def family(self) -> str:
        """The label without n: the points of one family form one curve in a plot."""
        return self.strategy + self._extra()

    def _extra(self) -> str:
        # a value with a line break or tab (a step delimiter "\n") is written as its escape, so a label
        # stays one line in tables and logs
        extra = ",".join(f"{k}={str(v).encode('unicode_escape').decode() if any(c < ' ' for c in str(v)) else v}"
                         for k, v in self.options)
        return f"[{extra}]" if extra else ""

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "n": self.n, "options": dict(self.options)}

    @classmethod
    def from_json(cls, data: Any, where: str = "setting") -> "Setting":
        if not isinstance(data, Mapping):
            raise PolicyError(f"{where}: must be an object with strategy, n, options, got {data!r}")
        options = data.get("options", {})
        if not isinstance(options, Mapping):
            raise PolicyError(f"{where}.options: must be an object, got {options!r}")
        try:
            return cls(data.get("strategy"), data.get("n", 1), tuple(sorted(options.items())))
        except ValueError as exc:
            raise PolicyError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Row:
    """One problem solved under one setting: correctness (a fraction when it is an expectation over
    resampled subsets of a pool), and what it cost."""

    problem: str
    setting: Setting
    accuracy: float
    generated_tokens: float
    flops: float = 0.0

    def cost(self, unit: str) -> float:
        return self.generated_tokens if unit == "generated_tokens" else self.flops


@dataclass(frozen=True)
class Cell:
    """A setting's average over the problems of one bin."""

    setting: Setting
    accuracy: float
    generated_tokens: float
    flops: float
    problems: int

    def cost(self, unit: str) -> float:
        return self.generated_tokens if unit == "generated_tokens" else self.flops


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")


def cells(rows: Iterable[Row], problems: Iterable[str] | None = None) -> list[Cell]:
    """Average every setting over ``problems`` (default: all problems in the rows). Settings that lack a
    row for some of those problems are left out, so every cell compares the same questions."""
    by_setting: dict[Setting, dict[str, Row]] = {}
    for r in rows:
        by_setting.setdefault(r.setting, {})[r.problem] = r
    wanted = set(problems) if problems is not None else {p for rs in by_setting.values() for p in rs}
    out = []
    for setting, rs in by_setting.items():
        if not wanted or not wanted <= rs.keys():
            continue
        picked = [rs[p] for p in wanted]
        k = len(picked)
        out.append(Cell(setting, sum(r.accuracy for r in picked) / k, sum(r.generated_tokens for r in picked) / k,
                        sum(r.flops for r in picked) / k, k))
    return sorted(out, key=lambda c: (c.generated_tokens, c.setting.label))


# --- difficulty bins ---------------------------------------------------------------------------------
def fit_edges(values: Sequence[float], bins: int) -> tuple[float, ...]:
    """Cut points that split ``values`` into ``bins`` groups of (nearly) equal size, ascending.

    A cut falls midway between neighbouring distinct values. Tied values always share a bin: where a tie
    straddles a quantile the cut moves to whichever end of the tie is nearer, and repeated cuts are
    dropped, so heavily tied values (many problems with pass@1 = 0) give fewer bins rather than empty ones.
    """
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    v = sorted(float(x) for x in values)
    if not v or bins == 1:
        return ()
    edges: list[float] = []
    pos = 0  # values below the last cut
    for left in range(bins, 1, -1):  # split what is above the last cut evenly among the bins left
        target = pos + (len(v) - pos) / left
        idx = round(target)
        if 0 < idx < len(v) and v[idx - 1] == v[idx]:  # inside a tie: cut below or above it, whichever is nearer
            options = [j for j in (bisect.bisect_left(v, v[idx]), bisect.bisect_right(v, v[idx])) if pos < j < len(v)]
            idx = min(options, key=lambda j: (abs(j - target), j)) if options else len(v)
        if not pos < idx < len(v):
            continue
        edges.append((v[idx - 1] + v[idx]) / 2)
        pos = idx
    return tuple(edges)


@dataclass(frozen=True)
class Binning:
    """Bins of an "ease" feature (higher = easier); bin 0 holds the easiest problems."""

    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        edges = tuple(float(e) for e in self.edges)
        if any(not math.isfinite(e) for e in edges) or any(a >= b for a, b in zip(edges, edges[1:])):
            raise ValueError(f"Binning.edges must be finite and strictly increasing, got {self.edges!r}")
        object.__setattr__(self, "edges", edges)

    @classmethod
    def fit(cls, values: Sequence[float], bins: int) -> "Binning":
        return cls(fit_edges(values, bins))

    @property
    def count(self) -> int:
        return len(self.edges) + 1

    def bin(self, value: float) -> int:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return self.count - 1  # no signal: treat as the hardest
        return len(self.edges) - bisect.bisect_right(self.edges, value)

    def assign(self, values: Mapping[str, float]) -> dict[str, int]:
        return {k: self.bin(v) for k, v in values.items()}


def probe_feature(scores: Sequence[float], answers: Sequence[Any] | None = None, feature: str = "mean_score",
                  tokens: Sequence[int] | None = None) -> float:
    """A base feature of the difficulty predictor from a few probe samples (higher = easier), without the
    answer:

    * ``mean_score`` / ``max_score``: the mean or max verifier score of the probes;
    * ``agreement``: the share of probes that give the most common answer (no answer disagrees);
    * ``agreement_score``: agreement, with ties broken by the mean score (``agreement + mean/(k+1)`` for k
      probes and scores in [0, 1], so it orders by agreement first and stays continuous enough for
      quantile bins even with 2 probes);
    * ``length``: ``-log(1 + the probes' mean generated tokens)`` (``tokens``): a model writes more on the
      questions it finds hard, and the probes' lengths cost nothing more to read.
    """
    if feature not in BASE_FEATURES:
        raise ValueError(f"feature must be one of {', '.join(BASE_FEATURES)}, got {feature!r}")
    if feature == "length":
        counts = [float(t) for t in (tokens or []) if t is not None and math.isfinite(t) and t >= 0]
        return -math.log1p(sum(counts) / len(counts)) if counts else float("nan")
    finite = [float(s) for s in scores if s is not None and math.isfinite(s)]
    mean = sum(finite) / len(finite) if finite else float("nan")
    if feature.startswith("agreement"):
        answers = list(answers or [])
        counts: dict[Any, int] = {}
        for a in answers:
            if a is not None:
                counts[a] = counts.get(a, 0) + 1
        agreement = max(counts.values(), default=0) / len(answers) if answers else 0.0
        if feature == "agreement":
            return agreement
        return agreement + (min(max(mean, 0.0), 1.0) / (len(answers) + 1) if finite else 0.0)
    if not finite:
        return float("nan")
    return max(finite) if feature == "max_score" else mean


@dataclass(frozen=True)
class Predictor:
    """Estimates a question's difficulty bin from ``probes`` cheap samples scored by ``verifier``: one base
    feature, or (``feature="linear"``) ``intercept`` + the ``weights``-weighted sum of base features, a
    predicted pass@1 fitted on a training split (routing_fit.fit_linear)."""

    probes: int = 2
    feature: str = "mean_score"
    verifier: str = "confidence_mean"
    binning: Binning = field(default_factory=Binning)
    weights: tuple[tuple[str, float], ...] = ()
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.probes, int) or isinstance(self.probes, bool) or not 1 <= self.probes <= MAX_PROBES:
            raise ValueError(f"Predictor.probes must be an integer from 1 to {MAX_PROBES}, got {self.probes!r}")
        if self.feature not in FEATURES:
            raise ValueError(f"Predictor.feature must be one of {', '.join(FEATURES)}, got {self.feature!r}")
        if not isinstance(self.verifier, str) or not self.verifier:
            raise ValueError(f"Predictor.verifier must be a verifier spec such as confidence_mean, got {self.verifier!r}")
        weights = tuple((str(k), float(w)) for k, w in self.weights)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "intercept", float(self.intercept))
        if self.feature == "linear" and not weights:
            raise ValueError("Predictor.weights: a linear predictor needs at least one weight")
        if self.feature != "linear" and weights:
            raise ValueError(f"Predictor.weights: only a linear predictor has weights (feature is {self.feature!r})")
        for name, w in weights:
            if name not in BASE_FEATURES:
                raise ValueError(f"Predictor.weights: {name!r} is not a feature; choose from {', '.join(BASE_FEATURES)}")
            if not math.isfinite(w):
                raise ValueError(f"Predictor.weights: {name} must be a finite number, got {w!r}")
        if not math.isfinite(self.intercept):
            raise ValueError(f"Predictor.intercept must be a finite number, got {self.intercept!r}")

    def value(self, scores: Sequence[float], answers: Sequence[Any] | None = None,
              tokens: Sequence[int] | None = None) -> float:
        """The feature the bins cut (NaN when the probes carry no signal)."""
        if self.feature != "linear":
            return probe_feature(scores, answers, self.feature, tokens)
        return self.intercept + sum(w * probe_feature(scores, answers, name, tokens) for name, w in self.weights)

    def bin(self, scores: Sequence[float], answers: Sequence[Any] | None = None,
            tokens: Sequence[int] | None = None) -> int:
        return self.binning.bin(self.value(scores, answers, tokens))


# --- selection ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """In difficulty bin ``bin`` with ``budget`` to spend per problem, run ``setting``; on the training
    split it reached ``accuracy`` for an average ``cost``."""

    bin: int
    budget: float
    setting: Setting
    accuracy: float
    cost: float
    over_budget: bool = False  # nothing fit the budget: the cheapest setting was taken

    def to_json(self) -> dict:
        return {"bin": self.bin, "budget": self.budget, **self.setting.to_json(), "accuracy": round(self.accuracy, 6),
                "cost": round(self.cost, 6), "over_budget": self.over_budget}


def best_cell(candidates: Sequence[Cell], budget: float, unit: str = "generated_tokens",
              tolerance: float = 0.0) -> tuple[Cell, bool]:
    """The most accurate cell whose cost fits ``budget`` (within ``tolerance`` of the best accuracy, the
    cheapest; then the label, so the choice is deterministic). When none fits: the cheapest, flagged."""
    _check_unit(unit)
    if not candidates:
        raise ValueError("no settings to choose from")
    fits = [c for c in candidates if c.cost(unit) <= budget]
    if not fits:
        return min(candidates, key=lambda c: (c.cost(unit), -c.accuracy, c.setting.label)), True
    top = max(c.accuracy for c in fits)
    near = [c for c in fits if c.accuracy >= top - tolerance - 1e-12]
    return min(near, key=lambda c: (c.cost(unit) if tolerance > 0 else 0.0, -c.accuracy, c.cost(unit),
                                    c.setting.label)), False


def select(rows: Iterable[Row], bins: Mapping[str, int], budgets: Sequence[float], *, unit: str = "generated_tokens",
           tolerance: float = 0.0, allocation: str = "cap") -> list[Rule]:
    """For every bin (from ``bins``: problem -> bin) and budget, a setting: with ``allocation="cap"`` the
    best one whose cost in the bin fits the budget (see :func:`best_cell`), with ``"mean"`` the combination
    whose average cost over all the problems fits it (see :func:`allocate`)."""
    _check_unit(unit)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    tables = _bin_tables(rows, bins)
    if allocation == "mean":
        return allocate(tables, budgets, unit=unit, tolerance=tolerance)
    rules = []
    for b, (table, _) in tables.items():
        for budget in sorted(budgets):
            cell, over = best_cell(table, budget, unit, tolerance)
            rules.append(Rule(b, float(budget), cell.setting, cell.accuracy, cell.cost(unit), over))
    return rules


def _bin_tables(rows: Iterable[Row], bins: Mapping[str, int]) -> dict[int, tuple[list[Cell], int]]:
    """Per bin, in bin order: its cells and how many problems it holds."""
    rows = list(rows)
    members: dict[int, list[str]] = {}
    for problem, b in bins.items():
        members.setdefault(b, []).append(problem)
    out = {}
    for b in sorted(members):
        table = cells(rows, members[b])
        if not table:
            raise ValueError(f"bin {b}: no setting has results for all of its {len(members[b])} problems")
        out[b] = (table, len(members[b]))
    return out


def pareto(table: Iterable[Cell], unit: str) -> list[Cell]:
    """The cells no other cell beats on both cost and accuracy, by cost (ties: the label decides)."""
    out: list[Cell] = []
    for c in sorted(table, key=lambda c: (c.cost(unit), -c.accuracy, c.setting.label)):
        if not out or c.accuracy > out[-1].accuracy + 1e-12:
            out.append(c)
    return out


def allocate(tables: Mapping[int, tuple[Sequence[Cell], int]], budgets: Sequence[float], *,
             unit: str = "generated_tokens", tolerance: float = 0.0) -> list[Rule]:
    """The ``mean`` allocation: for every budget, one setting per bin such that the average cost over all
    problems (each bin weighted by its share of them) fits the budget and the average accuracy is the
    highest possible (within ``tolerance`` of it, the cheapest). Exact: a multiple-choice knapsack solved
    by merging the bins' Pareto sets one bin at a time, each partial combination kept only while nothing
    cheaper is as accurate. When no combination fits a budget, the cheapest one is taken and flagged."""
    _check_unit(unit)
    total = sum(k for _, k in tables.values())
    if not tables or total == 0:
        raise ValueError("no problems to allocate over")
    combos: list[tuple[float, float, tuple[Cell, ...]]] = [(0.0, 0.0, ())]
    for b, (table, k) in tables.items():
        w = k / total
        merged = [(cost + w * c.cost(unit), acc + w * c.accuracy, chosen + (c,))
                  for cost, acc, chosen in combos for c in pareto(table, unit)]
        merged.sort(key=lambda t: (t[0], -t[1]))
        combos = []
        for t in merged:
            if not combos or t[1] > combos[-1][1] + 1e-12:
                combos.append(t)
    rules = []
    for budget in sorted(budgets):
        fits = [t for t in combos if t[0] <= budget * (1 + 1e-9)]
        if fits:
            top = max(t[1] for t in fits)
            cost, acc, chosen = min((t for t in fits if t[1] >= top - tolerance - 1e-12), key=lambda t: t[0])
            over = False
        else:
            cost, acc, chosen = combos[0]
            over = True
        rules += [Rule(b, float(budget), c.setting, c.accuracy, c.cost(unit), over) for b, c in zip(tables, chosen)]
    return rules


# --- the policy --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """Rules per (difficulty bin, budget), the predictor that assigns the bin, the budget unit and how the
    rules spend it (``allocation``: ``cap``, a budget every problem keeps to; ``mean``, a budget for the
    average problem, which some bins' settings exceed and others stay well under)."""

    rules: tuple[Rule, ...]
    predictor: Predictor = field(default_factory=Predictor)
    unit: str = "generated_tokens"
    params: Mapping[str, Any] = field(default_factory=dict)  # sampling params of the sweep (reference)
    meta: Mapping[str, Any] = field(default_factory=dict)  # model, dataset, command: where it came from
    allocation: str = "cap"

    def __post_init__(self) -> None:
        _check_unit(self.unit)
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")
        if not self.rules:
            raise ValueError("a policy needs at least one rule")
        bins = {r.bin for r in self.rules}
        want = set(range(self.predictor.binning.count))
        if bins != want:
            raise ValueError(f"rules cover bins {sorted(bins)} but the predictor has bins {sorted(want)}")

    @property
    def budgets(self) -> list[float]:
        return sorted({r.budget for r in self.rules})

    def choose(self, bin: int, budget: float | None, cap: float | None = None) -> Rule:
        """The rule for ``bin`` with the largest budget not above ``budget`` (None: the largest); when every
        rule's budget is larger, the smallest one (the ledger still enforces the real cap). ``cap``, a
        per-problem limit, matters to a ``mean`` policy, whose rule for a bin may cost more than the
        average budget: a rule the bin's training problems spent more than ``cap`` on is replaced by the
        most accurate one of that bin that they did not (the cheapest when none fits)."""
        mine = sorted((r for r in self.rules if r.bin == bin), key=lambda r: r.budget)
        if not mine:
            raise ValueError(f"no rule for bin {bin}; the policy has bins 0..{self.predictor.binning.count - 1}")
        if budget is None:
            rule = mine[-1]
        else:
            fitting = [r for r in mine if r.budget <= budget + 1e-9]
            rule = fitting[-1] if fitting else mine[0]
        if cap is None or self.allocation == "cap" or not rule.cost > cap:  # a NaN cost is not known to exceed
            return rule
        under = [r for r in mine if r.cost <= cap]
        if not under:
            return min(mine, key=lambda r: (r.cost, r.budget))
        return max(under, key=lambda r: (r.accuracy, -r.cost, -r.budget))

    def to_json(self) -> dict:
        p = self.predictor
        return {
            "format": FORMAT, "version": VERSION, "unit": self.unit, "allocation": self.allocation,
            "predictor": {"probes": p.probes, "feature": p.feature, "verifier": p.verifier,
                          "edges": list(p.binning.edges),
                          **({"weights": dict(p.weights), "intercept": p.intercept} if p.weights else {})},
            "params": dict(self.params), "meta": dict(self.meta),
            "rules": [r.to_json() for r in sorted(self.rules, key=lambda r: (r.bin, r.budget))],
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)

    @classmethod
    def from_json(cls, data: Any, source: str = "policy") -> "Policy":
        def need(obj: Mapping, key: str, where: str) -> Any:
            if key not in obj:
                raise PolicyError(f"{source}: {where} is missing {key!r}")
            return obj[key]

        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: a routing policy is a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise PolicyError(f"{source}: not a routing policy (format must be {FORMAT!r}, got {data.get('format')!r}); "
                              "write one with experiments/compute_optimal.py")
        _unknown_keys(data, POLICY_KEYS, source)
        if data.get("version") != VERSION:
            raise PolicyError(f"{source}: policy version {data.get('version')!r} is not supported (this tts reads {VERSION})")
        unit = data.get("unit", "generated_tokens")
        if unit not in UNITS:
            raise PolicyError(f"{source}: unit must be one of {', '.join(UNITS)}, got {unit!r}")
        allocation = data.get("allocation", "cap")
        if allocation not in ALLOCATIONS:
            raise PolicyError(f"{source}: allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
        pred = need(data, "predictor", "the policy")
        if not isinstance(pred, Mapping):
            raise PolicyError(f"{source}: predictor must be an object, got {pred!r}")
        _unknown_keys(pred, PREDICTOR_KEYS, f"{source}: predictor")
        edges = pred.get("edges", [])
        if not isinstance(edges, list) or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges):
            raise PolicyError(f"{source}: predictor.edges must be a list of numbers, got {edges!r}")
        weights, intercept = pred.get("weights", {}), pred.get("intercept", 0.0)
        if not isinstance(weights, Mapping) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights.values()):
            raise PolicyError(f"{source}: predictor.weights must be an object of feature names to numbers, got {weights!r}")
        if not isinstance(intercept, (int, float)) or isinstance(intercept, bool):
            raise PolicyError(f"{source}: predictor.intercept must be a number, got {intercept!r}")
        try:
            predictor = Predictor(pred.get("probes", 2), pred.get("feature", "mean_score"),
                                  pred.get("verifier", "confidence_mean"), Binning(tuple(edges)),
                                  tuple(weights.items()), intercept)
        except ValueError as exc:
            raise PolicyError(f"{source}: predictor: {exc}") from None
        raw_rules = need(data, "rules", "the policy")
        if not isinstance(raw_rules, list) or not raw_rules:
            raise PolicyError(f"{source}: rules must be a non-empty list")
        rules = []
        for i, r in enumerate(raw_rules):
            where = f"rules[{i}]"
            if not isinstance(r, Mapping):
                raise PolicyError(f"{source}: {where} must be an object, got {r!r}")
            _unknown_keys(r, RULE_KEYS, f"{source}: {where}")
            for key in ("accuracy", "cost"):
                if key in r and (not isinstance(r[key], (int, float)) or isinstance(r[key], bool)):
                    raise PolicyError(f"{source}: {where}.{key} must be a number, got {r[key]!r}")
            b, budget = need(r, "bin", where), need(r, "budget", where)
            if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b < predictor.binning.count:
                raise PolicyError(f"{source}: {where}.bin must be an integer in 0..{predictor.binning.count - 1}, got {b!r}")
            if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget > 0:
                raise PolicyError(f"{source}: {where}.budget must be a positive number, got {budget!r}")
            setting = Setting.from_json(r, f"{source}: {where}")
            rules.append(Rule(b, float(budget), setting, float(r.get("accuracy", float("nan"))),
                              float(r.get("cost", float("nan"))), bool(r.get("over_budget", False))))
        params, meta = data.get("params", {}), data.get("meta", {})
        if not isinstance(params, Mapping) or not isinstance(meta, Mapping):
            raise PolicyError(f"{source}: params and meta must be objects")
        try:
            return cls(tuple(rules), predictor, unit, dict(params), dict(meta), allocation)
        except ValueError as exc:
            raise PolicyError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        from .inputs import InputFileError, read_small_text

        path = Path(path)
        if not path.exists():
            raise PolicyError(f"{path}: no such routing policy file")
        if path.is_dir():
            raise PolicyError(f"{path}: is a folder, not a routing policy file")
        try:
            text = read_small_text(path, "routing policy file")
        except InputFileError as exc:
            raise PolicyError(str(exc)) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
        except (ValueError, RecursionError) as exc:  # a huge integer, nesting too deep
            raise PolicyError(f"{path}: not a usable JSON file ({type(exc).__name__})") from None
        return cls.from_json(data, str(path))


# --- curves, frontier, compute saved -----------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    cost: float
    accuracy: float
    label: str = ""


def frontier(points: Iterable[Point]) -> list[Point]:
    """The compute-optimal frontier: the points no cheaper-or-equal point beats in accuracy, by cost."""
    best = -math.inf
    out = []
    for p in sorted(points, key=lambda p: (p.cost, -p.accuracy)):
        if p.accuracy > best:
            out.append(p)
            best = p.accuracy
    return out


def cost_to_reach(curve: Iterable[Point], accuracy: float) -> float | None:
    """The least cost at which ``curve`` reaches ``accuracy``, interpolating linearly in log cost between
    its frontier points (None when it never does)."""
    front = [p for p in frontier(curve) if p.cost > 0]
    for i, p in enumerate(front):
        if p.accuracy >= accuracy - 1e-12:
            if i == 0 or p.accuracy == front[i - 1].accuracy:
                return p.cost
            q = front[i - 1]
            t = (accuracy - q.accuracy) / (p.accuracy - q.accuracy)
            return math.exp(math.log(q.cost) + t * (math.log(p.cost) - math.log(q.cost)))
    return None


@dataclass(frozen=True)
class Saving:
    cost: float  # what the policy spent
    accuracy: float  # what it reached
    baseline_cost: float | None  # what the baseline needs for the same accuracy (None: never reaches it)
    ratio: float | None  # baseline_cost / cost
    #: when the baseline never reaches the accuracy: its largest cost / cost, a lower bound on the saving
    at_least: float | None = None


def compute_saved(policy: Iterable[Point], baseline: Iterable[Point]) -> list[Saving]:
    """For every point of the policy's curve, how much more the baseline spends to be as accurate."""
    baseline = list(baseline)
    most = max((b.cost for b in baseline), default=None)
    out = []
    for p in sorted(policy, key=lambda p: p.cost):
        need = cost_to_reach(baseline, p.accuracy)
        ratio = need / p.cost if need is not None and p.cost > 0 else None
        bound = most / p.cost if need is None and most is not None and p.cost > 0 else None
        out.append(Saving(p.cost, p.accuracy, need, ratio, bound))
    return out


def routed_rows(rules: Sequence[Rule], rows: Iterable[Row], bins: Mapping[str, int], budget: float) -> list[Row]:
    """The row each problem in ``bins`` gets when the rules are applied at ``budget`` (its bin -> the rule
    with the largest budget not above it, else the bin's smallest -> its row under that setting). A
    problem whose chosen setting has no row is an error."""
    table = {(r.problem, r.setting): r for r in rows}
    per_bin: dict[int, list[Rule]] = {}
    for r in rules:
        per_bin.setdefault(r.bin, []).append(r)
    out = []
    for problem, b in bins.items():
        mine = sorted(per_bin.get(b) or per_bin[max(per_bin)], key=lambda r: r.budget)
        fitting = [r for r in mine if r.budget <= budget + 1e-9]
        rule = fitting[-1] if fitting else mine[0]
        row = table.get((problem, rule.setting))
        if row is None:
            raise KeyError(f"no result for problem {problem!r} under {rule.setting.label}")
        out.append(row)
    return out


def evaluate_at(rules: Sequence[Rule], rows: Iterable[Row], bins: Mapping[str, int], budget: float,
                unit: str = "generated_tokens") -> Point:
    """Apply the rules at ``budget`` to every problem in ``bins`` (:func:`routed_rows`) and average accuracy
    and cost: one point of a routing's curve (tts.routing_fit.evaluate draws them all)."""
    chosen = routed_rows(rules, rows, bins, budget)
    k = max(1, len(chosen))
    return Point(sum(r.cost(unit) for r in chosen) / k, sum(r.accuracy for r in chosen) / k, f"budget {budget:g}")


# The analysis that composes the pieces above lives in routing_fit.py (kept apart so that this module stays
# bookkeeping); it is imported last because it builds on every name above.
from .routing_fit import ROUTINGS, Evaluation, Fitted, Outcome, Routing, evaluate, fit, spearman  # noqa: E402,F401
