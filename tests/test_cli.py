import json

import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from tts.cli import cli
from tts.escapes import decode_escapes
from tts.results import read_records


def invoke(*args):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def scripted(script, out, *extra):
    return invoke("run", "--backend", "scripted", "--model", script, "--limit", "4", "--out", str(out), *extra)


def test_run_writes_one_line_per_problem_and_strategy(script, tmp_path):
    out = tmp_path / "r.jsonl"
    code, output = scripted(script, out)
    assert code == 0, output
    records = read_records(out)
    assert len(records) == 8
    assert {r["strategy"] for r in records} == {"single", "majority"}
    maj = [r for r in records if r["strategy"] == "majority"]
    assert all(len(r["candidates"]) == 8 for r in maj)
    for r in records:
        assert set(r["ledger"]) >= {"generated_tokens", "prompt_tokens", "cached_prompt_tokens", "verifier_tokens",
                                    "engine_calls", "flops", "wall_seconds"}
        assert r["correct"] in (True, False)
        assert r["answer"] in ("8", "9")
    assert "accuracy against compute" in output


def test_rerun_resumes_and_skips_finished_problems(script, tmp_path):
    out = tmp_path / "r.jsonl"
    assert scripted(script, out, "--limit", "2")[0] == 0
    code, output = scripted(script, out, "--limit", "5")
    assert code == 0, output
    assert "4 results already there" in output
    records = read_records(out)
    keys = [(r["strategy"], r["id"]) for r in records]
    assert len(keys) == len(set(keys)) == 10


def test_partial_last_line_from_a_killed_run_is_dropped(script, tmp_path):
    out = tmp_path / "r.jsonl"
    assert scripted(script, out, "--limit", "2", "--strategy", "single")[0] == 0
    with out.open("ab") as fh:
        fh.write(b'{"id": "add1-0002", "strat')
    code, output = scripted(script, out, "--limit", "3", "--strategy", "single")
    assert code == 0, output
    assert [r["id"] for r in read_records(out)] == ["add1-0000", "add1-0001", "add1-0002"]


def test_different_config_on_same_file_is_refused_and_file_kept(script, tmp_path):
    out = tmp_path / "r.jsonl"
    assert scripted(script, out, "--limit", "2")[0] == 0
    before = out.read_bytes()
    code, output = scripted(script, out, "--temperature", "0.3")
    assert code == 2
    assert "different configuration" in output and "Traceback" not in output
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "beam"], "choose from single, best_of_n, majority"),
        (["--dataset", "nope"], "choose from add1"),
        (["--backend", "tpu"], "choose from auto, hf"),
        (["--n", "0"], "'--n': 0 is not in the range 1<=x<=4096"),
        (["--n", "-3"], "'--n': -3 is not in the range 1<=x<=4096"),
        (["--limit", str(10**20)], "'--limit': 100000000000000000000 is not in the range 1<=x<=1000000"),
        (["--limit", "0"], "'--limit'"),
        (["--budget-tokens", "0"], "'--budget-tokens'"),
        (["--budget-flops", "0"], "'--budget-flops'"),
        (["--budget-flops", "nan"], "'--budget-flops'"),
        (["--temperature", "-1"], "'--temperature'"),
        (["--model", "./no/such/folder"], "not a Hugging Face model folder"),
        (["--frobnicate"], "No such option"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, tmp_path):
    code, output = invoke("run", "--out", str(tmp_path / "x.jsonl"), *args)
    assert code == 2
    lines = [l for l in output.splitlines() if l.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "x.jsonl").exists()


def test_scripted_backend_needs_a_script_file(tmp_path):
    code, output = invoke("run", "--backend", "scripted", "--model", str(tmp_path / "none.json"),
                          "--out", str(tmp_path / "x.jsonl"))
    assert code == 2 and "JSON script file" in output


def test_out_pointing_at_a_directory_is_refused(script, tmp_path):
    code, output = scripted(script, tmp_path)
    assert code == 2 and "is a directory" in output


