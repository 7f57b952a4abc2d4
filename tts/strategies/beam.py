"""Step-level search guided by a step scorer: beam search, DVTS and REBASE.

* :class:`BeamSearch` (Snell et al. 2024; search-and-learn): the root gets N first steps; at every depth the
  N/M best live nodes survive and each is expanded with M next steps, so N nodes are scored per depth.
  Finished nodes are kept as completed beams; the search ends when N beams completed, nothing is live, or
  a depth/token limit is hit. With ``lookahead=k`` each new node is continued by k greedy steps and
  ranked by the score where that rollout ended (the rollout is only for ranking).
* :class:`DVTS` (diverse verifier tree search, Beeching et al. 2024): N/M independent subtrees; each
  expands its current node with M next steps and moves greedily to the best one, until that one is
  finished. The finished solutions of all subtrees are pooled for the final choice.
* :class:`Rebase` (reward balanced search, Wu et al. 2024): the root gets N first steps; at each depth the
  remaining budget (N minus the solutions already finished) is shared among all live nodes in proportion to
  softmax(score / temperature), rounded by largest remainder so the shares sum to the budget exactly;
  nodes with a zero share are pruned. No beam width is imposed.

Every step of every strategy issues all its expansions concurrently and scores all new nodes in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..runtime import Generator
from ..types import Problem, Trace
from ..options import MAX_DEPTH, MAX_SAMPLES, MAX_TEMPERATURE, option
from .sampling import samples_option
from .tree import Node, Search, TreeSearch, best_first, softmax


def expansions_option(default: int, help: str) -> int:
    return option(default, low=1, high=MAX_SAMPLES, help=help)


def tree_temperature_option(default: float, help: str) -> float:
    return option(default, key="tree_temperature", low=0, low_open=True, high=MAX_TEMPERATURE, help=help)


@dataclass(frozen=True)
class BeamSearch(TreeSearch):
    n: int = samples_option(8, "beams: nodes scored per depth")
    expansions: int = expansions_option(4, "next steps sampled per surviving beam (beam width is n / expansions)")
    lookahead: int = option(0, low=0, high=MAX_DEPTH, help="greedy steps rolled out before ranking (0: rank by the node's own score)")
    name: str = "beam_search"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.expansions > self.n:
            raise ValueError(f"BeamSearch.expansions must be at most n={self.n}, got {self.expansions!r}")

    @property
    def width(self) -> int:
        return max(1, self.n // self.expansions)

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        s = Search(self, problem, gen)
        requests = [(s.tree.root, self.n)]
        completed: list[Node] = []
        kept: list[list[int]] = []  # the surviving beams at each depth
        beams: list[Node] = []
        while requests and not s.stopped:
            children = [c for kids in await s.expand(requests) for c in kids]
            await s.score(children)
            completed += [c for c in children if c.finished]
            live = [c for c in children if not c.finished]
            if self.lookahead and live and not s.stopped:
                ends = await s.rollout(live, self.lookahead, "lookahead")
                await s.score(ends)
                for node, end in zip(live, ends):
                    node.rank_score = end.path_score
            if not live or len(completed) >= self.n:
                beams = live
                break
            beams = best_first(live, key=lambda n: n.rank_score if n.rank_score is not None else n.path_score)
            beams = beams[: self.width]
            kept.append([b.id for b in beams])
            requests = [(b, self.expansions) for b in beams]
        # Anytime: with no completed beam (budget or limits), the best live beams are the answer so far.
        pool = completed or beams
        candidates, chosen, votes = s.choose(pool)
        return s.trace(candidates, chosen, votes=votes, beams=kept, completed=len(completed))



@dataclass(frozen=True)
class DVTS(TreeSearch):
    n: int = samples_option(8, "solutions: n / expansions subtrees")
    expansions: int = expansions_option(4, "next steps sampled per expanded node")
    name: str = "dvts"

    @property
    def subtrees(self) -> int:
        return max(1, self.n // self.expansions)

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        s = Search(self, problem, gen)
        current = {g: s.tree.root for g in range(self.subtrees)}
        paths: dict[int, list[int]] = {g: [] for g in current}
        alive = list(current)
        while alive and not s.stopped:
            got = await s.expand([(current[g], self.expansions) for g in alive], groups=alive)
            await s.score([c for kids in got for c in kids])
            still = []
            for g, kids in zip(alive, got):
                if not kids:
                    continue  # refused by the budget: this subtree ends where it is
                best = best_first(kids)[0]  # greedy by the scorer
                current[g] = best
                paths[g].append(best.id)
                if not best.finished:
                    still.append(g)
            alive = still
        # Pool every finished solution of every subtree; with none (budget), each subtree's current node.
        pool = s.finished() or [current[g] for g in sorted(current) if current[g].parent is not None]
        candidates, chosen, votes = s.choose(pool)
        return s.trace(candidates, chosen, votes=votes, subtrees={str(g): p for g, p in paths.items()})



def allocate(budget: int, weights: list[float]) -> list[int]:
    """Split ``budget`` children by ``weights`` (largest remainder: the shares sum to the budget exactly;
    remainder ties go to the earlier node)."""
    raw = [budget * w for w in weights]
    shares = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - shares[i]), i))
    for i in order[: budget - sum(shares)]:
        shares[i] += 1
    return shares


@dataclass(frozen=True)
class Rebase(TreeSearch):
    n: int = samples_option(8, "solutions to finish (the expansion budget per depth)")
    temperature: float = tree_temperature_option(0.2, "softmax temperature over node scores (lower: more greedy)")
    name: str = "rebase"

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        s = Search(self, problem, gen)
        requests = [(s.tree.root, self.n)]
        done = 0
        shares: list[dict[str, int]] = []  # children given to each node at each depth
        live: list[Node] = []
        while requests and not s.stopped:
            children = [c for kids in await s.expand(requests) for c in kids]
            await s.score(children)
            done += sum(c.finished for c in children)
            live = [c for c in children if not c.finished]
            budget = self.n - done
            if budget <= 0 or not live:
                break
            counts = allocate(budget, softmax([c.path_score for c in live], self.temperature))
            shares.append({str(c.id): k for c, k in zip(live, counts) if k})
            requests = [(c, k) for c, k in zip(live, counts) if k]
        pool = s.finished() or live
        candidates, chosen, votes = s.choose(pool)
        return s.trace(candidates, chosen, votes=votes, shares=shares)

