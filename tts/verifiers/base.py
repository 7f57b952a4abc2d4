"""What a reward verifier is.

Reward verifiers score candidates for selection inside a strategy and never see the reference answer.
(Graders, which do see it and decide correctness for evaluation, are plain functions
``(answer, reference) -> bool``; see ``answers.same_answer``.) Every verifier scores a whole batch of
candidates per call and charges its own work to the problem's ledger.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from ..budget import Ledger
from ..types import Completion, Problem


@runtime_checkable
class Verifier(Protocol):
    name: str
    #: The strategy must request token logprobs when sampling for this verifier.
    needs_logprobs: bool

    async def score(self, problem: Problem, completions: Sequence[Completion], ledger: Ledger) -> list[float]:
        """One score per completion; higher is better."""


@runtime_checkable
class StepVerifier(Protocol):
    """A verifier that scores every step of a solution (a process reward model). Tree search uses it
    through ``tts.strategies.steps.PRMStepScorer``; outcome selection through ``score`` (aggregated)."""

    name: str
    #: the text it expects between steps (tree search cuts steps there by default)
    step_separator: str

    async def score(self, problem: Problem, completions: Sequence[Completion], ledger: Ledger) -> list[float]:
        """One aggregated score per completion."""

    def score_steps_with_cost(self, problem: Problem, texts: list[str]) -> tuple[list[list[float]], tuple]:
        """Per-step scores of each text and what computing them cost (tokens, FLOPs, calls); called in a
        worker thread under ``tts.verifiers.metering.metered``, which it tells its cost before working."""
