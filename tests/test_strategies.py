import math

import pytest

from tts.backends.scripted import ScriptedBackend, ScriptedReply
from tts.budget import Budget
from tts.runtime import run_async
from tts.strategies import BestOfN, Majority, Single, create
from tts.strategies.sampling import vote
from tts.types import Problem, SamplingParams
from tts.verifiers.answers import same_answer
from tts.verifiers.confidence import ConfidenceVerifier, token_confidence

from .conftest import run

P = Problem(id="q", prompt="What is 2 + 2?", answer="4")


def solve(strategy, replies, budget=None, seed=0):
    backend = ScriptedBackend({"2 + 2": replies})
    [result] = run(run_async([P], strategy, backend, grade=same_answer, budget=budget, seed=seed))
    return result


def test_single_takes_the_first_sample():
    r = solve(Single(), ["It is 5.", "4"])
    assert r.trace.answer == "5" and r.correct is False and len(r.trace.candidates) == 1


def test_majority_counts_equivalent_notations_as_one_vote():
    r = solve(Majority(n=5), ["5", "4", "4.0", "The answer is 4", "5"])
    assert r.trace.answer == "4" and r.correct is True
    assert r.trace.info["votes"] == {"5": 2.0, "4": 3.0}
    assert r.trace.chosen == 1
    assert r.candidate_correct == (False, True, True, True, False)


def test_majority_ignores_samples_without_an_answer():
    r = solve(Majority(n=3), ["no idea", "hmm", "7"])
    assert r.trace.answer == "7"
    r = solve(Majority(n=2), ["no idea", "hmm"])
    assert r.trace.answer is None and r.trace.chosen is None and r.correct is False


def test_majority_tie_break_is_seeded_and_order_free():
    answers = {}
    for seed in range(40):
        winner, _ = vote(["3", "4", "3", "4"], None, seed)
        assert winner == vote(["4", "3", "4", "3"], None, seed)[0]  # order does not matter
        answers[winner] = answers.get(winner, 0) + 1
    assert set(answers) == {"3", "4"}  # both can win, depending on the seed
    assert vote(["3", "4"], [0.2, 0.9], 0)[0] == "4"  # weights decide before any tie-break


def test_best_of_n_picks_the_most_confident_sample():
    replies = [
        ScriptedReply("it is 5", [-2.0, -2.0, -2.0]),
        ScriptedReply("it is 4", [-0.1, -0.1, -0.2]),
        ScriptedReply("it is 6", [-0.1, -3.0, -0.1]),
    ]
    r = solve(BestOfN(ConfidenceVerifier("mean"), n=3), replies)
    assert r.trace.chosen == 1 and r.trace.answer == "4"
    scores = [c.scores["confidence_mean"] for c in r.trace.candidates]
    assert scores == pytest.approx([math.exp(-2.0), math.exp(-0.4 / 3), math.exp(-3.2 / 3)])


def test_best_of_n_ties_go_to_the_earliest_sample():
    replies = [ScriptedReply("5", [-1.0]), ScriptedReply("4", [-1.0])]
    r = solve(BestOfN(ConfidenceVerifier(), n=2), replies)
    assert r.trace.chosen == 0


def test_confidence_modes():
    lp = [-1.0, -1.0, -4.0, -4.0, -0.5, -0.5]
    assert token_confidence(lp, "mean") == pytest.approx(-11 / 6)
    assert token_confidence(lp, "tail", window=2) == pytest.approx(-0.5)
    assert token_confidence(lp, "lowest_group", window=2) == pytest.approx(-4.0)
    with pytest.raises(ValueError, match="mode"):
        token_confidence(lp, "median")


def test_budget_clips_majority_to_fewer_samples():
    # each reply is 1 token; max_tokens=4 -> 10 tokens pay for 2 full samples
    r = solve(Majority(n=8, params=SamplingParams(max_tokens=4)), ["4", "5", "4"], budget=Budget(generated_tokens=10))
    assert len(r.trace.candidates) == 2
    assert r.trace.ledger["generated_tokens"] <= 10


def test_budget_refusal_returns_no_answer_instead_of_failing():
    class Greedy(Majority):
        async def solve(self, problem, gen):
            first = await super().solve(problem, gen)  # spends the whole budget
            second = await super().solve(problem, gen)  # refused: anytime result, no exception
            assert second.answer is None and "budget exhausted" in second.info["budget_stop"]
            return first

    r = solve(Greedy(n=2, params=SamplingParams(max_tokens=1)), ["4"], budget=Budget(generated_tokens=2))
    assert r.trace.answer == "4"


def test_registry_names_and_errors():
    assert create("majority", 4, SamplingParams()).n == 4
    assert create("best_of_n", 3, SamplingParams()).verifier.name == "confidence_mean"
    with pytest.raises(ValueError, match="choose from single, best_of_n, majority"):
        create("beam", 4, SamplingParams())
    with pytest.raises(ValueError, match="Majority.n"):
        Majority(n=0)
