"""Adaptive consistency (Aggarwal et al. 2023): majority voting that stops sampling once the answer is settled.

Samples are drawn in small batches. After each batch a stopping rule asks how likely it is that the
current leading answer is the true majority of the model's answer distribution; once that probability
passes ``threshold`` no more samples are drawn. ``n`` caps the samples as in plain majority voting.

Rules:
  * ``beta``: the leader's and the runner-up's counts (a, b) give a Beta(a+1, b+1) posterior over the
    leader's share between the two; stop when P(share > 1/2) >= threshold. For integer counts this is
    exact: P(Binomial(a+b+1, 1/2) <= a).
  * ``dirichlet``: a Dirichlet(counts + 1) posterior over all answers seen; stop when the probability
    that the leader has the largest share (estimated by seeded Monte Carlo) >= threshold.
  * ``calibrated``: a table fitted on recorded pools of a training split (``stopping.py``,
    ``--adaptive-calibration FILE``): stop once the expected accuracy gain of sampling on to ``n`` is at
    most the table's epsilon. It asks after every ``batch`` of the table's own (the states it was
    fitted on) and needs the ``n`` it was fitted for; ``threshold`` is not used.
  * ``confidence``: the Beta rule over confidence-weighted votes (a DeepConf-style weighting inside
    adaptive consistency): a sample's vote weighs its token confidence (geometric-mean token probability,
    ``confidence_mean``) over ``confidence_scale``, so answers written confidently settle sooner and the
    answer is the confidence-weighted vote. The scale is fitted on a training split
    (``experiments/adaptive_calibration.py --rule confidence``: the mean confidence there, with the
    threshold that keeps majority@N's accuracy); without one, the mean confidence of the samples so far.

Batches are sequential within a problem, so no request is ever in flight that the rule no longer needs;
other problems' requests keep the engine's batches full in the meantime.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace

from ..runtime import Generator, Strategy
from ..types import Candidate, Problem, SamplingParams, Trace
from ..options import MAX_SAMPLES, option
from .sampling import Extractor, answer_reader, choose_for_answer, key_reader, make_trace, sample_or_nothing, samples_option, vote
from .stopping import (  # noqa: F401  (weighted_leader_probability: re-exported)
    CalibrationError, StoppingTable, confidence_leader_probability, packaged_names, weighted_leader_probability,
)

RULES = ("beta", "dirichlet", "calibrated", "confidence")



def beta_leader_probability(counts: Counter) -> float:
    """P(leader's share > runner-up's share) under Beta(a+1, b+1), exactly."""
    top = counts.most_common(2)
    if not top:
        return 0.0
    a = top[0][1]
    b = top[1][1] if len(top) > 1 else 0
    trials = a + b + 1
    return sum(math.comb(trials, j) for j in range(a + 1)) / 2**trials


def dirichlet_leader_probability(counts: Counter, seed: int, draws: int = 2000) -> float:
    """P(the leader has the largest share) under Dirichlet(counts + 1), by seeded Monte Carlo."""
    if not counts:
        return 0.0
    answers = sorted(counts, key=lambda a: (-counts[a], a))
    if len(answers) == 1:
        # Against a single unseen alternative, so one lucky sample does not settle the question.
        return beta_leader_probability(counts)
    rng = random.Random(seed)
    alphas = [counts[a] + 1 for a in answers]
    wins = 0
    for _ in range(draws):
        shares = [rng.gammavariate(alpha, 1.0) for alpha in alphas]
        wins += shares[0] == max(shares)
    return wins / draws


@dataclass(frozen=True)
class AdaptiveConsistency(Strategy):
    n: int = samples_option(16, "most samples per problem")
    batch: int = option(2, key="adaptive_batch", low=1, high=MAX_SAMPLES, help="samples per round")
    rule: str = option("beta", key="adaptive_rule", choices=RULES, help="stopping rule")
    threshold: float = option(0.95, key="adaptive_threshold", low=0, high=1, low_open=True, high_open=True,
                              help="stop when P(leader is the majority) reaches this")
    params: SamplingParams = field(default_factory=SamplingParams)
    extract: Extractor | None = None  # None: by the problem's prompt format
    #: a calibration file read into ``calibration`` (its content keys results, not its name)
    adaptive_calibration: str | None = option(None, hashed=False, metavar="FILE", remote=packaged_names,
                                              help="calibrated rule: the table from experiments/adaptive_calibration.py, "
                                                   "or a packaged name (" + ", ".join(packaged_names()) + ")")
    calibration: StoppingTable | None = None
    confidence_scale: float | None = option(None, key="adaptive_confidence_scale", low=0, low_open=True, high=1,
                                            help="confidence rule: a vote weighs the sample's confidence over this "
                                                 "(fitted on a training split; default: the mean so far)")
    name: str = "adaptive"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adaptive_calibration is not None:
            object.__setattr__(self, "calibration", StoppingTable.load(self.adaptive_calibration))
        if self.rule == "calibrated":
            if self.calibration is None:
                raise CalibrationError("adaptive_rule calibrated needs --adaptive-calibration FILE (or a packaged name: "
                                       + ", ".join(packaged_names()) + ")")
            if self.calibration.n != self.n:
                raise CalibrationError(f"the calibration was fitted for n={self.calibration.n}; run adaptive with "
                                       f"n={self.calibration.n} (adaptive@{self.calibration.n})")

    def weighted_settled(self, candidates: list[Candidate], key) -> float:
        """P(the confidence-weighted leader is settled): the Beta rule over weighted counts."""
        return confidence_leader_probability([None if c.answer is None else key(c.answer) for c in candidates],
                                             [c.scores.get(CONFIDENCE, 0.0) for c in candidates], self.confidence_scale)

    def settled(self, counts: Counter, seed: int) -> float:
        if self.rule == "beta":
            return beta_leader_probability(counts)
        return dirichlet_leader_probability(counts, seed)

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        candidates: list[Candidate] = []
        stopped = None
        confidence = 0.0
        key = key_reader(self.extract, problem) or (lambda a: a)
        read = answer_reader(self.extract, problem)
        table = self.calibration if self.rule == "calibrated" else None
        batch = table.batch if table is not None else self.batch
        weighted = self.rule == "confidence"
        params = replace(self.params, logprobs=True) if weighted else self.params
        while len(candidates) < self.n:
            size = min(batch, self.n - len(candidates))
            got, stopped = await sample_or_nothing(gen, problem, replace(params, n=size))
            candidates += [Candidate.from_completion(c, read(c.text), _confidence(c) if weighted else None)
                           for c in got]
            if stopped:
                break
            if weighted:
                confidence = self.weighted_settled(candidates, key)
                if confidence >= self.threshold:
                    break
                continue
            if table is not None:
                keys = [None if c.answer is None else key(c.answer) for c in candidates]
                if table.stop(keys):
                    break
                continue
            counts = Counter(key(c.answer) for c in candidates if c.answer is not None)
            confidence = self.settled(counts, gen.seed + len(candidates))
            if confidence >= self.threshold:
                break
        weights = [c.scores.get(CONFIDENCE, 0.0) for c in candidates] if weighted else None
        winner, totals = vote([c.answer for c in candidates], weights, gen.seed, key)
        return make_trace(problem, self.name, candidates, choose_for_answer(candidates, winner, weights, key), votes=totals,
                          samples=len(candidates), leader_probability=round(confidence, 6), budget_stop=stopped)


CONFIDENCE = "confidence_mean"


def _confidence(completion) -> dict[str, float]:
    """A sample's token confidence (ConfidenceVerifier's ``mean``: exp of the mean token logprob) as its
    score; 0 when the engine returned no logprobs."""
    from ..verifiers.confidence import token_confidence

    logprobs = completion.logprobs or []
    return {CONFIDENCE: math.exp(token_confidence(logprobs, "mean")) if logprobs else 0.0}
