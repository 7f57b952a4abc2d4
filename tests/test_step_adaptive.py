"""MUR and phi-decoding on a scripted tree with known step uncertainties and scores.

The scripted model names each step after its parent's step plus a letter (the k-th sample drawn from a
prefix gets the k-th letter, counted across requests), so the children of step "A" are "AA", "AB", ...;
a step's token logprobs are all -U[name] (its uncertainty), and steps at FINAL depth end the solution
with an answer. The scripted step scorer scores a partial solution by its newest step's name.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from tts.backends.scripted import ScriptedBackend, ScriptedReply, tokenize
from tts.budget import Budget
from tts.runtime import derive_seed, run_async
from tts.strategies import create
from tts.strategies.step_adaptive import MUR, PhiDecoding
from tts.strategies.steps import FunctionStepScorer
from tts.types import Problem, SamplingParams

from .conftest import run

P = Problem(id="q", prompt="Solve it.", answer="7")
PARAMS = SamplingParams(max_tokens=200, temperature=1.0)
FINAL = 4


def steps_of(prompt: str) -> list[str]:
    prefix = prompt.split("Assistant: ", 1)[1]
    return [s for s in prefix.split("\n\n") if s.strip()]


def script(u: dict[str, float], answers: dict[str, int], final: int = FINAL, default_u: float = 0.1):
    def reply(prompt: str, index: int) -> ScriptedReply:
        steps = steps_of(prompt)
        name = (steps[-1].split()[0] if steps else "") + "ABCDEFGH"[index % 8]
        if len(steps) + 1 >= final:
            text = f"{name} so the answer is {answers.get(name, 0)}"
        else:
            text = f"{name}\n\nnext"  # the token after the blank line completes the stop string
        return ScriptedReply(text, [-u.get(name, default_u)] * len(tokenize(text)))
    return reply


def scorer(scores: dict[str, float]):
    return FunctionStepScorer(lambda text: scores.get(text.split("\n\n")[-1].split()[0], 0.0), name="prm")


def solve(strategy, backend, problems=(P,), budget=None, seed=0):
    return run(run_async(list(problems), strategy, backend, budget=budget, seed=seed))


def name_of(trace, node_id: int) -> str:
    return {n["id"]: n for n in trace.info["tree"]["nodes"]}[node_id]["step"].split()[0]


# --- MUR ---------------------------------------------------------------------------------------------

U = {"A": 0.5, "AA": 1.0, "AB": 0.2, "AC": 0.3, "AD": 0.9, "ACA": 0.05, "ACAA": 2.0, "ACAB": 0.4,
     "ACAC": 0.6, "ACAD": 0.7}
MUR_SCORES = {"AA": 0.2, "AB": 0.5, "AC": 0.9, "AD": 0.1, "ACAA": 0.1, "ACAB": 0.8, "ACAC": 0.3, "ACAD": 0.95}
MUR_ANSWERS = {"ACAD": 7, "ACAA": 3}


def expected_mur(alpha: float, gamma: float):
    """MUR's rule written out independently: (first step, scaled?) for each depth on this tree."""
    momentum, out, name = 0.0, [], ""
    for depth in range(FINAL):
        first = name + "A"
        u = U.get(first, 0.1)
        scaled = depth > 0 and math.exp(-u) < gamma * math.exp(-momentum)
        if scaled:
            kids = [name + c for c in "ABCD"]
            chosen = max(kids, key=lambda k: (MUR_SCORES.get(k, 0.0), -kids.index(k)))
        else:
            chosen = first
        out.append((first, scaled, chosen))
        momentum = alpha * momentum + (1 - alpha) * U.get(chosen, 0.1)
        name = chosen
    return out


