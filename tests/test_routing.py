"""Compute-optimal routing: selection on synthetic tables with known optima, bins, policy files, compute
saved, and the ``auto`` strategy's per-problem budget on the scripted backend."""

import json
import math

import pytest
from click.testing import CliRunner

from tts.backends.scripted import ScriptedBackend, ScriptedReply
from tts.budget import Budget
from tts.routing import (
    Binning, Point, Policy, PolicyError, Predictor, Row, Rule, Setting, cells, compute_saved, cost_to_reach,
    evaluate_at, fit_edges, frontier, probe_feature, select,
)
from tts.runtime import run_async
from tts.strategies import Auto, create
from tts.types import Problem, SamplingParams
from tts.verifiers.answers import same_answer

from .conftest import run

MAJ = {n: Setting.of("majority", n) for n in (1, 4, 16)}
BON = {n: Setting.of("best_of_n", n) for n in (4, 16)}
REV = Setting.of("revise", 8, revisions=4)


def synthetic_table():
    """Easy problems e0..e3: revise@8 is best at any budget >= 80 tokens, majority@4 at 40.
    Hard problems h0..h3: best_of_n@16 is best at 160 tokens, nothing beats majority@1 below 40.
    Each setting costs 10 tokens per sample; revise@8 costs 80."""
    acc = {
        "easy": {MAJ[1]: 0.5, MAJ[4]: 0.8, MAJ[16]: 0.85, BON[4]: 0.7, BON[16]: 0.75, REV: 0.95},
        "hard": {MAJ[1]: 0.1, MAJ[4]: 0.1, MAJ[16]: 0.2, BON[4]: 0.15, BON[16]: 0.4, REV: 0.12},
    }
    cost = {MAJ[1]: 10, MAJ[4]: 40, MAJ[16]: 160, BON[4]: 40, BON[16]: 160, REV: 80}
    rows = []
    for kind, prefix in (("easy", "e"), ("hard", "h")):
        for i in range(4):
            for s, a in acc[kind].items():
                # per-problem noise that averages out within the bin
                jitter = (0.05 if i % 2 else -0.05) if 0.05 < a < 0.95 else 0.0
                rows.append(Row(f"{prefix}{i}", s, a + jitter, cost[s] + (i % 2) * 2 - 1, cost[s] * 1e9))
    bins = {f"e{i}": 0 for i in range(4)} | {f"h{i}": 1 for i in range(4)}
    return rows, bins


def test_selection_finds_the_known_optimum_per_bin_and_budget():
    rows, bins = synthetic_table()
    rules = {(r.bin, r.budget): r for r in select(rows, bins, [10, 40, 80, 160])}
    assert rules[(0, 10)].setting == MAJ[1]
    assert rules[(0, 40)].setting == MAJ[4]
    assert rules[(0, 80)].setting == REV and rules[(0, 160)].setting == REV  # more budget, same best
    assert rules[(1, 10)].setting == MAJ[1]
    assert rules[(1, 40)].setting == BON[4]
    assert rules[(1, 80)].setting == BON[4]
    assert rules[(1, 160)].setting == BON[16]
    assert rules[(1, 160)].accuracy == pytest.approx(0.4) and rules[(1, 160)].cost == pytest.approx(160)
    assert not any(r.over_budget for r in rules.values())


def test_selection_in_flops_and_when_nothing_fits():
    rows, bins = synthetic_table()
    rules = {(r.bin, r.budget): r for r in select(rows, bins, [5e9, 1.6e11], unit="flops")}
    assert rules[(0, 5e9)].setting == MAJ[1] and rules[(0, 5e9)].over_budget  # the cheapest, flagged
    assert rules[(1, 1.6e11)].setting == BON[16]


def test_tolerance_prefers_the_cheaper_of_nearly_equal_settings():
    rows, bins = synthetic_table()
    easy = {p: b for p, b in bins.items() if b == 0}
    [exact] = select(rows, easy, [200])
    [tolerant] = select(rows, easy, [200], tolerance=0.2)
    assert exact.setting == REV
    assert tolerant.setting == MAJ[4]  # 0.8 is within 0.2 of 0.95 and costs half