def test_budget_tokens_caps_every_problem(script, tmp_path):
    out = tmp_path / "r.jsonl"
    code, output = scripted(script, out, "--strategy", "majority", "--budget-tokens", "20", "--max-tokens", "8")
    assert code == 0, output
    for r in read_records(out):
        assert r["ledger"]["generated_tokens"] <= 20
        # at worst case 20 tokens would pay for two 8-token samples; as a pool they pay for all eight
        assert len(r["candidates"]) == 8


def test_budget_flops_caps_every_problem_and_keys_results(script, tmp_path):
    out = tmp_path / "r.jsonl"
    free = tmp_path / "free.jsonl"
    assert scripted(script, free, "--strategy", "majority", "--max-tokens", "8", "--limit", "3")[0] == 0
    spent = max(r["ledger"]["flops"] for r in read_records(free))
    tokens = min(r["ledger"]["generated_tokens"] for r in read_records(free))
    cap = spent * 0.9  # above the prompt's own cost, below what the free run spent
    code, output = scripted(script, out, "--strategy", "majority", "--max-tokens", "8", "--limit", "3",
                            "--budget-flops", str(cap))
    assert code == 0, output
    records = read_records(out)
    assert all(0 < r["ledger"]["flops"] <= cap for r in records)
    assert all(r["ledger"]["generated_tokens"] < tokens for r in records)  # the cap cut the samples short
    # a different cap is a different configuration: refused, nothing lost
    before = out.read_bytes()
    code, output = scripted(script, out, "--strategy", "majority", "--max-tokens", "8", "--limit", "3",
                            "--budget-flops", str(cap * 2))
    assert code == 2 and "other settings (budget_flops" in output and out.read_bytes() == before


def test_help_lists_commands_and_options():
    code, output = invoke("--help")
    assert code == 0 and "run" in output
    code, output = invoke("run", "--help")
    assert code == 0 and "--budget-tokens" in output
    assert all(name in output for name in ("single", "best_of_n", "majority"))


def test_sigkilled_run_resumes_with_every_problem_exactly_once(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "slow.json"
    script.write_text(json.dumps({"replies": {"Reply with just the number": ["9", "8"]}, "latency": 0.1}))
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "tts.cli", "run", "--backend", "scripted", "--model", str(script),
           "--limit", "30", "--concurrency", "1", "--strategy", "single,majority", "--n", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 5):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_records(out)
    assert 5 <= len(partial) < 60  # killed part way
    finished = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    records = read_records(out)
    keys = [(r["strategy"], r["id"]) for r in records]
    assert len(keys) == len(set(keys)) == 60
    assert out.read_bytes().endswith(b"\n")


# --- bad values: one line, exit 2, nothing written ------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (("--temperature", "nan"), "Invalid value for '--temperature': 'nan' is not a finite number"),
    (("--adaptive-threshold", "nan"), "Invalid value for '--adaptive-threshold': 'nan' is not a finite number"),
    (("--temperature", "inf"), "Invalid value for '--temperature': inf is not in the range 0<=x<=100.0"),
    (("--strategy", "beam_search", "--step-delimiter", "\\x"), "--step-delimiter: bad escape '\\\\x'"),
    (("--thinking-opener", "ab\\q"), "--thinking-opener: bad escape '\\\\q'"),
])
def test_bad_values_are_one_line_errors(script, tmp_path, args, expected):
    out = tmp_path / "r.jsonl"
    code, output = scripted(script, out, *args)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {expected}"), output
    assert not out.exists()


@given(st.text())
def test_escapes_decode_once_and_keep_non_ascii(text):
    assert decode_escapes(text.replace("\\", "")) == text.replace("\\", "")  # no escape: unchanged, § stays §
    written = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    assert decode_escapes(written) == text
    try:
        decode_escapes(text)
    except ValueError as exc:
        assert "bad escape" in str(exc)
