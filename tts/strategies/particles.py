"""Particle filtering over steps (Puri et al. 2025, "A probabilistic inference approach to inference-time
scaling of LLMs using particle-based Monte Carlo methods").

N particles start at the root. At every step each unfinished particle is extended by one sampled step
(particles that share a node after resampling go out as one request with n = their number, so the engine
computes their shared prefix once); finished particles stay as they are. Each particle is then weighted by
softmax(score / temperature) of its aggregated step score and N particles are drawn with replacement in
proportion to the weights (multinomial resampling) with an RNG seeded from the problem's seed, so a rerun
resamples identically. The search ends when every particle is finished (or at the depth/token limits);
the answer is the best-scored final particle, or a (weighted) vote over the final particles.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from ..runtime import Generator, derive_seed
from ..types import Problem, Trace
from .beam import tree_temperature_option
from .sampling import samples_option
from .tree import Node, Search, TreeSearch, softmax


@dataclass(frozen=True)
class ParticleFilter(TreeSearch):
    n: int = samples_option(8, "particles")
    temperature: float = tree_temperature_option(1.0, "softmax temperature of the resampling weights")
    name: str = "particle_filter"

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        s = Search(self, problem, gen)
        rng = random.Random(derive_seed(gen.seed, "particle_filter"))
        population: list[Node] = [s.tree.root] * self.n
        history: list[list[int]] = []  # the particles (node ids) after each resampling
        weights_log: list[list[float]] = []
        while not s.stopped:
            counts = Counter(p.id for p in population if not p.finished)
            if not counts:
                break
            nodes = [s.tree.nodes[i] for i in sorted(counts)]
            got = await s.expand([(node, counts[node.id]) for node in nodes])
            fresh = {node.id: list(kids) for node, kids in zip(nodes, got)}
            extended: list[Node] = []
            for p in population:
                if p.finished:
                    extended.append(p)
                elif fresh[p.id]:
                    extended.append(fresh[p.id].pop(0))
                # else: the budget refused its step; the particle is dropped
            if not extended:
                break
            await s.score(extended)
            weights = softmax([p.path_score for p in extended], self.temperature)
            weights_log.append([round(w, 6) for w in weights])
            population = rng.choices(extended, weights=weights, k=self.n)
            history.append([p.id for p in population])
        pool = sorted({p.id: p for p in population if p.parent is not None}.values(), key=lambda p: p.id)
        candidates, chosen, votes = s.choose(pool)
        return s.trace(candidates, chosen, votes=votes, particles=history, weights=weights_log)