def test_cells_leave_out_settings_missing_a_problem():
    rows, bins = synthetic_table()
    rows = [r for r in rows if not (r.setting == REV and r.problem == "e0")]
    labels = {c.setting.label for c in cells(rows, [p for p, b in bins.items() if b == 0])}
    assert REV.label not in labels and MAJ[4].label in labels


def test_fit_edges_quantiles_and_ties():
    assert fit_edges([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3) == pytest.approx((0.25, 0.45))
    assert fit_edges([1, 2, 3], 1) == ()
    # 4 of 6 problems at pass@1 = 0: the tie stays in one bin, so only one cut is left
    edges = fit_edges([0, 0, 0, 0, 0.5, 1.0], 3)
    assert edges == pytest.approx((0.25, 0.75))
    b = Binning(edges)
    assert [b.bin(v) for v in (1.0, 0.5, 0.0)] == [0, 1, 2]
    edges = fit_edges([0, 0, 0, 0, 0, 0.5], 3)
    assert edges == pytest.approx((0.25,)) and Binning(edges).count == 2
    assert Binning(()).bin(0.3) == 0
    assert Binning((0.5,)).bin(float("nan")) == 1  # no signal: the hardest bin
    with pytest.raises(ValueError, match="strictly increasing"):
        Binning((0.5, 0.2))


def test_probe_features():
    assert probe_feature([0.2, 0.6]) == pytest.approx(0.4)
    assert probe_feature([0.2, 0.6], feature="max_score") == pytest.approx(0.6)
    assert probe_feature([], ["4", "4", "5", None], "agreement") == pytest.approx(0.5)
    assert probe_feature([0.3, 0.6], ["4", "4"], "agreement_score") == pytest.approx(1 + 0.45 / 3)
    assert probe_feature([0.9, 0.9], ["4", "5"], "agreement_score") == pytest.approx(0.5 + 0.9 / 3)
    assert probe_feature([0.3, 0.6], ["4", "4"], "agreement_score") > probe_feature([1.0, 1.0], ["4", "5"], "agreement_score")
    assert math.isnan(probe_feature([]))
    with pytest.raises(ValueError, match="feature must be one of"):
        probe_feature([1.0], feature="vibes")


def make_policy(edges=(0.5,), budgets=(40, 160)):
    rules = []
    for b in range(len(edges) + 1):
        for budget in budgets:
            rules.append(Rule(b, float(budget), Setting.of("majority", int(budget // 10)), 0.5, budget * 0.9))
    return Policy(tuple(rules), Predictor(2, "mean_score", "confidence_mean", Binning(edges)), meta={"model": "m"})


def test_policy_json_round_trip_and_choice(tmp_path):
    policy = make_policy()
    path = tmp_path / "policy.json"
    policy.save(path)
    loaded = Policy.load(path)
    assert loaded.to_json() == policy.to_json()
    assert loaded.predictor.binning.edges == (0.5,)
    assert loaded.choose(1, 100).setting == Setting.of("majority", 4)  # largest budget not above 100
    assert loaded.choose(1, 1000).setting == Setting.of("majority", 16)
    assert loaded.choose(0, 5).setting == Setting.of("majority", 4)  # below every rule: the smallest
    assert loaded.choose(0, None).budget == 160


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="other"), "not a routing policy"),
    (lambda d: d.update(version=99), "version 99 is not supported"),
    (lambda d: d.update(unit="dollars"), "unit must be one of"),
    (lambda d: d.pop("rules"), "missing 'rules'"),
    (lambda d: d.update(rules=[]), "rules must be a non-empty list"),
    (lambda d: d["rules"][0].update(bin=7), r"rules\[0\].bin must be an integer in 0..1"),
    (lambda d: d["rules"][1].update(budget=-3), r"rules\[1\].budget must be a positive number"),
    (lambda d: d["rules"][2].update(n=0), r"rules\[2\]: Setting.n must be a positive integer"),
    (lambda d: d["predictor"].update(edges=[0.6, 0.2]), "strictly increasing"),
    (lambda d: d["predictor"].update(feature="vibes"), "feature must be one of"),
    (lambda d: d.update(rules=[r for r in d["rules"] if r["bin"] == 0]), r"rules cover bins \[0\]"),
])
def test_malformed_policies_give_one_line_errors(tmp_path, mutate, message):
    data = make_policy().to_json()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyError, match=message) as info:
        Policy.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_unreadable_policy_files(tmp_path):
    with pytest.raises(PolicyError, match="no such routing policy file"):
        Policy.load(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(PolicyError, match=r"not valid JSON \(line 1\)"):
        Policy.load(tmp_path / "broken.json")


def test_frontier_and_compute_saved():
    pts = [Point(10, 0.3), Point(20, 0.25), Point(40, 0.5), Point(80, 0.5), Point(160, 0.7)]
    assert [p.cost for p in frontier(pts)] == [10, 40, 160]
    baseline = [Point(10, 0.2), Point(40, 0.4), Point(160, 0.6)]
    assert cost_to_reach(baseline, 0.4) == pytest.approx(40)
    assert cost_to_reach(baseline, 0.5) == pytest.approx(80)  # halfway in log cost between 40 and 160
    assert cost_to_reach(baseline, 0.1) == pytest.approx(10)
    assert cost_to_reach(baseline, 0.9) is None
    saved = compute_saved([Point(20, 0.4), Point(40, 0.5), Point(100, 0.8)], baseline)
    assert saved[0].ratio == pytest.approx(2.0)
    assert saved[1].baseline_cost == pytest.approx(80) and saved[1].ratio == pytest.approx(2.0)
    assert saved[2].baseline_cost is None and saved[2].ratio is None
    assert saved[2].at_least == pytest.approx(1.6) and saved[0].at_least is None  # 160 / 100 at least


def test_evaluate_at_applies_rules_per_bin():
    rows, bins = synthetic_table()
    rules = select(rows, bins, [40, 160])
    point = evaluate_at(rules, rows, bins, 160)
    assert point.accuracy == pytest.approx((0.95 + 0.4) / 2)
    assert point.cost == pytest.approx((80 + 160) / 2)
    assert evaluate_at(rules, rows, bins, 40).cost == pytest.approx(40)


# --- the auto strategy ---------------------------------------------------------------------------------
P = [Problem(id=f"q{i}", prompt=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(6)]


def backend():
    # confident replies for even questions, unsure ones for odd questions; some long and rambling
    def reply(prompt, k):
        i = int(prompt.split("What is ")[1].split(" ")[0])
        if i % 2 == 0:
            return ScriptedReply(f"{2 * i}", [-0.05])
        words = " ".join(["well"] * (3 + 5 * (k % 3)))
        return ScriptedReply(f"{words} {2 * i + k % 2}", [-2.0] * (4 + 5 * (k % 3)))

    return ScriptedBackend(reply)


def auto_policy():
    easy = [Rule(0, b, Setting.of("majority", n), 0.9, b) for b, n in ((10, 1), (60, 4), (400, 16))]
    hard = [Rule(1, 10, Setting.of("best_of_n", 2), 0.2, 10), Rule(1, 60, Setting.of("revise", 4, revisions=2), 0.3, 60),
            Rule(1, 400, Setting.of("weighted_majority", 16), 0.4, 400)]
    return Policy(tuple(easy + hard), Predictor(2, "mean_score", "confidence_mean", Binning((0.5,))))


@pytest.mark.parametrize("budget", [3, 10, 25, 60, 150, 400])
def test_auto_never_exceeds_the_per_problem_token_budget(budget):
    strategy = Auto(policy=auto_policy(), params=SamplingParams(max_tokens=12))
    results = run(run_async(P, strategy, backend(), grade=same_answer, budget=Budget(generated_tokens=budget)))
    for r in results:
        assert r.trace.ledger["generated_tokens"] <= budget
        route = r.trace.info["route"]
        assert route["budget"] == budget
        assert route["bin"] == (0 if int(r.problem.id[1:]) % 2 == 0 else 1)
        assert route["rule"] == auto_policy().choose(route["bin"], budget).setting.label


def test_auto_reuses_probes_for_sampling_rules_and_routes_hard_questions():
    strategy = Auto(policy=auto_policy(), params=SamplingParams(max_tokens=12))
    results = run(run_async(P, strategy, backend(), grade=same_answer, budget=Budget(generated_tokens=60)))
    easy = results[0]
    assert easy.trace.info["route"]["rule"] == "majority@4"
    assert len(easy.trace.candidates) == 4 and easy.trace.ledger["engine_calls"] == 2  # 2 probes + 2 more
    assert easy.correct
    hard = results[1]
    assert hard.trace.info["route"]["rule"] == "revise@4[revisions=2]"
    assert len(hard.trace.candidates) >= 2 and hard.trace.info.get("inner", {}).get("revisions") == 2
    # no budget: the policy's largest budget decides
    [free] = run(run_async(P[:1], strategy, backend(), grade=same_answer))
    assert free.trace.info["route"]["rule"] == "majority@16" and len(free.trace.candidates) == 16


def test_auto_from_options_and_registry(tmp_path):
    path = tmp_path / "p.json"
    auto_policy().save(path)
    strategy = create("auto", 8, SamplingParams(), {"routing_policy": str(path), "revisions": None})
    assert strategy.policy.to_json() == auto_policy().to_json()
    assert create("auto", 8, SamplingParams(), {}).policy.rules  # the packaged default
    data = auto_policy().to_json()
    data["rules"][0]["strategy"] = "telepathy"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown strategies telepathy"):
        create("auto", 8, SamplingParams(), {"routing_policy": str(path)})


def test_cli_auto_with_a_bad_policy_path_is_one_error_line(tmp_path):
    from tts.cli import cli

    script = tmp_path / "script.json"
    script.write_text(json.dumps({"Reply with just the number": ["9"]}))
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(cli, ["run", "--backend", "scripted", "--model", str(script), "--limit", "2",
                                      "--strategy", "auto", "--routing-policy", str(tmp_path / "nope.json"),
                                      "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope.json" in lines[0], result.output
    assert "no such routing policy file" in lines[0]
    assert not out.exists()


def run_auto_cli(tmp_path, policy: Policy, *flags: str):
    """`tts run --strategy auto` with ``policy`` on scripted replies; (the click result, the results file)."""
    from tts.cli import cli

    path = tmp_path / "policy.json"
    policy.save(path)
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"Reply with just the number": ["9", "well well well 8", "9"]}))
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(cli, ["run", "--backend", "scripted", "--model", str(script), "--strategy", "auto",
                                      "--routing-policy", str(path), "--max-tokens", "5", "--out", str(out), *flags])
    return result, out


def test_cli_auto_respects_budget_tokens(tmp_path):
    from tts.results import read_records

    result, out = run_auto_cli(tmp_path, auto_policy(), "--limit", "4", "--budget-tokens", "7")
    assert result.exit_code == 0, result.output
    records = read_records(out)
    assert len(records) == 4
    assert all(r["ledger"]["generated_tokens"] <= 7 for r in records)
    assert all(r["info"]["route"]["budget"] == 7 for r in records)


# --- the mean allocation, bootstrap intervals, packaged policies ---------------------------------------
def brute_force(tables, budget, unit="generated_tokens"):
    """Best average accuracy over every combination of one cell per bin whose average cost fits."""
    import itertools

    total = sum(k for _, k in tables.values())
    best = None
    for combo in itertools.product(*(t for t, _ in tables.values())):
        cost = sum(c.cost(unit) * k / total for c, (_, k) in zip(combo, tables.values()))
        acc = sum(c.accuracy * k / total for c, (_, k) in zip(combo, tables.values()))
        if cost <= budget * (1 + 1e-9) and (best is None or acc > best + 1e-12):
            best = acc
    return best


def test_mean_allocation_moves_compute_to_the_bin_where_it_pays():
    rows, bins = synthetic_table()
    capped = {(r.bin, r.budget): r for r in select(rows, bins, [100])}
    mean = {(r.bin, r.budget): r for r in select(rows, bins, [100], allocation="mean")}
    # a cap of 100 per problem: revise@8 (80) on easy, best_of_n@4 (40) on hard -> 0.95 + 0.15, cost 60 on average
    assert capped[(0, 100)].setting == REV and capped[(1, 100)].setting == BON[4]
    # an average of 100: easy gets majority@4 (40), hard gets best_of_n@16 (160) -> 0.8 + 0.4 = 1.2 > 1.1
    assert mean[(0, 100)].setting == MAJ[4] and mean[(1, 100)].setting == BON[16]
    assert mean[(1, 100)].cost == pytest.approx(160)  # a bin may spend more than the average budget
    assert not any(r.over_budget for r in mean.values())
    with pytest.raises(ValueError, match="allocation must be one of cap, mean"):
        select(rows, bins, [100], allocation="greedy")


def test_mean_allocation_takes_the_cheapest_combination_when_nothing_fits():
    rows, bins = synthetic_table()
    rules = select(rows, bins, [1], allocation="mean")
    assert all(r.over_budget and r.setting == MAJ[1] for r in rules)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 50)), min_size=1, max_size=5),
                min_size=1, max_size=3),
       st.lists(st.integers(1, 4), min_size=3, max_size=3), st.integers(1, 60))
