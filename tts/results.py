"""Result files: JSONL, one line per (problem, strategy), written as each problem finishes.

Each line is written with a single ``write`` and flushed to disk, so a run killed at any moment leaves
at most one partial last line. Lines carry a hash of the strategy's configuration, the run-level
settings (model, backend, dataset, seed, budgets, data options) and a digest of the line itself.

Opening a file for a run checks all of it before touching anything: it must be a regular file whose
every complete line is a valid record of this format with an intact digest, each (strategy, problem)
at most once, all with the same run-level settings as this run, and a strategy of this run only with
its own config hash. Only then is a partial last line cut off (or a complete last record given its
missing newline), and the run holds an exclusive lock on the file until it ends, so two runs can never
write into one file at once. Any other file (a CSV, a dataset, results of another run) is refused
with one line naming the file and line, and left byte for byte as it was.

The digest catches corrupt and hand-edited lines; it is a checksum, not a signature: someone who
recomputes it can still write a record by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .inputs import InputFileError, bounded_lines, open_regular
from .runtime import Result

FORMAT_VERSION = 2


class ResultsFileError(ValueError):
    pass


def config_hash(config: Mapping[str, Any]) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def result_record(result: Result, *, config_hash: str, run_info: Mapping[str, Any],
                  vote_key: Callable[[str], str] | None = None) -> dict:
    """One result line. ``vote_key`` (the problem's, when its answers need one) is stored per candidate so
    that reports vote the way the strategies did (``1/2`` and ``\\frac{1}{2}`` as one answer)."""
    trace = result.trace
    return {
        "id": trace.problem_id,
        "strategy": trace.strategy,
        "question": question_text(result.problem),
        "answer": trace.answer,
        "reference": result.problem.answer,
        "correct": result.correct,
        "chosen": trace.chosen,
        "candidates": [
            {
                "text": c.text,
                "answer": c.answer,
                "num_tokens": c.num_tokens,
                "finish_reason": c.finish_reason,
                "scores": dict(c.scores),
                "correct": ok,
                **({"vote_key": vote_key(c.answer)} if vote_key is not None and c.answer is not None else {}),
            }
            for c, ok in zip(trace.candidates, result.candidate_correct)
        ],
        "ledger": dict(trace.ledger),
        "info": dict(trace.info),
        "metadata": dict(result.problem.metadata),
        "config_hash": config_hash,
        **run_info,
        "format": FORMAT_VERSION,
    }


def question_text(problem) -> str:
    """What the model was asked, for readers of the file (``tts view``): the prompt, or the chat's turns."""
    if problem.prompt is not None:
        return problem.prompt
    return "\n\n".join(f"[{m.role}] {m.content}" for m in problem.messages or ())


class RunClock:
    """Stamps each record of one ``tts run`` invocation with the seconds since it started, so a report
    can tell a run's elapsed time (problems run concurrently: their wall times overlap, and summing them
    overstates it many times). ``session`` tells invocations apart in a resumed file."""

    def __init__(self) -> None:
        import secrets

        self.session = secrets.token_hex(6)
        self.started = time.perf_counter()

    def stamp(self) -> dict[str, Any]:
        return {"session": self.session, "elapsed_s": round(time.perf_counter() - self.started, 3)}


# ------------------------------------------------------------------------------ validation

_NONE = type(None)
_FIELDS: dict[str, tuple] = {
    "id": (str,), "strategy": (str,), "config_hash": (str,), "answer": (str, _NONE), "reference": (str, _NONE),
    "correct": (bool, _NONE), "chosen": (int, _NONE), "candidates": (list,), "ledger": (dict,), "info": (dict,),
    "metadata": (dict,),
}
_CANDIDATE_FIELDS: dict[str, tuple] = {
    "text": (str,), "answer": (str, _NONE), "num_tokens": (int,), "finish_reason": (str, _NONE),
    "scores": (dict,), "correct": (bool, _NONE),
}


def _type_ok(value: Any, types: tuple) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def digest(record: Mapping) -> str:
    """The checksum of a record (every field but ``digest``), over its canonical JSON."""
    body = {k: v for k, v in record.items() if k != "digest"}
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def record_problem(record: Any) -> str | None:
    """Why ``record`` is not a valid results record, or None."""
    if not isinstance(record, dict):
        return f"a record must be a JSON object, got {type(record).__name__}"
    if "format" not in record or "config_hash" not in record:
        return "not a tts results record (no format or config_hash field)"
    if record["format"] not in (1, FORMAT_VERSION) or isinstance(record["format"], bool):
        return f"unknown results format {record['format']!r}"
    for name, types in _FIELDS.items():
        if name not in record:
            return f"missing field {name!r}"
        if not _type_ok(record[name], types):
            return f"field {name!r} has the wrong type ({type(record[name]).__name__})"
    for i, cand in enumerate(record["candidates"]):
        if not isinstance(cand, dict):
            return f"candidate {i} is not an object"
        for name, types in _CANDIDATE_FIELDS.items():
            if name not in cand or not _type_ok(cand[name], types):
                return f"candidate {i} field {name!r} is missing or has the wrong type"
        if cand["num_tokens"] < 0:
            return f"candidate {i} has a negative token count"
    chosen = record["chosen"]
    if chosen is not None and not 0 <= chosen < len(record["candidates"]):
        return f"chosen candidate {chosen} does not exist"
    for key, value in record["ledger"].items():
        if not _type_ok(value, (int, float)):
            return f"ledger entry {key!r} is not a number"
    if record["format"] == FORMAT_VERSION:
        if not isinstance(record.get("run"), dict):
            return "missing field 'run'"
        if record.get("digest") != digest(record):
            return "digest does not match the record (corrupt or edited by hand)"
    return None


@dataclass
class _Scan:
    records: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    #: what to do with the end of the file: None, "newline" (a complete record lacks it) or "truncate"
    repair: str | None = None
    cut_at: int = 0


def _parsed_lines(path: Path):
    """``(line number, byte offset, complete, record, problem)`` for each non-blank line, ``problem``
    being why the line is not a valid record (None when it is). The one reader of results files."""
    offset = 0
    try:
        with open_regular(path, "results file") as fh:
            for number, raw in bounded_lines(fh, path):
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    problem = record_problem(record)
                except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, a huge integer, too deep
                    record, problem = None, f"not a JSON line ({getattr(exc, 'msg', type(exc).__name__)})"
                yield number, start, raw.endswith(b"\n"), record, problem
    except InputFileError as exc:
        raise ResultsFileError(str(exc)) from None


def _scan(path: Path) -> _Scan:
    """Every valid record of the file with its line number, and how its end must be repaired; a
    ResultsFileError for an invalid or repeated line."""
    scan = _Scan()
    records = _valid_records(path)
    for number, start, complete, record in records:
        if record is None:  # the fragment a killed run left
            scan.repair, scan.cut_at = "truncate", start
            break
        if not complete:
            scan.repair = "newline"
        scan.records.append(record)
        scan.lines.append(number)
    return scan


def _valid_records(path: Path):
    """``(line number, offset, complete, record)`` of every valid, unrepeated record; a last partial
    line that is not a record comes as ``record=None`` and ends the file. Shared by the writer's scan
    and :func:`iter_records`, so both refuse exactly the same files."""
    # Repeats are found by an 8-byte tag per (strategy, id), not the key itself, so the check costs
    # about 60 bytes a record (a million-record file is read in bounded memory); a tag seen before is
    # confirmed against the earlier lines, so a collision of two different keys never refuses a file.
    seen: set[int] = set()
    for number, start, complete, record, problem in _parsed_lines(path):
        if problem is not None:
            if not complete:
                yield number, start, complete, None
                return
            raise ResultsFileError(f"{path}:{number}: {problem}")
        key = (record["strategy"], record["id"])
        tag = _key_tag(key)
        if tag in seen:
            earlier = _first_line_of(path, key, number)
            if earlier is not None:
                raise ResultsFileError(f"{path}:{number}: repeats {key[0]} on problem {key[1]!r} from line {earlier}")
        seen.add(tag)
        yield number, start, complete, record


def _key_tag(key: tuple) -> int:
    text = json.dumps(key, ensure_ascii=False)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _first_line_of(path: Path, key: tuple, before: int) -> int | None:
    """The first line before ``before`` holding the record of ``key`` (None: only its tag matched)."""
    for number, _, _, record, problem in _parsed_lines(path):
        if number >= before:
            return None
        if problem is None and (record["strategy"], record["id"]) == key:
            return number
    return None


def read_records(path: str | Path) -> list[dict]:
    """All complete, valid records of a results file (a partial last line from a killed run is
    ignored); a corrupt, hand-edited or foreign line is a ResultsFileError naming file and line."""
    return list(iter_records(path))


def iter_records(path: str | Path):
    """The records of :func:`read_records` one at a time, so a reader that keeps only part of each
    (``tts report``) needs memory for that part only."""
    for _, _, _, record in _valid_records(Path(path)):
        if record is not None:
            yield record


# ------------------------------------------------------------------------------ writing


class ResultsWriter:
    """Appends records to a results file, resuming what a previous run of the same config wrote."""

    def __init__(self, path: str | Path, hashes: Mapping[str, str], run: Mapping[str, Any] | None = None):
        """``hashes`` maps each strategy of this run to its config hash; ``run`` holds the run-level
        settings every line of the file must share."""
        self.path = Path(path)
        self.hashes = dict(hashes)
        self.run = json.loads(json.dumps(dict(run or {}), sort_keys=True, default=str))
        self.done: set[tuple[str, str]] = set()
        self._lock_fd: int | None = None
        if self.path.exists() or self.path.is_symlink():
            try:
                mode = os.stat(self.path).st_mode
            except OSError as exc:
                raise ResultsFileError(f"{self.path}: cannot read ({exc.strerror})") from None
            if stat.S_ISDIR(mode):
                raise ResultsFileError(f"{self.path} is a directory; give a file path ending in .jsonl")
            if not stat.S_ISREG(mode):
                raise ResultsFileError(f"{self.path} is not a regular file; give a file path ending in .jsonl")
            if not os.access(self.path, os.W_OK):
                raise ResultsFileError(f"{self.path} is not writable")
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ResultsFileError(f"{self.path.parent}: cannot create the folder ({exc.strerror})") from None
            if not os.access(self.path.parent, os.W_OK):
                raise ResultsFileError(f"{self.path.parent} is not writable")
        self._lock()
        try:
            self._resume()
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ResultsFileError(f"{lock_path}: cannot create the lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 300).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise ResultsFileError(f"{self.path} is being written by another tts run (pid {holder}); "
                                   "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}: {' '.join(sys.argv)[:200]}\n".encode())
        self._lock_fd = fd

    def _resume(self) -> None:
        if not self.path.exists():
            return
        try:
            scan = _scan(self.path)
        except ResultsFileError as exc:
            raise ResultsFileError(f"{exc}; the file is left as it is") from None
        for record, number in zip(scan.records, scan.lines):
            where = f"{self.path}:{number}"
            if record["format"] != FORMAT_VERSION:
                raise ResultsFileError(f"{where}: written by an older tts (results format {record['format']}); "
                                       "choose another --out")
            if self.run and record["run"] != self.run:
                diff = sorted(k for k in set(record["run"]) | set(self.run) if record["run"].get(k) != self.run.get(k))
                shown = ", ".join(f"{k} {record['run'].get(k)!r} there, {self.run.get(k)!r} now" for k in diff[:3])
                raise ResultsFileError(f"{where}: written by a run with other settings ({shown}); "
                                       "choose another --out or rerun with the original options")
            strategy = record["strategy"]
            if strategy in self.hashes and record["config_hash"] != self.hashes[strategy]:
                raise ResultsFileError(
                    f"{where}: holds {strategy} results from a different configuration "
                    f"(config hash {record['config_hash']} vs {self.hashes[strategy]}); "
                    "choose another --out or rerun with the original options"
                )
            self.done.add((strategy, record["id"]))
        # Accepted: only now is the file's end repaired.
        if scan.repair == "truncate":
            with open(self.path, "r+b") as fh:
                fh.truncate(scan.cut_at)
        elif scan.repair == "newline":
            self._append(b"\n")

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def is_done(self, strategy: str, problem_id: str) -> bool:
        return (strategy, problem_id) in self.done

    def write(self, record: Mapping) -> None:
        if self._lock_fd is None:
            raise ResultsFileError(f"{self.path}: the writer is closed")
        body = json.loads(json.dumps({**record, "run": self.run, "format": FORMAT_VERSION}, default=_jsonable))
        body.pop("digest", None)
        body["digest"] = digest(body)
        self._append((json.dumps(body, ensure_ascii=False) + "\n").encode())
        self.done.add((record["strategy"], record["id"]))

    def records_for(self, strategies: Iterable[str]) -> list[dict]:
        wanted = set(strategies)
        return [r for r in read_records(self.path) if r.get("strategy") in wanted] if self.path.exists() else []

    def close(self) -> None:
        """Release the file's lock (also released by the kernel if the process dies)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