def test_mur_spends_m_candidates_exactly_on_uncertain_steps_and_takes_the_best_scored():
    plan = expected_mur(0.9, 0.8)
    # A (first, never scaled); AA is uncertain (0.37 < 0.8 * 0.95): AA..AD scored, AC best; ACA is
    # confident; ACAA is uncertain: ACAA..ACAD, ACAD (0.95) best and its answer 7.
    assert [(f, s, c) for f, s, c in plan] == [("A", False, "A"), ("AA", True, "AC"), ("ACA", False, "ACA"),
                                                 ("ACAA", True, "ACAD")]
    s = scorer(MUR_SCORES)
    backend = ScriptedBackend(script(U, MUR_ANSWERS))
    [r] = solve(MUR(n=4, momentum=0.9, threshold=0.8, scorer=s, params=PARAMS), backend)
    t = r.trace
    assert t.answer == "7" and t.candidates[t.chosen].text == "A\n\nAC\n\nACA\n\nACAD so the answer is 7"
    log = t.info["mur"]
    assert [e["scaled"] for e in log] == [s_ for _, s_, _ in plan] and t.info["scaled_steps"] == 2
    for entry, (first, scaled, chosen) in zip(log, plan):
        assert name_of(t, entry["node"]) == first
        if scaled:  # the first draw and M - 1 more: M candidates, all scored, the best taken
            assert [name_of(t, i) for i in entry["candidates"]] == [first[:-1] + c for c in "ABCD"]
            assert name_of(t, entry["chosen"]) == chosen
    # Engine requests: one per step, plus one (n=3) at each uncertain step; the scorer ran only there.
    assert [q.params.n for q in backend.requests] == [1, 1, 3, 1, 1, 3]
    assert s.calls == [4, 4]
    # The momentum each step was compared with is MUR's running mean of the accepted steps' uncertainty.
    assert log[1]["momentum"] == pytest.approx(0.05) and log[2]["momentum"] == pytest.approx(0.075)
    assert [name_of(t, i) for i in t.info["path"]] == ["A", "AC", "ACA", "ACAD"]


def test_mur_warmup_zero_checks_the_first_step_against_a_momentum_of_zero():
    # A's confidence exp(-0.5) = 0.61 < 0.8 * exp(0): with no warm-up the first step is scaled too (its
    # candidates A..D all score 0, so the first draw stays), and the rest of the search is as before.
    s = scorer(MUR_SCORES)
    backend = ScriptedBackend(script(U, MUR_ANSWERS))
    [r] = solve(MUR(n=4, warmup=0, scorer=s, params=PARAMS), backend)
    log = r.trace.info["mur"]
    assert [e["scaled"] for e in log] == [True, True, False, True]
    assert [name_of(r.trace, i) for i in log[0]["candidates"]] == ["A", "B", "C", "D"]
    assert [q.params.n for q in backend.requests] == [1, 3, 1, 3, 1, 1, 3] and s.calls == [4, 4, 4]
    assert r.trace.answer == "7"
    # A first step confident enough passes even without warm-up.
    [r] = solve(MUR(n=4, warmup=0, scorer=scorer(MUR_SCORES), params=PARAMS),
                ScriptedBackend(script({**U, "A": 0.01}, MUR_ANSWERS)))
    assert r.trace.info["mur"][0]["scaled"] is False


def test_mur_without_uncertain_steps_is_one_sample_and_no_verifier():
    s = scorer(MUR_SCORES)
    backend = ScriptedBackend(script(U, MUR_ANSWERS))
    [r] = solve(MUR(n=4, threshold=1e-9, scorer=s, params=PARAMS), backend)
    assert r.trace.info["scaled_steps"] == 0 and s.calls == []
    assert r.trace.candidates[0].text.startswith("A\n\nAA\n\nAAA\n\nAAAA")
    assert [q.params.n for q in backend.requests] == [1] * FINAL
    # n=1: nothing to choose between, never scaled.
    [r] = solve(MUR(n=1, scorer=scorer(MUR_SCORES), params=PARAMS), ScriptedBackend(script(U, MUR_ANSWERS)))
    assert r.trace.info["scaled_steps"] == 0


def test_mur_batches_problems_and_stops_honestly_under_a_budget():
    problems = [Problem(id=f"q{i}", prompt=f"Question {i}?") for i in range(3)]
    backend = ScriptedBackend(script(U, MUR_ANSWERS))
    results = solve(MUR(n=4, scorer=scorer(MUR_SCORES), params=PARAMS), backend, problems)
    assert backend.batches[:3] == [3, 3, 3]  # every problem's step goes out in one engine batch
    assert all(r.trace.answer == "7" for r in results)
    # Three engine calls: A, AA, then the uncertain step's extra candidates are refused.
    [r] = solve(MUR(n=4, scorer=scorer(MUR_SCORES), params=PARAMS), ScriptedBackend(script(U, MUR_ANSWERS)),
                budget=Budget(engine_calls=2))
    t = r.trace
    assert "engine_calls" in t.info["budget_stop"] and t.ledger["engine_calls"] <= 2
    assert t.candidates[t.chosen].text == "A\n\nAA"  # the path so far is the answer so far


# --- phi-decoding -------------------------------------------------------------------------------------

PHI_SCORES = {"AA": 0.2, "BA": 0.9, "CA": 0.5, "A": 0.3, "B": 0.6, "C": 0.1}