def test_mean_allocation_is_exactly_the_best_combination(bins_cells, sizes, budget):
    """Against brute force over every combination (random accuracies, costs and bin sizes)."""
    from tts.routing import Cell, allocate

    tables = {}
    for b, cell_specs in enumerate(bins_cells):
        table = [Cell(Setting.of("majority", i + 1), acc / 20, float(cost), 0.0, sizes[b])
                 for i, (acc, cost) in enumerate(cell_specs)]
        tables[b] = (table, sizes[b])
    rules = allocate(tables, [budget])
    total = sum(sizes[b] for b in tables)
    got_acc = sum(r.accuracy * sizes[r.bin] / total for r in rules)
    got_cost = sum(r.cost * sizes[r.bin] / total for r in rules)
    best = brute_force(tables, budget)
    if best is None:
        assert all(r.over_budget for r in rules)
        cheapest = sum(min(c.cost("generated_tokens") for c in t) * k / total for t, k in tables.values())
        assert got_cost == pytest.approx(cheapest)
    else:
        assert not any(r.over_budget for r in rules)
        assert got_cost <= budget * (1 + 1e-9)
        assert got_acc == pytest.approx(best, abs=1e-9)


def mean_policy():
    easy = [Rule(0, 50, Setting.of("majority", 4), 0.9, 40.0), Rule(0, 100, Setting.of("majority", 8), 0.95, 80.0)]
    hard = [Rule(1, 50, Setting.of("majority", 1), 0.0, 10.0), Rule(1, 100, Setting.of("best_of_n", 16), 0.4, 160.0)]
    return Policy(tuple(easy + hard), Predictor(2, "mean_score", "confidence_mean", Binning((0.5,))), allocation="mean")


