"""Monte Carlo tree search over steps.

Each simulation selects a path from the root by UCT, Q + c * sqrt(ln N(parent) / N(child)), or PUCT,
Q + c * P(child) * sqrt(N(parent)) / (1 + N(child)), with the prior P the normalised probability of the
step (exp of its mean token logprob; uniform without logprobs). At a node not yet expanded it samples K
next steps in one request and evaluates each new child: by the step scorer (the child's aggregated path
score), or with ``value="rollout"`` by continuing it greedily to the end and scoring the finished text
with an outcome verifier. Each child starts with one visit and its value; the expanded node and its
ancestors gain K visits and the sum of the K values (so N counts evaluations below a node and Q is their
mean). A simulation that selects a finished node re-evaluates it (its score, no engine call).

The final answer is the node reached by following the most visited children (``final="visits"``), the
highest-valued ones (``"value"``), or a majority vote over the finished leaves (``"vote"``).

By default simulations are sequential within a problem (each one's selection depends on the last one's
values); the K expansions of a simulation go out as one request and many problems in flight fill the
engine's batches. With ``parallel=k`` up to k simulations run at once, with virtual loss (as in AlphaGo):
each selection adds ``virtual_loss`` visits worth 0 to every node on its path, so that the next selection
sees that path as visited and worse and tends to go elsewhere. A selection that lands again on a leaf
already chosen in this batch is a collision: it keeps its virtual loss (steering the next selection away),
starts nothing and is not counted as a simulation; after k collisions the batch goes out as it is. The
batch's leaves are then expanded concurrently (one engine call each, all in flight together), all new
children scored in one step-scorer call and evaluated together, the virtual losses removed, and the
simulations backed up in the order they were selected. A selected finished leaf is re-evaluated as in a
sequential simulation. ``parallel=1`` is exactly the sequential search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..budget import BudgetExhausted
from ..runtime import Generator
from ..types import Completion, Problem, Trace
from ..options import MAX_SAMPLES, MAX_SIMULATIONS, option
from ..verifiers.registry import SPEC_HELP, builtin_specs, resolve
from .beam import expansions_option
from .tree import Node, Search, TreeSearch

SELECTION = ("uct", "puct")
VALUES = ("scorer", "rollout")
FINALS = ("visits", "value", "vote")


@dataclass(frozen=True)
class MCTS(TreeSearch):
    simulations: int = option(8, low=1, high=MAX_SIMULATIONS, help="simulations (default n)")
    expansions: int = expansions_option(3, "next steps sampled when a node is expanded")
    c_explore: float = option(1.0, low=0, high=1e6, help="exploration constant of the selection rule")
    selection: str = option("uct", key="mcts_selection", choices=SELECTION, help="selection rule")
    value: str = option("scorer", key="mcts_value", choices=VALUES,
                        help="a new node's value: its step score, or the score where a greedy rollout from it ends")
    #: outcome verifier for rollouts (value="rollout"); None: the step scorer scores the rollout's end
    rollout_verifier: Any = option(None, parse=resolve, metavar=SPEC_HELP, remote=builtin_specs,
                                   help="scores where a rollout ends (mcts_value rollout; default the step scorer)")
    final: str = option("visits", key="mcts_final", choices=FINALS,
                        help="the answer: the most visited path, the highest valued one, or a vote over finished paths")
    #: simulations selected (with virtual loss) and expanded at once; 1: sequential
    parallel: int = option(1, key="parallel_simulations", low=1, high=MAX_SAMPLES,
                           help="simulations selected at once with virtual loss and expanded together (1: sequential)")
    #: visits worth 0 added to each node on a pending simulation's path (parallel > 1)
    virtual_loss: int = option(1, low=1, high=MAX_SAMPLES, help="visits worth 0 added on a pending simulation's path")
    name: str = "mcts"
    width_option = "simulations"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rollout_verifier is not None and not hasattr(self.rollout_verifier, "score"):
            raise ValueError(f"MCTS.rollout_verifier must be a Verifier, got {self.rollout_verifier!r}")

    def ucb(self, parent: Node, child: Node) -> float:
        if child.visits == 0:
            return math.inf
        if self.selection == "uct":
            return child.value + self.c_explore * math.sqrt(math.log(parent.visits) / child.visits)
        return child.value + self.c_explore * child.prior * math.sqrt(parent.visits) / (1 + child.visits)

    def select_path(self, s: Search) -> Node:
        node = s.tree.root
        while not node.finished:
            kids = s.tree.kids(node)
            if not kids:
                return node
            node = max(kids, key=lambda k: (self.ucb(node, k), -k.id))
        return node

    async def evaluate(self, s: Search, kids: list[Node]) -> list[float]:
        if self.value == "scorer":
            return [k.path_score for k in kids]
        ends = await s.rollout(kids, None, "rollout")
        if self.rollout_verifier is None:
            await s.score(ends)
            return [e.path_score for e in ends]
        completions = [Completion(e.text, e.path_tokens, e.finish_reason or "length",
                                  logprobs=s.tree.partial(e).logprobs) for e in ends]
        try:
            return [float(v) for v in await self.rollout_verifier.score(s.problem, completions, s.gen.ledger)]
        except BudgetExhausted as exc:  # unpaid rollouts are worth nothing; the search stops here
            s.stopped = s.stopped or str(exc)
            return [None] * len(completions)

    @staticmethod
    def backpropagate(s: Search, node: Node, visits: int, total: float) -> None:
        while True:
            node.visits += visits
            node.value_sum += total
            if node.parent is None:
                return
            node = s.tree.nodes[node.parent]

    def select_batch(self, s: Search, k: int) -> tuple[list[Node], list[Node]]:
        """Up to ``k`` leaves for simulations run at once, made to differ by virtual loss (module doc), and
        the leaf of every selection made (collisions included): their virtual losses are still on the
        tree when this returns, and ``remove_virtual_loss`` takes them off."""
        batch: list[Node] = []
        virtual: list[Node] = []
        pending: set[int] = set()
        collisions = 0
        while len(batch) < k:
            leaf = self.select_path(s)
            collided = leaf.id in pending
            if k > 1:
                self.backpropagate(s, leaf, self.virtual_loss, 0.0)
                virtual.append(leaf)
            if collided:
                collisions += 1
                if collisions >= k:
                    break
                continue
            batch.append(leaf)
            if not leaf.finished:
                pending.add(leaf.id)
        return batch, virtual

    def remove_virtual_loss(self, s: Search, virtual: list[Node]) -> None:
        for leaf in virtual:
            self.backpropagate(s, leaf, -self.virtual_loss, 0.0)

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        s = Search(self, problem, gen)
        done = 0
        batches: list[int] = []  # simulations run together (parallel > 1)
        while done < self.simulations and not s.stopped:
            batch, virtual = self.select_batch(s, min(self.parallel, self.simulations - done))
            done += len(batch)
            batches.append(len(batch))
            open_leaves = [leaf for leaf in batch if not leaf.finished]
            got = await s.expand([(leaf, self.expansions) for leaf in open_leaves])
            kids_of = {leaf.id: kids for leaf, kids in zip(open_leaves, got)}
            new = [k for kids in got for k in kids]
            await s.score(new)
            for kids in got:
                if kids:
                    set_priors(kids)
            values = [v if v is not None and math.isfinite(v) else 0.0
                      for v in (await self.evaluate(s, new) if new else [])]
            for kid, v in zip(new, values):
                kid.visits, kid.value_sum = 1, v
            self.remove_virtual_loss(s, virtual)
            for leaf in batch:
                if leaf.finished:
                    self.backpropagate(s, leaf, 1, leaf.path_score if leaf.path_score is not None else 0.0)
                elif kids_of[leaf.id]:
                    kids = kids_of[leaf.id]
                    self.backpropagate(s, leaf, len(kids), sum(kid.value_sum for kid in kids))
            if any(not kids for kids in got):
                break  # refused by the budget
        chosen_node = self.final_node(s)
        if self.final == "vote":
            pool = s.finished() or ([chosen_node] if chosen_node else [])
            candidates, chosen, votes = s.choose(pool, "majority")
        else:
            pool = s.finished()
            ids = [n.id for n in pool]
            if chosen_node is not None and chosen_node.id not in ids:
                pool, ids = pool + [chosen_node], ids + [chosen_node.id]
            candidates, votes = s.choose(pool)[0], None
            chosen = ids.index(chosen_node.id) if chosen_node is not None else None
            s.selection = f"most {self.final}"  # the path of most visited (or best valued) children
        info = {"parallel_batches": batches} if self.parallel > 1 else {}
        return s.trace(candidates, chosen, votes=votes, simulations=done,
                       root_visits=s.tree.root.visits, root_value=round(s.tree.root.value, 6), **info)

    def final_node(self, s: Search) -> Node | None:
        """Follow the most visited (or highest valued) children from the root down to a leaf."""
        node = s.tree.root
        while True:
            kids = s.tree.kids(node)
            if not kids:
                return node if node.parent is not None else None
            if self.final == "value":
                node = max(kids, key=lambda k: (k.value, k.visits, -k.id))
            else:
                node = max(kids, key=lambda k: (k.visits, k.value, -k.id))



def set_priors(kids: list[Node]) -> None:
    """P(child) among siblings: exp(mean token logprob of its step), normalised; uniform without logprobs."""
    if any(not k.logprobs for k in kids):
        for k in kids:
            k.prior = 1.0 / len(kids)
        return
    weights = [math.exp(sum(k.logprobs) / len(k.logprobs)) for k in kids]
    total = sum(weights)
    for k, w in zip(kids, weights):
        k.prior = w / total
