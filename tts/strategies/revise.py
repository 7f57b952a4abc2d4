"""Sequential revisions (Snell et al. 2024, the second mechanism of compute-optimal scaling).

The model sees its previous attempts in context and writes a revised one. ``n`` attempts in total are
split into ``n // revisions`` parallel chains of ``revisions`` attempts each, so ``revisions`` sets the
ratio of sequential to parallel compute: ``revisions=1`` is plain parallel sampling, ``revisions=n`` one
long chain. Snell et al. find easy questions favour long chains and hard ones parallel sampling, which
is why it is a parameter (and what the compute-optimal sweeps tune per difficulty).

Chains run concurrently, so their requests reach the engine together. The final answer is chosen over
all attempts of all chains by majority vote, or by a verifier's best score when one is given.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from ..budget import BudgetExhausted
from ..runtime import Generator, Strategy
from ..types import Candidate, Message, Problem, SamplingParams, Trace
from ..verifiers.base import Verifier
from ..options import MAX_SAMPLES, option
from ..verifiers.registry import SPEC_HELP, builtin_specs, resolve
from .sampling import (
    Extractor, answer_reader, choose_for_answer, key_reader, make_trace, samples_option, score_or_nothing, vote,
)

DEFAULT_INSTRUCTION = (
    "Check your previous answer. If it is wrong, give the corrected answer; if it is right, give it again. "
    "Reply in the same format as before."
)


def revision_prompt(problem: Problem, attempts: list[str], context: int, instruction: str) -> tuple[Message, ...]:
    """The question, then the last ``context`` attempts as assistant turns, each followed by the instruction."""
    messages = list(problem.chat())
    for attempt in attempts[-context:]:
        messages += [Message("assistant", attempt), Message("user", instruction)]
    return tuple(messages)


@dataclass(frozen=True)
class Revise(Strategy):
    n: int = samples_option(8, "attempts per problem (n // revisions chains run in parallel)")
    revisions: int = option(4, low=1, high=MAX_SAMPLES, help="attempts per chain")
    context: int = option(4, key="revision_context", low=1, high=MAX_SAMPLES,
                          help="earlier attempts of its chain a revision sees")
    instruction: str = option(DEFAULT_INSTRUCTION, key="revision_instruction", escapes=True,
                              help="what the model is asked after each attempt")
    verifier: Verifier | None = option(None, key="verifier", aliases=("prm",), parse=resolve, metavar=SPEC_HELP, remote=builtin_specs,
                                       help="picks the best attempt by score (default: majority vote over attempts)")
    params: SamplingParams = field(default_factory=SamplingParams)
    extract: Extractor | None = None  # None: by the problem's prompt format
    name: str = "revise"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.revisions > self.n:
            raise ValueError(f"Revise.revisions must be an integer in [1, n={self.n}], got {self.revisions!r}")
        if self.verifier is not None and not hasattr(self.verifier, "score"):
            raise ValueError(f"Revise.verifier must be a verifier (with score()) or None, got {self.verifier!r}")

    @property
    def chains(self) -> int:
        return max(1, self.n // self.revisions)

    async def _chain(self, problem: Problem, gen: Generator, params: SamplingParams) -> tuple[list, str | None]:
        completions, texts = [], []
        for _ in range(self.revisions):
            try:
                [c] = await gen.sample(revision_prompt(problem, texts, self.context, self.instruction), params)
            except BudgetExhausted as exc:
                return completions, str(exc)
            completions.append(c)
            texts.append(c.text)
        return completions, None

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        logprobs = self.params.logprobs or bool(self.verifier and self.verifier.needs_logprobs)
        params = replace(self.params, n=1, logprobs=logprobs)
        chains = await asyncio.gather(*(self._chain(problem, gen, params) for _ in range(self.chains)))
        completions = [c for chain, _ in chains for c in chain]
        depth = [d for chain, _ in chains for d in range(len(chain))]
        stopped = next((s for _, s in chains if s), None)
        scores = None
        if self.verifier and completions:
            scores, refused = await score_or_nothing(self.verifier, problem, completions, gen.ledger)
            stopped = stopped or refused
            if refused:
                scores = None  # the budget could not pay the verifier: the attempts are voted on instead
        candidates = [
            Candidate.from_completion(c, answer_reader(self.extract, problem)(c.text),
                                      {self.verifier.name: scores[i]} if scores else {})
            for i, c in enumerate(completions)
        ]
        if scores is not None:
            chosen = max(range(len(scores)), key=lambda i: (scores[i], -i)) if scores else None
            totals = None
        else:
            key = key_reader(self.extract, problem)
            winner, totals = vote([c.answer for c in candidates], None, gen.seed, key)
            chosen = choose_for_answer(candidates, winner, None, key)
        return make_trace(problem, self.name, candidates, chosen, votes=totals, chains=self.chains,
                          revisions=self.revisions, depth=depth, budget_stop=stopped)