def test_mean_policy_round_trip_and_choice_under_a_cap(tmp_path):
    policy = mean_policy()
    path = tmp_path / "mean.json"
    policy.save(path)
    loaded = Policy.load(path)
    assert loaded.allocation == "mean" and loaded.to_json() == policy.to_json()
    assert loaded.choose(1, 100).setting == Setting.of("best_of_n", 16)  # over the average: allowed
    # a per-problem cap of 100 rules it out: the bin's most accurate rule under the cap instead
    assert loaded.choose(1, 100, cap=100).setting == Setting.of("majority", 1)
    assert loaded.choose(0, 100, cap=100).setting == Setting.of("majority", 8)
    assert loaded.choose(0, 100, cap=5).setting == Setting.of("majority", 4)  # none fits: the cheapest
    capped = make_policy()
    assert capped.allocation == "cap" and capped.choose(1, 100, cap=1).setting == capped.choose(1, 100).setting
    data = policy.to_json()
    data["allocation"] = "lavish"
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyError, match="allocation must be one of cap, mean, got 'lavish'"):
        Policy.load(path)


def test_saving_interval_brackets_the_ratio_and_replays_from_the_seed():
    from tts.routing_fit import saving_interval

    import random

    rng = random.Random(3)
    rows, chosen = [], []
    for i in range(120):
        p = f"p{i}"
        hard = i % 3 == 0
        for n in (1, 2, 4, 8, 16):
            acc = 0.0 if hard else min(1.0, 0.3 + 0.15 * math.log2(n) + rng.uniform(-0.1, 0.1))
            setting = Setting.of("single") if n == 1 else Setting.of("best_of_n", n)
            rows.append(Row(p, setting, acc, 10.0 * n, 1e9 * n))
        # the routing: nothing on hopeless problems, best-of-4's answer on the others
        chosen.append(Row(p, Setting.of("best_of_n", 4), 0.0 if hard else
                          next(r.accuracy for r in rows if r.problem == p and r.setting == Setting.of("best_of_n", 4)),
                          10.0 if hard else 40.0))
    acc = sum(r.accuracy for r in chosen) / len(chosen)
    cost = sum(r.generated_tokens for r in chosen) / len(chosen)
    from tts.routing import cells as cells_of, compute_saved

    curve = [Point(c.generated_tokens, c.accuracy) for c in cells_of(rows)]
    ratio = compute_saved([Point(cost, acc)], curve)[0].ratio
    lo, hi = saving_interval(chosen, rows, "best_of_n", "generated_tokens", resamples=400, seed=1)
    assert lo < ratio < hi and lo > 1.0  # routing the hopeless third away saves, and the interval says so
    assert (lo, hi) == saving_interval(chosen, rows, "best_of_n", "generated_tokens", resamples=400, seed=1)
    with pytest.raises(ValueError, match="one chosen row per held-out problem"):
        saving_interval(chosen + chosen[:1], rows, "best_of_n", "generated_tokens")


