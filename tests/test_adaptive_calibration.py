"""The calibrated stopping rule of adaptive consistency: fitted on recorded pools, replayed, loaded from
files, and run as a strategy on scripted replies."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from tts.backends.scripted import ScriptedBackend, ScriptedReply
from tts.runtime import run_async
from tts.strategies import AdaptiveConsistency
from tts.strategies.stopping import (CalibrationError, Pool, StoppingTable, fit, packaged_names, pools_from_records,
                                     replay, replay_rule, state)
from tts.types import Problem, SamplingParams
from tts.verifiers.answers import same_answer

from .conftest import run


def synthetic_pools(seed: int, count: int, n: int = 8) -> list[Pool]:
    """Half the problems easy (the model answers 4 nearly always), half hard (answers scattered, right
    one in three): on easy ones more samples never change the answer, on hard ones they do."""
    rng = random.Random(seed)
    pools = []
    for i in range(count):
        if i % 2 == 0:
            answers = ["4" if rng.random() < 0.95 else "5" for _ in range(n)]
        else:
            answers = [rng.choice(["4", "4", "5", "6", "7"]) for _ in range(n)]
        pools.append(Pool(tuple(answers), tuple(a == "4" for a in answers), tuple(10 for _ in answers)))
    return pools


def test_state_counts_leader_and_runner_up_ignoring_no_answers():
    assert state(["4", "4", None, "5"]) == (4, 2, 1)
    assert state([None, None]) == (2, 0, 0)
    assert state([]) == (0, 0, 0)


def test_fit_saves_samples_where_more_would_not_change_the_answer():
    train, held = synthetic_pools(0, 1000), synthetic_pools(1, 1000)
    table, curve = fit(train, 8, batch=1, tolerance=0.005)
    r = replay(table, held)
    majority = replay_rule(lambda answers: False, held, 8, 1)
    assert r["majority_accuracy"] == majority["accuracy"]
    # the paired difference's standard error on 1,000 problems is about a point: three of them
    assert r["accuracy"] >= majority["accuracy"] - 0.03
    assert r["samples"] < 6.5 and r["token_share"] < 0.8
    easy = [p for i, p in enumerate(held) if i % 2 == 0]
    hard = [p for i, p in enumerate(held) if i % 2 == 1]
    assert replay(table, easy)["samples"] < replay(table, hard)["samples"]  # it spends where it pays
    # the curve's first point is majority itself (never stop early)
    assert curve[0]["samples"] == 8 and curve[0]["accuracy"] == curve[0]["majority_accuracy"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 8), batch=st.integers(1, 3))
def test_replay_never_passes_n_and_a_table_that_never_stops_is_majority(seed, n, batch):
    pools = synthetic_pools(seed, 20, n)
    table, _ = fit(pools, n, batch=batch)
    r = replay(table, pools)
    assert 1 <= r["samples"] <= n and 0 <= r["token_share"] <= 1
    never = StoppingTable(n, batch, -1.0, table.gains, table.margins, table.default)
    assert replay(never, pools)["samples"] == n
    assert replay(never, pools)["accuracy"] == r["majority_accuracy"]


def test_table_files_round_trip_and_bad_ones_are_one_line(tmp_path):
    table, _ = fit(synthetic_pools(2, 50), 8)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table.to_json()))
    assert StoppingTable.load(path) == table
    for text, match in [("{", "not valid JSON"), ('{"format": "x"}', "format field"),
                        ('{"format": "tts-adaptive-calibration-1", "n": 4}', "KeyError")]:
        path.write_text(text)
        with pytest.raises(CalibrationError, match=match):
            StoppingTable.load(path)
    with pytest.raises(CalibrationError, match="no such calibration file"):
        StoppingTable.load(tmp_path / "missing.json")


def test_pools_from_records_keep_draw_order_and_vote_keys():
    rec = {"candidates": [{"answer": "1/2", "vote_key": "0.5", "correct": True, "num_tokens": 3},
                          {"answer": "7", "correct": False, "num_tokens": 4}]}
    [pool] = pools_from_records([rec], 2)
    assert pool == Pool(("0.5", "7"), (True, False), (3, 4))
    assert pools_from_records([rec], 3) == []  # a pool smaller than n is not one


P = Problem(id="q", prompt="What is 2 + 2?", answer="4")


def _table(stop_when_unanimous_at: int, n: int = 8) -> StoppingTable:
    # stop once the leader has this many votes and nothing else was answered; never otherwise
    gains = tuple((k, k, 0, 0.0 if k >= stop_when_unanimous_at else 1.0) for k in range(1, n))
    return StoppingTable(n, 1, 0.0, gains, ((0, 1.0),), 1.0)


def solve(strategy, replies):
    backend = ScriptedBackend({"2 + 2": [ScriptedReply(t) for t in replies]})
    [result] = run(run_async([P], strategy, backend, grade=same_answer))
    return result


def test_the_strategy_stops_where_the_table_says():
    params = SamplingParams(temperature=0.7, max_tokens=8)
    agreed = solve(AdaptiveConsistency(n=8, rule="calibrated", calibration=_table(3), params=params), ["4"] * 8)
    assert agreed.trace.info["samples"] == 3 and agreed.trace.answer == "4"
    split = solve(AdaptiveConsistency(n=8, rule="calibrated", calibration=_table(3), params=params), ["4", "5"] * 4)
    assert split.trace.info["samples"] == 8  # the table never stops a split pool


def test_calibrated_needs_a_table_of_its_n(tmp_path):
    with pytest.raises(CalibrationError, match="needs --adaptive-calibration"):
        AdaptiveConsistency(n=8, rule="calibrated")
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_table(3).to_json()))
    with pytest.raises(CalibrationError, match="fitted for n=8"):
        AdaptiveConsistency(n=16, rule="calibrated", adaptive_calibration=str(path))
    assert AdaptiveConsistency(n=8, rule="calibrated", adaptive_calibration=str(path)).calibration == _table(3)


@pytest.mark.parametrize("name", packaged_names())
def test_packaged_tables_load_by_name(name):
    table = StoppingTable.load(name)
    assert table.n >= 2 and table.gains and table.fitted_on


def test_cli_refuses_calibrated_without_a_table_in_one_line(script):
    done = subprocess.run([sys.executable, "-m", "tts.cli", "run", "--backend", "scripted", "--model", script, "--limit", "2",
                           "--strategy", "adaptive", "--adaptive-rule", "calibrated"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--adaptive-calibration" in done.stderr


def test_the_tables_content_keys_results_not_its_file_name(tmp_path):
    from tts.results import config_hash

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_table(3).to_json()))
    b.write_text(json.dumps(_table(4).to_json()))
    same = tmp_path / "same.json"
    same.write_text(a.read_text())

    def hashed(path):
        return config_hash(AdaptiveConsistency(n=8, rule="calibrated", adaptive_calibration=str(path)).config())

    assert hashed(a) != hashed(b) and hashed(a) == hashed(same)


# --- the confidence-weighted rule ----------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 30), st.integers(0, 30))
def test_weighted_probability_is_the_beta_rule_on_integer_counts(a, b):
    from collections import Counter

    from tts.strategies.adaptive import beta_leader_probability
    from tts.strategies.stopping import weighted_leader_probability

    hi, lo = max(a, b), min(a, b)
    counts = Counter({"x": hi, "y": lo}) if lo else Counter({"x": hi} if hi else {})
    assert weighted_leader_probability(hi, lo) == pytest.approx(beta_leader_probability(counts), abs=1e-5)


def test_confidence_weights_move_the_leader_and_settle_it():
    from tts.strategies.stopping import confidence_leader_probability as prob

    # equal confidences, no scale: the plain Beta rule on counts
    assert prob(["4", "4", "5"], [0.3, 0.3, 0.3]) == pytest.approx(prob(["4", "4", "5"], [0.9, 0.9, 0.9]), abs=1e-9)
    # a confident minority outweighs an unsure majority: "5" (weight 3) leads "4" (2/3) more surely than
    # "4" led "5" on counts alone (2 to 1: 0.6875)
    assert prob(["4", "4", "5"], [0.1, 0.1, 0.9], scale=0.3) > 0.85 > 0.6875 == pytest.approx(prob(["4", "4", "5"], [1, 1, 1]))
    # a larger scale (a model confident everywhere) makes the same votes weigh less: later stops
    assert prob(["4", "4", "4"], [0.5] * 3, scale=0.25) > prob(["4", "4", "4"], [0.5] * 3, scale=1.0)
    assert prob([None, None], [0.9, 0.9]) == 0.0


def confident_replies(pattern):
    """Replies "4" and "5" with token logprobs giving confidence c: one token per reply."""
    import math

    return [ScriptedReply(a, [math.log(c)]) for a, c in pattern]


def test_the_confidence_rule_stops_where_its_replay_does_and_answers_by_weighted_vote():
    from tts.strategies.stopping import Pool, replay_confidence

    params = SamplingParams(temperature=0.7, max_tokens=8)
    patterns = {
        "confident": [("4", 0.9)] * 8,
        "split": [("4", 0.2), ("5", 0.9)] * 4,
        "unsure": [("4", 0.2), ("5", 0.2), ("6", 0.2), ("4", 0.2)] * 2,
    }
    for label, pattern in patterns.items():
        strategy = AdaptiveConsistency(n=8, batch=2, rule="confidence", threshold=0.9, confidence_scale=0.4,
                                       params=params)
        backend = ScriptedBackend({"2 + 2": confident_replies(pattern)})
        [result] = run(run_async([P], strategy, backend, grade=same_answer))
        pool = Pool(tuple(a for a, _ in pattern), tuple(a == "4" for a, _ in pattern), tuple(1 for _ in pattern),
                    tuple(c for _, c in pattern))
        expected = replay_confidence([pool], 8, 2, 0.9, 0.4)
        assert result.trace.info["samples"] == expected["samples"], label
        scores = [c.scores["confidence_mean"] for c in result.trace.candidates]
        assert scores == pytest.approx([c for _, c in pattern[: len(scores)]])
    # the split pool's answer is the confident minority's, not the count's tie-break
    backend = ScriptedBackend({"2 + 2": confident_replies(patterns["split"])})
    strategy = AdaptiveConsistency(n=8, batch=2, rule="confidence", threshold=0.9, confidence_scale=0.4, params=params)
    [result] = run(run_async([P], strategy, backend, grade=same_answer))
    assert result.trace.answer == "5"
    assert result.trace.info["samples"] < 8  # the confident "5"s settle it


def test_fit_confidence_keeps_majority_accuracy_and_saves_where_confidence_tells():
    from tts.strategies.stopping import fit_confidence, replay_confidence

    rng = random.Random(0)

    def pools(count):
        out = []
        for i in range(count):
            easy = i % 2 == 0
            answers, confs = [], []
            for _ in range(16):
                right = rng.random() < (0.9 if easy else 0.45)
                answers.append("4" if right else rng.choice(["5", "6", "7"]))
                confs.append(rng.uniform(0.6, 0.9) if right else rng.uniform(0.1, 0.5))
            out.append(Pool(tuple(answers), tuple(a == "4" for a in answers), tuple(10 for _ in answers), tuple(confs)))
        return out

    scale, threshold, curve = fit_confidence(pools(400), 16, batch=2, tolerance=0.005)
    held = replay_confidence(pools(400), 16, 2, threshold, scale)
    assert 0.3 < scale < 0.8 and threshold in [c["threshold"] for c in curve]
    assert held["accuracy"] >= held["majority_accuracy"] - 0.02 and held["token_share"] < 0.6
    with pytest.raises(CalibrationError, match="token confidences"):
        fit_confidence([Pool(("4",) * 16, (True,) * 16, (1,) * 16)] * 10, 16)


def test_cli_confidence_rule_and_its_bad_scale(script, tmp_path):
    out = tmp_path / "r.jsonl"
    done = subprocess.run([sys.executable, "-m", "tts.cli", "run", "--backend", "scripted", "--model", script, "--limit", "2",
                           "--strategy", "adaptive", "--adaptive-rule", "confidence", "--adaptive-confidence-scale", "0.4",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    bad = subprocess.run([sys.executable, "-m", "tts.cli", "run", "--backend", "scripted", "--model", script, "--limit", "2",
                          "--strategy", "adaptive", "--adaptive-rule", "confidence", "--adaptive-confidence-scale", "0",
                          "--out", str(tmp_path / "b.jsonl")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--adaptive-confidence-scale" in bad.stderr
