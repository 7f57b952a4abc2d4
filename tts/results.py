"""Result files: JSONL, one line per (problem, strategy), written as each problem finishes.

Each line is written with a single ``write`` and flushed to disk, so a run killed at any moment leaves
at most one partial last line; reopening the file drops that fragment and resumes after the last
complete line. Lines carry a hash of the configuration that produced them: rerunning the same
configuration skips what is done, and a different configuration is refused instead of mixing results.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .runtime import Result

FORMAT_VERSION = 1


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


def read_records(path: str | Path) -> list[dict]:
    """All complete records of a results file (a partial last line from a killed run is ignored)."""
    path = Path(path)
    records = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                break  # a line cut off by a killed run
            if not raw.strip():
                continue
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise ResultsFileError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return records


class ResultsWriter:
    """Appends records to a results file, resuming what a previous run of the same config wrote."""

    def __init__(self, path: str | Path, hashes: Mapping[str, str]):
        """``hashes`` maps each strategy of this run to its config hash."""
        self.path = Path(path)
        self.hashes = dict(hashes)
        self.done: set[tuple[str, str]] = set()
        self.previous: list[dict] = []
        if self.path.exists():
            if self.path.is_dir():
                raise ResultsFileError(f"--out {self.path} is a directory; give a file path ending in .jsonl")
            self._truncate_partial_line()
            for rec in read_records(self.path):
                strategy = rec.get("strategy")
                if strategy in self.hashes and rec.get("config_hash") != self.hashes[strategy]:
                    raise ResultsFileError(
                        f"{self.path} holds {strategy} results from a different configuration "
                        f"(config hash {rec.get('config_hash')} vs {self.hashes[strategy]}); "
                        "choose another --out or rerun with the original options"
                    )
                self.previous.append(rec)
                self.done.add((strategy, rec.get("id")))
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _truncate_partial_line(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as fh:
                fh.truncate(keep)

    def is_done(self, strategy: str, problem_id: str) -> bool:
        return (strategy, problem_id) in self.done

    def write(self, record: Mapping) -> None:
        line = (json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.done.add((record["strategy"], record["id"]))

    def records_for(self, strategies: Iterable[str]) -> list[dict]:
        wanted = set(strategies)
        return [r for r in read_records(self.path) if r.get("strategy") in wanted] if self.path.exists() else []


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