def test_packaged_policies_by_name_and_model():
    from tts.strategies.auto import load_policy, packaged_policies, policy_for_model

    assert {"embedded", "testbed"} <= set(packaged_policies())
    assert policy_for_model("testbed") == "testbed" and policy_for_model("some/model") is None
    testbed = load_policy("testbed")
    assert testbed.meta["model"] == "testbed" and testbed.unit == "flops"
    assert create("auto", 8, SamplingParams(), {"routing_policy": "testbed"}).policy.to_json() == testbed.to_json()
    with pytest.raises(PolicyError, match="no such routing policy file .*packaged name: .*testbed"):
        load_policy("tested")


def test_auto_routes_a_mean_policy_by_route_budget_and_keeps_a_hard_cap():
    strategy = Auto(policy=mean_policy(), params=SamplingParams(max_tokens=12), route_budget=100)
    results = run(run_async(P[:2], strategy, backend(), grade=same_answer))
    assert [r.trace.info["route"]["rule"] for r in results] == ["majority@8", "best_of_n@16"]
    assert len(results[1].trace.candidates) == 16  # the hard question gets more than the average budget
    capped = run(run_async(P[:2], strategy, backend(), grade=same_answer, budget=Budget(generated_tokens=100)))
    assert [r.trace.info["route"]["rule"] for r in capped] == ["majority@8", "majority@1"]
    assert all(r.trace.ledger["generated_tokens"] <= 100 for r in capped)


