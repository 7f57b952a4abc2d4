"""A stopping rule for adaptive consistency calibrated on a training split of recorded sample pools.

The Beta and Dirichlet rules ask "is the leader the true majority of the model's answers?", which a
model that scatters its answers rarely settles: it samples to the cap and saves little. What a user
wants instead is "would sampling to N still change whether I am right?". That can be measured: take
recorded pools of N samples (a ``majority@N`` results file, samples in the order they were drawn) with
their correctness, replay each pool batch by batch, and at every state (samples so far ``k``, the
leader's count ``a``, the runner-up's ``b``) record the *gain* of going on: correct(majority of all N)
minus correct(the leader now). A state whose mean gain is at most ``epsilon`` is a state to stop in.

* the gain of a state is its training mean shrunk towards the mean of its margin ``a - b`` (and that
  towards the global mean), so rare states borrow from common ones;
* ``epsilon`` is chosen by cross-fitting on the training split (the table fitted on four folds, the
  stops replayed on the fifth): the smallest mean number of samples whose replayed accuracy is within
  ``tolerance`` of majority@N's on the same problems;
* a table is specific to the model, the task and the sampling settings it was fitted on: the table file
  records them, and ``experiments/adaptive_calibration.py`` fits one from results files.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .select import vote

#: how strongly a state's mean is pulled towards its margin's (in pseudo-observations)
SHRINK = 5.0
FOLDS = 5
FORMAT = "tts-adaptive-calibration-1"


class CalibrationError(ValueError):
    """A calibration file that cannot be used (missing, not JSON, the wrong shape): one line naming it."""


#: grid over the leader's share for the Beta probability of real-valued (weighted) counts
_GRID = 4096


def weighted_leader_probability(a: float, b: float) -> float:
    """P(share > 1/2) under Beta(a+1, b+1) for real-valued counts (weighted votes), by a midpoint rule on
    a fine grid in log space (matches :func:`beta_leader_probability` on integer counts to about 1e-6)."""
    if a <= 0:
        return 0.0
    logs = [a * math.log((i + 0.5) / _GRID) + b * math.log1p(-(i + 0.5) / _GRID) for i in range(_GRID)]
    top = max(logs)
    lo = hi = 0.0
    for i, v in enumerate(logs):
        w = math.exp(v - top)
        if (i + 0.5) / _GRID > 0.5:
            hi += w
        else:
            lo += w
    return hi / (lo + hi)


def confidence_leader_probability(keys: Sequence[str | None], confidences: Sequence[float],
                                  scale: float | None = None) -> float:
    """The ``confidence`` rule's probability that the leader is settled: each answer's votes weigh
    ``confidence / scale`` (``scale``: fitted on a training split; None: the mean confidence of these
    samples), then the Beta rule on the leader's and runner-up's weights."""
    confs = [max(0.0, float(c)) for c in confidences]
    if scale is None:
        scale = sum(confs) / len(confs) if confs and sum(confs) > 0 else 1.0
    weights: dict[str, float] = {}
    for k, c in zip(keys, confs):
        if k is not None:
            weights[k] = weights.get(k, 0.0) + c / scale
    top = sorted(weights.values(), reverse=True)[:2]
    if not top:
        return 0.0
    return weighted_leader_probability(top[0], top[1] if len(top) > 1 else 0.0)


@dataclass(frozen=True)
class Pool:
    """One recorded problem: its samples' vote keys (None: no answer) and correctness, in draw order, and
    their generated tokens."""

    answers: tuple[str | None, ...]
    correct: tuple[bool, ...]
    tokens: tuple[int, ...]
    #: each sample's token confidence (confidence_mean), where the records have it
    confidences: tuple[float, ...] = ()

    def leader_correct(self, k: int, seed: int = 0) -> bool:
        winner, _ = vote(self.answers[:k], None, seed)
        return winner is not None and any(ok for a, ok in zip(self.answers[:k], self.correct[:k]) if a == winner)


def state(answers: Sequence[str | None]) -> tuple[int, int, int]:
    """(samples so far, the leader's count, the runner-up's count) of the answers drawn so far."""
    counts = sorted((answers.count(a) for a in set(answers) if a is not None), reverse=True)
    return len(answers), (counts[0] if counts else 0), (counts[1] if len(counts) > 1 else 0)


@dataclass(frozen=True)
class StoppingTable:
    n: int
    batch: int
    epsilon: float
    #: (k, a, b, smoothed mean gain) of every state seen in training
    gains: tuple[tuple[int, int, int, float], ...]
    #: (a - b, smoothed mean gain), for states never seen
    margins: tuple[tuple[int, float], ...]
    default: float
    #: what it was fitted on (model, dataset, sampling), for people; not used to decide
    fitted_on: str = ""
    _by_state: dict = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    _by_margin: dict = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_state", {(k, a, b): g for k, a, b, g in self.gains})
        object.__setattr__(self, "_by_margin", dict(self.margins))

    def gain(self, k: int, a: int, b: int) -> float:
        if (k, a, b) in self._by_state:
            return self._by_state[(k, a, b)]
        return self._by_margin.get(a - b, self.default)

    def stop(self, answers: Sequence[str | None]) -> bool:
        """Whether to stop after these answers (in draw order): the expected gain of going on to n is at
        most epsilon."""
        k, a, b = state(answers)
        return k >= self.n or (a > 0 and self.gain(k, a, b) <= self.epsilon)

    # ---- files
    def to_json(self) -> dict:
        return {"format": FORMAT, "n": self.n, "batch": self.batch, "epsilon": self.epsilon,
                "gains": [list(g) for g in self.gains], "margins": [list(m) for m in self.margins],
                "default": self.default, "fitted_on": self.fitted_on}

    @classmethod
    def from_json(cls, data: object, source: str) -> "StoppingTable":
        def bad(what: str) -> CalibrationError:
            return CalibrationError(f"{source}: not an adaptive calibration file ({what})")

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f"its format field must be {FORMAT!r}")
        try:
            n, batch, epsilon, default = int(data["n"]), int(data["batch"]), float(data["epsilon"]), float(data["default"])
            gains = tuple((int(k), int(a), int(b), float(g)) for k, a, b, g in data["gains"])
            margins = tuple((int(m), float(g)) for m, g in data["margins"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"{type(exc).__name__}: {exc}") from None
        if n < 1 or batch < 1:
            raise bad("n and batch must be positive")
        return cls(n, batch, epsilon, gains, margins, default, str(data.get("fitted_on", "")))

    @classmethod
    def load(cls, path: str | Path) -> "StoppingTable":
        from ..inputs import InputFileError, read_small_text

        path = Path(path)
        if str(path) in packaged_names():  # a packaged name wins over a same-named file (tts serve's clients)
            path = Path(__file__).parent / "calibrations" / f"{path}.json"
        if path.exists() and not path.is_file():
            raise CalibrationError(f"{path}: not a regular file; give a calibration JSON file")
        if not path.is_file():
            raise CalibrationError(f"{path}: no such calibration file (or packaged name: {', '.join(packaged_names())})")
        try:
            data = json.loads(read_small_text(path, "calibration file"))
        except InputFileError as exc:
            raise CalibrationError(str(exc)) from None
        except (ValueError, RecursionError) as exc:
            raise CalibrationError(f"{path}: not valid JSON ({type(exc).__name__})") from None
        return cls.from_json(data, str(path))


def packaged_names() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).parent / "calibrations").glob("*.json"))


# ---------------------------------------------------------------------------------------------- fitting

def checkpoints(n: int, batch: int) -> list[int]:
    """The sample counts after which the strategy asks the rule (every batch, before the cap)."""
    return list(range(batch, n, batch))


def _observations(pools: Iterable[Pool], n: int, batch: int) -> list[tuple[tuple[int, int, int], float]]:
    out = []
    for pool in pools:
        final = float(pool.leader_correct(n))
        for k in checkpoints(n, batch):
            out.append((state(pool.answers[:k]), final - float(pool.leader_correct(k))))
    return out


def _table(pools: Sequence[Pool], n: int, batch: int, epsilon: float, fitted_on: str = "") -> StoppingTable:
    obs = _observations(pools, n, batch)
    overall = sum(g for _, g in obs) / len(obs) if obs else 0.0
    by_margin: dict[int, list[float]] = {}
    by_state: dict[tuple[int, int, int], list[float]] = {}
    for s, g in obs:
        by_margin.setdefault(s[1] - s[2], []).append(g)
        by_state.setdefault(s, []).append(g)
    margins = {m: (sum(v) + SHRINK * overall) / (len(v) + SHRINK) for m, v in by_margin.items()}
    gains = {s: (sum(v) + SHRINK * margins[s[1] - s[2]]) / (len(v) + SHRINK) for s, v in by_state.items()}
    return StoppingTable(n, batch, epsilon, tuple(sorted((*s, round(g, 6)) for s, g in gains.items())),
                         tuple(sorted((m, round(g, 6)) for m, g in margins.items())), round(overall, 6), fitted_on)


def replay(table: StoppingTable, pools: Sequence[Pool]) -> dict:
    """What adaptive consistency with this table would have done on recorded pools."""
    return replay_rule(table.stop, pools, table.n, table.batch)


def replay_rule(stop: Callable[[Sequence[str | None]], bool], pools: Sequence[Pool], n: int, batch: int) -> dict:
    """What a stopping rule, asked after every ``batch`` samples, would have done on recorded pools (their
    samples in draw order): accuracy, mean samples, and the share of majority@n's generated tokens."""
    correct = samples = tokens = all_tokens = 0
    for pool in pools:
        k = next((k for k in checkpoints(n, batch) if stop(pool.answers[:k])), n)
        correct += pool.leader_correct(k)
        samples += k
        tokens += sum(pool.tokens[:k])
        all_tokens += sum(pool.tokens[:n])
    count = max(len(pools), 1)
    return {"problems": len(pools), "accuracy": correct / count, "samples": samples / count,
            "token_share": tokens / all_tokens if all_tokens else 0.0,
            "majority_accuracy": sum(p.leader_correct(n) for p in pools) / count}


