"""The strategy registry: stable snake_case names to strategy classes.

A strategy's options are its dataclass fields made with :func:`tts.options.option`; :func:`create`
builds one from a name, the shared settings (N and the sampling params) and option values, through the
one builder (:func:`tts.options.build`). Adding a strategy: write its module (a frozen dataclass with
options and ``solve``), add one line here.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import options as opts
from ..runtime import Strategy
from ..types import SamplingParams
from .adaptive import AdaptiveConsistency
from .auto import Auto
from .beam import DVTS, BeamSearch, Rebase
from .deepconf import DeepConf
from .forcing import BudgetForced, BudgetForcing
from .mcts import MCTS
from .particles import ParticleFilter
from .revise import Revise
from .sampling import BestOfN, Majority, Single, WeightedMajority
from .step_adaptive import MUR, PhiDecoding

STRATEGIES: dict[str, type[Strategy]] = {
    "single": Single,
    "best_of_n": BestOfN,
    "majority": Majority,
    "weighted_majority": WeightedMajority,
    "adaptive": AdaptiveConsistency,
    "deepconf": DeepConf,
    "revise": Revise,
    "beam_search": BeamSearch,
    "dvts": DVTS,
    "rebase": Rebase,
    "mcts": MCTS,
    "particle_filter": ParticleFilter,
    # Step-level adaptive compute: M candidates only at uncertain steps; foresight-valued step sampling.
    "mur": MUR,
    "phi_decoding": PhiDecoding,
    # One budget-forced sample; any other strategy is forced by wrapping it (forcing.with_forcing).
    "budget_forcing": BudgetForced,
    # Per-question routing by a compute-optimal policy (routing.py; option routing_policy: a policy file).
    "auto": Auto,
}


def create(name: str, n: int | None, params: SamplingParams, options: Mapping[str, Any] | None = None, *,
           strict: bool = False, where: str = "") -> Strategy:
    """The strategy ``name`` with N, sampling params and options. ``strict``: an option the strategy
    does not take is an error (a request body for one strategy); else the ones it takes are picked
    (a command line or a policy that sets options of several strategies; the command line reports the
    ones no chosen strategy takes). An explicit option for the width (``simulations``) wins over N."""
    if name not in STRATEGIES:
        raise opts.OptionError(f"{where}unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    values = dict(options or {}) if strict else opts.pick(cls, options or {})
    width = cls.width_option
    if width is not None and n is not None and values.get(width) is None:
        values[width] = n
    return opts.build(cls, values, fixed=cls.shared_settings(params, options or {}), where=where)


def option_owners() -> list[type]:
    """Every class whose options the command line offers: the strategies and the budget-forcing policy
    (which wraps whichever strategies run)."""
    return [*STRATEGIES.values(), BudgetForcing]


__all__ = [
    "AdaptiveConsistency", "Auto", "BeamSearch", "BestOfN", "BudgetForced", "BudgetForcing", "DVTS", "DeepConf", "MCTS", "Majority", "MUR", "ParticleFilter", "PhiDecoding",
    "Rebase", "Revise", "STRATEGIES", "Single", "WeightedMajority", "create", "option_owners",
]
