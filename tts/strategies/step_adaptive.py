"""Step-level strategies that spend compute where a step needs it: MUR and phi-decoding.

* :class:`MUR` (momentum-uncertainty-guided reasoning, Yan et al. 2025): one path, one sampled step at
  a time. A step's uncertainty u is its mean negative token log-probability; the momentum M is their
  exponential running mean over the steps taken (starting at 0, updated with each accepted step as
  M <- a M + (1 - a) u). A step is *uncertain* when its confidence exp(-u) is below ``threshold``
  times the momentum's, exp(-M); the first ``warmup`` steps (1, as in MUR's code) are accepted
  unchecked, and with 0 the first step meets a momentum of 0. Only at an uncertain step are ``n - 1``
  more candidates sampled (the step already drawn is the n-th) and the step scorer picks the best of
  the n (ties: the step drawn first); every other step is accepted as it came, with no verifier call.
  MUR's own code draws n fresh candidates; keeping the first draw is one request cheaper and draws
  from the same distribution.
* :class:`PhiDecoding` (phi-decoding, Xu et al. 2025, adaptive foresight sampling), with one beam: at
  each step ``n`` candidate next steps are sampled in one request; each is rolled out greedily
  ``foresight_steps`` steps further (default to the end of the solution), all rollouts concurrently;
  each candidate is valued by where its foresight got: the step scorer's scores of the candidate's
  step and its foresight steps, combined by ``aggregation`` (the shared path before them is left out,
  so a weak early step does not make every candidate look alike under ``min``), the likelihood of the
  candidate and its rollout (their mean token log-probability), or both (the mean of the two softmax
  distributions, as phi-decoding joins its two distributions). The next step is drawn from
  softmax(value / temperature) with an RNG seeded from the problem's seed. Optional in-width pruning
  (``phi_prune``: candidates whose own mean token log-probability is more than that many standard
  deviations below the candidates' mean get no foresight and cannot be drawn) and in-depth early
  stopping (``phi_stop_agreement``: once at least that share of the candidates' finished foresights
  give the drawn candidate's answer, its foresight is the rest of the solution).

Both are tree searches over the shared machinery (tree.py, steps.py): every request goes through the
problem's metered generator, all of a step's requests go out together (so with many problems in flight
they meet in the engine's batches), all new nodes of a step are scored in one step-scorer call, and a
refused request or scorer call (BudgetExhausted) stops the search with the path so far as the answer.
The tree is in ``trace.info["tree"]``: MUR's candidates are siblings (the ones not taken end there),
phi-decoding's foresight steps are ``lookahead`` nodes.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, replace
from typing import Sequence

from ..budget import BudgetExhausted
from ..options import MAX_DEPTH, option
from ..runtime import Generator, derive_seed
from ..types import Problem, Trace
from ..data.grading import vote_key_for
from ..verifiers.prm import aggregate
from .beam import tree_temperature_option
from .sampling import samples_option
from .tree import Node, Search, TreeSearch, best_first, softmax

VALUES = ("verifier", "likelihood", "both")


def mean_logprob(nodes: Sequence[Node]) -> float | None:
    """The mean token log-probability over the steps of ``nodes`` (None without logprobs or tokens)."""
    values: list[float] = []
    for n in nodes:
        if n.logprobs is None:
            return None
        values.extend(n.logprobs)
    return sum(values) / len(values) if values else None


async def score_or_stop(s: Search, nodes: Sequence[Node]) -> bool:
    """Score ``nodes`` in one call; a refused scorer call stops the search (anytime). False if refused."""
    try:
        await s.score(nodes)
    except BudgetExhausted as exc:
        s.stopped = s.stopped or str(exc)
        return False
    return True


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


@dataclass(frozen=True)
class MUR(TreeSearch):
    n: int = samples_option(4, "candidates sampled and scored at an uncertain step (MUR's M)")
    momentum: float = option(0.9, key="mur_momentum", low=0, high=1, high_open=True,
                             help="weight of the past in the momentum of step uncertainty (M <- a M + (1 - a) u)")
    threshold: float = option(0.8, key="mur_threshold", low=0, high=1, low_open=True,
                              help="a step is uncertain when its confidence exp(-u) is below this times the momentum's exp(-M)")
    warmup: int = option(1, key="mur_warmup", low=0, high=MAX_DEPTH,
                         help="first steps accepted without the check (MUR's code: 1; 0 checks the first step against a momentum of 0)")
    name: str = "mur"

    def uncertain(self, u: float | None, momentum: float) -> bool:
        """Whether a step of uncertainty ``u`` (mean negative token logprob) is scaled, given the momentum.
        A step without logprobs cannot be measured and is treated as uncertain."""
        return u is None or math.exp(-u) < self.threshold * math.exp(-momentum)

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        s = Search(self, problem, gen)
        s.params = replace(s.params, logprobs=True)  # the uncertainty is read from the step's token logprobs
        node = s.tree.root
        momentum = 0.0
        steps: list[dict] = []  # one entry per accepted step
        while not node.finished and not s.stopped:
            got = await s.expand([(node, 1)])
            if not got or not got[0]:
                break  # the budget refused the step
            first = got[0][0]
            lp = mean_logprob([first])
            u = None if lp is None else -lp
            entry = {"node": first.id, "uncertainty": _round(u), "momentum": _round(momentum), "scaled": False}
            chosen = first
            if len(steps) >= self.warmup and self.n > 1 and self.uncertain(u, momentum):
                more = await s.expand([(node, self.n - 1)])
                kids = [first] + (more[0] if more else [])
                if len(kids) > 1 and await score_or_stop(s, kids):
                    chosen = best_first(kids, key=lambda k: k.score)[0]
                    entry.update(scaled=True, candidates=[k.id for k in kids],
                                 scores=[_round(k.score) for k in kids], chosen=chosen.id)
            lp = mean_logprob([chosen])
            if lp is not None:
                momentum = self.momentum * momentum + (1 - self.momentum) * -lp
            steps.append(entry)
            node = chosen
        pool = [node] if node.parent is not None else []
        candidates, chosen_index, votes = s.choose(pool)
        return s.trace(candidates, chosen_index, votes=votes, mur=steps,
                       scaled_steps=sum(e["scaled"] for e in steps), path=[e.get("chosen", e["node"]) for e in steps])


@dataclass(frozen=True)
class PhiDecoding(TreeSearch):
    n: int = samples_option(4, "candidate next steps sampled (and rolled out) at each step")
    foresight: int | None = option(None, key="foresight_steps", low=1, high=MAX_DEPTH,
                                   help="greedy steps each candidate is rolled out before it is valued (default: to the end)")
    value: str = option("both", key="phi_value", choices=VALUES,
                        help="a candidate's value: the step scorer's scores of its step and foresight (by aggregation), their mean token logprob, or both (mean of the two softmax distributions)")
    temperature: float = tree_temperature_option(0.2, "softmax temperature over the candidates' foresight values")
    prune: float | None = option(None, key="phi_prune", low=0, high=100,
                                 help="drop candidates whose mean token logprob is this many standard deviations below the candidates' mean before foresight (default: keep all)")
    stop_agreement: float | None = option(None, key="phi_stop_agreement", low=0, high=1, low_open=True,
                                          help="finish with the drawn candidate's foresight once this share of the finished foresights give its answer (default: never)")
    name: str = "phi_decoding"

    def distribution(self, verifier: Sequence[float | None], likelihood: Sequence[float | None]) -> list[float]:
        """The drawing probabilities of candidates with these foresight values."""
        if self.value == "verifier":
            return softmax(verifier, self.temperature)
        if self.value == "likelihood":
            return softmax(likelihood, self.temperature)
        a, b = softmax(verifier, self.temperature), softmax(likelihood, self.temperature)
        return [(x + y) / 2 for x, y in zip(a, b)]

    def pruned(self, kids: Sequence[Node]) -> list[Node]:
        """In-width pruning: the candidates that get a foresight (at least the most likely one)."""
        if self.prune is None or len(kids) < 2:
            return list(kids)
        lps = [mean_logprob([k]) for k in kids]
        known = [x for x in lps if x is not None]
        if len(known) < 2:
            return list(kids)
        floor = statistics.fmean(known) - self.prune * statistics.pstdev(known)
        keep = [k for k, x in zip(kids, lps) if x is None or x >= floor]
        return keep or [kids[max(range(len(kids)), key=lambda i: lps[i] if lps[i] is not None else -math.inf)]]

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        s = Search(self, problem, gen)
        s.params = replace(s.params, logprobs=True)  # the likelihood value and pruning read token logprobs
        rng = random.Random(derive_seed(gen.seed, "phi_decoding"))
        key = vote_key_for(problem) or (lambda a: a)
        node = s.tree.root
        steps: list[dict] = []
        scored = self.value != "likelihood"
        while not node.finished and not s.stopped:
            got = await s.expand([(node, self.n)])
            kids = got[0] if got else []
            if not kids:
                break
            live = self.pruned(kids)
            ends = await s.rollout(live, self.foresight, "lookahead")
            if scored:
                fresh = {n.id: n for k, e in zip(live, ends) for n in [k, *s.tree.path(e)[k.depth:]]}
                await score_or_stop(s, list(fresh.values()))
            # Values over what differs between candidates: each one's own step and its foresight (the
            # shared path before them would dominate a min or product aggregation for all alike).
            own = [s.tree.path(e)[k.depth - 1:] for k, e in zip(live, ends)]
            verifier = [aggregate([n.score for n in nodes if n.score is not None], self.aggregation)
                        if scored else None for nodes in own]
            likelihood = [mean_logprob(nodes) for nodes in own]
            probs = self.distribution(verifier, likelihood)
            pick = rng.choices(range(len(live)), weights=probs)[0]
            chosen, end = live[pick], ends[pick]
            entry = {"candidates": [k.id for k in kids], "pruned": [k.id for k in kids if k not in live],
                     "foresight_ends": [e.id for e in ends], "verifier": [_round(v) for v in verifier],
                     "likelihood": [_round(v) for v in likelihood], "probabilities": [_round(p) for p in probs],
                     "chosen": chosen.id}
            for k, p in zip(live, probs):
                k.rank_score = p  # what the draw weighed: the candidate's probability
            steps.append(entry)
            node = chosen
            if self.stop_agreement is not None and end.finished and end is not chosen:
                answers = [key(a) if a is not None else None for a in (s.read(e.text) for e in ends if e.finished)]
                mine = s.read(end.text)
                if mine is not None and answers.count(key(mine)) >= self.stop_agreement * len(live):
                    entry["stopped_early"] = True
                    node = end
        pool = [node] if node.parent is not None else []
        candidates, chosen_index, votes = s.choose(pool)
        return s.trace(candidates, chosen_index, votes=votes, phi=steps, value=self.value,
                       path=[e["chosen"] for e in steps])


__all__ = ["MUR", "PhiDecoding", "mean_logprob"]