def fit(pools: Sequence[Pool], n: int, batch: int = 1, tolerance: float = 0.005, seed: int = 0,
        fitted_on: str = "", z: float = 1.0) -> tuple[StoppingTable, list[dict]]:
    """The table fitted on every pool, with the epsilon that spends the fewest samples while its
    cross-fitted accuracy stays within ``tolerance`` of majority@n's on these pools, ``z`` standard
    errors of the paired difference included (a flat, noisy trade-off curve must not pick an epsilon that
    only looked harmless by chance); and the cross-fitted curve (one row per epsilon tried)."""
    pools = [p for p in pools if len(p.answers) >= n]
    if len(pools) < FOLDS:
        raise CalibrationError(f"need at least {FOLDS} pools of {n} samples to calibrate, got {len(pools)}")
    order = list(range(len(pools)))
    random.Random(seed).shuffle(order)
    folds = [order[i::FOLDS] for i in range(FOLDS)]
    # per held-out pool: the gain its fold's table gives each checkpoint's state, whether the leader
    # there is right, and the tokens so far; then every epsilon is one scan
    walks = []
    for held in folds:
        keep = set(held)
        table = _table([p for i, p in enumerate(pools) if i not in keep], n, batch, 0.0)
        for i in held:
            pool = pools[i]
            steps = []
            for k in checkpoints(n, batch):
                k_, a, b = state(pool.answers[:k])
                steps.append((k, table.gain(k_, a, b) if a > 0 else math.inf, pool.leader_correct(k), sum(pool.tokens[:k])))
            walks.append((steps, pool.leader_correct(n), sum(pool.tokens[:n])))
    gains = sorted({g for steps, _, _ in walks for _, g, _, _ in steps if math.isfinite(g)})
    if len(gains) > 200:  # enough resolution; every candidate costs a scan
        gains = [gains[round(i * (len(gains) - 1) / 199)] for i in range(200)]
    curve = []
    for eps in [-1.0, *gains]:
        diffs, samples, tokens, all_tokens = [], 0, 0, 0
        for steps, final, total in walks:
            stop = next(((k, ok, t) for k, g, ok, t in steps if g <= eps), (n, final, total))
            diffs.append(float(stop[1]) - float(final))
            samples += stop[0]
            tokens += stop[2]
            all_tokens += total
        mean = sum(diffs) / len(diffs)
        se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1) / len(diffs))
        majority = sum(final for _, final, _ in walks) / len(walks)
        curve.append({"epsilon": eps, "accuracy": majority + mean, "samples": samples / len(walks),
                      "token_share": tokens / all_tokens if all_tokens else 0.0, "majority_accuracy": majority,
                      "difference_se": se})
    allowed = [c for c in curve if c["accuracy"] - c["majority_accuracy"] - z * c["difference_se"] >= -tolerance - 1e-12]
    best = min(allowed, key=lambda c: (c["samples"], c["epsilon"]))
    return _table(pools, n, batch, best["epsilon"], fitted_on), curve