def test_cli_route_budget_reaches_auto_and_a_mean_policy_file(tmp_path):
    from tts.cli import cli
    from tts.results import read_records

    result, out = run_auto_cli(tmp_path, mean_policy(), "--limit", "3", "--route-budget", "100")
    assert result.exit_code == 0, result.output
    routes = [r["info"]["route"] for r in read_records(out)]
    assert all(r["budget"] == 100 for r in routes)
    assert {r["rule"] for r in routes} <= {"majority@8", "best_of_n@16"}
    bad = CliRunner().invoke(cli, ["run", "--backend", "scripted", "--model", str(tmp_path / "script.json"),
                                   "--strategy", "auto", "--route-budget", "0", "--out", str(tmp_path / "b.jsonl")])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "--route-budget" in bad.output


def test_length_feature_and_linear_predictor():
    assert probe_feature([], tokens=[9, 29], feature="length") == pytest.approx(-math.log(20))
    assert math.isnan(probe_feature([0.5], feature="length"))  # no token counts: no signal
    pred = Predictor(2, "linear", "confidence_mean", Binning((0.2, 0.5)), (("mean_score", 0.5), ("length", 0.1)), 0.6)
    v = pred.value([0.4, 0.8], ["1", "2"], [9, 29])
    assert v == pytest.approx(0.6 + 0.5 * 0.6 + 0.1 * -math.log(20))
    assert pred.bin([0.4, 0.8], ["1", "2"], [9, 29]) == pred.binning.bin(v)
    assert pred.bin([], [], []) == 2  # NaN: the hardest bin
    with pytest.raises(ValueError, match="a linear predictor needs at least one weight"):
        Predictor(2, "linear")
    with pytest.raises(ValueError, match="only a linear predictor has weights"):
        Predictor(2, "mean_score", weights=(("length", 1.0),))
    with pytest.raises(ValueError, match="'vibes' is not a feature"):
        Predictor(2, "linear", weights=(("vibes", 1.0),))
    with pytest.raises(ValueError, match="length must be a finite number"):
        Predictor(2, "linear", weights=(("length", float("inf")),))


