"""Strategy specs on the command line: ``NAME`` or ``NAME@N``.

``best_of_n@16`` is best-of-N with 16 samples whatever ``--n`` says, and its results are kept under
that label, so one run (or one recipe) can compare a strategy at several widths side by side:
``--strategy majority@4,majority@16,beam_search@16``. N is the strategy's own width: samples, beams or
MCTS simulations.
"""

from __future__ import annotations

import dataclasses

from ..runtime import Strategy
from ..types import SamplingParams


#: the largest N in NAME@N (the same as --n's maximum)
MAX_WIDTH = 4096


def parse_spec(spec: str) -> tuple[str, int | None]:
    """``"majority@16"`` -> ``("majority", 16)``; ``"majority"`` -> ``("majority", None)``."""
    name, sep, count = spec.strip().partition("@")
    if not sep:
        return name, None
    if not count.isascii() or not count.isdigit() or len(count) > 6 or not 1 <= int(count) <= MAX_WIDTH:
        raise ValueError(f"strategy {spec!r}: the number after @ must be an integer from 1 to {MAX_WIDTH} "
                         "(samples, beams or simulations)")
    return name, int(count)


def create_from_spec(spec: str, n: int, params: SamplingParams, options: dict | None = None, *,
                     where: str = "") -> Strategy:
    from . import create

    name, count = parse_spec(spec)
    strategy = create(name, count or n, params, options, where=where)
    return dataclasses.replace(strategy, name=spec.strip()) if count else strategy
