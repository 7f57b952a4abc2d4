"""Reading files a user names, safely: regular files only, lines of bounded length.

A FIFO blocks ``open`` forever and ``/dev/zero`` never ends a line, so every reader of a user's path
(datasets, results files, recipes, routing policies, PRM settings) checks the path here first and
reads through :func:`bounded_lines`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

#: the longest line any reader accepts (a results line holds every candidate's text)
MAX_LINE_BYTES = 64 * 1024 * 1024
#: the largest small settings file (recipe, policy, PRM settings) any reader accepts
MAX_SMALL_FILE_BYTES = 4 * 1024 * 1024


class InputFileError(ValueError):
    """A path that cannot be read as the file it should be; the message names the path."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | Path, what: str = "file") -> Path:
    """``path`` if it names an existing regular file (links followed), else InputFileError. Checked
    without opening, so a FIFO is refused instead of blocking."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise InputFileError(f"{path}: is {_kind(mode)}, not a regular {what}")
    return path


def open_regular(path: str | Path, what: str = "file") -> BinaryIO:
    """Open a regular file for reading. O_NONBLOCK makes the open itself return even if the path was
    swapped for a FIFO after the check; the type is then checked again on the open descriptor."""
    path = check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputFileError(f"{path}: is not a regular {what}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def bounded_lines(fh: BinaryIO, path: str | Path, limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """``(1-based number, raw line)`` with its newline, if it has one; a line longer than ``limit`` is
    an InputFileError naming the file and line instead of a read that never ends."""
    number = 0
    while True:
        raw = fh.readline(limit + 1)
        if not raw:
            return
        number += 1
        if len(raw) > limit:
            raise InputFileError(f"{path}:{number}: line longer than {limit} bytes")
        yield number, raw


def read_small_text(path: str | Path, what: str = "file", limit: int = MAX_SMALL_FILE_BYTES) -> str:
    """The UTF-8 text of a small settings file, refusing non-regular files and anything over ``limit``."""
    with open_regular(path, what) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputFileError(f"{path}: larger than {limit} bytes; not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text ({exc.reason})") from None
