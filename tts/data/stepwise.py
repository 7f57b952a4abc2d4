"""Step-by-step arithmetic with exact step-level truth: the task of the laptop-scale testbed.

A problem is an expression of integers with ``+ - *`` (``12 + 7 * 3 - 20``). The solution evaluates it one
operation per line, each line the whole expression after that operation, and the last line states the
result::

    12 + 21 - 20
    33 - 20
    Answer: 13

so a problem with k operations has exactly k steps (k - 1 reduced expressions, then ``Answer: n``), one
per line: tree search segments solutions at ``"\\n"`` (``--step-delimiter "\\n"``).

Difficulty is the number of operations and the size of the numbers (:data:`LEVELS`). Every value on the
canonical path (multiplication first, then left to right) stays within ``0..MAX_VALUE``, and the right
factor of a product is a single digit, so the arithmetic is short but not trivial.

:func:`check_steps` judges any written solution exactly: a step is right when it is a legal single
reduction of the expression so far (an operation that precedence allows to go next, computed exactly) or
``Answer: v`` with the right value; once a step is wrong, every later step is wrong too (as process
reward models are trained and ProcessBench labels). :func:`first_wrong_step` gives that step's index.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..types import Problem

#: name -> (difficulty level, operations = steps, largest operand)
LEVELS: dict[str, tuple[int, int, int]] = {
    "steps2": (1, 2, 9),
    "steps3": (2, 3, 20),
    "steps4": (3, 4, 50),
    "steps5": (4, 5, 99),
    "steps6": (5, 6, 99),
}
MAX_VALUE = 999
OPS = ("+", "-", "*")
_OP_WEIGHTS = (0.4, 0.3, 0.3)
PROMPT_FORMAT = "stepwise"
STEP_DELIMITER = "\n"
_ANSWER = re.compile(r"^Answer:\s*(-?\d+)$")
_NUM = re.compile(r"^-?\d+$")


def tokens(expr: str) -> list[str] | None:
    """``"3 + -4 * 2"`` -> ``["3", "+", "-4", "*", "2"]``; None unless it alternates number, op, number."""
    parts = expr.split()
    if not parts or len(parts) % 2 == 0:
        return None
    for i, part in enumerate(parts):
        if (i % 2 == 0 and not _NUM.match(part)) or (i % 2 == 1 and part not in OPS):
            return None
    return parts


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def legal_ops(parts: list[str]) -> list[int]:
    """Positions of the operators that may be evaluated next without changing the value: any ``*``;
    a ``+``/``-`` when no ``*`` binds its operands and the operator before it is ``+`` (or none)."""
    out = []
    for j in range(1, len(parts), 2):
        if parts[j] == "*":
            out.append(j)
        elif (j == 1 or parts[j - 2] == "+") and (j + 2 >= len(parts) or parts[j + 2] != "*"):
            out.append(j)
    return out


def reduce_at(parts: list[str], j: int) -> list[str]:
    value = _apply(int(parts[j - 1]), parts[j], int(parts[j + 1]))
    return parts[: j - 1] + [str(value)] + parts[j + 2:]


def canonical_next(parts: list[str]) -> int:
    """The operator the canonical solution evaluates next: the leftmost ``*``, else the leftmost."""
    return next((j for j in range(1, len(parts), 2) if parts[j] == "*"), 1)


def evaluate(expr: str) -> int:
    parts = tokens(expr)
    if parts is None:
        raise ValueError(f"not a stepwise expression: {expr!r}")
    while len(parts) > 1:
        parts = reduce_at(parts, canonical_next(parts))
    return int(parts[0])


def canonical_states(expr: str) -> list[str]:
    """The expression after each operation of the canonical order (the last is the value)."""
    parts = tokens(expr)
    if parts is None:
        raise ValueError(f"not a stepwise expression: {expr!r}")
    states = []
    while len(parts) > 1:
        parts = reduce_at(parts, canonical_next(parts))
        states.append(" ".join(parts))
    return states


def solution(expr: str) -> str:
    """The canonical written solution: one reduced expression per line, then ``Answer: n``."""
    states = canonical_states(expr)
    return STEP_DELIMITER.join(states[:-1] + [f"Answer: {states[-1]}"])


def split_solution(text: str) -> list[str]:
    """A written solution's steps: its non-empty lines, stripped."""
    return [line.strip() for line in text.split(STEP_DELIMITER) if line.strip()]


