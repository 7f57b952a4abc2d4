"""The selection rules, once: which candidate a pool's scores and answers choose.

Every strategy that picks from a pool (best-of-N, majority, weighted majority, the tree searches'
final choice, ``auto``'s sampling rules) and the compute-optimal sweep call these, so they cannot
disagree. One rule for a missing score: a candidate without a finite score ranks below every scored
one (and weighs nothing in a weighted vote); when no candidate has one (a budget that could not pay the
verifier), the score-based rules fall back to the majority vote, the one rule that needs no score.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Callable, Sequence

RULES = ("best", "majority", "weighted")

Key = Callable[[str], str]


def usable(score: float | None) -> float:
    """A score as the rules rank it: missing or non-finite is below everything."""
    return score if score is not None and math.isfinite(score) else -math.inf


def best(scores: Sequence[float | None]) -> int | None:
    """The highest score's index; ties go to the earliest candidate; None for an empty pool."""
    if not scores:
        return None
    ranked = [usable(s) for s in scores]
    return max(range(len(ranked)), key=lambda i: (ranked[i], -i))


def weight(score: float | None) -> float:
    """A score as a vote weight: missing, non-finite or negative weighs nothing."""
    return max(0.0, usable(score)) if usable(score) != -math.inf else 0.0


def vote(
    answers: Sequence[str | None], weights: Sequence[float] | None, seed: int, key: Key | None = None
) -> tuple[str | None, dict[str, float]]:
    """The answer with the largest total weight (count when unweighted); None answers do not vote.

    ``key`` maps equivalent answers to one vote (e.g. math-verify's key); the winner is returned as the
    first answer written with the winning key, and the totals are labelled the same way.
    Ties are broken by a seeded draw among the tied keys, sorted first so that the draw depends only on
    the seed and the set of tied answers, never on sample order.
    """
    totals: Counter = Counter()
    label: dict[str, str] = {}
    for i, a in enumerate(answers):
        if a is not None:
            k = key(a) if key else a
            label.setdefault(k, a)
            totals[k] += 1.0 if weights is None else weights[i]
    if not totals:
        return None, {}
    top = max(totals.values())
    tied = sorted(k for k, w in totals.items() if w == top)
    winner = tied[0] if len(tied) == 1 else random.Random(seed).choice(tied)
    return label[winner], {label[k]: w for k, w in totals.items()}


def representative(answers: Sequence[str | None], answer: str | None, scores: Sequence[float | None] | None = None,
                   key: Key | None = None) -> int | None:
    """The candidate that represents the winning answer: its best-scored one, else its first one."""
    if answer is None:
        return None
    same = (lambda a: a is not None and key(a) == key(answer)) if key else (lambda a: a == answer)
    indices = [i for i, a in enumerate(answers) if same(a)]
    if scores is None:
        return indices[0]
    return max(indices, key=lambda i: (usable(scores[i]), -i))


def choose(rule: str, answers: Sequence[str | None], scores: Sequence[float | None] | None, seed: int,
           key: Key | None = None) -> tuple[int | None, dict[str, float] | None]:
    """(chosen index, vote totals or None) under ``rule``: ``best`` score, ``majority`` vote, or a
    vote ``weighted`` by score. A vote where no candidate has an answer falls back to the best score
    when there are scores."""
    if rule not in RULES:
        raise ValueError(f"selection rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not answers:
        return None, None
    if rule != "majority" and all(usable(s) == -math.inf for s in (scores or [None])):
        rule = "majority"
    if rule == "best":
        return best(scores or [None] * len(answers)), None
    weights = [weight(s) for s in scores] if rule == "weighted" and scores is not None else None
    winner, totals = vote(answers, weights, seed, key)
    chosen = representative(answers, winner, scores, key)
    if chosen is None and scores is not None:
        chosen = best(scores)
    return chosen, totals
