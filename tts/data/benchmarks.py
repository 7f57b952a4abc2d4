"""Public benchmarks by name: a local JSONL/Parquet file when there is one, else the Hugging Face hub.

Local files are looked up as ``<data dir>/<name>/<split>.{jsonl,jsonl.gz,parquet}``, the layout of the
project's shared reference data, where the data dir is the ``path`` argument (a folder) or the
``TTS_DATA_DIR`` environment variable; ``path`` may also name the file itself. Only when no local file is
configured is the hub tried, through the optional ``datasets`` package, imported lazily so that the core
never needs it. Field names differ between copies of the same benchmark (MATH-500's ``problem`` vs.
AMC 2023's ``question``), so each benchmark lists the names it accepts, first match wins.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..types import Problem
from .errors import DatasetError
from .files import SUFFIXES, problems_from_rows, read_rows

DATA_DIR_ENV = "TTS_DATA_DIR"

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def gsm8k_answer(text: str) -> str | None:
    """GSM8K's reference is a worked solution ending in ``#### 72``; the number after ``####``."""
    match = _GSM8K_FINAL.search(text)
    return match.group(1).replace(",", "").strip() if match else None


def strip_unit(text: str) -> str | None:
    """ASDiv writes ``9 (apples)``; the unit in parentheses is not part of the answer."""
    return re.sub(r"\s*\([^()]*\)\s*$", "", text).strip() or None


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    question_fields: tuple[tuple[str, ...], ...]  # alternatives; each is one field or several to join
    answer_fields: tuple[str, ...]
    id_fields: tuple[str, ...] = ()
    level_field: str | None = None
    answer_transform: Callable[[str], str | None] | None = None
    prompt_format: str = "default"
    split: str = "test"
    hub: tuple[str, str | None, str] | None = None  # (repo, config, split)
    extra_fields: tuple[str, ...] = ()


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("math500", "MATH-500 (Lightman et al.): 500 competition problems, levels 1-5",
              (("problem",), ("question",)), ("answer",), ("unique_id", "id"), level_field="level",
              prompt_format="math", hub=("HuggingFaceH4/MATH-500", None, "test"), extra_fields=("subject",)),
    Benchmark("gsm8k", "GSM8K: grade-school word problems (answer after ####)",
              (("question",),), ("answer",), ("id",), answer_transform=gsm8k_answer, prompt_format="gsm8k",
              hub=("openai/gsm8k", "main", "test")),
    Benchmark("aime24", "AIME 2024: 30 problems, integer answers 0-999",
              (("problem",), ("question",)), ("answer",), ("id",), prompt_format="competition",
              hub=("HuggingFaceH4/aime_2024", None, "train")),
    Benchmark("amc23", "AMC 2023: 40 problems with numeric answers",
              (("question",), ("problem",)), ("answer",), ("id",), prompt_format="competition",
              hub=("math-ai/amc23", None, "test")),
    Benchmark("asdiv", "ASDiv: 2215 word problems (local file only)",
              (("body", "question"),), ("answer",), ("idx",), answer_transform=strip_unit, prompt_format="word_problem"),
    *(Benchmark(f"mawps-{part}", f"MAWPS {part} word problems (local file only)", (("input",),), ("target",),
                prompt_format="word_problem", split=part) for part in ("singleop", "singleeq", "addsub", "multiarith")),
)}
# MAWPS keeps its four parts as files in one folder, so the "split" is the file name inside mawps/
_FOLDER = {name: "mawps" if name.startswith("mawps-") else name for name in BENCHMARKS}


def local_file(bench: Benchmark, data_dir: Path, split: str) -> Path:
    folder = data_dir / _FOLDER[bench.name]
    for suffix in SUFFIXES:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    found = sorted(p.name for p in folder.iterdir() if p.name.endswith(SUFFIXES)) if folder.is_dir() else []
    hint = f"; found {', '.join(found)} (pass split=...)" if found else ""
    raise DatasetError(f"no {split} split of {bench.name}: expected {folder}/{split}.jsonl or .parquet{hint}",
                       path=folder, field="split")


def _pick(first: dict, options, what: str, source, line: int, required: bool = True):
    for option in options:
        names = (option,) if isinstance(option, str) else option
        if all(n in first for n in names):
            return option
    if not required:
        return None
    flat = [o if isinstance(o, str) else "+".join(o) for o in options]
    raise DatasetError(f"no {what} field: expected one of {', '.join(flat)} (fields present: "
                       f"{', '.join(sorted(first)) or 'none'})", path=source, line=line, field=flat[0])


def _build(bench: Benchmark, rows: Iterator[tuple[int, dict]], source: str | Path, limit: int | None) -> list[Problem]:
    rows = iter(rows)
    try:
        first = next(rows)
    except StopIteration:
        raise DatasetError("empty: no rows", path=source) from None
    line, row = first
    qfield = _pick(row, bench.question_fields, "question", source, line)
    afield = _pick(row, bench.answer_fields, "answer", source, line)
    idfield = _pick(row, bench.id_fields, "id", source, line, required=False) if bench.id_fields else None

    def chained():
        yield first
        yield from rows

    problems = problems_from_rows(chained(), path=source, question_field=qfield, answer_field=afield,
                                  id_field=idfield, level_field=bench.level_field,
                                  answer_transform=bench.answer_transform, prompt_format=bench.prompt_format,
                                  dataset=bench.name, limit=limit, extra_fields=bench.extra_fields)
    return problems


def load_benchmark(name: str, *, path: str | Path | None = None, split: str | None = None,
                   limit: int | None = None) -> list[Problem]:
    bench = BENCHMARKS[name]
    split = split or bench.split
    if path is None and os.environ.get(DATA_DIR_ENV):
        path = os.environ[DATA_DIR_ENV]
    if path is not None:
        path = Path(path)
        file = local_file(bench, path, split) if path.is_dir() else path
        return _build(bench, read_rows(file), file, limit)
    return _build(bench, _hub_rows(bench, split), f"hf://datasets/{bench.hub[0]}" if bench.hub else name, limit)


def _hub_rows(bench: Benchmark, split: str) -> Iterator[tuple[int, dict]]:
    if bench.hub is None:
        raise DatasetError(f"{bench.name} has no hub copy; give a local file with path=... or set "
                           f"{DATA_DIR_ENV} to a folder holding {_FOLDER[bench.name]}/{split}.jsonl", field="path")
    repo, config, hub_split = bench.hub
    if split != bench.split:
        hub_split = split
    try:
        import datasets  # optional: only needed to download from the hub
    except ImportError:
        raise DatasetError(f"{bench.name}: no local file given and the `datasets` package is not installed; "
                           f"pip install datasets, or set {DATA_DIR_ENV} to a folder holding "
                           f"{bench.name}/{split}.jsonl, or pass path=FILE", field="path") from None
    try:
        table = datasets.load_dataset(repo, config, split=hub_split)
    except Exception as exc:  # offline, gated, renamed: the datasets library raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{bench.name}: cannot load {repo} from the Hugging Face hub ({first}); "
                           f"when offline, set {DATA_DIR_ENV} to a folder holding {bench.name}/{split}.jsonl "
                           "or pass path=FILE", field="path") from None
    for index, row in enumerate(table, 1):
        yield index, dict(row)
