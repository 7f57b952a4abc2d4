"""Core value types shared by every layer.

All are frozen dataclasses validated in ``__post_init__``: a bad value fails where it is made, with an
error that names the field and the allowed values, instead of deep inside an engine. Variants are made
with :func:`dataclasses.replace`, never by mutation (vLLM's mutable SamplingParams needed deep copies
and clone flags to stay correct; we avoid that class of bug by construction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

ROLES = ("system", "user", "assistant")
# "low_confidence": stopped early by SamplingParams.confidence_stop (DeepConf online).
FINISH_REASONS = ("stop", "length", "cancelled", "low_confidence")


def _fail(cls: str, name: str, expected: str, got: Any) -> None:
    raise ValueError(f"{cls}.{name} must be {expected}, got {got!r}")


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            _fail("Message", "role", f"one of {', '.join(ROLES)}", self.role)
        if not isinstance(self.content, str):
            _fail("Message", "content", "a string", self.content)


def as_messages(items: Sequence[Message | Mapping[str, str]]) -> tuple[Message, ...]:
    """Accept Message objects or OpenAI-style ``{"role": ..., "content": ...}`` dicts."""
    out = []
    for item in items:
        out.append(item if isinstance(item, Message) else Message(item["role"], item["content"]))
    return tuple(out)


#: metadata keys that hold what only graders may see (HumanEval's hidden tests, reference solutions)
GRADER_ONLY = frozenset({"test", "tests", "hidden_tests", "answer", "reference", "solution", "canonical_solution"})


@dataclass(frozen=True)
class Problem:
    """One question. Exactly one of ``prompt`` (a user message) or ``messages`` (a whole chat) is set.

    ``answer`` is the reference answer; strategies never see it, only graders do.
    """

    id: str
    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    answer: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            _fail("Problem", "id", "a non-empty string", self.id)
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"Problem {self.id!r}: set exactly one of prompt or messages")
        if self.prompt is not None and not isinstance(self.prompt, str):
            _fail("Problem", "prompt", "a string", self.prompt)
        if self.messages is not None:
            object.__setattr__(self, "messages", as_messages(self.messages))
            if not self.messages:
                _fail("Problem", "messages", "a non-empty sequence", self.messages)
        if self.answer is not None and not isinstance(self.answer, str):
            object.__setattr__(self, "answer", str(self.answer))

    def public(self) -> "Problem":
        """The problem as a solver may see it: no reference answer, and none of the metadata only graders
        may read (``GRADER_ONLY``: hidden tests, reference solutions)."""
        hidden = {k for k in self.metadata if k in GRADER_ONLY}
        if self.answer is None and not hidden:
            return self
        return Problem(self.id, self.prompt, self.messages, None,
                       {k: v for k, v in self.metadata.items() if k not in hidden})

    def chat(self) -> tuple[Message, ...]:
        """The problem as chat messages (a bare prompt becomes one user message)."""
        if self.messages is not None:
            return self.messages
        return (Message("user", self.prompt or ""),)


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``seed=None`` lets the runtime derive a reproducible seed per request.

    ``confidence_stop=(window, threshold)`` ends a sample as soon as the mean logprob of its last
    ``window`` tokens falls below ``threshold`` (DeepConf's online mode), inside the engine's decode
    loop, so the rest of a doomed trace is never generated.
    """

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    confidence_stop: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        c = "SamplingParams"
        if not isinstance(self.n, int) or self.n < 1:
            _fail(c, "n", "a positive integer", self.n)
        if not (isinstance(self.temperature, (int, float)) and 0 <= self.temperature < math.inf):
            _fail(c, "temperature", "a number >= 0", self.temperature)
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            _fail(c, "top_p", "in (0, 1]", self.top_p)
        if not isinstance(self.top_k, int) or self.top_k < 0:
            _fail(c, "top_k", "an integer >= 0 (0 disables it)", self.top_k)
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            _fail(c, "max_tokens", "a positive integer", self.max_tokens)
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if any(not isinstance(s, str) or not s for s in self.stop):
            _fail(c, "stop", "non-empty strings", self.stop)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if self.seed is not None and not isinstance(self.seed, int):
            _fail(c, "seed", "an integer or None", self.seed)
        if self.confidence_stop is not None:
            stop = tuple(self.confidence_stop)
            if len(stop) != 2 or not isinstance(stop[0], int) or stop[0] < 1 or not isinstance(stop[1], (int, float)):
                _fail(c, "confidence_stop", "None or (window >= 1, threshold logprob)", self.confidence_stop)
            object.__setattr__(self, "confidence_stop", (stop[0], float(stop[1])))


@dataclass(frozen=True)
class Completion:
    """One sampled continuation.

    ``num_tokens`` counts every token the engine generated for it (including a stop string that was cut
    from ``text``), because that is the compute spent. ``prompt_tokens`` is the length of the prompt it
    continued and ``cached_prompt_tokens`` how many of those the engine served from its prefix cache.

    ``stop_reason`` says what ended a ``"stop"`` sample, as vLLM reports it: the stop string (from
    ``SamplingParams.stop``) or the stop token id (from ``SamplingParams.stop_token_ids``) that ended it,
    or None when it ended at the model's end-of-sequence token, by length, or otherwise.
    """

    text: str
    num_tokens: int
    finish_reason: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    stop_reason: str | int | None = None

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            _fail("Completion", "finish_reason", f"one of {', '.join(FINISH_REASONS)}", self.finish_reason)
        if self.num_tokens < 0:
            _fail("Completion", "num_tokens", "a non-negative integer", self.num_tokens)
        if self.stop_reason is not None and (isinstance(self.stop_reason, bool)
                                             or not isinstance(self.stop_reason, (str, int))):
            _fail("Completion", "stop_reason", "a stop string, a stop token id or None", self.stop_reason)
        if self.logprobs is not None and len(self.logprobs) != self.num_tokens:
            raise ValueError(
                f"Completion.logprobs has {len(self.logprobs)} entries for {self.num_tokens} tokens"
            )


@dataclass(frozen=True)
class Candidate:
    """A completion as a strategy saw it: its extracted answer and the verifier scores it got."""

    text: str
    answer: str | None
    num_tokens: int
    finish_reason: str
    scores: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_completion(cls, c: Completion, answer: str | None, scores: Mapping[str, float] | None = None):
        return cls(c.text, answer, c.num_tokens, c.finish_reason, dict(scores or {}))


@dataclass(frozen=True)
class Trace:
    """What a strategy did for one problem: every candidate, the chosen answer, and the compute spent."""

    problem_id: str
    strategy: str
    candidates: tuple[Candidate, ...]
    answer: str | None
    chosen: int | None
    ledger: Mapping[str, float]
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if self.chosen is not None and not 0 <= self.chosen < len(self.candidates):
            _fail("Trace", "chosen", f"an index below {len(self.candidates)} or None", self.chosen)
