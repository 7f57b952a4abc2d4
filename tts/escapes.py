"""Backslash escapes in option values (``--step-delimiter '\\n'``), decoded once.

Python's ``unicode_escape`` codec reads the UTF-8 bytes of non-ASCII text as Latin-1 (``§`` becomes
``Â§``) and raises a bare UnicodeDecodeError on a bad escape; this decoder keeps every other character
as it is and names the bad escape.
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[ntr0\\'\"])?")
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
VALID = r"\n, \t, \r, \0, \\, \xNN or \uNNNN"


def decode_escapes(text: str) -> str:
    """``text`` with its escapes decoded; ValueError naming the first bad one."""

    def replace(m: re.Match) -> str:
        code = m.group(1)
        if code is None:
            bad = text[m.start():m.start() + 2]
            raise ValueError(f"bad escape {bad!r}; use {VALID}")
        return _SIMPLE[code] if len(code) == 1 else chr(int(code[1:], 16))

    return _ESCAPE.sub(replace, text)
