"""The search tree shared by the tree-search strategies (beam search, DVTS, REBASE, MCTS, particle filter).

A :class:`Tree` holds :class:`Node` objects; each node is its parent's text plus one step (see steps.py)
and carries that step's score, the score aggregated over its path, MCTS visits and value, and what the
step cost in tokens. A tree exports to JSON (``to_json``, put into ``trace.info["tree"]``) and to a
networkx graph (``to_networkx``) for inspection and plots.

:class:`Search` is one problem's search state: it expands many nodes at once (one ``gen.sample`` call per
node with ``n`` children, all of a search step's calls gathered concurrently so that, with many problems in
flight, their expansions reach the engine in the same batch), scores all new nodes in one step-scorer call,
and turns finished nodes into candidates. A refused request (BudgetExhausted) stops the search after the
current step; the strategy then answers from what it has (anytime).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from ..budget import BudgetExhausted
from ..runtime import Generator, Strategy
from ..types import Candidate, Problem, SamplingParams, Trace
from ..verifiers.confidence import ConfidenceVerifier
from ..verifiers.prm import AGGREGATIONS, aggregate
from ..options import MAX_DEPTH, option
from ..verifiers.registry import SPEC_HELP, builtin_specs, resolve
from .sampling import Extractor, answer_reader, make_trace
from .select import choose
from .steps import Partial, Segmenter, Step, VerifierStepScorer, as_step_scorer, to_step

SELECTIONS = ("best", "weighted", "majority")


@dataclass
class Node:
    id: int
    parent: int | None
    depth: int
    step: str = ""
    join: str = ""  # text between this step and the next (the delimiter the engine stopped at)
    text: str = ""  # the solution through this step
    kind: str = "step"  # root, step, lookahead, rollout
    num_tokens: int = 0  # this step's generated tokens (with the cut stop string and any discarded tail)
    path_tokens: int = 0  # generated tokens from the root to here
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    logprobs: tuple[float, ...] | None = None
    finished: bool = False
    finish_reason: str | None = None
    score: float | None = None  # the newest step's score
    path_score: float | None = None  # step scores aggregated over the path
    rank_score: float | None = None  # what the search ranked by when it differs (lookahead)
    visits: int = 0
    value_sum: float = 0.0
    prior: float = 1.0
    group: int | None = None  # DVTS subtree
    children: list[int] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        """What a child continues: this solution and the delimiter after it."""
        return self.text + self.join

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "parent": self.parent, "depth": self.depth, "kind": self.kind, "step": self.step,
            "num_tokens": self.num_tokens, "path_tokens": self.path_tokens, "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens, "finished": self.finished,
            "finish_reason": self.finish_reason, "score": _json_float(self.score),
            "path_score": _json_float(self.path_score), "rank_score": _json_float(self.rank_score),
            "visits": self.visits, "value": _json_float(self.value), "prior": _json_float(self.prior),
            "group": self.group, "children": list(self.children),
        }


def _json_float(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None  # JSON has no inf/nan
    return round(float(x), 6)


class Tree:
    def __init__(self) -> None:
        self.nodes: list[Node] = [Node(0, None, 0, kind="root")]

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: Node, step: Step, kind: str = "step", group: int | None = None) -> Node:
        node = Node(
            len(self.nodes), parent.id, parent.depth + 1, step.text, step.join, parent.prefix + step.text, kind,
            step.num_tokens, parent.path_tokens + step.num_tokens, step.prompt_tokens, step.cached_prompt_tokens,
            step.logprobs, step.finished, step.finish_reason if step.finished else None,
            group=parent.group if group is None else group,
        )
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def path(self, node: Node) -> list[Node]:
        """The nodes from the first step to ``node`` (the root excluded)."""
        out = []
        while node.parent is not None:
            out.append(node)
            node = self.nodes[node.parent]
        return out[::-1]

    def partial(self, node: Node) -> Partial:
        path = self.path(node)
        logprobs: tuple[float, ...] | None = ()
        for n in path:
            logprobs = None if logprobs is None or n.logprobs is None else logprobs + tuple(n.logprobs)
        return Partial(tuple(n.step for n in path), node.text, node.path_tokens, logprobs, node.finished)

    def step_scores(self, node: Node) -> list[float]:
        return [n.score for n in self.path(node) if n.score is not None]

    def kids(self, node: Node, kind: str = "step") -> list[Node]:
        return [self.nodes[i] for i in node.children if self.nodes[i].kind == kind]

    def to_json(self, max_nodes: int | None = None) -> dict[str, Any]:
        """Nodes in creation order (a parent always precedes its children, so a capped export is still a
        tree); ``truncated`` tells how many nodes were left out."""
        keep = self.nodes if max_nodes is None else self.nodes[:max_nodes]
        kept = {n.id for n in keep}
        nodes = []
        for n in keep:
            d = n.as_dict()
            d["children"] = [c for c in n.children if c in kept]
            nodes.append(d)
        return {"nodes": nodes, "truncated": len(self.nodes) - len(keep)}

    def to_networkx(self):
        """A networkx DiGraph: node attributes as in to_json, edges parent -> child."""
        import networkx as nx  # optional dependency, imported only here

        graph = nx.DiGraph()
        for n in self.nodes:
            graph.add_node(n.id, **{k: v for k, v in n.as_dict().items() if k != "children"})
        for n in self.nodes:
            if n.parent is not None:
                graph.add_edge(n.parent, n.id)
        return graph

    @classmethod
    def from_json(cls, data: dict) -> "Tree":
        """A tree back from ``to_json`` (scores and counts; texts of steps only), for analysis."""
        tree = cls()
        tree.nodes = []
        for d in data["nodes"]:
            node = Node(d["id"], d["parent"], d["depth"], d["step"], kind=d["kind"], num_tokens=d["num_tokens"],
                        path_tokens=d["path_tokens"], finished=d["finished"], finish_reason=d["finish_reason"],
                        score=d["score"], path_score=d["path_score"], visits=d["visits"], group=d["group"],
                        children=list(d["children"]))
            node.value_sum = (d["value"] or 0.0) * node.visits
            tree.nodes.append(node)
        return tree


def default_scorer() -> VerifierStepScorer:
    # No process reward model runs on a bare CPU; token confidence of the partial solution needs none.
    return VerifierStepScorer(ConfidenceVerifier("mean"))


@dataclass(frozen=True)
class TreeSearch(Strategy):
    """Settings every tree search shares. ``params.max_tokens`` caps the generated tokens of one path."""

    #: a StepScorer, a PRM (tts.verifiers.prm) or any Verifier (scores the partial text)
    scorer: Any = option(default_factory=default_scorer, key="verifier", aliases=("prm", "step_scorer"),
                         parse=resolve, metavar=SPEC_HELP, remote=builtin_specs,
                         help="what scores each step (a PRM scores the steps; any other verifier the partial text)")
    params: SamplingParams = field(default_factory=SamplingParams)
    segmenter: Segmenter = option(default_factory=Segmenter, nested=True)
    max_depth: int = option(16, low=1, high=MAX_DEPTH, help="most steps per path")
    #: how a path's step scores become its score: last (as search-and-learn), min, product, mean
    aggregation: str = option("last", choices=AGGREGATIONS,
                              help="how a path's step scores combine into its score (min suits a PRM trained only up to the first wrong step, like the testbed's)")
    #: final choice among the finished solutions: best score, weighted vote (by score), majority vote
    select: str = option("best", key="tree_select", choices=SELECTIONS,
                         help="how the final answer is chosen among finished paths")
    extract: Extractor | None = None  # None: by the problem's prompt format
    #: nodes exported into trace.info["tree"] (None: all; 0: no export)
    tree_max_nodes: int | None = 500
    name: str = "tree_search"

    def __post_init__(self) -> None:
        super().__post_init__()
        scorer = as_step_scorer(self.scorer)
        object.__setattr__(self, "scorer", scorer)
        seg = self.segmenter
        if seg.mode == "delimiter" and seg.delimiter is None:
            # a PRM reads steps joined by its own separator, so by default the search cuts steps there
            prm = getattr(scorer, "prm", None)
            object.__setattr__(self, "segmenter", replace(seg, delimiter=getattr(prm, "step_separator", None) or seg.end))


class Search:
    """One problem's search: the tree, batched expansion and scoring, candidates and the trace."""

    def __init__(self, strategy: TreeSearch, problem: Problem, gen: Generator):
        self.strategy, self.problem, self.gen = strategy, problem, gen
        self.tree = Tree()
        self.scorer = as_step_scorer(strategy.scorer)
        self.params = replace(strategy.params, logprobs=strategy.params.logprobs or self.scorer.needs_logprobs)
        self.read = answer_reader(strategy.extract, problem)
        self.stopped: str | None = None
        self.engine_calls_per_step: list[int] = []
        self.candidate_nodes: list[int] = []  # the tree node of each candidate (the last choose's pool)
        self.selection: str | None = None

    # --- expansion ---------------------------------------------------------------------------------
    async def _sample(self, node: Node, k: int, greedy: bool) -> list[Step]:
        left = self.strategy.params.max_tokens - node.path_tokens
        params = self.strategy.segmenter.params(self.params, node.prefix, left)
        params = replace(params, n=k, temperature=0.0 if greedy else params.temperature)
        try:
            got = await self.gen.sample(self.problem, params, prefix=node.prefix)
        except BudgetExhausted as exc:
            self.stopped = self.stopped or str(exc)
            return []
        return [to_step(self.strategy.segmenter, c, node.prefix) for c in got]

    async def expand(self, requests: Sequence[tuple[Node, int]], greedy: bool = False, kind: str = "step",
                     groups: Sequence[int | None] | None = None) -> list[list[Node]]:
        """Children for each (node, k): all requests concurrently, so they reach the engine together.
        Nodes are added in request order after all answers are in, so node ids never depend on which
        engine answer came first."""
        requests = [(n, k) for n, k in requests]
        if not requests:
            return []
        self.engine_calls_per_step.append(len(requests))
        steps = await asyncio.gather(*(self._sample(n, k, greedy) for n, k in requests))
        out = []
        for i, ((node, _), got) in enumerate(zip(requests, steps)):
            group = groups[i] if groups is not None else None
            kids = [self._limit(self.tree.add(node, s, kind, group)) for s in got]
            out.append(kids)
        return out

    def _limit(self, node: Node) -> Node:
        """Depth and token limits end a path (reported as a length stop)."""
        if not node.finished and (node.depth >= self.strategy.max_depth
                                  or node.path_tokens >= self.strategy.params.max_tokens):
            node.finished, node.finish_reason = True, "length"
        return node

    async def score(self, nodes: Sequence[Node]) -> None:
        """Score every unscored node in one step-scorer call (one batch per search step)."""
        todo = [n for n in nodes if n.score is None]
        if not todo:
            return
        try:
            scores = await self.scorer.score_steps(self.problem, [self.tree.partial(n) for n in todo], self.gen.ledger)
        except BudgetExhausted as exc:  # the scorer cannot be paid: the nodes stay unscored, the search ends
            self.stopped = self.stopped or str(exc)
            return
        for n, s in zip(todo, scores):
            n.score = float(s)
        for n in todo:
            n.path_score = aggregate(self.tree.step_scores(n), self.strategy.aggregation)

    async def rollout(self, starts: Sequence[Node], steps: int | None, kind: str) -> list[Node]:
        """Greedy continuations of each start node, all concurrently, ``steps`` steps each (None: to the
        end); returns where each one ended."""
        ends = list(starts)
        done = 0
        while steps is None or done < steps:
            live = [i for i, n in enumerate(ends) if not n.finished]
            if not live or self.stopped:
                break
            got = await self.expand([(ends[i], 1) for i in live], greedy=True, kind=kind)
            for i, kids in zip(live, got):
                if kids:
                    ends[i] = kids[0]
            done += 1
        return ends

    # --- answers -----------------------------------------------------------------------------------
    def finished(self) -> list[Node]:
        return [n for n in self.tree.nodes if n.kind == "step" and n.finished]

    def candidate(self, node: Node) -> Candidate:
        if node.path_score is None:  # never scored (the budget stopped the scorer): no score to report
            scores = {}
        else:
            scores = {self.scorer.name: node.path_score if math.isfinite(node.path_score) else 0.0}
        return Candidate(node.text, self.read(node.text), node.path_tokens, node.finish_reason or "length", scores)

    def choose(self, pool: Sequence[Node], how: str | None = None) -> tuple[list[Candidate], int | None, dict | None]:
        """Candidates for the pool and the chosen one: best score, or a (weighted) vote over answers."""
        how = how or self.strategy.select
        self.candidate_nodes, self.selection = [n.id for n in pool], how
        candidates = [self.candidate(n) for n in pool]
        scores = [c.scores.get(self.scorer.name) for c in candidates]
        chosen, totals = choose(how, [c.answer for c in candidates], scores, self.gen.seed)
        return candidates, chosen, totals

    def trace(self, candidates: list[Candidate], chosen: int | None, **info) -> Trace:
        cap = self.strategy.tree_max_nodes
        tree = None if cap == 0 else self.tree.to_json(cap)
        return make_trace(self.problem, self.strategy.name, candidates, chosen, tree=tree,
                          scorer=self.scorer.name, nodes=len(self.tree.nodes),
                          engine_calls_per_step=self.engine_calls_per_step, budget_stop=self.stopped,
                          candidate_nodes=self.candidate_nodes if len(self.candidate_nodes) == len(candidates) else None,
                          selection=self.selection, **info)


def best_first(nodes: Sequence[Node], key=lambda n: n.path_score) -> list[Node]:
    """Nodes by score, best first; ties go to the older node (lower id)."""
    return sorted(nodes, key=lambda n: (-_finite(key(n)), n.id))


def _finite(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else -math.inf


def softmax(values: Sequence[float], temperature: float) -> list[float]:
    xs = [_finite(v) / temperature for v in values]
    top = max(xs)
    if top == -math.inf:
        return [1.0 / len(xs)] * len(xs)
    exps = [math.exp(x - top) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]
