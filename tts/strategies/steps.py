"""Steps for tree search: how a solution is cut into steps, how one step is generated, how steps are scored.

Segmentation (:class:`Segmenter`) is one of

  * ``delimiter``: a step ends at a delimiter string (default a blank line), sent to the engine as a stop
    string, so the engine stops exactly at the step boundary;
  * ``tokens``: a step is a fixed number of tokens (the engine's ``max_tokens``);
  * ``regex``: a step ends where a regular expression matches. Engines only stop at literal strings, so a
    step is sampled up to ``step_tokens`` and cut at the first match; the tokens after the cut were spent
    and are charged to the node, but are not part of the solution.

With ``think=True`` (the default), text after a closing ``</think>`` is the final answer and is written as
one last step, so reasoning models are segmented inside their thinking only.

Generating one step is one ``gen.sample(problem, params, prefix=<solution so far>)`` call: each tree node
is its parent's prefix plus one step, so an engine with a prefix cache reuses the shared prefix. Backends
drop the stop string from the text, so the delimiter is appended again when the child's prefix is built.

Whether a sample ended at the step delimiter or at end-of-sequence cannot be read from ``finish_reason``
alone (both are ``"stop"``); every backend reports which stop string or stop token id ended a sample in
``Completion.stop_reason`` (None at end-of-sequence), and :func:`ended_at_stop` reads it.

Step scorers (:class:`StepScorer`) score the newest step of many partial solutions in one call:
:class:`PRMStepScorer` reads a process reward model's per-step scores, :class:`VerifierStepScorer` makes
any outcome verifier (token confidence, an LLM judge, an ORM) score the partial text, and
:class:`FunctionStepScorer` scores by a plain function of the text (tests, heuristics).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence, runtime_checkable

from ..budget import Ledger
from ..options import MAX_TOKENS, check, option
from ..verifiers.base import StepVerifier
from ..types import Completion, Problem, SamplingParams

MODES = ("delimiter", "tokens", "regex")
THINK_CLOSE = "</think>"
DEFAULT_DELIMITER = "\n\n"


@dataclass(frozen=True)
class Segmenter:
    mode: str = option("delimiter", key="step_mode", choices=MODES,
                       help="how a solution is cut into steps: at a delimiter, every step_tokens tokens, or where step_pattern matches")
    #: None: the tree search's PRM's step separator when it has one, else a blank line
    delimiter: str | None = option(None, key="step_delimiter", escapes=True,
                                   help="text that ends a step (\\n escapes allowed); default the PRM's step separator, else a blank line")
    #: tokens mode: tokens per step; other modes: a cap on one step's tokens (None: the path's remaining tokens)
    step_tokens: int | None = option(None, low=1, high=MAX_TOKENS,
                                     help="tokens per step (step_mode tokens; default 32), else a cap on one step")
    #: regex mode: where a step ends (the match itself stays in the solution text, between the steps)
    pattern: str | None = option(None, key="step_pattern", help="a regular expression that ends a step (step_mode regex)")
    #: text after </think> is the answer and is written as one final step
    think: bool = True

    def __post_init__(self) -> None:
        c = "Segmenter"
        check(self)
        if self.mode == "delimiter" and self.delimiter is not None and not self.delimiter:
            raise ValueError(f"{c}.delimiter must be a non-empty string, got {self.delimiter!r}")
        if self.mode == "tokens" and self.step_tokens is None:
            object.__setattr__(self, "step_tokens", 32)
        if self.mode == "regex":
            if not isinstance(self.pattern, str) or not self.pattern:
                raise ValueError(f"{c}.pattern must be a regular expression for mode 'regex', got {self.pattern!r}")
            try:
                re.compile(self.pattern)  # fail here, not in the middle of a search
            except re.error as exc:
                raise ValueError(f"{c}.pattern {self.pattern!r} is not a regular expression: {exc}") from None

    @property
    def end(self) -> str:
        """The text that ends a step in delimiter mode."""
        return self.delimiter or DEFAULT_DELIMITER

    def answering(self, prefix: str) -> bool:
        """The thinking is closed: what follows is the answer, one final step."""
        return self.think and THINK_CLOSE in prefix

    def params(self, base: SamplingParams, prefix: str, tokens_left: int) -> SamplingParams:
        """Sampling params for the step that continues ``prefix``."""
        if self.answering(prefix):
            return replace(base, stop=tuple(base.stop), max_tokens=max(1, tokens_left))
        cap = tokens_left if self.step_tokens is None else min(self.step_tokens, tokens_left)
        stop = tuple(base.stop)
        if self.mode == "delimiter" and self.end not in stop:
            stop = stop + (self.end,)
        return replace(base, stop=stop, max_tokens=max(1, cap))

    def cut(self, text: str) -> tuple[str, str] | None:
        """Regex mode: (step, boundary text) at the first match that leaves a non-empty step, else None."""
        for m in re.finditer(self.pattern or "", text):
            if m.start() > 0 and text[: m.start()].strip():
                return text[: m.start()], m.group(0)
        return None


def ended_at_stop(completion: Completion, stop: str | int) -> bool:
    """Did this sample end because it produced ``stop`` (a stop string or stop token id), and not at
    end-of-sequence? Read from the backend's ``Completion.stop_reason``."""
    return completion.finish_reason == "stop" and completion.stop_reason == stop