def test_linear_policy_round_trip_and_malformed_weights(tmp_path):
    pred = Predictor(2, "linear", "confidence_mean", Binning((0.3,)), (("mean_score", 0.5), ("length", 0.1)), 0.6)
    policy = Policy(make_policy().rules, pred)
    path = tmp_path / "linear.json"
    policy.save(path)
    loaded = Policy.load(path)
    assert loaded.predictor == pred and loaded.to_json() == policy.to_json()
    for mutate, message in ((lambda d: d["predictor"].update(weights=[1, 2]), "predictor.weights must be an object"),
                            (lambda d: d["predictor"].update(weights={"length": "big"}), "predictor.weights must be an object"),
                            (lambda d: d["predictor"].update(weights={"vibes": 1}), "'vibes' is not a feature"),
                            (lambda d: d["predictor"].update(intercept=None), "predictor.intercept must be a number"),
                            (lambda d: d["predictor"].pop("weights"), "a linear predictor needs at least one weight")):
        data = policy.to_json()
        mutate(data)
        path.write_text(json.dumps(data))
        with pytest.raises(PolicyError, match=message) as info:
            Policy.load(path)
        assert "\n" not in str(info.value)


def test_fit_linear_recovers_known_weights_and_cross_fits():
    from tts.routing_fit import cross_fitted_spearman, fit_linear

    import random

    rng = random.Random(0)
    ids = [f"p{i}" for i in range(80)]
    features = {"mean_score": {p: rng.random() for p in ids}, "agreement": {p: rng.choice([0.5, 1.0]) for p in ids},
                "length": {p: -rng.uniform(2, 5) for p in ids}}
    pass1 = {p: 0.1 + 0.6 * features["mean_score"][p] + 0.2 * features["length"][p] for p in ids}
    weights, intercept = fit_linear(features, pass1, ids)
    got = dict(weights)
    assert got["mean_score"] == pytest.approx(0.6) and got["length"] == pytest.approx(0.2)
    assert got["agreement"] == pytest.approx(0.0, abs=1e-9) and intercept == pytest.approx(0.1)
    assert cross_fitted_spearman(features, pass1, ids) == pytest.approx(1.0)
    features["length"]["p0"] = float("nan")  # a problem without an input is left out of the fit
    assert dict(fit_linear(features, pass1, ids)[0])["length"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="needs at least 5 problems"):
        fit_linear(features, pass1, ids[1:4])


def test_packaged_names_win_over_same_named_files(tmp_path, monkeypatch):
    """A file called like a packaged policy or table in the working folder is never read for that name:
    the names tts serve lets clients give cannot reach the server's files."""
    from tts.strategies.auto import load_policy
    from tts.strategies.stopping import StoppingTable

    monkeypatch.chdir(tmp_path)
    (tmp_path / "embedded").write_text("not a policy")
    (tmp_path / "testbed-steps4").write_text("not a table")
    assert load_policy("embedded").meta["model"] == "embedded"
    assert StoppingTable.load("testbed-steps4").n >= 2
