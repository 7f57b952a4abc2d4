"""Strategy registry: stable snake_case command-line names to constructors.

Each factory takes the shared settings (n, sampling params) and the strategy-specific options the
command line collected; options a strategy does not use are ignored.
"""

from __future__ import annotations

from typing import Any, Callable

from ..runtime import Strategy
from ..types import SamplingParams
from ..verifiers.confidence import ConfidenceVerifier
from .adaptive import AdaptiveConsistency
from .auto import Auto
from .beam import DVTS, BeamSearch, Rebase
from .deepconf import DeepConf
from .forcing import BudgetForced, BudgetForcing, policy_from_options
from .mcts import MCTS
from .particles import ParticleFilter
from .revise import Revise
from .sampling import BestOfN, Majority, Single, WeightedMajority
from .tree import prm_option, tree_options

# Token confidence needs no second model, so the verifier-driven strategies work out of the box on any
# backend that returns logprobs; a process reward model from a local folder (option prm) replaces it for
# best-of-N, weighted majority and the tree searches; other verifiers plug in through the Python API.
Factory = Callable[[int, SamplingParams, dict], Strategy]

STRATEGIES: dict[str, Factory] = {
    "single": lambda n, p, o: Single(params=p),
    "best_of_n": lambda n, p, o: BestOfN(verifier=_verifier(o), n=n, params=p),
    "majority": lambda n, p, o: Majority(n=n, params=p),
    "weighted_majority": lambda n, p, o: WeightedMajority(verifier=_verifier(o), n=n, params=p),
    "adaptive": lambda n, p, o: AdaptiveConsistency(
        n=n, params=p, **_pick(o, batch="adaptive_batch", rule="adaptive_rule", threshold="adaptive_threshold")),
    "deepconf": lambda n, p, o: DeepConf(
        n=n, params=p, **_pick(o, mode="deepconf_mode", keep="deepconf_keep", warmup="deepconf_warmup",
                               window="deepconf_window")),
    "revise": lambda n, p, o: Revise(n=n, params=p, **_pick(o, revisions="revisions")),
    # Tree search over steps (see tree.py's tree_options for the shared keys).
    "beam_search": lambda n, p, o: BeamSearch(
        n=n, params=p, **tree_options(o), **_pick(o, expansions="expansions", lookahead="lookahead")),
    "dvts": lambda n, p, o: DVTS(n=n, params=p, **tree_options(o), **_pick(o, expansions="expansions")),
    "rebase": lambda n, p, o: Rebase(n=n, params=p, **tree_options(o), **_pick(o, temperature="tree_temperature")),
    "mcts": lambda n, p, o: MCTS(
        params=p, simulations=o.get("simulations") or n, **tree_options(o),
        **_pick(o, expansions="expansions", c_explore="c_explore", selection="mcts_selection", final="mcts_final",
                parallel="parallel_simulations")),
    "particle_filter": lambda n, p, o: ParticleFilter(
        n=n, params=p, **tree_options(o), **_pick(o, temperature="tree_temperature")),
    # One budget-forced sample; any other strategy is forced by wrapping it (forcing.with_forcing).
    "budget_forcing": lambda n, p, o: BudgetForced(inner=Single(params=p), policy=policy_from_options(o, always=True)),
    # Per-question routing by a compute-optimal policy (routing.py; option routing_policy: a policy file).
    "auto": lambda n, p, o: Auto.from_options(p, o),
}


def _verifier(options: dict):
    """The outcome verifier: the PRM named by option prm (its step scores aggregated by its own rule,
    min unless its folder says otherwise), else token confidence."""
    prm = prm_option(options.get("prm"))
    return prm if prm is not None else ConfidenceVerifier("mean")


def _pick(options: dict, **names: str) -> dict[str, Any]:
    """Constructor arguments from the command-line options that were given (None means 'default')."""
    return {arg: options[key] for arg, key in names.items() if options.get(key) is not None}


def create(name: str, n: int, params: SamplingParams, options: dict | None = None) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name](n, params, options or {})


__all__ = [
    "AdaptiveConsistency", "Auto", "BeamSearch", "BestOfN", "BudgetForced", "BudgetForcing", "DVTS", "DeepConf", "MCTS", "Majority", "ParticleFilter",
    "Rebase", "Revise", "STRATEGIES", "Single", "WeightedMajority", "create",
]
