"""Strategy registry: stable snake_case command-line names to constructors."""

from __future__ import annotations

from typing import Callable

from ..runtime import Strategy
from ..types import SamplingParams
from ..verifiers.confidence import ConfidenceVerifier
from .sampling import BestOfN, Majority, Single


def _single(n: int, params: SamplingParams) -> Strategy:
    return Single(params=params)


def _majority(n: int, params: SamplingParams) -> Strategy:
    return Majority(n=n, params=params)


def _best_of_n(n: int, params: SamplingParams) -> Strategy:
    # Token confidence needs no second model, so best-of-N works out of the box on any backend that
    # returns logprobs; other verifiers plug in through the Python API.
    return BestOfN(verifier=ConfidenceVerifier("mean"), n=n, params=params)


STRATEGIES: dict[str, Callable[[int, SamplingParams], Strategy]] = {
    "single": _single,
    "best_of_n": _best_of_n,
    "majority": _majority,
}


def create(name: str, n: int, params: SamplingParams) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name](n, params)


__all__ = ["BestOfN", "Majority", "Single", "STRATEGIES", "create"]
