import pytest

from tts.budget import Budget, BudgetExhausted, Ledger, ModelShape, Usage, generation_usage
from tts.types import SamplingParams

SHAPE = ModelShape(n_params=1000, n_layers=2, d_model=8)


def test_flops_formula_is_exact():
    # positions 0..3: 2*1000*4 matmul FLOPs + 2*2*8*(0+1+2+3) attention FLOPs
    assert SHAPE.flops(0, 4) == 2 * 1000 * 4 + 2 * 2 * 8 * 6
    assert SHAPE.flops(4, 4) == 0
    # splitting a range never changes the total
    assert SHAPE.flops(0, 10) == SHAPE.flops(0, 3) + SHAPE.flops(3, 10)


def test_generation_usage_counts_prompt_once_and_each_sample():
    usage = generation_usage(SHAPE, prompt_tokens=10, cached_prompt_tokens=4, generated=[3, 5])
    assert (usage.generated_tokens, usage.prompt_tokens, usage.cached_prompt_tokens) == (8, 10, 4)
    assert usage.flops == SHAPE.flops(4, 10) + SHAPE.flops(10, 13) + SHAPE.flops(10, 15)
    assert usage.total_tokens == 6 + 8


def test_settle_charges_exact_counts_to_the_whole_chain():
    run = Ledger()
    problem = run.child()
    r = problem.admit(10, SamplingParams(n=2, max_tokens=5), SHAPE)
    problem.settle(r, Usage(generated_tokens=7, prompt_tokens=10, cached_prompt_tokens=2, flops=123.0))
    problem.charge_verifier(tokens=11, flops=7.0, calls=1)
    for ledger in (problem, run):
        snap = ledger.snapshot()
        assert snap["generated_tokens"] == 7
        assert snap["prompt_tokens"] == 10 and snap["cached_prompt_tokens"] == 2
        assert snap["verifier_tokens"] == 11
        assert snap["engine_calls"] == 2
        assert snap["flops"] == 130.0
        assert ledger.total_tokens == 8 + 7 + 11
    with pytest.raises(RuntimeError, match="settled twice"):
        problem.settle(r, Usage())


def test_clipping_shares_the_budget_among_all_samples():
    ledger = Ledger(budget=Budget(generated_tokens=25))
    r = ledger.admit(10, SamplingParams(n=8, max_tokens=10), SHAPE)
    assert (r.params.n, r.params.max_tokens) == (8, 3)  # a pool: eight samples of up to 3 tokens
    assert ledger.room(10, 10, SHAPE) == 1  # 24 of 25 held
    ledger.settle(r, Usage(generated_tokens=12, prompt_tokens=10))
    assert ledger.room(10, 10, SHAPE) == 13  # what the samples did not use comes back
    r = ledger.admit(10, SamplingParams(n=2, max_tokens=10), SHAPE)
    assert (r.params.n, r.params.max_tokens) == (2, 6)
    ledger.settle(r, Usage(generated_tokens=10, prompt_tokens=10))
    # 3 left: fewer samples only when there is not one token for each
    r = ledger.admit(10, SamplingParams(n=8, max_tokens=10), SHAPE)
    assert (r.params.n, r.params.max_tokens) == (3, 1)
    ledger.settle(r, Usage(generated_tokens=3, prompt_tokens=10))
    assert ledger.room(10, 10, SHAPE) == 0
    with pytest.raises(BudgetExhausted, match="generated_tokens limit 25"):
        ledger.admit(10, SamplingParams(n=1, max_tokens=10), SHAPE)


def test_reservations_stop_concurrent_requests_from_overspending():
    ledger = Ledger(budget=Budget(generated_tokens=20))
    a = ledger.admit(5, SamplingParams(n=1, max_tokens=15), SHAPE)
    b = ledger.admit(5, SamplingParams(n=1, max_tokens=15), SHAPE)  # only 5 left while a is in flight
    assert b.params.max_tokens == 5
    with pytest.raises(BudgetExhausted):
        ledger.admit(5, SamplingParams(n=1, max_tokens=15), SHAPE)
    # a used only 2 of its 15: settling returns the rest
    ledger.settle(a, Usage(generated_tokens=2, prompt_tokens=5))
    c = ledger.admit(5, SamplingParams(n=1, max_tokens=15), SHAPE)
    assert c.params.max_tokens == 13


def test_run_budget_caps_all_problems_together():
    run = Ledger(budget=Budget(generated_tokens=30))
    p1, p2 = run.child(Budget(generated_tokens=100)), run.child()
    r1 = p1.admit(5, SamplingParams(n=2, max_tokens=10), SHAPE)
    p1.settle(r1, Usage(generated_tokens=20, prompt_tokens=5))
    r2 = p2.admit(5, SamplingParams(n=2, max_tokens=10), SHAPE)
    assert (r2.params.n, r2.params.max_tokens) == (2, 5)


def test_total_tokens_budget_pays_for_the_prompt_first():
    ledger = Ledger(budget=Budget(total_tokens=30))
    r = ledger.admit(25, SamplingParams(n=1, max_tokens=10), SHAPE)
    assert r.params.max_tokens == 5
    ledger.settle(r, Usage(generated_tokens=5, prompt_tokens=25))
    with pytest.raises(BudgetExhausted, match="total_tokens"):
        ledger.admit(1, SamplingParams(), SHAPE)


def test_flops_budget_is_never_exceeded():
    shape = ModelShape(n_params=100, n_layers=1, d_model=4)
    limit = shape.flops(0, 10) + 3 * shape.flops(10, 20) // 1
    ledger = Ledger(budget=Budget(flops=limit))
    r = ledger.admit(10, SamplingParams(n=1, max_tokens=100), shape)
    usage = generation_usage(shape, 10, 0, [r.params.max_tokens])
    assert 0 < r.params.max_tokens < 100
    assert usage.flops <= limit


def test_engine_call_and_time_limits():
    ledger = Ledger(budget=Budget(engine_calls=1))
    r = ledger.admit(1, SamplingParams(), SHAPE)
    with pytest.raises(BudgetExhausted, match="engine_calls"):
        ledger.admit(1, SamplingParams(), SHAPE)
    ledger.settle(r, Usage(prompt_tokens=1, generated_tokens=1))
    timed = Ledger(budget=Budget(seconds=1e-9))
    with pytest.raises(BudgetExhausted, match="seconds"):
        timed.admit(1, SamplingParams(), SHAPE)


def test_budget_validation_names_the_unit():
    with pytest.raises(ValueError, match="Budget.generated_tokens"):
        Budget(generated_tokens=0)
    assert Budget().unlimited and not Budget(flops=1e9).unlimited
