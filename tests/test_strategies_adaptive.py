"""Weighted majority, adaptive consistency, DeepConf and sequential revisions on scripted replies."""

import math
from collections import Counter

import pytest

from tts.backends.scripted import ScriptedBackend, ScriptedReply
from tts.budget import Budget
from tts.runtime import run_async
from tts.strategies import AdaptiveConsistency, DeepConf, Revise, WeightedMajority, create
from tts.strategies.adaptive import beta_leader_probability, dirichlet_leader_probability
from tts.strategies.deepconf import lowest_quantile
from tts.types import Problem, SamplingParams
from tts.verifiers.answers import same_answer
from tts.verifiers.confidence import ConfidenceVerifier

from .conftest import run

P = Problem(id="q", prompt="What is 2 + 2?", answer="4")


def solve(strategy, script, budget=None):
    backend = ScriptedBackend(script)
    [result] = run(run_async([P], strategy, backend, grade=same_answer, budget=budget))
    return result, backend


def R(text, *logprobs):
    return ScriptedReply(text, list(logprobs))


def test_weighted_majority_lets_confident_minority_win():
    replies = [R("5", -3.0), R("5", -3.0), R("4", -0.1)]
    r, _ = solve(WeightedMajority(ConfidenceVerifier(), n=3), {"2 + 2": replies})
    # weights exp(-3) * 2 = 0.0996 < exp(-0.1) = 0.905
    assert r.trace.answer == "4" and r.trace.chosen == 2
    assert r.trace.info["votes"] == pytest.approx({"5": 2 * math.exp(-3.0), "4": math.exp(-0.1)})


def test_weighted_majority_sums_equivalent_notations():
    replies = [R("1/2", -0.5, -0.5, -0.5), R("0.5", -0.5, -0.5, -0.5), R("1", -0.2)]
    r, _ = solve(WeightedMajority(ConfidenceVerifier(), n=3), {"2 + 2": replies})
    assert r.trace.answer == "1/2"


def test_beta_rule_is_exact():
    assert beta_leader_probability(Counter({"4": 2})) == pytest.approx(1 - 0.5**3)
    assert beta_leader_probability(Counter({"4": 4})) == pytest.approx(31 / 32)
    # Beta(3, 2): P(X > 1/2) = 11/16
    assert beta_leader_probability(Counter({"4": 2, "5": 1})) == pytest.approx(11 / 16)
    assert beta_leader_probability(Counter()) == 0.0


def test_dirichlet_rule_is_seeded_and_sensible():
    counts = Counter({"4": 6, "5": 1, "6": 1})
    p = dirichlet_leader_probability(counts, seed=3)
    assert p == dirichlet_leader_probability(counts, seed=3)
    assert 0.9 < p <= 1.0
    assert dirichlet_leader_probability(Counter({"4": 2, "5": 2}), seed=1) < 0.7


def test_adaptive_stops_once_settled_and_never_passes_the_cap():
    # all samples agree: after 4 samples P = 31/32 >= 0.95, so it stops after 2 batches of 2
    r, backend = solve(AdaptiveConsistency(n=16, batch=2), {"2 + 2": ["4"]})
    assert len(r.trace.candidates) == 4 and r.trace.answer == "4"
    assert backend.batches == [1, 1]  # two requests of n=2
    assert r.trace.info["leader_probability"] == pytest.approx(31 / 32)
    # answers that never settle: the cap N stops it
    r, _ = solve(AdaptiveConsistency(n=6, batch=2), {"2 + 2": ["4", "5"]})
    assert len(r.trace.candidates) == 6
    assert r.trace.ledger["generated_tokens"] == 6


def test_adaptive_respects_the_budget():
    r, _ = solve(AdaptiveConsistency(n=16, batch=2, params=SamplingParams(max_tokens=1)), {"2 + 2": ["4", "5"]},
                 budget=Budget(generated_tokens=5))
    assert r.trace.ledger["generated_tokens"] <= 5 and "budget" in r.trace.info["budget_stop"]


def test_deepconf_offline_keeps_only_confident_traces():
    replies = [R("5 5", -0.5, -0.5), R("5 5", -0.5, -0.5), R("4 4", -0.1, -0.1), R("5 5", -0.6, -0.1)]
    r, _ = solve(DeepConf(n=4, mode="offline", keep=0.25, window=2), {"2 + 2": replies})
    assert r.trace.info["voters"] == 1 and r.trace.answer == "4"
    r, _ = solve(DeepConf(n=4, mode="offline", keep=1.0, window=2), {"2 + 2": replies})
    assert r.trace.answer == "5"  # everyone votes: three fairly confident 5s outweigh one 4


def test_deepconf_online_stops_unconfident_traces_in_the_engine():
    warm = [R("4 4 4 4", -0.1, -0.1, -0.1, -0.1), R("4 4 4 4", -0.2, -0.2, -0.2, -0.2)]
    later = [R("5 5 5 5", -0.1, -3.0, -3.0, -0.1), R("4 4 4 4", -0.1, -0.1, -0.1, -0.1)]
    script = lambda prompt, i: (warm + later)[i]
    r, _ = solve(DeepConf(n=4, mode="online", keep=0.5, warmup=2, window=2), script)
    threshold = r.trace.info["threshold"]
    assert threshold == pytest.approx(-0.2)  # the lower of the two warm-up confidences
    stopped = [c for c in r.trace.candidates if c.finish_reason == "low_confidence"]
    assert len(stopped) == 1 and stopped[0].num_tokens == 2  # cut after its first bad window
    assert r.trace.ledger["generated_tokens"] == 4 + 4 + 2 + 4
    assert r.trace.answer == "4" and r.trace.info["voters"] == 3


def test_lowest_quantile_is_a_real_value():
    assert lowest_quantile([-1.0, -0.5, -0.2, -0.1], 0.1) == -1.0
    assert lowest_quantile([-1.0, -0.5, -0.2, -0.1], 0.5) == -0.5


def test_revise_puts_previous_attempts_in_context():
    seen = []

    def script(prompt, i):
        seen.append(prompt)
        return ["5", "4", "4"][prompt.count("Check your previous answer")]

    r, backend = solve(Revise(n=6, revisions=3), script)
    assert r.trace.info["chains"] == 2 and len(r.trace.candidates) == 6
    assert r.trace.info["depth"] == [0, 1, 2, 0, 1, 2]
    assert r.trace.answer == "4"
    # both chains' first attempts reached the engine in one batch
    assert backend.batches[0] == 2
    last = max(seen, key=len)
    assert "Assistant: 5" in last and "Assistant: 4" in last


def test_revise_with_a_verifier_picks_the_best_attempt():
    replies = [R("5", -2.0), R("4", -0.1)]
    script = lambda prompt, i: replies[prompt.count("Check your previous answer")]
    r, _ = solve(Revise(n=2, revisions=2, verifier=ConfidenceVerifier()), script)
    assert r.trace.answer == "4" and r.trace.chosen == 1


def test_strategy_settings_are_validated():
    with pytest.raises(ValueError, match="AdaptiveConsistency.rule"):
        AdaptiveConsistency(rule="gamma")
    with pytest.raises(ValueError, match="DeepConf.warmup"):
        DeepConf(n=2, warmup=3)
    with pytest.raises(ValueError, match="Revise.revisions"):
        Revise(n=2, revisions=3)
    s = create("adaptive", 8, SamplingParams(), {"adaptive_threshold": 0.8, "revisions": 2})
    assert (s.n, s.threshold) == (8, 0.8)
