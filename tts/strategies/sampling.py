"""Parallel sampling strategies: one sample, best-of-N by a verifier, majority vote.

Each is anytime: if the budget clips a request to fewer samples it decides over what it got, and if the
budget refuses the request outright it returns no answer rather than failing the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from ..budget import BudgetExhausted
from ..runtime import Generator, Strategy
from ..types import Candidate, Completion, Problem, SamplingParams, Trace
from ..data.grading import extractor_for, vote_key_for
from ..options import MAX_SAMPLES, option
from .select import best, choose, representative, vote  # noqa: F401  (vote, best: re-exported for strategy modules)
from ..verifiers.base import Verifier
from ..verifiers.registry import SPEC_HELP, builtin_specs, resolve

#: text -> the answer key candidates vote with (already normalized); see tts.data.grading.extractor_for
Extractor = Callable[[str], "str | None"]


Key = Callable[[str], str]


def key_reader(extract: Extractor | None, problem: Problem) -> Key | None:
    """How equivalent answers are grouped for voting: by the problem's format unless the strategy
    brings its own extractor (then its answers are compared as written)."""
    return None if extract is not None else vote_key_for(problem)


def answer_reader(extract: Extractor | None, problem: Problem) -> Extractor:
    """The strategy's own extractor when it has one, else the one the problem's prompt format names
    (numbers and boxed answers normalized, puzzle expressions, code blocks)."""
    return extract if extract is not None else extractor_for(problem)


async def sample_or_nothing(gen: Generator, problem: Problem, params: SamplingParams) -> tuple[list[Completion], str | None]:
    """Sample, turning a refused request into an empty result and the reason."""
    try:
        return await gen.sample(problem, params), None
    except BudgetExhausted as exc:
        return [], str(exc)


async def sample_and_score(
    gen: Generator, problem: Problem, verifier: Verifier, params: SamplingParams, extract: Extractor | None
) -> tuple[list[Candidate], list[float], str | None]:
    """Sample ``params.n`` candidates (with logprobs when the verifier needs them) and score them in one
    batched verifier call; the shared first half of every verifier-driven selection rule."""
    params = replace(params, logprobs=params.logprobs or verifier.needs_logprobs)
    completions, stopped = await sample_or_nothing(gen, problem, params)
    scores, refused = await score_or_nothing(verifier, problem, completions, gen.ledger)
    read = answer_reader(extract, problem)
    candidates = [Candidate.from_completion(c, read(c.text), {} if s is None else {verifier.name: s})
                  for c, s in zip(completions, scores)]
    return candidates, scores, stopped or refused


async def score_or_nothing(verifier: Verifier, problem: Problem, completions: list[Completion],
                           ledger) -> tuple[list[float | None], str | None]:
    """The verifier's scores, or (when the budget cannot pay for them) no scores and the reason: what was
    sampled is kept, and the selection rules fall back to a vote (tts.strategies.select)."""
    if not completions:
        return [], None
    try:
        return list(await verifier.score(problem, completions, ledger)), None
    except BudgetExhausted as exc:
        return [None] * len(completions), str(exc)


def make_trace(problem: Problem, name: str, candidates: list[Candidate], chosen: int | None, **info) -> Trace:
    answer = candidates[chosen].answer if chosen is not None else None
    return Trace(problem.id, name, tuple(candidates), answer, chosen, {}, {k: v for k, v in info.items() if v is not None})


def samples_option(default: int, help: str = "samples per problem") -> int:
    """The width option N (``--n``, or NAME@N) of a strategy that samples N times."""
    return option(default, help=help, low=1, high=MAX_SAMPLES)


def verifier_option(default: str = "confidence_mean",
                    help: str = "the verifier that scores candidates (default token confidence)") -> Verifier:
    """A verifier chosen by name (tts.verifiers.registry); ``--prm`` is the older flag for it."""
    return option(default_factory=lambda: resolve(default), help=help, key="verifier", aliases=("prm",),
                  parse=resolve, metavar=SPEC_HELP, remote=builtin_specs)


def check_verifier(strategy) -> None:
    if not hasattr(strategy.verifier, "score"):
        raise ValueError(f"{type(strategy).__name__}.verifier must be a verifier (with score()), got {strategy.verifier!r}")


@dataclass(frozen=True)
class Single(Strategy):
    """One sample; its answer is the answer. The baseline every other strategy is measured against."""

    params: SamplingParams = field(default_factory=SamplingParams)
    extract: Extractor | None = None  # None: by the problem's prompt format
    name: str = "single"
    width_option = None  # no N: one sample

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        completions, stopped = await sample_or_nothing(gen, problem, replace(self.params, n=1))
        read = answer_reader(self.extract, problem)
        candidates = [Candidate.from_completion(c, read(c.text)) for c in completions]
        return make_trace(problem, self.name, candidates, 0 if candidates else None, budget_stop=stopped)


@dataclass(frozen=True)
class Majority(Strategy):
    """Self-consistency (Wang et al. 2022): N samples, the most frequent final answer wins."""

    n: int = samples_option(8)
    params: SamplingParams = field(default_factory=SamplingParams)
    extract: Extractor | None = None  # None: by the problem's prompt format
    name: str = "majority"

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        completions, stopped = await sample_or_nothing(gen, problem, replace(self.params, n=self.n))
        read = answer_reader(self.extract, problem)
        candidates = [Candidate.from_completion(c, read(c.text)) for c in completions]
        key = key_reader(self.extract, problem)
        winner, totals = vote([c.answer for c in candidates], None, gen.seed, key)
        return make_trace(problem, self.name, candidates, choose_for_answer(candidates, winner, None, key), votes=totals,
                      budget_stop=stopped)


@dataclass(frozen=True)
class BestOfN(Strategy):
    """N samples, the one the verifier scores highest wins (ties: the earliest sample)."""

    verifier: Verifier = verifier_option()
    n: int = samples_option(8)
    params: SamplingParams = field(default_factory=SamplingParams)
    extract: Extractor | None = None  # None: by the problem's prompt format
    name: str = "best_of_n"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_verifier(self)

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        candidates, scores, stopped = await sample_and_score(
            gen, problem, self.verifier, replace(self.params, n=self.n), self.extract)
        # select.choose: the highest score, or the vote when the budget left no sample scored
        chosen, votes = choose("best", [c.answer for c in candidates], scores, gen.seed, key_reader(self.extract, problem))
        return make_trace(problem, self.name, candidates, chosen, votes=votes, verifier=self.verifier.name,
                          budget_stop=stopped)


@dataclass(frozen=True)
class WeightedMajority(Strategy):
    """N samples; each answer's weight is the sum of its samples' verifier scores; the heaviest wins
    (Li et al. 2023; Snell et al. 2024's "weighted best-of-N"). Scores must be non-negative weights,
    e.g. PRM probabilities or ConfidenceVerifier's geometric-mean token probability."""

    verifier: Verifier = verifier_option()
    n: int = samples_option(8)
    params: SamplingParams = field(default_factory=SamplingParams)
    extract: Extractor | None = None  # None: by the problem's prompt format
    name: str = "weighted_majority"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_verifier(self)

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        candidates, scores, stopped = await sample_and_score(
            gen, problem, self.verifier, replace(self.params, n=self.n), self.extract)
        if any(s is not None and s < 0 for s in scores):
            raise ValueError(f"{self.verifier.name} gave a negative score; weighted voting needs non-negative weights")
        # select.choose: unscored samples weigh nothing, and with none scored the vote counts
        chosen, totals = choose("weighted", [c.answer for c in candidates], scores, gen.seed,
                                key_reader(self.extract, problem))
        return make_trace(problem, self.name, candidates, chosen, votes=totals, verifier=self.verifier.name,
                      budget_stop=stopped)


def choose_for_answer(
    candidates: Sequence[Candidate], answer: str | None, scores: Sequence[float] | None = None, key: Key | None = None
) -> int | None:
    """The candidate that represents the winning answer (tts.strategies.select.representative)."""
    return representative([c.answer for c in candidates], answer, scores, key)
