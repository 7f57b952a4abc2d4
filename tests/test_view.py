"""tts view without a browser: what the page says about a record (explain), that any text from a results
file stays inside its JSON block, and that writing the page never destroys a file."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from tts.results import digest
from tts.view import ViewError, render, write
from tts.view.explain import disagreement, outcome, row, why_chosen
from tts.view.page import MARKER


def record(i=0, *, strategy="majority", texts=("a",), answers=("1",), chosen=0, info=None, correct=True, question="q",
           step="s", reference="1"):
    rec = {
        "id": f"p{i}", "strategy": strategy, "question": question, "answer": answers[chosen] if chosen is not None else None,
        "reference": reference, "correct": correct, "chosen": chosen,
        "candidates": [{"text": t, "answer": a, "num_tokens": 3, "finish_reason": "stop", "scores": {}, "correct": a == reference}
                       for t, a in zip(texts, answers)],
        "ledger": {"generated_tokens": 3 * len(texts), "flops": 1e6}, "info": info if info is not None else {},
        "metadata": {"level": 1}, "config_hash": "h", "dataset": "synthetic", "model": "m", "format": 2, "run": {},
    }
    if step is not None and "tree" not in rec["info"] and strategy == "beam_search":
        rec["info"]["tree"] = {"nodes": [
            {"id": 0, "parent": None, "depth": 0, "kind": "root", "step": "", "children": [1]},
            {"id": 1, "parent": 0, "depth": 1, "kind": "step", "step": step, "finished": True, "children": []}],
            "truncated": 0}
        rec["info"]["candidate_nodes"] = [1] * len(texts)
    rec["digest"] = digest(rec)
    return rec


def write_file(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


# ----------------------------------------------------------------------------------------- explain

def test_why_a_majority_vote_chose_with_a_tie_broken_by_the_seed():
    rec = record(texts=("a", "b", "c", "d"), answers=("7", "8", "7", "8"), chosen=1,
                 info={"votes": {"7": 2, "8": 2}})
    text = why_chosen(rec)
    assert "majority vote" in text and "'8' has 2 of 4" in text and "tie between '7', '8' broken by the seed" in text


def test_why_a_weighted_vote_and_the_best_scored_of_its_answer():
    rec = record(texts=("a", "b", "c"), answers=("7", "7", "8"), chosen=1, info={"votes": {"7": 1.25, "8": 0.5}})
    rec["candidates"][0]["scores"] = {"prm": 0.5}
    rec["candidates"][1]["scores"] = {"prm": 0.75}
    text = why_chosen(rec)
    assert "weighted vote" in text and "1.25 of 1.75" in text and "of its 2 candidates the best-scored one" in text


def test_why_the_highest_score_and_a_tie_among_scores():
    rec = record(texts=("a", "b"), answers=("7", "8"), chosen=0, info={"verifier": "prm"})
    rec["candidates"][0]["scores"] = {"prm": 0.9}
    rec["candidates"][1]["scores"] = {"prm": 0.9}
    assert why_chosen(rec) == "candidate 0: highest score (prm = 0.9); tied with others, the earliest wins"


def test_why_mcts_errors_and_empty_pools():
    assert "most visited" in why_chosen(record(info={"selection": "most visits"}))
    assert why_chosen(record(info={"error": "engine died"})).startswith("no answer: the problem ended in an error")
    empty = record(texts=(), answers=(), chosen=None, info={"budget_stop": "tokens"})
    assert why_chosen(empty) == "no candidates: the budget stopped the search (tokens)"
    assert why_chosen(record()) == "candidate 0: the only candidate"


def test_outcome_disagreement_and_row():
    assert outcome(record()) == "correct"
    assert outcome(record(correct=False)) == "wrong"
    assert outcome(record(chosen=None, texts=(), answers=())) == "no answer"
    rec = record(texts="abcd", answers=("1", "1", "2", None), chosen=0)
    assert disagreement(rec) == pytest.approx(1 / 3, abs=1e-4)
    fields = row(rec, 0, 0)
    assert fields[2] == "p0" and fields[4] == "correct" and fields[11] == 4


# ----------------------------------------------------------------------------------------- the page

def blocks(page: str) -> dict[str, object]:
    return {m.group(1): json.loads(m.group(2))
            for m in re.finditer(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, re.S)}


HOSTILE = ["</script><script>window.__pwned=1</script>", "<!--", "<img src=x onerror=alert(1)>", "\u2028\u2029",
           "&lt;&amp;", "{{title}}", "\x00\x1b[31m", "'\"`"]


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40)), min_size=1, max_size=4),
       question=st.one_of(st.sampled_from(HOSTILE), st.text(max_size=60)))
def test_any_text_stays_inside_its_json_block(tmp_path_factory, texts, question):
    """Whatever a model wrote, the page holds it as data: each block parses back to exactly what the file
    said, and the only script-closing tags are the page's own."""
    path = tmp_path_factory.mktemp("v") / "r.jsonl"
    answers = tuple(t[:10] for t in texts)
    recs = [record(0, texts=tuple(texts), answers=answers, question=question, step=texts[0], strategy="beam_search"),
            record(1, texts=tuple(texts), answers=answers, question=question)]
    write_file(path, recs)
    page = render([path])
    found = blocks(page)
    assert set(found) == {"tts-data", "p0", "p1"}
    for i, rec in enumerate(recs):
        detail = found[f"p{i}"]
        assert detail["question"] == question
        assert [c["text"] for c in detail["candidates"]] == list(texts)
    assert found["p0"]["info"]["tree"]["nodes"][1]["step"] == texts[0]
    assert page.lower().count("</script") == 4  # data, two records, the page's script
    assert page.startswith(MARKER)