def test_phi_decoding_draws_the_next_step_by_softmax_of_foresight_values():
    s = scorer(PHI_SCORES)
    strategy = PhiDecoding(n=3, foresight=1, value="verifier", temperature=0.5, scorer=s, params=PARAMS)
    backend = ScriptedBackend(script({}, {}))
    [r] = solve(strategy, backend)
    t = r.trace
    first = t.info["phi"][0]
    assert [name_of(t, i) for i in first["candidates"]] == ["A", "B", "C"]
    # Each candidate is rolled out one greedy step (A -> AA, ...), valued by the score where that ends.
    assert [name_of(t, i) for i in first["foresight_ends"]] == ["AA", "BA", "CA"]
    assert first["verifier"] == pytest.approx([0.2, 0.9, 0.5])
    exps = [math.exp(v / 0.5) for v in (0.2, 0.9, 0.5)]
    assert first["probabilities"] == pytest.approx([e / sum(exps) for e in exps], abs=1e-6)
    # The draws come from an RNG seeded by the problem's seed, in order over the recorded distributions.
    rng = random.Random(derive_seed(derive_seed(0, "q", "phi_decoding"), "phi_decoding"))
    for entry in t.info["phi"]:
        pick = rng.choices(range(len(entry["candidates"])), weights=entry["probabilities"])[0]
        assert entry["chosen"] == entry["candidates"][pick]
    assert [q.params.temperature for q in backend.requests[:4]] == [1.0, 0.0, 0.0, 0.0]  # greedy foresight
    assert s.calls[0] == 6  # candidates and their foresight steps, in one scorer call
    kinds = Counter(n["kind"] for n in t.info["tree"]["nodes"])
    assert kinds["lookahead"] > 0 and t.candidates[t.chosen].finish_reason == "stop"
    # Same seed, same draws.
    [again] = solve(strategy, ScriptedBackend(script({}, {})))
    assert again.trace.info["path"] == t.info["path"]


def test_phi_decoding_values_leave_the_shared_path_out():
    # Under min, a candidate's value is the weakest of its own step and its foresight steps: the chosen
    # path before it (shared by all candidates) would otherwise make them all alike. One candidate per
    # step: A (foresight AA), then AB (foresight ABA; AA was the foresight's draw from A).
    scores = {"A": 0.05, "AA": 0.7, "AB": 0.9, "ABA": 0.6}
    strategy = PhiDecoding(n=1, foresight=1, value="verifier", aggregation="min", scorer=scorer(scores),
                           params=PARAMS)
    [r] = solve(strategy, ScriptedBackend(script({}, {})))
    first, second = r.trace.info["phi"][:2]
    assert [name_of(r.trace, first["chosen"]), name_of(r.trace, second["chosen"])] == ["A", "AB"]
    assert first["verifier"] == pytest.approx([0.05]) and second["verifier"] == pytest.approx([0.6])


def test_phi_decoding_selection_frequencies_follow_the_foresight_values():
    strategy = PhiDecoding(n=3, foresight=1, value="verifier", temperature=0.5, scorer=scorer(PHI_SCORES),
                           params=PARAMS, max_depth=2)
    problems = [Problem(id=f"p{i}", prompt=f"Question {i}?") for i in range(400)]
    results = solve(strategy, ScriptedBackend(script({}, {}, final=3)), problems)
    firsts = Counter(r.trace.candidates[0].text.split("\n\n")[0] for r in results)
    exps = [math.exp(v / 0.5) for v in (0.2, 0.9, 0.5)]
    for name, e in zip("ABC", exps):
        p = e / sum(exps)
        assert abs(firsts[name] / 400 - p) < 4 * math.sqrt(p * (1 - p) / 400), (name, firsts)


def test_phi_decoding_likelihood_both_and_pruning():
    # Likelihood: the mean token logprob of the candidate and its foresight; no scorer call at all.
    u = {"A": 0.1, "AA": 0.5, "B": 1.0, "BA": 0.2, "C": 3.0, "CA": 3.0}
    s = scorer(PHI_SCORES)
    [r] = solve(PhiDecoding(n=3, foresight=1, value="likelihood", temperature=1.0, scorer=s, params=PARAMS),
                ScriptedBackend(script(u, {})))
    first = r.trace.info["phi"][0]
    assert first["likelihood"] == pytest.approx([-0.3, -0.6, -3.0])  # two tokens each step
    exps = [math.exp(v) for v in (-0.3, -0.6, -3.0)]
    assert first["probabilities"] == pytest.approx([e / sum(exps) for e in exps], abs=1e-6)
    assert s.calls == []
    # Both: the mean of the two distributions.
    [r] = solve(PhiDecoding(n=3, foresight=1, value="both", temperature=1.0, scorer=scorer(PHI_SCORES),
                            params=PARAMS), ScriptedBackend(script(u, {})))
    first = r.trace.info["phi"][0]
    ev = [math.exp(v) for v in (0.2, 0.9, 0.5)]
    expected = [(a / sum(exps) + b / sum(ev)) / 2 for a, b in zip(exps, ev)]
    assert first["probabilities"] == pytest.approx(expected, abs=1e-6)
    # Pruning at 1 standard deviation: C (mean logprob -3) gets no foresight and cannot be drawn.
    backend = ScriptedBackend(script(u, {}))
    [r] = solve(PhiDecoding(n=3, foresight=1, value="verifier", prune=1.0, scorer=scorer(PHI_SCORES),
                            params=PARAMS), backend)
    first = r.trace.info["phi"][0]
    assert [name_of(r.trace, i) for i in first["pruned"]] == ["C"]
    assert [name_of(r.trace, i) for i in first["foresight_ends"]] == ["AA", "BA"]
    assert [q.params.n for q in backend.requests[:3]] == [3, 1, 1]  # two foresight requests, not three


