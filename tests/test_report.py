"""tts report: pool estimators against brute force, reports on synthetic result files, the command."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter

import pytest
from click.testing import CliRunner

from tts import report as rep
from tts.results import ResultsWriter, result_record
from tts.runtime import Result
from tts.types import Candidate, Problem, Trace


# --- brute force references -------------------------------------------------------------------------------

def brute_pass(correct, k):
    subsets = list(itertools.combinations(correct, k))
    return sum(any(s) for s in subsets) / len(subsets)


def brute_maj(answers, correct, k):
    """Majority vote over every size-k subset; ties split evenly; None abstains; all-abstain scores 0."""
    truth = {a: c for a, c in zip(answers, correct) if a is not None}
    values = []
    for subset in itertools.combinations(range(len(answers)), k):
        votes = Counter(answers[i] for i in subset if answers[i] is not None)
        if not votes:
            values.append(0.0)
            continue
        top = max(votes.values())
        winners = [a for a, v in votes.items() if v == top]
        values.append(sum(truth[a] for a in winners) / len(winners))
    return sum(values) / len(values)


def random_pool(rng, n):
    answers = [rng.choice(["1", "2", "3", "4", None]) for _ in range(n)]
    return answers, [a == "1" for a in answers]


@pytest.mark.parametrize("seed", range(12))
def test_pool_estimators_match_enumeration(seed):
    rng = random.Random(seed)
    answers, correct = random_pool(rng, rng.randint(1, 9))
    for k in range(1, len(answers) + 1):
        assert rep.pool_pass_at_k(correct, k) == pytest.approx(brute_pass(correct, k), abs=1e-12)
        value, exact = rep.maj_at_k(answers, correct, k)
        assert exact
        assert value == pytest.approx(brute_maj(answers, correct, k), abs=1e-12)
        # the subset enumeration path (forced by a tiny composition budget) agrees too
        if math.comb(len(answers), k) <= 200:
            forced, _ = rep.maj_at_k(answers, correct, k, exact_limit=max(math.comb(len(answers), k), 1))
            assert forced == pytest.approx(value, abs=1e-12)


def test_maj_at_k_sampling_within_error():
    rng = random.Random(7)
    answers, correct = random_pool(rng, 12)
    exact = brute_maj(answers, correct, 5)
    value, was_exact = rep.maj_at_k(answers, correct, 5, rng=random.Random(1), exact_limit=1, samples=4000)
    assert not was_exact
    # a mean of 4000 draws of a value in [0, 1]: its standard error is at most 0.5/sqrt(4000) ~ 0.008
    assert abs(value - exact) < 0.04
    again, _ = rep.maj_at_k(answers, correct, 5, rng=random.Random(1), exact_limit=1, samples=4000)
    assert again == value  # seeded


def test_maj_groups_normalized_answers_and_ties():
    # "4.0" and "4" are one answer; a 1-1 tie between a right and a wrong answer counts one half
    assert rep.maj_at_k(["4.0", "4", "5"], [True, True, False], 3)[0] == 1.0
    assert rep.maj_at_k(["4", "5"], [True, False], 2)[0] == 0.5
    assert rep.maj_at_k([None, None], [False, False], 1)[0] == 0.0
    with pytest.raises(ValueError, match="1 <= k <= n"):
        rep.maj_at_k(["1"], [True], 2)


def test_bootstrap_interval_is_seeded_and_sane():
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = rep.bootstrap_interval(values, seed=3)
    assert (lo, hi) == rep.bootstrap_interval(values, seed=3)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert rep.bootstrap_interval([1.0, 1.0]) == (1.0, 1.0)


# --- synthetic result files ----------------------------------------------------------------------------

def write_results(path, strategy, pools, *, tokens=10, level_of=lambda i: i % 2 + 1):
    """A results file through the real writer: one record per pool of (answer, correct) candidates."""
    with ResultsWriter(path, {strategy: "hash"}) as writer:
        for i, pool in enumerate(pools):
            problem = Problem(id=f"p{i}", prompt="q", answer="1", metadata={"level": level_of(i)})
            cands = tuple(Candidate(f"text {a}", a, tokens, "stop") for a, _ in pool)
            votes = Counter(a for a, _ in pool if a is not None)
            answer = votes.most_common(1)[0][0] if votes else None
            chosen = next((j for j, (a, _) in enumerate(pool) if a == answer), None)
            trace = Trace(f"p{i}", strategy, cands, answer, chosen,
                          {"generated_tokens": tokens * len(pool), "prompt_tokens": 5, "flops": 1e6 * len(pool),
                           "wall_seconds": 0.5})
            result = Result(problem, trace, answer == "1", tuple(ok for _, ok in pool))
            writer.write(result_record(result, config_hash="hash", run_info={"dataset": "synthetic", "model": "m"}))
    return path


def pools_for(seed, count, n):
    rng = random.Random(seed)
    return [list(zip(*random_pool(rng, n))) for _ in range(count)]


def test_report_on_result_files(tmp_path):
    pools = pools_for(0, 20, 6)
    a = write_results(tmp_path / "a.jsonl", "majority", pools)
    write_results(tmp_path / "a.jsonl", "single", [p[:1] for p in pools])  # second strategy, same file
    b = write_results(tmp_path / "b.jsonl", "majority", pools_for(1, 20, 4), tokens=20)
    report = rep.build_report([a, b], seed=0, resamples=500)

    first = report["files"][0]
    assert list(first["strategies"]) == ["majority", "single"]
    maj = first["strategies"]["majority"]
    expected_acc = sum(Counter(x for x, _ in p if x is not None).most_common(1)[0][0] == "1"
                       if any(x for x, _ in p) else False for p in pools) / len(pools)
    assert maj["accuracy"] == pytest.approx(expected_acc)
    assert maj["pool_size"] == 6 and [pt["k"] for pt in maj["curve"]] == list(range(1, 7))
    for pt in maj["curve"]:
        pass_ref = sum(brute_pass([c for _, c in p], pt["k"]) for p in pools) / len(pools)
        maj_ref = sum(brute_maj([x for x, _ in p], [c for _, c in p], pt["k"]) for p in pools) / len(pools)
        assert pt["pass_at_k"] == pytest.approx(pass_ref) and pt["maj_at_k"] == pytest.approx(maj_ref)
        assert pt["problems"] == 20
    assert maj["maj_exact"] is True
    lo, hi = maj["wilson"]
    assert lo <= maj["accuracy"] <= hi and maj["bootstrap"][0] <= maj["accuracy"] <= maj["bootstrap"][1]
    assert maj["mean_generated_tokens"] == 60 and maj["mean_tokens_per_candidate"] == 10
    assert maj["flops"] == pytest.approx(20 * 6e6) and maj["wall_seconds"] == pytest.approx(10.0)
    assert set(maj["levels"]) == {"1", "2"} and sum(lv["graded"] for lv in maj["levels"].values()) == 20
    assert first["datasets"] == ["synthetic"]
    assert report["files"][1]["strategies"]["majority"]["pool_size"] == 4

    json.dumps(report)  # plain data all the way down
    from rich.console import Console

    console = Console(record=True, width=200)
    rep.print_report(report, console)
    text = console.export_text()
    for needle in ("a.jsonl", "b.jsonl", "majority", "single", "pass@k / maj@k", "by level", "side by side"):
        assert needle in text


def test_mixed_pool_sizes_average_only_eligible_problems(tmp_path):
    pools = [[("1", True)], [("2", False), ("1", True), ("1", True)]]
    path = write_results(tmp_path / "m.jsonl", "majority", pools)
    curve = rep.build_report([path], resamples=200)["files"][0]["strategies"]["majority"]["curve"]
    assert [(p["k"], p["problems"]) for p in curve] == [(1, 2), (2, 1), (3, 1)]
    assert curve[0]["pass_at_k"] == pytest.approx((1 + 2 / 3) / 2)


@pytest.mark.parametrize("x", ["tokens", "flops"])
def test_plot_file_is_written(tmp_path, x):
    pytest.importorskip("matplotlib")
    a = write_results(tmp_path / "a.jsonl", "majority", pools_for(2, 8, 4))
    b = write_results(tmp_path / "b.jsonl", "majority", pools_for(3, 8, 8), tokens=12)
    out = rep.plot(rep.build_report([a, b], resamples=200), tmp_path / "figs" / "acc.png", x=x)
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


# --- the command ---------------------------------------------------------------------------------------

def test_command_table_json_and_plot(tmp_path):
    a = write_results(tmp_path / "a.jsonl", "majority", pools_for(4, 6, 4))
    runner = CliRunner()
    res = runner.invoke(rep.report_command, [str(a), "--plot", str(tmp_path / "p.png"), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    assert "majority" in res.output and (tmp_path / "p.png").exists()
    res = runner.invoke(rep.report_command, [str(a), "--json", "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["files"][0]["strategies"]["majority"]["pool_size"] == 4


@pytest.mark.parametrize("content, message", [
    (None, "no such results file"),
    ("", "no results in the file"),
    ('{"id": "p0", "strategy": "x"}\nnot json\n', "b.jsonl:1: not a tts results record"),
    ('not json\n', "b.jsonl:1: not a JSON line"),
    ('{"answer": 1}\n', "b.jsonl:1: not a tts results record"),
    ('[1, 2]\n', "b.jsonl:1: a record must be a JSON object, got list"),
    ('{"format": 1, "config_hash": "h", "id": "p0", "strategy": "x", "candidates": 3}\n', "missing field 'answer'"),
    ('{"format": 1, "config_hash": "h", "id": 5, "strategy": "x", "answer": null, "reference": null, "correct": null,'
     ' "chosen": null, "candidates": [], "ledger": {}, "info": {}, "metadata": {}}\n', "field 'id' has the wrong type"),
])
def test_command_bad_files_exit_2_with_one_line(tmp_path, content, message):
    path = tmp_path / "b.jsonl"
    if content is not None:
        path.write_text(content)
    res = CliRunner().invoke(rep.report_command, [str(path)])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1


def test_command_directory_and_no_files(tmp_path):
    res = CliRunner().invoke(rep.report_command, [str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in res.output
    assert CliRunner().invoke(rep.report_command, []).exit_code == 2


def test_report_votes_with_the_stored_vote_key(tmp_path):
    # Three spellings of one value vote together when the run stored their vote key; without it they split.
    answers = ["\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", "1/\\sqrt{2}", "3", "3"]
    correct = (True, True, True, False, False)
    problem = Problem(id="p0", prompt="q", answer="\\sqrt{2}/2")
    cands = tuple(Candidate(f"t{i}", a, 5, "stop") for i, a in enumerate(answers))
    trace = Trace("p0", "majority", cands, "3", 3, {"generated_tokens": 25})
    result = Result(problem, trace, False, correct)
    key = lambda answer: "3" if answer == "3" else "sqrt(2)/2"
    keyed = result_record(result, config_hash="h", run_info={}, vote_key=key)
    assert [c["vote_key"] for c in keyed["candidates"]] == ["sqrt(2)/2"] * 3 + ["3", "3"]
    plain = result_record(result, config_hash="h", run_info={})
    assert all("vote_key" not in c for c in plain["candidates"])
    with_key = rep.summarize_records([keyed], resamples=50)["curve"][-1]["maj_at_k"]
    without = rep.summarize_records([plain], resamples=50)["curve"][-1]["maj_at_k"]
    assert with_key == 1.0 and without == 0.0


def test_auroc_matches_counting_pairs_with_ties_half():
    from tts.metrics import auroc, grouped_auroc

    def brute(pos, neg):
        return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))

    rng = random.Random(3)
    groups = [([rng.choice([0.1, 0.2, 0.5, 0.9]) for _ in range(rng.randint(1, 6))],
               [rng.choice([0.1, 0.2, 0.5, 0.9]) for _ in range(rng.randint(1, 6))]) for _ in range(20)]
    for pos, neg in groups:
        assert auroc(pos, neg) == pytest.approx(brute(pos, neg))
    assert auroc([], [0.5]) is None and auroc([0.5], []) is None
    value, pairs = grouped_auroc(groups + [([0.3], [])])
    wins = sum(brute(p, n) * len(p) * len(n) for p, n in groups)
    assert pairs == sum(len(p) * len(n) for p, n in groups)
    assert value == pytest.approx(wins / pairs)
    assert grouped_auroc([([0.2], [])]) == (None, 0)


def test_plot_paths_are_checked_before_any_work(tmp_path):
    a = write_results(tmp_path / "a.jsonl", "majority", pools_for(1, 4, 4))
    runner = CliRunner()
    for target, message in ((tmp_path, "is a folder"), (tmp_path / "plot", "must end in one of .png"),
                            (tmp_path / "nowhere" / "p.png", "no folder")):
        res = runner.invoke(rep.report_command, [str(a), "--plot", str(target)])
        assert res.exit_code == 2 and message in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.jsonl.lock"]


def test_binary_bootstrap_matches_resampling_the_outcomes():
    # the same distribution as resampling 0/1 outcomes, drawn without them
    lo, hi = rep.binary_bootstrap_interval(30, 100, seed=3, resamples=4000)
    ref_lo, ref_hi = rep.bootstrap_interval([1.0] * 30 + [0.0] * 70, seed=3, resamples=4000)
    assert abs(lo - ref_lo) <= 0.02 and abs(hi - ref_hi) <= 0.02
    assert rep.binary_bootstrap_interval(2, 2) == (1.0, 1.0) and rep.binary_bootstrap_interval(0, 0) is None


def test_report_keeps_no_records_in_memory(tmp_path):
    """A report tallies as it reads: its memory must not grow by a record's size per record (before,
    it kept a slimmed copy of every record, about 4.5 KB each for majority@8)."""
    import gc
    import tracemalloc

    def peak(count):
        path = write_results(tmp_path / f"r{count}.jsonl", "majority", pools_for(count, count, 8))
        gc.collect()
        tracemalloc.start()
        rep.build_report([path], resamples=100)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top

    peak(300)  # imports and caches filled once, outside what is compared
    small, large = peak(301), peak(3000)
    per_record = (large - small) / 2699
    # what still grows with the file: the duplicate check's 8-byte tags, and the bounded caches of
    # normalized answers and vote structures
    assert per_record < 400, f"{per_record:.0f} bytes per record"


def test_a_tag_collision_never_refuses_a_file_and_repeats_still_are(tmp_path, monkeypatch):
    from tts import results

    path = write_results(tmp_path / "r.jsonl", "majority", pools_for(1, 5, 3))
    monkeypatch.setattr(results, "_key_tag", lambda key: 7)  # every key collides
    assert len(results.read_records(path)) == 5
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines + [lines[2]]))
    with pytest.raises(results.ResultsFileError, match=r":6: repeats majority on problem 'p2' from line 3"):
        results.read_records(path)


# --- what the tables say at a glance ---------------------------------------------------------------------

def test_tables_fit_80_columns_with_strategy_names_whole(tmp_path):
    from rich.console import Console

    names = ["majority_vote@16", "best_of_n@16", "beam_search@16+budget_forcing"]
    path = tmp_path / "w.jsonl"
    for name in names:
        write_results(path, name, pools_for(5, 6, 8))
    console = Console(record=True, width=80)
    rep.print_report(rep.build_report([path, path], resamples=200), console)
    text = console.export_text()
    assert "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    for name in names:
        assert sum(name in line for line in text.splitlines()) >= 4  # main, compute, curves, side by side


def test_a_pool_smaller_than_k_is_not_a_miss(tmp_path):
    # beam search: a pool of 8 to 12 candidates; N in the table is 8, where every problem has a pool
    pools = [[("1", True)] * 8, [("1", True)] * 12]
    path = write_results(tmp_path / "b.jsonl", "beam_search", pools)
    s = rep.build_report([path], resamples=200)["files"][0]["strategies"]["beam_search"]
    assert s["pool_size"] == 12 and s["full_k"] == 8
    assert rep._at_full_k(s)["pass_at_k"] == 1.0 and rep._at_full_k(s)["problems"] == 2
    from rich.console import Console

    console = Console(record=True, width=80)
    rep.print_report(rep.build_report([path], resamples=200), console)
    text = console.export_text()
    assert "8/12" in text and "1 of 2" in text and "N=8" in text  # the k=12 point averages over the one problem that has it
    assert "0.000" not in text


def test_elapsed_time_is_the_runs_not_the_sum_of_overlapping_problems(tmp_path):
    path = write_results(tmp_path / "t.jsonl", "majority", pools_for(6, 4, 2))
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    # four problems of 5 s each, run concurrently in 6 s, then a resumed invocation of 2 s
    stamps = [("a", 5.5), ("a", 6.0), ("a", 6.2), ("b", 2.0)]
    for rec, (session, end) in zip(lines, stamps):
        rec["ledger"]["wall_seconds"] = 5.0 if session == "a" else 2.0
        rec["timing"] = {"session": session, "elapsed_s": end}
        from tts.results import digest

        rec["digest"] = digest(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    s = rep.build_report([path], resamples=200)["files"][0]["strategies"]["majority"]
    assert s["wall_seconds"] == pytest.approx(17.0)
    assert s["elapsed_seconds"] == pytest.approx((6.2 - 0.5) + 2.0)
