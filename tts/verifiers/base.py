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