def test_phi_decoding_stops_early_when_the_foresights_agree():
    answers = {"AAAA": 7, "BAAA": 7, "CAAA": 7}
    backend = ScriptedBackend(script({}, answers))
    strategy = PhiDecoding(n=3, value="verifier", stop_agreement=1.0, scorer=scorer(PHI_SCORES), params=PARAMS)
    [r] = solve(strategy, backend)
    t = r.trace
    assert len(t.info["phi"]) == 1 and t.info["phi"][0]["stopped_early"]
    assert t.answer == "7" and t.candidates[t.chosen].text.count("\n\n") == FINAL - 1
    # One sampling request and three rollouts of three greedy steps each: nothing after the agreement.
    assert len(backend.requests) == 1 + 3 * (FINAL - 1)
    # Without agreement the same search goes on step by step.
    [r] = solve(PhiDecoding(n=3, value="verifier", scorer=scorer(PHI_SCORES), params=PARAMS),
                ScriptedBackend(script({}, answers)))
    assert len(r.trace.info["phi"]) == FINAL and r.trace.answer is not None


def test_phi_decoding_budget_stop_and_registry():
    [r] = solve(PhiDecoding(n=3, foresight=1, scorer=scorer(PHI_SCORES), params=PARAMS),
                ScriptedBackend(script({}, {})), budget=Budget(engine_calls=3))
    t = r.trace
    assert t.info["budget_stop"] and t.ledger["engine_calls"] <= 3
    strategy = create("phi_decoding", 5, PARAMS, {"foresight_steps": 2, "phi_value": "likelihood",
                                                  "phi_prune": 0.5, "tree_temperature": 0.3})
    assert (strategy.n, strategy.foresight, strategy.value, strategy.prune, strategy.temperature) == (5, 2, "likelihood", 0.5, 0.3)
    strategy = create("mur", 6, PARAMS, {"mur_momentum": 0.5, "mur_threshold": 0.9})
    assert (strategy.n, strategy.momentum, strategy.threshold) == (6, 0.5, 0.9)
    with pytest.raises(ValueError, match="mur_threshold"):
        create("mur", 4, PARAMS, {"mur_threshold": 1.5})
    with pytest.raises(ValueError, match="phi_value"):
        create("phi_decoding", 4, PARAMS, {"phi_value": "votes"})
    with pytest.raises(ValueError, match="momentum"):
        MUR(momentum=1.0)


# --- budgets --------------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VARIANTS = [
    lambda s: MUR(n=4, warmup=0, threshold=0.99, scorer=s, params=PARAMS),
    lambda s: PhiDecoding(n=3, stop_agreement=0.5, scorer=s, params=PARAMS),
    lambda s: PhiDecoding(n=3, foresight=1, prune=0.5, value="both", scorer=s, params=PARAMS),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variant=st.integers(0, len(VARIANTS) - 1), unit=st.sampled_from(["generated_tokens", "engine_calls", "flops"]),
       limit=st.integers(1, 80), u=st.dictionaries(st.sampled_from(["A", "B", "AA", "AB", "BA", "AAA"]),
                                                     st.floats(0.0, 3.0), max_size=6))
def test_mur_and_phi_never_exceed_a_budget_and_answer_from_what_they_have(variant, unit, limit, u):
    value = limit * 1e7 if unit == "flops" else limit
    strategy = VARIANTS[variant](scorer(MUR_SCORES))
    [r] = solve(strategy, ScriptedBackend(script(u, MUR_ANSWERS)), budget=Budget(**{unit: value}))
    t = r.trace
    assert t.ledger[unit] <= value
    assert t.info.get("budget_stop") or (t.chosen is not None and t.candidates[t.chosen].finish_reason == "stop")
    if t.candidates:  # the answer is the path so far: a node of the tree, its steps in order
        assert t.info["candidate_nodes"] and t.chosen == 0
