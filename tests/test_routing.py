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


def test_cli_auto_respects_budget_tokens(tmp_path):
    from tts.cli import cli
    from tts.results import read_records

    policy = tmp_path / "p.json"
    auto_policy().save(policy)
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"Reply with just the number": ["9", "well well well 8", "9"]}))
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(cli, ["run", "--backend", "scripted", "--model", str(script), "--limit", "4",
                                      "--strategy", "auto", "--routing-policy", str(policy),
                                      "--budget-tokens", "7", "--max-tokens", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = read_records(out)
    assert len(records) == 4
    assert all(r["ledger"]["generated_tokens"] <= 7 for r in records)
    assert all(r["info"]["route"]["budget"] == 7 for r in records)