def check_steps(expr: str, text: str | list[str]) -> list[bool]:
    """Per step of ``text`` (a solution, or its steps): is it right? All steps after the first wrong
    one are wrong. A solution that stops before its answer has only right steps but is incomplete
    (see :func:`is_complete`)."""
    steps = split_solution(text) if isinstance(text, str) else [s.strip() for s in text]
    state = tokens(expr)
    if state is None:
        raise ValueError(f"not a stepwise expression: {expr!r}")
    value = evaluate(expr)
    out: list[bool] = []
    answered = False
    for step in steps:
        ok = False
        if not answered:
            m = _ANSWER.match(step)
            if m:
                ok = int(m.group(1)) == value
                answered = True
            else:
                new = tokens(step)
                if new is not None and len(state) > 1:
                    for j in legal_ops(state):
                        if reduce_at(state, j) == new:
                            ok, state = True, new
                            break
        if not ok:
            return out + [False] * (len(steps) - len(out))
        out.append(True)
    return out


def first_wrong_step(expr: str, text: str | list[str]) -> int | None:
    """Index (from 0) of the first wrong step, or None when every step is right."""
    labels = check_steps(expr, text)
    return labels.index(False) if False in labels else None


def judged_steps(count: int, first_wrong: int | None) -> list[tuple[int, bool]]:
    """(index, right?) of the steps a PRM is judged on: every step up to and including the first wrong
    one (the later ones are wrong by definition), as ProcessBench scores and the testbed PRM is trained."""
    last = count if first_wrong is None else first_wrong + 1
    return [(i, i != first_wrong) for i in range(last)]


def right_steps(parts: list[str]) -> list[str]:
    """Every right next step from the expression state ``parts`` (as written by :func:`solution`): each
    legal single reduction, and the answer."""
    out = [" ".join(reduce_at(parts, j)) for j in legal_ops(parts)] if len(parts) > 1 else []
    return out + [f"Answer: {evaluate(' '.join(parts))}"]


def is_complete(text: str) -> bool:
    """The solution ends with an ``Answer:`` line."""
    steps = split_solution(text)
    return bool(steps) and _ANSWER.match(steps[-1]) is not None


def _expression(rng: random.Random, ops: int, largest: int) -> str | None:
    parts = [str(rng.randint(1, largest))]
    for _ in range(ops):
        op = rng.choices(OPS, _OP_WEIGHTS)[0]
        right = rng.randint(2, 9) if op == "*" else rng.randint(1, largest)
        parts += [op, str(right)]
    if parts[0] in ("0", "1") and parts[1] == "*":
        return None
    state = parts
    while len(state) > 1:
        state = reduce_at(state, canonical_next(state))
        if any(not 0 <= int(p) <= MAX_VALUE for p in state[::2]):
            return None
    return " ".join(parts)


def expressions(level: str, count: int, rng: random.Random) -> list[str]:
    """``count`` distinct expressions of a level drawn from ``rng`` (fewer when the level has fewer)."""
    _, ops, largest = LEVELS[level]
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < count and attempts < count * 30:
        attempts += 1
        expr = _expression(rng, ops, largest)
        if expr is None or expr in seen:
            continue
        seen.add(expr)
        out.append(expr)
    return out


def problem(level: str, index: int, expr: str) -> Problem:
    from .prompts import render

    difficulty, ops, largest = LEVELS[level]
    return Problem(
        id=f"{level}-{index:04d}",
        answer=str(evaluate(expr)),
        metadata={"dataset": level, "level": difficulty, "steps": ops, "largest": largest, "expression": expr,
                  "prompt_format": PROMPT_FORMAT},
        **render(PROMPT_FORMAT, expr),
    )


