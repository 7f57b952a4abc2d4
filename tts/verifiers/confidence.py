"""Token confidence: a reward verifier that needs no extra model.

It scores a candidate from the logprobs its own tokens got while it was generated (DeepConf, Fu et al.
2025). Three summaries:

* ``mean``: mean token logprob over the whole candidate;
* ``tail``: mean over the last ``window`` tokens (where the answer is written);
* ``lowest_group``: the lowest mean over any sliding window of ``window`` tokens, which catches a trace
  that loses its way in the middle even when it ends confidently.

The verifier's score is ``exp`` of the summary: the geometric-mean probability of the tokens, in (0, 1].
It ranks exactly like the mean logprob (best-of-N is unchanged) and is a positive weight, so weighted
majority can sum it. DeepConf computes confidence from the top-k logprobs at each position; we use the
sampled token's own logprob, which every engine returns, and which orders traces the same way in practice.

It costs no engine work, so it charges nothing to the ledger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..budget import Ledger
from ..types import Completion, Problem

MODES = ("mean", "tail", "lowest_group")


def token_confidence(logprobs: Sequence[float], mode: str = "mean", window: int = 16) -> float:
    if mode not in MODES:
        raise ValueError(f"confidence mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not logprobs:
        return float("-inf")
    if mode == "mean":
        return sum(logprobs) / len(logprobs)
    if mode == "tail":
        tail = logprobs[-window:]
        return sum(tail) / len(tail)
    if len(logprobs) <= window:
        return sum(logprobs) / len(logprobs)
    running = sum(logprobs[:window])
    lowest = running
    for i in range(window, len(logprobs)):
        running += logprobs[i] - logprobs[i - window]
        lowest = min(lowest, running)
    return lowest / window


@dataclass(frozen=True)
class ConfidenceVerifier:
    mode: str = "mean"
    window: int = 16
    needs_logprobs: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ConfidenceVerifier.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.window < 1:
            raise ValueError(f"ConfidenceVerifier.window must be a positive integer, got {self.window!r}")

    @property
    def name(self) -> str:
        return f"confidence_{self.mode}"

    async def score(self, problem: Problem, completions: Sequence[Completion], ledger: Ledger) -> list[float]:
        scores = []
        for c in completions:
            if c.logprobs is None:
                raise ValueError("ConfidenceVerifier needs token logprobs: sample with SamplingParams(logprobs=True)")
            scores.append(math.exp(token_confidence(c.logprobs, self.mode, self.window)))
        return scores
