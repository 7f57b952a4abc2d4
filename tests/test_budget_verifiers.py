"""Verifier work is reserved before it runs, like generation (issue 19, item 2): total_tokens, flops,
engine_calls and seconds budgets cover policy and verifier alike, and are never overrun by scoring."""

import asyncio
import math

import pytest

import tts
from tts.backends.scripted import ScriptedBackend, ScriptedReply
from tts.budget import Budget, BudgetExhausted, Ledger
from tts.types import Completion, Problem, SamplingParams
from tts.verifiers.judge import LLMJudge
from tts.verifiers.metering import admit, metered


def test_verifier_reservations_count_against_every_budget_unit_in_the_chain():
    run = Ledger(budget=Budget(total_tokens=1000))
    child = run.child(Budget(flops=1e6, engine_calls=3))
    held = child.reserve_verifier(600, 5e5, 1)
    with pytest.raises(BudgetExhausted, match="total_tokens"):  # the parent's budget binds too
        child.reserve_verifier(500, 1.0, 1)
    with pytest.raises(BudgetExhausted, match="flops"):
        child.reserve_verifier(10, 6e5, 1)
    child.reserve_verifier(10, 1.0, 2)
    with pytest.raises(BudgetExhausted, match="engine_calls"):
        child.reserve_verifier(1, 1.0, 1)
    child.settle_verifier(held, 200, 1e5, 1)  # what it really did is charged, the rest released
    assert child.verifier_tokens == run.verifier_tokens == 200 and child.flops == 1e5
    child.reserve_verifier(700, 1.0, 0)  # now it fits


def test_metered_work_is_refused_before_it_runs_and_charged_after():
    ledger = Ledger(budget=Budget(total_tokens=100))
    ran = []

    def score(cost):
        admit(cost)
        ran.append(cost)
        return "scores", cost

    assert asyncio.run(metered(ledger, score, (60, 1e3, 1))) == "scores"
    assert ledger.verifier_tokens == 60
    with pytest.raises(BudgetExhausted, match="total_tokens"):
        asyncio.run(metered(ledger, score, (60, 1e3, 1)))
    assert len(ran) == 1 and ledger.verifier_tokens == 60  # the refused work never ran

    def sneaky(_):
        return "scores", (10, 0.0, 1)

    with pytest.raises(RuntimeError, match="without admitting"):
        asyncio.run(metered(ledger, sneaky, None))


def test_the_judge_is_refused_instead_of_overrunning_the_budget():
    problem = Problem("p1", prompt="What is 2 + 3?")
    backend = ScriptedBackend({"Proposed answer": [ScriptedReply("Yes", [math.log(0.7)])]})
    judge = LLMJudge(backend, samples=4)
    completions = [Completion(t, 3, "stop") for t in ("5", "7", "9")]
    ledger = Ledger()
    asyncio.run(judge.score(problem, completions[:1], ledger))
    one = ledger.verifier_tokens
    tight = Ledger(budget=Budget(total_tokens=2 * one + 1))
    with pytest.raises(BudgetExhausted):
        asyncio.run(judge.score(problem, completions, tight))  # three candidates do not fit
    assert tight.verifier_tokens == 0 and not backend.requests[1:]  # refused before any request was sent


def test_prm_search_never_overruns_a_total_token_budget():
    """Best-of-N and beam search with the testbed PRM on the scripted backend: every problem's ledger
    (policy and verifier together) stays within total_tokens; before, the PRM was charged after it ran."""
    pytest.importorskip("transformers")
    import tts.testbed

    prm = tts.testbed.prm()
    problems = tts.data.load("steps3", limit=4)
    backend = ScriptedBackend(lambda prompt, i: ["2 * 3 + 4\n10\nAnswer: 10", "6 + 4\nAnswer: 10"][i % 2])
    params = SamplingParams(max_tokens=32)
    for strategy in (tts.BestOfN(prm, n=8, params=params),):
        for limit in (60, 150, 400):
            results = tts.run(problems, strategy, backend, budget=Budget(total_tokens=limit), grade=None)
            for r in results:
                ledger = r.trace.ledger
                spent = ledger["prompt_tokens"] - ledger["cached_prompt_tokens"] + ledger["generated_tokens"] + ledger["verifier_tokens"]
                assert spent <= limit, (strategy.name, limit, ledger)


@pytest.mark.parametrize("name", ["best_of_n", "weighted_majority", "revise", "beam_search", "dvts", "rebase",
                                  "particle_filter", "mcts"])
def test_a_budget_that_cannot_pay_the_verifier_keeps_what_was_sampled(name):
    """Under total_tokens caps from tight to loose, a verifier-driven strategy never overruns the cap, and
    when the verifier cannot be paid it still answers from its samples (by vote) instead of dropping them."""
    pytest.importorskip("transformers")
    import tts.testbed

    from tts.strategies import create

    prm = tts.testbed.prm()
    problems = tts.data.load("steps3", limit=3)
    backend = ScriptedBackend(lambda prompt, i: ["2 * 3 + 4\n10\nAnswer: 10", "6 + 4\nAnswer: 10"][i % 2])
    options = {"verifier": prm, **({"revisions": 2} if name == "revise" else {}),
               **({"expansions": 2} if name in ("beam_search", "dvts", "mcts") else {})}
    strategy = create(name, 4, SamplingParams(max_tokens=32), options)
    unpaid = 0
    for limit in (40, 60, 90, 150, 400):
        for r in tts.run(problems, strategy, backend, budget=Budget(total_tokens=limit), grade=None):
            ledger, trace = r.trace.ledger, r.trace
            spent = ledger["prompt_tokens"] - ledger["cached_prompt_tokens"] + ledger["generated_tokens"] + ledger["verifier_tokens"]
            assert spent <= limit, (name, limit, ledger)
            if any(c.answer is not None for c in trace.candidates):
                assert trace.answer is not None, (name, limit, trace.info)
            if trace.candidates and not any(c.scores for c in trace.candidates):
                unpaid += 1
                assert "budget exhausted" in trace.info.get("budget_stop", "")
    assert unpaid > 0, f"{name}: no limit left the verifier unpaid, so this test tested nothing"