def generate(level: str, count: int, seed: int = 0) -> list[Problem]:
    """``count`` distinct problems of one level, the same for the same seed."""
    if level not in LEVELS:
        raise ValueError(f"unknown stepwise level {level!r}; choose from {', '.join(LEVELS)}")
    rng = random.Random(f"stepwise:{level}:{seed}")
    return [problem(level, i, e) for i, e in enumerate(expressions(level, count, rng))]


@dataclass(frozen=True)
class StepLabels:
    """One written solution judged against the truth: per-step labels, first wrong step, completeness."""

    steps: tuple[str, ...]
    labels: tuple[bool, ...]
    first_wrong: int | None
    complete: bool

    @classmethod
    def of(cls, expr: str, text: str) -> "StepLabels":
        steps = split_solution(text)
        labels = check_steps(expr, steps)
        first = labels.index(False) if False in labels else None
        return cls(tuple(steps), tuple(labels), first, is_complete(text))


#: kinds of mistake :func:`wrong_step` makes, the ones a step-by-step solver makes
MISTAKES = ("arithmetic", "precedence", "copy", "operator", "dropped", "answer")


def wrong_step(expr_or_parts: str | list[str], rng: random.Random, kind: str | None = None) -> str | None:
    """A plausible but wrong next step for the expression state ``expr_or_parts``: a near-miss result,
    an operation that precedence does not allow yet, a miscopied number or operator, a dropped term, or
    a wrong or premature ``Answer:``. None when ``kind`` cannot apply to this state. The exact checker
    always judges the result wrong (:func:`check_steps`); the PRM's training uses these to learn what an
    error looks like from content, not from the step's position."""
    parts = tokens(expr_or_parts) if isinstance(expr_or_parts, str) else list(expr_or_parts)
    if parts is None or len(parts) < 3:
        return None
    kind = kind or rng.choice(MISTAKES)
    j = canonical_next(parts)
    right = reduce_at(parts, j)
    legal = set(right_steps(parts))
    final = len(parts) == 3

    def near(value: int) -> int:
        for _ in range(20):
            delta = rng.choice((1, 2, 3, 10, 20, 100)) * rng.choice((1, -1))
            if rng.random() < 0.3 and value >= 10:  # one digit changed
                digits = list(str(value))
                k = rng.randrange(len(digits))
                digits[k] = rng.choice([d for d in "0123456789" if d != digits[k]])
                candidate = int("".join(digits))
            else:
                candidate = value + delta
            if candidate != value and candidate >= 0:
                return candidate
        return value + 1

    out: list[str] | None = None
    if kind == "arithmetic":
        if final:
            return None
        out = list(right)
        out[j - 1] = str(near(int(right[j - 1])))
    elif kind == "precedence":
        illegal = [i for i in range(1, len(parts), 2) if i not in legal_ops(parts)]
        if not illegal:
            return None
        reduced = reduce_at(parts, rng.choice(illegal))
        if any(int(x) < 0 for x in reduced[::2]):  # a solver that ignores precedence still stays >= 0 here
            return None
        if len(reduced) == 1:
            return f"Answer: {reduced[0]}" if int(reduced[0]) != evaluate(" ".join(parts)) else None
        out = reduced
    elif kind == "copy":
        others = [i for i in range(0, len(right), 2) if i != j - 1]
        if final or not others:
            return None
        out = list(right)
        k = rng.choice(others)
        out[k] = str(near(int(out[k])))
    elif kind == "operator":
        ops = [i for i in range(1, len(right), 2)]
        if final or not ops:
            return None
        out = list(right)
        k = rng.choice(ops)
        out[k] = rng.choice([o for o in OPS if o != out[k]])
    elif kind == "dropped":
        if final:
            return None
        k = rng.randrange(1, len(right), 2)
        out = right[:k] + right[k + 2:]
    elif kind == "answer":
        value = evaluate(" ".join(parts))
        if final or rng.random() < 0.5:
            return f"Answer: {near(value)}"
        return f"Answer: {right[0]}" if int(right[0]) != value else None
    else:
        raise ValueError(f"unknown mistake {kind!r}; choose from {', '.join(MISTAKES)}")
    if out is None or " ".join(out) in legal or len(out) == 1:
        return None
    return " ".join(out)
