"""The sweep's analysis as library functions (tts.routing.fit / evaluate) on synthetic tables whose
optimal routing is known: easy problems want sequential revisions, hard ones wide best-of-N, and a
probe feature that tracks difficulty must recover the oracle bins."""

import math

import pytest

from tts import routing
from tts.routing import SAMPLING, Policy, Row, Setting, evaluate, fit, spearman
from tts.routing_fit import with_probes

MAJ = {n: Setting.of("majority", n) for n in (1, 2, 4, 16)}
BON = {n: Setting.of("best_of_n", n) for n in (4, 16)}
REV = Setting.of("revise", 8, revisions=4)
ACC = {
    "easy": {MAJ[1]: 0.5, MAJ[2]: 0.55, MAJ[4]: 0.8, MAJ[16]: 0.85, BON[4]: 0.7, BON[16]: 0.75, REV: 0.95},
    "hard": {MAJ[1]: 0.1, MAJ[2]: 0.1, MAJ[4]: 0.1, MAJ[16]: 0.2, BON[4]: 0.15, BON[16]: 0.4, REV: 0.12},
}
COST = {MAJ[1]: 10, MAJ[2]: 20, MAJ[4]: 40, MAJ[16]: 160, BON[4]: 40, BON[16]: 160, REV: 80}
BUDGETS = [40, 80, 160]


def table(per_kind: int = 8):
    """Problems e0.. (easy) and h0.. (hard); the even-numbered ones are the training split. Features:
    ``mean_score`` is high on easy problems, ``max_score`` is its opposite, ``agreement`` is constant."""
    rows, pass1, features = [], {}, {"mean_score": {}, "max_score": {}, "agreement": {}}
    for kind, prefix in (("easy", "e"), ("hard", "h")):
        for i in range(per_kind):
            pid = f"{prefix}{i}"
            for s, a in ACC[kind].items():
                rows.append(Row(pid, s, a, COST[s], COST[s] * 1e9))
            pass1[pid] = ACC[kind][MAJ[1]] + 0.01 * i  # distinct, still separated by kind
            features["mean_score"][pid] = pass1[pid] + 0.3
            features["max_score"][pid] = -pass1[pid]
            features["agreement"][pid] = 0.5
    train = [p for p in pass1 if int(p[1:]) % 2 == 0]
    test = [p for p in pass1 if p not in train]
    return rows, pass1, features, train, test


def test_fit_chooses_the_feature_on_the_training_split_and_recovers_the_oracle_bins():
    rows, pass1, features, train, test = table()
    fitted = fit(rows, pass1, features, train, BUDGETS, bins=2)
    assert fitted.feature == "mean_score"
    assert math.isnan(fitted.correlations["agreement"][0])  # constant: no evidence, never chosen
    assert fitted.correlations["max_score"][0] == pytest.approx(-1.0)
    for pid in pass1:
        assert fitted.oracle_bins[pid] == (0 if pid.startswith("e") else 1)  # bin 0 is the easiest
        assert fitted.predicted_bins[pid] == fitted.oracle_bins[pid]
    oracle = {(r.bin, r.budget): r.setting for r in fitted.rules["oracle bins"]}
    assert oracle[(0, 80)] == REV and oracle[(0, 40)] == MAJ[4]
    assert oracle[(1, 160)] == BON[16]
    fixed = {r.budget: r.setting for r in fitted.rules["fixed best"]}
    assert set(fixed) == set(BUDGETS) and all(r.bin == 0 for r in fitted.rules["fixed best"])
    assert fitted.policy.predictor.feature == "mean_score" and fitted.policy.predictor.probes == 2
    assert fitted.policy.rules == fitted.rules["predicted bins"]


def test_fit_uses_the_named_feature_and_only_the_training_problems():
    rows, pass1, features, train, test = table()
    fitted = fit(rows, pass1, features, train, BUDGETS, bins=2, feature="max_score")
    assert fitted.feature == "max_score"
    assert fitted.train == tuple(train)
    # changing only held-out rows leaves every fitted rule as it was
    spoiled = [Row(r.problem, r.setting, 1.0 - r.accuracy, r.generated_tokens, r.flops) if r.problem in test else r
               for r in rows]
    again = fit(spoiled, pass1, features, train, BUDGETS, bins=2)
    assert again.rules == fit(rows, pass1, features, train, BUDGETS, bins=2).rules