@dataclass(frozen=True)
class Step:
    """One sampled step: its text, the text that joins it to the next step, and what it cost."""

    text: str
    join: str  # appended after ``text`` in the children's prefix ("" when the solution ends here)
    finished: bool  # the solution ended (end of sequence, cancelled, stopped for low confidence)
    finish_reason: str
    num_tokens: int
    logprobs: tuple[float, ...] | None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


def to_step(seg: Segmenter, completion: Completion, prefix: str) -> Step:
    """Read one sampled continuation of ``prefix`` as a step."""
    c = completion
    base = dict(num_tokens=c.num_tokens, logprobs=c.logprobs, prompt_tokens=c.prompt_tokens,
                cached_prompt_tokens=c.cached_prompt_tokens)
    if c.finish_reason in ("cancelled", "low_confidence"):
        return Step(c.text, "", True, c.finish_reason, **base)
    if seg.answering(prefix):
        # The final answer after the thinking: one step, whatever ended it.
        return Step(c.text, "", True, c.finish_reason, **base)
    if seg.mode == "regex":
        cut = seg.cut(c.text)
        if cut is not None:
            return Step(cut[0], cut[1], False, "stop", **base)
        # No boundary: end of sequence ends the solution; a length stop is a long step.
        return Step(c.text, "", c.finish_reason == "stop", c.finish_reason, **base)
    if c.finish_reason == "length":
        return Step(c.text, "", False, "length", **base)  # tokens mode: the step boundary; else a long step
    if seg.mode == "delimiter" and ended_at_stop(c, seg.end):
        return Step(c.text, seg.end, False, "stop", **base)
    return Step(c.text, "", True, "stop", **base)


# --- step scoring -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Partial:
    """A partial solution as a scorer sees it: its steps so far (the newest last) and their logprobs."""

    steps: tuple[str, ...]
    text: str  # the steps as the model wrote them (with their delimiters)
    num_tokens: int
    logprobs: tuple[float, ...] | None
    finished: bool


@runtime_checkable
class StepScorer(Protocol):
    name: str
    needs_logprobs: bool

    async def score_steps(self, problem: Problem, partials: Sequence[Partial], ledger: Ledger) -> list[float]:
        """One score per partial solution: the score of its newest step, higher is better."""


@dataclass(frozen=True)
class VerifierStepScorer:
    """Any outcome verifier as a step scorer: it scores the partial text (prefix + step) as if it were a
    whole candidate. All partials of one search step go to the verifier in one call (one batch)."""

    verifier: object
    name: str = ""

    def __post_init__(self) -> None:
        if not hasattr(self.verifier, "score"):
            raise ValueError(f"VerifierStepScorer.verifier must be a Verifier, got {self.verifier!r}")
        if not self.name:
            object.__setattr__(self, "name", str(getattr(self.verifier, "name", "verifier")))

    @property
    def needs_logprobs(self) -> bool:
        return bool(getattr(self.verifier, "needs_logprobs", False))

    async def score_steps(self, problem: Problem, partials: Sequence[Partial], ledger: Ledger) -> list[float]:
        if not partials:
            return []
        completions = [
            Completion(p.text, p.num_tokens, "stop", logprobs=p.logprobs if p.logprobs is not None and
                       len(p.logprobs) == p.num_tokens else None)
            for p in partials
        ]
        return [float(s) for s in await self.verifier.score(problem, completions, ledger)]


@dataclass(frozen=True)
class PRMStepScorer:
    """A process reward model (tts.verifiers.prm) as a step scorer: the PRM scores every step of each
    partial solution in one batched forward, and the newest step's score is the node's score.

    The steps are joined with the PRM's own ``step_separator``, so the PRM sees exactly the steps the
    search made, whatever the generator's delimiter was.
    """

    prm: object
    name: str = ""
    needs_logprobs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.prm, StepVerifier):
            raise ValueError(f"PRMStepScorer.prm must be a TokenLogitPRM or RewardHeadPRM, got {self.prm!r}")
        if not self.name:
            object.__setattr__(self, "name", f"{getattr(self.prm, 'label', 'prm')}_step")

    async def score_steps(self, problem: Problem, partials: Sequence[Partial], ledger: Ledger) -> list[float]:
        if not partials:
            return []
        sep = self.prm.step_separator or "\n\n"
        texts = [sep.join(s.strip() for s in p.steps if s.strip()) or p.text for p in partials]
        from ..verifiers.metering import metered

        steps = await metered(ledger, self.prm.score_steps_with_cost, problem, texts)  # reserved before it runs
        return [float(s[-1]) if s else 0.0 for s in steps]


@dataclass(frozen=True)
class FunctionStepScorer:
    """Scores each partial solution by ``fn(text)``; records the size of every call (one per search step)."""

    fn: Callable[[str], float]
    name: str = "step_fn"
    needs_logprobs: bool = False
    calls: list = field(default_factory=list, compare=False, repr=False)

    async def score_steps(self, problem: Problem, partials: Sequence[Partial], ledger: Ledger) -> list[float]:
        self.calls.append(len(partials))
        return [float(self.fn(p.text)) for p in partials]


def as_step_scorer(scorer) -> StepScorer:
    """A step scorer from a step scorer, a PRM, or any outcome verifier."""
    if hasattr(scorer, "score_steps"):
        return scorer
    if isinstance(scorer, StepVerifier):
        return PRMStepScorer(scorer)
    if hasattr(scorer, "score"):
        return VerifierStepScorer(scorer)
    raise ValueError(f"not a step scorer, PRM or verifier: {scorer!r}")
