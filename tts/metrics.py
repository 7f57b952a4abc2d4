"""Accuracy metrics over result records: pass@k, intervals, per-strategy summaries; AUROC for how well a
verifier's scores separate right from wrong."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): the chance that k of n samples, c of them correct,
    contain a correct one: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass_at_k needs k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson_interval(successes: float, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (well-behaved at 0, 1 and small samples)."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Summary:
    strategy: str
    problems: int
    graded: int
    accuracy: float | None
    interval: tuple[float, float] | None
    pass_at_n: float | None  # a correct answer among the candidates
    sample_accuracy: float | None  # mean candidate correctness: the pass@1 estimate from the pool
    max_candidates: int
    generated_tokens: int
    prompt_tokens: int
    flops: float
    wall_seconds: float


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """P(score of a random positive > score of a random negative), ties counted half (rank-based, so
    O(n log n)); None when either side is empty."""
    if not pos or not neg:
        return None
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mean_rank = (i + j + 1) / 2  # ranks are 1-based
        rank_sum += mean_rank * sum(lab for _, lab in ranked[i:j])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def grouped_auroc(groups: Iterable[tuple[Sequence[float], Sequence[float]]]) -> tuple[float | None, int]:
    """AUROC over (positive, negative) pairs taken only within each group (e.g. a right and a wrong step
    at the same index of the same problem, what a search compares), and the number of such pairs."""
    wins = pairs = 0.0
    for pos, neg in groups:
        value = auroc(pos, neg)
        if value is not None:
            wins += value * len(pos) * len(neg)
            pairs += len(pos) * len(neg)
    return (wins / pairs if pairs else None), int(pairs)


def summarize(strategy: str, records: Sequence[Mapping], wall_seconds: float | None = None) -> Summary:
    """Summarize result records (the JSONL lines of one strategy)."""
    graded = [r for r in records if r.get("correct") is not None]
    correct = sum(1 for r in graded if r["correct"])
    cand = [[c.get("correct") for c in r.get("candidates", [])] for r in graded]
    any_correct = sum(1 for cs in cand if any(cs))
    flat = [x for cs in cand for x in cs if x is not None]
    ledgers = [r.get("ledger", {}) for r in records]
    return Summary(
        strategy=strategy,
        problems=len(records),
        graded=len(graded),
        accuracy=correct / len(graded) if graded else None,
        interval=wilson_interval(correct, len(graded)) if graded else None,
        pass_at_n=any_correct / len(graded) if graded else None,
        sample_accuracy=sum(flat) / len(flat) if flat else None,
        max_candidates=max((len(r.get("candidates", [])) for r in records), default=0),
        generated_tokens=int(sum(l.get("generated_tokens", 0) for l in ledgers)),
        prompt_tokens=int(sum(l.get("prompt_tokens", 0) for l in ledgers)),
        flops=float(sum(l.get("flops", 0.0) for l in ledgers)),
        wall_seconds=wall_seconds if wall_seconds is not None else float(sum(l.get("wall_seconds", 0.0) for l in ledgers)),
    )


def group_by_strategy(records: Iterable[Mapping]) -> dict[str, list[Mapping]]:
    groups: dict[str, list[Mapping]] = {}
    for r in records:
        groups.setdefault(r["strategy"], []).append(r)
    return groups
