"""Dataset registry: short names to loaders. Every loader returns a list of Problems."""

from __future__ import annotations

from . import arithmetic
from ..types import Problem

#: name -> one-line description, for --help and error messages
DATASETS: dict[str, str] = {name: f"built-in arithmetic, level {lvl}" for name, (lvl, _) in arithmetic.LEVELS.items()}
DATASETS["arithmetic"] = "built-in arithmetic, an equal mix of every level"

DEFAULT_SIZE = 100


class UnknownDataset(ValueError):
    pass


def load(name: str, limit: int | None = None, seed: int = 0) -> list[Problem]:
    """Load a dataset by name; ``limit`` keeps the first N problems."""
    count = limit if limit is not None else DEFAULT_SIZE
    if name in arithmetic.LEVELS:
        return arithmetic.generate(name, count, seed)
    if name == "arithmetic":
        levels = list(arithmetic.LEVELS)
        per_level = {lvl: arithmetic.generate(lvl, -(-count // len(levels)), seed) for lvl in levels}
        mixed = [p for group in zip(*per_level.values()) for p in group]
        return mixed[:count]
    raise UnknownDataset(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
