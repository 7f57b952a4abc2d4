"""Plain values across the sandbox boundary: JSON lines with tagged containers, never pickle.

Standard library only (both sides of a sandboxed test import it). ``decode`` builds only builtin
types (None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset), so nothing a program
returns can carry behaviour: no ``__eq__`` override, no callables, no objects. Sizes and depth are
bounded on both sides.
"""

from __future__ import annotations

import json
import math

MAX_DEPTH = 64
MAX_INT_DIGITS = 4000
#: one encoded message (a call or a return value) may be at most this many bytes
MAX_MESSAGE = 8 * 1024 * 1024


class WireError(ValueError):
    pass


def encode(value, depth: int = 0):
    """``value`` as JSON-ready data. Subclasses are sent as their builtin base (a namedtuple as a tuple,
    a Counter as a dict), which is what ``==`` against a plain value compares anyway."""
    if depth > MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH}")
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        value = int(value)
        if abs(value) >= 10 ** MAX_INT_DIGITS:
            raise WireError(f"integer with more than {MAX_INT_DIGITS} digits")
        return value
    if isinstance(value, float):
        value = float(value)
        return value if math.isfinite(value) else {"$": "float", "v": repr(value)}
    d = depth + 1
    if isinstance(value, tuple):
        return {"$": "tuple", "v": [encode(v, d) for v in value]}
    if isinstance(value, list):
        return [encode(v, d) for v in value]
    if isinstance(value, dict):
        return {"$": "dict", "v": [[encode(k, d), encode(v, d)] for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        return {"$": "frozenset" if isinstance(value, frozenset) else "set", "v": [encode(v, d) for v in value]}
    if isinstance(value, (bytes, bytearray)):
        return {"$": "bytes", "v": bytes(value).hex()}
    if isinstance(value, complex):
        return {"$": "complex", "v": [encode(value.real, d), encode(value.imag, d)]}
    raise WireError(f"a value of type {type(value).__name__} cannot be sent")


def decode(data, depth: int = 0):
    """The builtin value ``data`` (from ``json.loads``) stands for; anything unexpected is a WireError."""
    if depth > MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH}")
    if data is None or type(data) in (bool, str, float):
        return data
    if type(data) is int:
        if abs(data) >= 10 ** MAX_INT_DIGITS:
            raise WireError(f"integer with more than {MAX_INT_DIGITS} digits")
        return data
    d = depth + 1
    if type(data) is list:
        return [decode(v, d) for v in data]
    if type(data) is not dict or set(data) != {"$", "v"}:
        raise WireError("malformed value")
    tag, v = data["$"], data["v"]
    if tag == "float" and v in ("nan", "inf", "-inf"):
        return float(v)
    if tag == "bytes" and type(v) is str:
        try:
            return bytes.fromhex(v)
        except ValueError:
            raise WireError("malformed bytes") from None
    if type(v) is not list:
        raise WireError("malformed value")
    if tag == "tuple":
        return tuple(decode(x, d) for x in v)
    if tag in ("set", "frozenset"):
        items = [decode(x, d) for x in v]
        try:
            return set(items) if tag == "set" else frozenset(items)
        except TypeError:
            raise WireError("unhashable set member") from None
    if tag == "dict":
        out = {}
        for pair in v:
            if type(pair) is not list or len(pair) != 2:
                raise WireError("malformed dict")
            try:
                out[decode(pair[0], d)] = decode(pair[1], d)
            except TypeError:
                raise WireError("unhashable dict key") from None
        return out
    if tag == "complex" and len(v) == 2 and all(type(x) in (int, float) for x in v):
        return complex(v[0], v[1])
    raise WireError(f"unknown value tag {tag!r}")


def dumps(message) -> bytes:
    """One message as a JSON line (no NaN literals; non-finite floats are tagged by ``encode``)."""
    line = json.dumps(message, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_MESSAGE:
        raise WireError(f"message larger than {MAX_MESSAGE} bytes")
    return line


def read_message(stream):
    """The next JSON line from a binary stream, or None at end of stream. Bounded: a longer line, a
    line that is not JSON, or JSON nested too deeply is a WireError."""
    line = stream.readline(MAX_MESSAGE + 1)
    if not line:
        return None
    if len(line) > MAX_MESSAGE or not line.endswith(b"\n"):
        raise WireError("message too large or cut off")
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        raise WireError("message is not valid JSON") from None