def test_evaluate_scores_held_out_problems_and_the_oracle_routing_saves_compute():
    rows, pass1, features, train, test = table()
    fitted = fit(rows, pass1, features, train, BUDGETS, bins=2)
    ev = evaluate(fitted, rows, test)
    assert ev.held_out == tuple(test) and ev.bin_agreement == 1.0
    assert set(ev.outcomes) == set(routing.ROUTINGS)
    by_budget = {name: {o.budget: o for o in outs} for name, outs in ev.outcomes.items()}
    # at 160 tokens the oracle routing runs revise@8 on easy (0.95, 80) and best_of_n@16 on hard (0.4, 160)
    o = by_budget["oracle bins"][160]
    assert o.accuracy == pytest.approx((0.95 + 0.4) / 2) and o.tokens == pytest.approx(120)
    assert o.flops == pytest.approx(120e9)
    for b in BUDGETS:
        assert by_budget["oracle bins"][b].accuracy >= by_budget["fixed best"][b].accuracy - 1e-12
    saved = o.saved[("majority", "generated_tokens")]
    assert saved.ratio is None and saved.at_least == pytest.approx(160 / 120)  # majority never gets there
    # the baselines are read from the plain table over the held-out problems, single as k = 1
    maj = ev.curves["generated_tokens"]["majority"]
    assert [p.cost for p in maj] == sorted(p.cost for p in maj) and maj[0].cost == pytest.approx(10)


def test_the_predicted_routing_pays_for_its_probes():
    rows, pass1, features, train, test = table()
    probe_cost = {p: (15.0, 1.5e10) for p in pass1}
    fitted = fit(rows, pass1, features, train, BUDGETS, bins=2, probe_cost=probe_cost)
    table_rows = fitted.routings["predicted bins"].rows
    rev = [r for r in table_rows if r.setting == REV]
    assert rev and all(r.generated_tokens == COST[REV] + 15 for r in rev)
    assert not any(r.setting == MAJ[1] for r in table_rows)  # fewer samples than the two probes
    assert any(r.setting == MAJ[2] and r.generated_tokens == 20 for r in table_rows)  # probes reused
    # with free probes the predicted routing equals the oracle one here (bins agree)
    free = fit(rows, pass1, features, train, BUDGETS, bins=2)
    ev = evaluate(free, rows, test)
    assert [o.accuracy for o in ev.outcomes["predicted bins"]][-1] == pytest.approx(
        [o.accuracy for o in ev.outcomes["oracle bins"]][-1])


def test_with_probes_keeps_sampling_rows_that_reuse_them():
    rows = [Row("p", Setting.of(s, n), 0.5, 10 * n) for s in SAMPLING for n in (1, 4)]
    rows.append(Row("p", REV, 0.9, 80))
    out = with_probes(rows, {"p": (7.0, 0.0)}, probes=2)
    assert {(r.setting.strategy, r.setting.n) for r in out if r.setting != REV} == {(s, 4) for s in SAMPLING}
    assert [r.generated_tokens for r in out if r.setting == REV] == [87.0]
    assert [r.generated_tokens for r in with_probes(rows, None, probes=2) if r.setting == REV] == [80]


def test_the_fitted_policy_saves_and_loads(tmp_path):
    rows, pass1, features, train, _ = table()
    policy = fit(rows, pass1, features, train, BUDGETS, bins=2).policy
    path = tmp_path / "policy.json"
    policy.save(path)
    loaded = Policy.load(path)
    assert loaded.rules == policy.rules and loaded.predictor == policy.predictor


@pytest.mark.parametrize("kwargs, message", [
    ({"train": ["nope"]}, "training problems without a pass@1"),
    ({"train": []}, "no training problems"),
    ({"features": {}}, "no probe features"),
    ({"feature": "shiny"}, "feature must be auto or one of mean_score, max_score, agreement"),
])
def test_fit_refuses_what_it_cannot_fit(kwargs, message):
    rows, pass1, features, train, _ = table()
    args = {"rows": rows, "pass1": pass1, "features": features, "train": train, "budgets": BUDGETS} | kwargs
    with pytest.raises(ValueError, match=message):
        fit(**args)


def test_evaluate_refuses_problems_it_was_fitted_on():
    rows, pass1, features, train, test = table()
    fitted = fit(rows, pass1, features, train, BUDGETS, bins=2)
    with pytest.raises(ValueError, match="held-out problems that were fitted on"):
        evaluate(fitted, rows, test + train[:1])


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 1, 2, 2]) == pytest.approx(1.0)  # ties share their rank
    assert math.isnan(spearman([1, 2], [1, 2]))  # too few pairs
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # a constant side
    assert spearman([1, float("nan"), 2, 3], [1, 5, 2, 3]) == pytest.approx(1.0)  # NaN pairs dropped