def test_page_data_has_the_run_rows_and_ledger_totals(tmp_path):
    path = write_file(tmp_path / "r.jsonl", [record(i, correct=i % 2 == 0) for i in range(5)])
    data = blocks(render([path]))["tts-data"]
    assert data["strategies"] == [[0, "majority"]] and len(data["rows"]) == 5
    summary = data["report"]["files"][0]["strategies"]["majority"]
    assert summary["accuracy"] == pytest.approx(3 / 5)
    assert data["report"]["files"][0]["ledger_totals"]["majority"]["generated_tokens"] == 15


def run_view(*args):
    return subprocess.run([sys.executable, "-m", "tts.cli", "view", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_the_command_writes_a_page_and_rewrites_its_own(tmp_path):
    path = write_file(tmp_path / "r.jsonl", [record()])
    out = tmp_path / "page.html"
    for _ in range(2):
        done = run_view(path, "-o", out)
        assert done.returncode == 0, done.stderr
        assert out.read_text().startswith(MARKER)


@pytest.mark.parametrize("case", ["missing", "not results", "output is input", "foreign output", "folder",
                                  "no folder", "suffix", "no files"])
def test_bad_input_is_one_line_exit_2_and_nothing_is_lost(tmp_path, case):
    good = write_file(tmp_path / "r.jsonl", [record()])
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    args = {
        "missing": [tmp_path / "nope.jsonl", "-o", tmp_path / "p.html"],
        "not results": [csv, "-o", tmp_path / "p.html"],
        "output is input": [good, "-o", good],
        "foreign output": [good, "-o", foreign],
        "folder": [good, "-o", tmp_path],
        "no folder": [good, "-o", tmp_path / "no" / "p.html"],
        "suffix": [good, "-o", tmp_path / "p.txt"],
        "no files": [],
    }[case]
    before = {p: p.read_bytes() for p in (good, foreign, csv)}
    done = run_view(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "p.html").exists()


def test_a_failed_render_keeps_the_previous_page(tmp_path):
    good = write_file(tmp_path / "r.jsonl", [record()])
    out = write([good], tmp_path / "p.html")
    first = out.read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(ViewError):
        write([bad], out)
    assert out.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_open_says_so_when_there_is_no_browser(tmp_path, monkeypatch):
    import webbrowser

    from click.testing import CliRunner

    from tts.view.command import view_command

    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    good = write_file(tmp_path / "r.jsonl", [record()])
    result = CliRunner().invoke(view_command, [str(good), "-o", str(tmp_path / "p.html"), "--open"])
    assert result.exit_code == 0 and "no browser found" in result.output


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 50) | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=20)
INFO_KEYS = st.sampled_from(["tree", "votes", "candidate_nodes", "particles", "segments", "selection", "verifier",
                             "scorer", "route", "error", "budget_stop"])


@settings(max_examples=200, deadline=None)
@given(info=st.dictionaries(INFO_KEYS, JSON | st.fixed_dictionaries({"nodes": st.lists(JSON, max_size=4)}), max_size=6))
def test_any_info_gives_a_detail_and_a_reason(info):
    """A results file's info is free-form; whatever it holds, the page's data is built and every field it
    draws from has the shape the script expects (or is left out)."""
    from tts.view.page import _safe_json, detail

    rec = record(texts=("a", "b"), answers=("1", "2"), chosen=1)
    rec["info"] = info
    d = detail(rec)
    assert isinstance(d["why"], str) and d["why"]
    json.loads(_safe_json(d))  # strict JSON: what the page's JSON.parse reads
    tree = d["info"].get("tree")
    if tree is not None:
        ids = {n["id"] for n in tree["nodes"]}
        assert all(set(n["children"]) <= ids and (n["parent"] is None or n["parent"] in ids) for n in tree["nodes"])
        parents = {n["id"]: n["parent"] for n in tree["nodes"]}
        for start in parents:  # every parent chain ends at a root
            seen, at = set(), start
            while at is not None:
                assert at not in seen
                seen.add(at)
                at = parents[at]


def test_a_tree_with_a_cycle_is_drawn_as_a_forest():
    from tts.view.page import detail

    rec = record(strategy="beam_search")
    rec["info"]["tree"] = {"nodes": [{"id": 1, "parent": 2, "children": [2]}, {"id": 2, "parent": 1, "children": [1]},
                                     {"id": 3, "parent": 3, "children": [3]}]}
    nodes = detail(rec)["info"]["tree"]["nodes"]
    assert [(n["id"], n["parent"], n["children"]) for n in nodes] == [(1, None, [2]), (2, 1, []), (3, None, [])]
