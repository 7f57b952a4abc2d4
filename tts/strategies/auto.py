"""``auto``: route each question to the strategy a compute-optimal policy chose for its difficulty and budget.

Per problem (Snell et al. 2024, section 3, with a predicted rather than oracle difficulty):

1. draw the policy's ``probes`` cheap samples (metered like any other request) and score them with the
   policy's verifier;
2. turn the scores into the difficulty bin the policy was fitted with (routing.Predictor);
3. take the policy's rule for that bin at the budget to route for (``route_budget``; else the ledger's
   per-problem budget in the policy's unit, ``--budget-tokens`` or ``--budget-flops``; else the policy's
   largest budget) and run it on the same generator, so the ledger caps probes and strategy together:
   the per-problem budget is never exceeded. A ``mean`` policy's budgets are averages over questions: its
   rule for a hard bin may cost several times the budget and its rule for a hopeless one far less; under a
   per-problem cap such a rule is swapped for the bin's best one that fits (routing.Policy.choose).

When the rule is a sampling strategy (single, majority, best-of-N, weighted majority) the probes are its
first samples: only the missing ones are drawn (in as many requests as the budget admits, since the ledger
reserves worst-case lengths), and the selection rule runs over all of them (never fewer than the probes).
Any other strategy (revise, beam search, ...) runs from scratch and its candidates follow the probes'.
If it ends without an answer (its budget ran out), the probes' majority answer stands.

Policies are written by ``experiments/compute_optimal.py``. Packaged ones (tts/strategies/policies/, by
name): ``embedded``, fitted for the embedded SmolLM2-135M-Instruct on the built-in arithmetic levels (the
default), and ``testbed``, fitted for the testbed policy on steps2..steps6 with testbed-verifier. ``tts run``
and ``tts serve`` pick the packaged policy named like ``--model`` when there is one; for any other model,
fit and pass your own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..budget import BudgetExhausted
from ..options import option, takes
from ..routing import SAMPLING, Policy, PolicyError
from ..verifiers.registry import resolve
from ..runtime import Generator, Strategy
from ..types import Candidate, Completion, Problem, SamplingParams, Trace
from .sampling import Extractor, answer_reader, key_reader, make_trace, score_or_nothing
from .select import choose


#: packaged routing policies by name (package data written by experiments/compute_optimal.py
#: --write-default-policy), read like any policy file
POLICIES = Path(__file__).with_name("policies")
DEFAULT_POLICY = POLICIES / "embedded.json"


def default_policy() -> Policy:
    return Policy.load(DEFAULT_POLICY)


def packaged_policies() -> list[str]:
    return sorted(p.stem for p in POLICIES.glob("*.json"))


def load_policy(spec: str) -> Policy:
    """The packaged policy of that name, else a policy file (one-line PolicyError). A packaged name wins
    over a same-named file in the working folder, so the names tts serve lets clients give never read one."""
    if spec in packaged_policies():
        return Policy.load(POLICIES / f"{spec}.json")
    if not Path(spec).exists():
        raise PolicyError(f"{spec}: no such routing policy file (or packaged name: {', '.join(packaged_policies())})")
    return Policy.load(spec)


def policy_for_model(model: str) -> str | None:
    """The packaged policy fitted for ``model`` (its name is the model's, e.g. ``testbed``), if any."""
    return model if model in packaged_policies() else None


async def draw(gen: Generator, problem: Problem, params: SamplingParams, n: int) -> tuple[list[Completion], str | None]:
    """Up to ``n`` samples in as many requests as the budget admits (the ledger clips a request to what
    it can pay for at worst-case length; once a request is settled at its real length, more may fit)."""
    out: list[Completion] = []
    while len(out) < n:
        try:
            got = await gen.sample(problem, params, n=n - len(out))
        except BudgetExhausted as exc:
            return out, str(exc)
        if not got:
            break
        out += got
    return out, None


@dataclass(frozen=True)
class Auto(Strategy):
    policy: Policy = field(default_factory=default_policy)
    params: SamplingParams = field(default_factory=SamplingParams)
    #: strategy options for the routed strategies (command-line options; the rule's own settings win)
    options: Mapping[str, Any] = field(default_factory=dict)
    extract: Extractor | None = None  # None: by the problem's prompt format
    #: a routing policy file read into ``policy`` (its content keys results, not its name)
    routing_policy: str | None = option(None, hashed=False, metavar="FILE|NAME", remote=packaged_policies,
                                        help="routing policy JSON from experiments/compute_optimal.py, or a packaged "
                                             "name (" + ", ".join(packaged_policies()) + "; default: the one named "
                                             "like --model, else embedded)")
    route_budget: float | None = option(None, low=0, low_open=True,
                                        help="budget per question to route for, in the policy's unit (default: the "
                                             "per-problem budget in that unit, else the policy's largest)")
    name: str = "auto"
    width_option = None  # the policy's rules say how many samples

    def __post_init__(self) -> None:
        from . import STRATEGIES

        super().__post_init__()
        if self.routing_policy is not None:
            object.__setattr__(self, "policy", load_policy(self.routing_policy))
        unknown = sorted({r.setting.strategy for r in self.policy.rules} - set(STRATEGIES) - {"auto"})
        if unknown or any(r.setting.strategy == "auto" for r in self.policy.rules):
            raise PolicyError(f"{self.policy_source}: rules name unknown strategies {', '.join(unknown) or 'auto'}; "
                              f"choose from {', '.join(s for s in STRATEGIES if s != 'auto')}")
        resolve(self.policy.predictor.verifier)  # a bad spec fails here, not mid-run

    @classmethod
    def shared_settings(cls, params: SamplingParams, options: Mapping[str, Any]) -> dict[str, Any]:
        # the options of the strategies it may route to travel with it
        rest = {k: v for k, v in options.items() if v is not None and not takes(cls, k)}
        return {"params": params, "options": rest}

    @property
    def policy_source(self) -> str:
        return self.routing_policy or "default"

    def _budget(self, gen: Generator) -> float | None:
        limit = getattr(gen.ledger.budget, self.policy.unit)
        return float(limit) if limit is not None else None

    async def solve(self, problem: Problem, gen: Generator) -> Trace:
        pred = self.policy.predictor
        verifier = resolve(pred.verifier)
        params = replace(self.params, logprobs=self.params.logprobs or verifier.needs_logprobs)
        read = answer_reader(self.extract, problem)
        key = key_reader(self.extract, problem)

        probes, stopped = await draw(gen, problem, params, pred.probes)
        scores, refused = await score_or_nothing(verifier, problem, probes, gen.ledger)
        stopped = stopped or refused
        answers = [read(c.text) for c in probes]
        vote_keys = [None if a is None else (key(a) if key else a) for a in answers]
        feature = pred.value(scores, vote_keys, [c.num_tokens for c in probes])
        difficulty = pred.binning.bin(feature)
        cap = self._budget(gen)
        budget = self.route_budget if self.route_budget is not None else cap
        rule = self.policy.choose(difficulty, budget, cap=cap)
        route = {"bin": difficulty, "feature": None if feature != feature else round(feature, 6),
                 "budget": budget, "rule": rule.setting.label, "probes": len(probes), "policy": self.policy_source}

        candidates = [Candidate.from_completion(c, a, {} if s is None else {verifier.name: s})
                      for c, a, s in zip(probes, answers, scores)]
        if rule.setting.strategy in SAMPLING:
            more, stop2 = ([], None) if stopped else await draw(
                gen, problem, params, max(0, rule.setting.n - len(probes)))
            stopped = stopped or stop2
            if more:
                extra, refused = await score_or_nothing(verifier, problem, more, gen.ledger)
                stopped = stopped or refused
                candidates += [Candidate.from_completion(c, read(c.text), {} if s is None else {verifier.name: s})
                               for c, s in zip(more, extra)]
            chosen, votes = _select(rule.setting.strategy, candidates, verifier.name, gen.seed, key)
            return make_trace(problem, self.name, candidates, chosen, route=route, votes=votes, budget_stop=stopped)

        inner_trace = None if stopped else await self._inner(rule, verifier).solve(problem, gen)
        if inner_trace is not None:
            offset = len(candidates)
            candidates += list(inner_trace.candidates)
            stopped = inner_trace.info.get("budget_stop")
            if inner_trace.chosen is not None:
                return make_trace(problem, self.name, candidates, offset + inner_trace.chosen, route=route,
                                  inner={k: v for k, v in inner_trace.info.items() if k not in ("tree", "budget_stop")},
                                  budget_stop=stopped)
        route["fallback"] = "probe majority"
        chosen, votes = _select("majority", candidates[: len(probes)], verifier.name, gen.seed, key)
        return make_trace(problem, self.name, candidates, chosen, route=route, votes=votes, budget_stop=stopped)

    def _inner(self, rule, verifier) -> Strategy:
        from . import create

        options = dict(self.options)
        if not self.policy.predictor.verifier.startswith("confidence_"):
            options.setdefault("verifier", verifier)  # tree search scored by the policy's reward model
        options.update(dict(rule.setting.options))
        return create(rule.setting.strategy, rule.setting.n, self.params, options)


#: the selection rule of each sampling strategy a policy may route to (tts.strategies.select)
_RULES = {"best_of_n": "best", "majority": "majority", "weighted_majority": "weighted"}


def _select(strategy: str, candidates: list[Candidate], verifier: str, seed: int, key) -> tuple[int | None, dict | None]:
    """A sampling strategy's selection rule over candidates already scored by ``verifier``."""
    if not candidates:
        return None, None
    if strategy == "single":
        return 0, None
    scores = [c.scores.get(verifier) for c in candidates]
    return choose(_RULES[strategy], [c.answer for c in candidates], scores, seed, key)
