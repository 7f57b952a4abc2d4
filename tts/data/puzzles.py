"""Built-in puzzles with exact checkers: Game of 24 and Countdown.

Both give a list of numbers and a target; a solution is an arithmetic expression that uses every given
number exactly once (each literal consumes one copy) with + - * / and parentheses, and whose exact
rational value equals the target. Candidates are parsed with :mod:`ast` and only number literals, the
four operators, unary minus and parentheses are accepted, so model text is never executed.

Problems are generated from a seed. Every generated problem is solvable: numbers are drawn, then an
exhaustive search over expression trees finds a solution (Game of 24) or the target is made by building
a random expression over the drawn numbers (Countdown). The found solution is the reference answer, so
``checker(answer, reference)`` can grade from the reference alone (same multiset of numbers, same
value) when per-problem metadata is not at hand.
"""

from __future__ import annotations

import ast
import random
import re
from fractions import Fraction
from functools import lru_cache
from typing import Sequence

from ..types import Problem

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
# Candidates are short; a cap keeps a pathological input (deeply nested parentheses) from costing much.
MAX_EXPRESSION_CHARS = 200


class ExpressionError(ValueError):
    pass


def parse_expression(text: str) -> tuple[Fraction, list[Fraction]]:
    """Exact value and number literals of an arithmetic expression; ExpressionError if it is anything else.

    Accepts ``×``/``x`` for ``*``, ``÷`` for ``/``, and a leading "expr = 24" form (the part before the
    last ``=``), because models write those; everything else must be numbers, + - * /, and parentheses.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expected a string, got {type(text).__name__}")
    s = text.strip().strip("$").strip()
    s = s.replace("×", "*").replace("·", "*").replace("÷", "/").replace("−", "-")
    s = re.sub(r"(?<=[\d)\s])[xX](?=[\s\d(])", "*", s)
    s = s.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
    s = s.replace("\\left", "").replace("\\right", "")
    if "=" in s:  # "(8-4)*6 = 24" -> the side that holds the numbers
        sides = [p.strip() for p in s.split("=") if p.strip()]
        s = max(sides, key=lambda p: sum(ch in "+-*/" for ch in p)) if sides else ""
    if not s:
        raise ExpressionError("empty expression")
    if len(s) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    if "**" in s or "//" in s:
        raise ExpressionError("only + - * / are allowed")
    try:
        tree = ast.parse(s, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise ExpressionError(f"not an arithmetic expression: {s!r}") from exc
    numbers: list[Fraction] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            value = Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
            numbers.append(value)
            return value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = walk(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if right == 0:
                raise ExpressionError("division by zero")
            return left / right
        raise ExpressionError(f"only numbers, + - * / and parentheses are allowed, found {type(node).__name__}")

    try:
        value = walk(tree.body)
    except RecursionError as exc:
        raise ExpressionError("expression nested too deeply") from exc
    return value, numbers


def check_expression(candidate: str | None, numbers: Sequence[int | Fraction], target: int | Fraction) -> bool:
    """True iff ``candidate`` uses each of ``numbers`` exactly once and evaluates exactly to ``target``."""
    if candidate is None:
        return False
    try:
        value, used = parse_expression(candidate)
    except ExpressionError:
        return False
    return sorted(used) == sorted(Fraction(n) for n in numbers) and value == Fraction(target)


def check_against_reference(candidate: str | None, reference: str) -> bool:
    """Grade with only the reference solution: same numbers used, same exact value.

    This fits the runtime's ``grade(answer, reference)`` signature without per-problem metadata.
    """
    try:
        target, numbers = parse_expression(reference)
    except ExpressionError:
        return False
    return check_expression(candidate, numbers, target)


# --- solving (used to make sure every generated problem has a solution) ---------------------------------

@lru_cache(maxsize=4096)
def _solve(numbers: tuple[Fraction, ...], target: Fraction) -> str | None:
    """One expression over all ``numbers`` equal to ``target``, by exhaustive pairwise combination."""
    def search(items: tuple[tuple[Fraction, str], ...]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == target else None
        for i in range(len(items)):
            for j in range(len(items)):
                if i == j:
                    continue
                (a, ea), (b, eb) = items[i], items[j]
                rest = tuple(items[k] for k in range(len(items)) if k not in (i, j))
                options = [(a + b, f"({ea} + {eb})")] if i < j else []
                options += [(a - b, f"({ea} - {eb})")]
                if i < j:
                    options.append((a * b, f"{ea} * {eb}" if len(items) == 2 else f"({ea} * {eb})"))
                if b != 0:
                    options.append((a / b, f"({ea} / {eb})"))
                for value, expr in options:
                    found = search(rest + ((value, expr),))
                    if found:
                        return found
        return None

    found = search(tuple((n, str(n)) for n in numbers))
    if found and found.startswith("(") and _balanced_outer(found):
        found = found[1:-1]
    return found


def _balanced_outer(expr: str) -> bool:
    depth = 0
    for i, ch in enumerate(expr):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(expr) - 1:
            return False
    return True


def solve(numbers: Sequence[int], target: int) -> str | None:
    """A solution expression, or None if there is none."""
    return _solve(tuple(Fraction(n) for n in sorted(numbers)), Fraction(target))


# --- generation ---------------------------------------------------------------------------------------

GAME24_INSTRUCTION = "game24"
COUNTDOWN_INSTRUCTION = "countdown"


def _problem(kind: str, index: int, numbers: list[int], target: int, solution: str, level: int) -> Problem:
    from .prompts import render

    listed = ", ".join(str(n) for n in numbers)
    return Problem(
        id=f"{kind}-{index:04d}",
        answer=solution,
        metadata={"dataset": kind, "level": level, "numbers": list(numbers), "target": target,
                  "checker": "expression", "prompt_format": kind},
        **render(kind, listed, numbers=listed, target=target),
    )


def game24(count: int, seed: int = 0) -> list[Problem]:
    """``count`` distinct solvable Game of 24 problems: four numbers 1..13 and target 24."""
    rng = random.Random(f"game24:{seed}")
    seen: set[tuple[int, ...]] = set()
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < count and attempts < count * 50:
        attempts += 1
        numbers = sorted(rng.randint(1, 13) for _ in range(4))
        if tuple(numbers) in seen:
            continue
        seen.add(tuple(numbers))
        solution = solve(numbers, 24)
        if solution is None:
            continue
        problems.append(_problem("game24", len(problems), numbers, 24, solution, level=1))
    return problems


def countdown(count: int, seed: int = 0, sizes: Sequence[int] = (3, 4)) -> list[Problem]:
    """``count`` distinct Countdown problems: 3 or 4 numbers 1..99 and a positive integer target that a
    random expression over all of them reaches (so each problem is solvable); level = number count."""
    rng = random.Random(f"countdown:{seed}")
    seen: set[tuple] = set()
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < count and attempts < count * 100:
        attempts += 1
        size = sizes[len(problems) % len(sizes)]
        numbers = [rng.randint(1, 99) for _ in range(size)]
        target = _random_target(rng, numbers)
        key = (tuple(sorted(numbers)), target)
        if target is None or key in seen:
            continue
        seen.add(key)
        solution = solve(numbers, target)
        if solution is None:  # cannot happen for a target built from the numbers; kept as a guard
            continue
        problems.append(_problem("countdown", len(problems), numbers, target, solution, level=size))
    return problems


def _random_target(rng: random.Random, numbers: list[int]) -> int | None:
    """Fold the numbers in random order with random operators; a target in 10..999 or None."""
    order = numbers[:]
    rng.shuffle(order)
    value = Fraction(order[0])
    for n in order[1:]:
        op = rng.choice("+-*/")
        if op == "+":
            value += n
        elif op == "-":
            value = value - n if value > n else n - value
        elif op == "*":
            value *= n
        else:
            value = value / n if value % n == 0 else value + n
    if value.denominator != 1 or not 10 <= value <= 999:
        return None
    return int(value)


_TAGGED = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_EXPR_LINE = re.compile(r"[\d\s()+\-*/×÷x.=]+")


def extract_expression(text: str | None) -> str | None:
    """The solution expression a model wrote: the last ``<answer>...</answer>``, else the last
    ``\\boxed{...}``, else the last line that is nothing but an arithmetic expression."""
    if not text:
        return None
    tagged = _TAGGED.findall(text)
    if tagged:
        return tagged[-1].strip() or None
    from ..verifiers.answers import last_boxed

    boxed = last_boxed(text)
    if boxed:
        return boxed
    for line in reversed(text.strip().splitlines()):
        line = line.strip().rstrip(".").strip("$ ")
        if line and _EXPR_LINE.fullmatch(line) and any(op in line for op in "+-*/×÷"):
            return line
    return None
