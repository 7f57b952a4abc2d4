"""The one error a request can be: what is wrong, as the OpenAI error object says it. Kept apart so
that requests.py and tools.py raise the same thing (tools.py is imported by requests.py)."""

from __future__ import annotations

from typing import Any


class RequestError(ValueError):
    """What is wrong with a request, as the OpenAI error object says it."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.kind, self.code = message, param, status, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bounded_list(value: Any, param: str, limit: int, shape: str) -> list:
    """``value`` as a non-empty list of at most ``limit`` items, or the error naming ``param``."""
    if not isinstance(value, list) or not value:
        raise RequestError(f"{param} must be a non-empty list of {shape}", param)
    if len(value) > limit:
        raise RequestError(f"{param}: at most {limit}, got {len(value)}", param)
    return value
