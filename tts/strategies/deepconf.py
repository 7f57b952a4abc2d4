"""DeepConf (Fu et al. 2025): vote with confident traces only, and stop unconfident ones early.

A trace's confidence is its lowest sliding-window mean token logprob ("lowest group confidence"): one
stretch where the model was lost is enough to distrust the whole trace.

  * offline: sample N traces, keep the ``keep`` fraction with the highest confidence, and vote among
    them with weights exp(confidence);
  * online: sample ``warmup`` traces first; the confidence below which only ``1 - keep`` of them fall
    becomes the threshold; the remaining traces are generated with that threshold as an in-engine stop
    rule (SamplingParams.confidence_stop), so a trace whose current window drops below it ends at once and
    its remaining tokens are never generated. Traces stopped that way do not vote.

DeepConf computes token confidence from the top-k logprobs at each position; we use the sampled token's
logprob, which every backend returns (see verifiers/confidence.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ..runtime import Generator, Strategy
from ..types import Candidate, Completion, Problem, SamplingParams, Trace
from ..verifiers.confidence import token_confidence
from ..options import MAX_SAMPLES, MAX_TOKENS, option
from .sampling import Extractor, answer_reader, choose_for_answer, key_reader, make_trace, sample_or_nothing, samples_option, vote

MODES = ("offline", "online")


def lowest_quantile(values: list[float], fraction: float) -> float:
    """The value below which about ``fraction`` of ``values`` lie (nearest rank, never interpolated,
    so the threshold is a confidence that a real warm-up trace had)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


@dataclass(frozen=True)
class DeepConf(Strategy):
    n: int = samples_option(16)
    mode: str = option("online", key="deepconf_mode", choices=MODES,
                       help="online: stop traces whose confidence drops below the warm-up threshold; offline: filter after")
    keep: float = option(0.9, key="deepconf_keep", low=0, low_open=True, high=1,
                         help="fraction of most confident traces that vote")
    warmup: int = option(4, key="deepconf_warmup", low=1, high=MAX_SAMPLES, help="online: warm-up traces")
    window: int = option(8, key="deepconf_window", low=1, high=MAX_TOKENS, help="confidence window in tokens")
    params: SamplingParams = field(default_factory=SamplingParams)
    extract: Extractor | None = None  # None: by the problem's prompt format
    name: str = "deepconf"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmup > self.n:
            raise ValueError(f"DeepConf.warmup must be an integer in [1, n={self.n}], got {self.warmup!r}")

    def confidence(self, completion: Completion) -> float:
        return token_confidence(completion.logprobs or (), "lowest_group", self.window)

    def _candidate(self, problem: Problem, c: Completion) -> Candidate:
        return Candidate.from_completion(c, answer_reader(self.extract, problem)(c.text), {"confidence": self.confidence(c)})

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        params = replace(self.params, logprobs=True)
        if self.mode == "offline":
            got, stopped = await sample_or_nothing(gen, problem, replace(params, n=self.n))
            candidates = [self._candidate(problem, c) for c in got]
            ranked = sorted(range(len(candidates)), key=lambda i: (-candidates[i].scores["confidence"], i))
            voters = set(ranked[: max(1, math.ceil(self.keep * len(candidates)))]) if candidates else set()
            threshold = None
        else:
            warm, stopped = await sample_or_nothing(gen, problem, replace(params, n=self.warmup))
            candidates = [self._candidate(problem, c) for c in warm]
            threshold = None
            if candidates and not stopped and self.n > self.warmup:
                threshold = lowest_quantile([c.scores["confidence"] for c in candidates], 1 - self.keep)
                guarded = replace(params, n=self.n - self.warmup, confidence_stop=(self.window, threshold))
                rest, stopped = await sample_or_nothing(gen, problem, guarded)
                candidates += [self._candidate(problem, c) for c in rest]
            voters = {i for i, c in enumerate(candidates) if c.finish_reason != "low_confidence"}
        answers = [c.answer if i in voters else None for i, c in enumerate(candidates)]
        weights = [math.exp(c.scores["confidence"]) for c in candidates]
        key = key_reader(self.extract, problem)
        winner, totals = vote(answers, weights, gen.seed, key)
        scores = [w if i in voters else -1.0 for i, w in enumerate(weights)]
        return make_trace(
            problem, self.name, candidates, choose_for_answer(candidates, winner, scores, key), votes=totals,
            threshold=threshold, voters=len(voters),
            stopped_early=sum(c.finish_reason == "low_confidence" for c in candidates), budget_stop=stopped,
        )
