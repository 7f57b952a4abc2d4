"""The one exception every dataset problem ends in.

Loaders raise :class:`DatasetError` for anything wrong with the input (a missing or empty file, a line
that is not JSON, a missing field, a value of the wrong type, an unknown name) with a message that names
the file, the line and the field, so the command line can print it as one line and stop before running.
"""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """Bad dataset input. ``path``, ``line`` and ``field`` are kept for callers that want them."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field


class UnknownDataset(DatasetError):
    """A dataset name that is neither registered nor an existing file."""
