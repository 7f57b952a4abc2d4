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


def test_budget_pool_keeps_every_sample_of_majority():
    # each reply is 1 token; max_tokens=4 -> at worst case 10 tokens would pay for 2 samples, but as a
    # pool they pay for 8 samples of up to 1 token each, and all of them finish
    r = solve(Majority(n=8, params=SamplingParams(max_tokens=4)), ["4", "5", "4"], budget=Budget(generated_tokens=10))
    assert len(r.trace.candidates) == 8 and all(c.finish_reason == "stop" for c in r.trace.candidates)
    assert r.trace.ledger["generated_tokens"] <= 10


def continuing(replies):
    """A script that continues a reply from where the prompt's assistant text left off (like a model
    whose k-th sample is replies[k]): what a refill request sees."""
    def reply(prompt, index):
        written = prompt.split("Assistant: ", 1)[1] if "Assistant: " in prompt else ""
        if written:
            return next(r[len(written):] for r in replies if r.startswith(written))
        return replies[index % len(replies)]
    return reply


def test_samples_cut_by_their_share_are_continued_with_what_others_left():
    long = " ".join(f"w{i}" for i in range(19)) + " 4"  # 20 tokens
    replies = ["4"] * 7 + [long]
    problem = Problem("q", prompt="What is 2 + 2?", answer="4")
    backend = ScriptedBackend(continuing(replies))
    strategy = Majority(n=8, params=SamplingParams(max_tokens=30))
    [r] = run(run_async([problem], strategy, backend, grade=same_answer, budget=Budget(generated_tokens=40)))
    # first request: 8 samples capped at 40 // 8 = 5; seven stop after 1 token, the long one is cut at
    # 5; the 28 tokens left continue it (capped at 25 more), and it finishes whole
    texts = sorted(c.text for c in r.trace.candidates)
    assert texts == sorted(replies) and all(c.finish_reason == "stop" for c in r.trace.candidates)
    assert r.trace.ledger["generated_tokens"] == 27 and r.trace.ledger["engine_calls"] == 2
    assert [q.params.max_tokens for q in backend.requests] == [5, 25]


def test_a_pool_too_small_for_every_sample_ends_them_by_length_within_the_budget():
    long = " ".join(f"w{i}" for i in range(30))
    backend = ScriptedBackend(continuing([long]))
    problem = Problem("q", prompt="What is 2 + 2?", answer="4")
    [r] = run(run_async([problem], Majority(n=4, params=SamplingParams(max_tokens=64)), backend,
                        grade=same_answer, budget=Budget(generated_tokens=50)))
    assert len(r.trace.candidates) == 4 and all(c.finish_reason == "length" for c in r.trace.candidates)
    assert r.trace.ledger["generated_tokens"] <= 50
    assert r.trace.ledger["generated_tokens"] >= 48  # the pool was spent, not left over


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
