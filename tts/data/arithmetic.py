"""Built-in arithmetic problems: generated from a seed, graded exactly.

Levels go from what a 135M model solves about half the time to what it rarely solves, so that sampling
more has room to help:

  add1       a + b, single digits
  add2       a + b, two digits
  add3       a + b, three digits
  mul1       a * b, single digits
  multistep  a + b * c - d, single and two digits (operator precedence matters)
"""

from __future__ import annotations

import random
from typing import Callable

from ..types import Problem

INSTRUCTION = "What is {expr}? Reply with just the number."


def _add(digits: int) -> Callable[[random.Random], str]:
    lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
    return lambda rng: f"{rng.randint(lo, hi)} + {rng.randint(lo, hi)}"


def _mul1(rng: random.Random) -> str:
    return f"{rng.randint(2, 9)} * {rng.randint(2, 9)}"


def _multistep(rng: random.Random) -> str:
    return f"{rng.randint(1, 20)} + {rng.randint(2, 9)} * {rng.randint(2, 9)} - {rng.randint(1, 9)}"


LEVELS: dict[str, tuple[int, Callable[[random.Random], str]]] = {
    "add1": (1, _add(1)),
    "add2": (2, _add(2)),
    "add3": (3, _add(3)),
    "mul1": (2, _mul1),
    "multistep": (4, _multistep),
}


def evaluate(expr: str) -> int:
    """Exact value of a generated expression (digits, + - * and spaces only, so eval is safe here)."""
    if not set(expr) <= set("0123456789+-* "):
        raise ValueError(f"not a generated arithmetic expression: {expr!r}")
    return int(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - charset checked above


def generate(level: str, count: int, seed: int = 0) -> list[Problem]:
    """``count`` distinct problems of one level (fewer if the level has fewer distinct problems)."""
    if level not in LEVELS:
        raise ValueError(f"unknown arithmetic level {level!r}; choose from {', '.join(LEVELS)}")
    difficulty, make = LEVELS[level]
    rng = random.Random(f"{level}:{seed}")
    seen: set[str] = set()
    problems = []
    attempts = 0
    while len(problems) < count and attempts < count * 50:
        attempts += 1
        expr = make(rng)
        if expr in seen:
            continue
        seen.add(expr)
        problems.append(
            Problem(
                id=f"{level}-{len(problems):04d}",
                prompt=INSTRUCTION.format(expr=expr),
                answer=str(evaluate(expr)),
                metadata={"dataset": level, "level": difficulty, "expression": expr},
            )
        )
    return problems
