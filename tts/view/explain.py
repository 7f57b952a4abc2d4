"""What the page says about one record: why its answer was chosen, how much its candidates disagreed,
and the compact row the problem list filters and sorts. Pure functions of a results record (no I/O),
so what the page claims is tested here, in Python, not in the browser."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

#: outcome of a record, as the list filters it
OUTCOMES = ("correct", "wrong", "no answer", "ungraded")


def outcome(record: Mapping) -> str:
    if record.get("answer") is None:
        return "no answer"
    if record.get("correct") is None:
        return "ungraded"
    return "correct" if record["correct"] else "wrong"


def _voted(c: Mapping) -> str | None:
    return c.get("vote_key") or c.get("answer")


def disagreement(record: Mapping) -> float:
    """1 - the share of the most common answer among the candidates that answered (0: unanimous, or
    fewer than two answers); the list sorts by it to find the problems where the pool split."""
    answers = [_voted(c) for c in record.get("candidates") or [] if isinstance(c, Mapping) and _voted(c) is not None]
    if len(answers) < 2:
        return 0.0
    return round(1.0 - Counter(answers).most_common(1)[0][1] / len(answers), 4)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    return str(x)


def _top(values: Mapping[str, float]) -> tuple[float, list[str]]:
    top = max(values.values())
    return top, sorted(k for k, v in values.items() if v == top)


def why_chosen(record: Mapping) -> str:
    """One sentence: which candidate was chosen and by what rule (most votes, weighted votes, highest
    score, most visited MCTS path, the only sample), with ties and how they were broken."""
    candidates: Sequence[Mapping] = record.get("candidates") or []
    info: Mapping = record.get("info") or {}
    chosen = record.get("chosen")
    if "error" in info:
        return f"no answer: the problem ended in an error ({info['error']})"
    if not candidates:
        stop = info.get("budget_stop")
        return "no candidates" + (f": the budget stopped the search ({stop})" if stop else "")
    if chosen is None or not 0 <= chosen < len(candidates):
        return "no candidate was chosen (none had an answer)"
    pick = candidates[chosen]
    label = f"candidate {chosen}"
    rule = info.get("selection")
    votes = info.get("votes") if isinstance(info.get("votes"), Mapping) else None
    route = info.get("route")
    prefix = f"routed to {route.get('strategy', route) if isinstance(route, Mapping) else route}; " if route else ""
    if isinstance(rule, str) and rule.startswith("most "):
        what = rule[5:]
        return prefix + f"{label}: the end of the path that follows the most {'visited' if what == 'visits' else 'valued'} child at every depth (MCTS)"
    if votes:
        total = sum(votes.values())
        top, tied = _top(votes)
        weighted = rule == "weighted" or any(not float(v).is_integer() for v in votes.values())
        kind = "weighted vote (each candidate weighs its score)" if weighted else "majority vote"
        text = f"{label}: {kind}, answer {pick.get('answer')!r} has {_fmt(top)} of {_fmt(total)}"
        if len(tied) > 1:
            text += f"; tie between {', '.join(repr(t) for t in tied)} broken by the seed"
        same = [i for i, c in enumerate(candidates) if _voted(c) == _voted(pick)]
        if len(same) > 1:
            scored = any(c.get("scores") for c in candidates)
            text += ("; of its " + str(len(same)) + " candidates the best-scored one" if scored
                     else "; of its " + str(len(same)) + " candidates the first one")
        return prefix + text
    scores = [(c.get("scores") or {}) for c in candidates]
    names = [k for k in scores[chosen]]
    if names and len(candidates) > 1:
        name = info.get("verifier") or info.get("scorer") or names[0]
        name = name if isinstance(name, str) and name in scores[chosen] else names[0]
        values = [s.get(name) for s in scores]
        usable = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        best = max(usable) if usable else None
        text = f"{label}: highest score ({name} = {_fmt(values[chosen])})"
        if best is not None and sum(1 for v in usable if v == best) > 1:
            text += "; tied with others, the earliest wins"
        return prefix + text
    if len(candidates) == 1:
        return prefix + f"{label}: the only candidate"
    return prefix + f"{label}: chosen by {record.get('strategy')}"


def ledger_number(record: Mapping, key: str) -> float:
    value = (record.get("ledger") or {}).get(key, 0)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else 0.0


def row(record: Mapping, file_index: int, strategy_index: int) -> list:
    """The problem list's compact row (arrays, not objects: a 10,000-problem page stays small)."""
    metadata = record.get("metadata") or {}
    level = metadata.get("level")
    info = record.get("info") or {}
    return [
        file_index, strategy_index, record["id"],
        None if level is None else str(level),
        outcome(record),
        _short(record.get("answer")), _short(record.get("reference")),
        ledger_number(record, "generated_tokens"), ledger_number(record, "flops"),
        disagreement(record), bool(info.get("budget_stop")), len(record.get("candidates") or []),
        isinstance(info.get("tree"), Mapping),
    ]


#: the names of row()'s fields, in order (the page reads rows by these)
ROW_FIELDS = ("file", "strategy", "id", "level", "outcome", "answer", "reference", "tokens", "flops",
              "disagreement", "budget_stop", "candidates", "tree")


def _short(text: Any, limit: int = 40) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