def pools_from_records(records: Iterable[dict], n: int) -> list[Pool]:
    """Pools from majority@n results records (graded; the stored vote key groups answers)."""
    out = []
    for rec in records:
        cands = [c for c in rec.get("candidates") or []]
        if len(cands) < n or any(c.get("correct") is None for c in cands[:n]):
            continue
        cands = cands[:n]
        confs = [(c.get("scores") or {}).get("confidence_mean") for c in cands]
        out.append(Pool(tuple(c.get("vote_key") or c.get("answer") for c in cands),
                        tuple(bool(c["correct"]) for c in cands), tuple(int(c.get("num_tokens") or 0) for c in cands),
                        tuple(float(x) for x in confs) if all(isinstance(x, (int, float)) for x in confs) else ()))
    return out


# ------------------------------------------------------------------------------ the confidence rule

def weighted_leader_correct(pool: Pool, k: int, seed: int = 0) -> bool:
    """Whether the confidence-weighted vote over the first ``k`` samples is right."""
    winner, _ = vote(pool.answers[:k], list(pool.confidences[:k]), seed)
    return winner is not None and any(ok for a, ok in zip(pool.answers[:k], pool.correct[:k]) if a == winner)


def replay_confidence(pools: Sequence[Pool], n: int, batch: int, threshold: float, scale: float | None) -> dict:
    """The confidence rule on recorded pools (with confidences), asked after every ``batch`` samples:
    accuracy of the weighted vote where it stopped, per pool differences against majority@n, tokens."""
    diffs, samples, tokens, all_tokens = [], 0, 0, 0
    for pool in pools:
        k = next((k for k in checkpoints(n, batch)
                  if confidence_leader_probability(pool.answers[:k], pool.confidences[:k], scale) >= threshold), n)
        diffs.append(float(weighted_leader_correct(pool, k)) - float(pool.leader_correct(n)))
        samples += k
        tokens += sum(pool.tokens[:k])
        all_tokens += sum(pool.tokens[:n])
    count = max(len(pools), 1)
    majority = sum(p.leader_correct(n) for p in pools) / count
    mean = sum(diffs) / count
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1) / count) if diffs else 0.0
    return {"problems": len(pools), "threshold": threshold, "accuracy": majority + mean, "majority_accuracy": majority,
            "difference_se": se, "samples": samples / count, "token_share": tokens / all_tokens if all_tokens else 0.0}


THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.825, 0.85, 0.875, 0.9, 0.925, 0.95, 0.975, 0.99, 0.995)


def fit_confidence(pools: Sequence[Pool], n: int, batch: int = 2, tolerance: float = 0.005,
                   z: float = 1.0) -> tuple[float, float, list[dict]]:
    """The confidence rule fitted on training pools: the scale is their mean confidence, the threshold
    the one that spends the fewest tokens while the weighted vote's accuracy where it stops stays within
    ``tolerance`` of majority@n's on the same pools, ``z`` standard errors of the paired difference
    included. Returns (scale, threshold, one replay row per threshold tried)."""
    pools = [p for p in pools if len(p.answers) >= n and len(p.confidences) >= n]
    if len(pools) < FOLDS:
        raise CalibrationError(f"need at least {FOLDS} pools of {n} samples with token confidences, got {len(pools)}; "
                               "record them with a verifier of confidence_mean (e.g. weighted_majority)")
    confs = [c for p in pools for c in p.confidences[:n]]
    scale = sum(confs) / len(confs)
    curve = [replay_confidence(pools, n, batch, t, scale) for t in THRESHOLDS]
    allowed = [c for c in curve if c["accuracy"] - c["majority_accuracy"] - z * c["difference_se"] >= -tolerance - 1e-12]
    best = min(allowed, key=lambda c: (c["token_share"], -c["threshold"])) if allowed else curve[-1]
    return scale, best["threshold"], curve
