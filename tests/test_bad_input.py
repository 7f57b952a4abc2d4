"""Bad input as careless and hostile users give it: one line naming the problem, exit 2, no traceback,
nothing written (issue 17). Property-based where the space is large."""

import asyncio
import json
import math
import time

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

import tts
from tts import backends
from tts.cli import cli

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def assert_clean(result, out=None):
    """Exit 0, or exit 2 with one line that starts with error:, and never an exception."""
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        if out is not None:
            assert not out.exists()


numbers = st.one_of(st.integers(-5, 12), st.integers(10**6, 10**30), st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "", " 3", "٣"]),
                    st.floats(allow_nan=True).map(repr))
texts = st.one_of(st.text(max_size=12), st.sampled_from(["\\x", "\\u12", "§", "\\n\\n", "\\", "a\\q", "\x00"]))
OPTIONS = {
    "--n": numbers, "--limit": numbers, "--max-tokens": numbers, "--temperature": numbers, "--top-p": numbers,
    "--seed": numbers, "--budget-tokens": numbers, "--concurrency": numbers, "--adaptive-batch": numbers,
    "--step-delimiter": texts, "--thinking-opener": texts, "--prompt-format": texts, "--dataset": texts,
    "--strategy": st.one_of(texts, st.sampled_from(["single", "majority", "best_of_n", "majority@3", "single,single",
                                                   "majority@0", "majority@99999", "single,,"])),
    "--backend": st.sampled_from(["scripted", "bogus", ""]),
}


@FAST
@given(st.lists(st.sampled_from(sorted(OPTIONS)), min_size=1, max_size=4, unique=True).flatmap(
    lambda names: st.tuples(*[st.tuples(st.just(n), OPTIONS[n]) for n in names])))
def test_any_options_give_a_result_or_one_line(script, tmp_path_factory, pairs):
    out = tmp_path_factory.mktemp("cli") / "r.jsonl"
    args = ["run", "--backend", "scripted", "--model", script, "--limit", "2", "--strategy", "single", "--out", out]
    for name, value in pairs:
        args += [name, value]
    result = invoke(*args)
    assert_clean(result, out)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
rows = st.one_of(
    st.dictionaries(st.sampled_from(["question", "answer", "id", "x"]), json_values, max_size=4),
    json_values,
)


@FAST
@given(st.lists(rows, min_size=0, max_size=4), st.sampled_from(["\n", "\r\n"]))
def test_any_dataset_rows_give_a_result_or_one_line(script, tmp_path_factory, data, newline):
    folder = tmp_path_factory.mktemp("rows")
    path = folder / "data.jsonl"
    path.write_text(newline.join(json.dumps(r) for r in data) + newline)
    out = folder / "r.jsonl"
    # a script that answers any prompt: the rows are under test here, not the script's keys (a question
    # such as "0" in a file without a prompt format carries no instruction for the script to match)
    anything = folder / "any.json"
    anything.write_text(json.dumps({"": ["9"]}))
    assert_clean(invoke("run", "--backend", "scripted", "--model", anything, "--dataset", path, "--strategy", "single",
                        "--out", out), out)


def test_huge_and_deep_rows_are_one_line(script, tmp_path):
    for name, row in (("big", '{"question": "q", "answer": ' + "9" * 5000 + "}"),
                      ("deep", '{"question": ' + "[" * 100000 + "]" * 100000 + "}")):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(row + "\n")
        result = invoke("run", "--backend", "scripted", "--model", script, "--dataset", path, "--out", tmp_path / "r.jsonl")
        assert result.exit_code == 2 and f"{name}.jsonl:1: not a usable JSON line" in result.output


@FAST
@given(st.dictionaries(st.sampled_from(["format", "version", "unit", "predictor", "rules", "params", "meta", "extra"]),
                       json_values, max_size=6))
def test_any_routing_policy_is_loaded_or_refused_in_one_line(tmp_path_factory, data):
    from tts.routing import Policy, PolicyError

    path = tmp_path_factory.mktemp("policy") / "p.json"
    path.write_text(json.dumps({"format": "tts-routing-policy", "version": 1, **data}))
    try:
        Policy.load(path)
    except PolicyError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


def test_routing_policy_typos_are_refused(tmp_path):
    from tts.routing import Policy, PolicyError
    from tts.strategies.auto import default_policy

    good = default_policy().to_json()
    for change, message in ((lambda d: d.update(rulez=[]), "unknown key(s) 'rulez'"),
                            (lambda d: d["predictor"].update(probe=3), "unknown key(s) 'probe'"),
                            (lambda d: d["rules"][0].update(budgett=5), "unknown key(s) 'budgett'"),
                            (lambda d: d["predictor"].update(probes=10**6), "probes must be an integer from 1 to 64"),
                            (lambda d: d["rules"][0].update(accuracy=[1]), "accuracy must be a number")):
        data = json.loads(json.dumps(good))
        change(data)
        path = tmp_path / "p.json"
        path.write_text(json.dumps(data))
        with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
            Policy.load(path)


def test_prompt_format_is_checked(script, tmp_path):
    out = tmp_path / "r.jsonl"
    result = invoke("run", "--backend", "scripted", "--model", script, "--prompt-format", "bogus", "--out", out)
    assert result.exit_code == 2 and "unknown prompt format 'bogus'; choose from default" in result.output
    result = invoke("run", "--backend", "scripted", "--model", script, "--prompt-format", "gsm8k", "--out", out)
    assert result.exit_code == 2 and "add1 uses its own prompt" in result.output
    assert not out.exists()


def test_a_script_without_a_reply_is_one_line(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"no such prompt": ["1"]}))
    result = invoke("run", "--backend", "scripted", "--model", script, "--out", tmp_path / "r.jsonl")
    assert result.exit_code == 2 and "the script has no reply for the prompt ending" in result.output
    # the error is one line (after the progress bar, which is on stderr)
    assert [line for line in result.output.splitlines() if "error" in line] == [result.output.strip().splitlines()[-1]]


def test_an_unreachable_hub_fails_at_once(monkeypatch):
    import socket

    import huggingface_hub

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    start = time.perf_counter()
    with pytest.raises(backends.BackendError, match="hub is unreachable from here; give a local model folder or one of"):
        backends.resolve_model("someone/some-model")
    assert time.perf_counter() - start < 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(backends.BackendError, match="HF_HUB_OFFLINE"):
        backends.resolve_model("someone/some-model")
    with pytest.raises(backends.BackendError, match="neither a local model folder nor a hub id"):
        backends.resolve_model("not a model")


def test_testbed_names_are_models_too():
    assert backends.resolve_model("testbed").endswith("testbed/policy")
    assert backends.resolve_model("testbed-verifier").endswith("testbed/verifier")


def test_python_api_names_the_wrong_argument(script):
    backend = backends.create("scripted", script)
    problems = tts.data.load("add1", limit=1)
    for args, message in ((("add1", tts.Majority(n=2), backend), "problems must be a list of tts.Problem"),
                          ((problems, "majority", backend), "strategy must be a strategy object"),
                          ((problems, tts.Majority(n=2), "hf"), "backend must be a backend object"),
                          (([problems[0], "x"], tts.Majority(n=2), backend), r"problems\[1\] must be a tts.Problem")):
        with pytest.raises(TypeError, match=message):
            tts.run(*args)
    with pytest.raises(TypeError, match="seed must be an integer"):
        tts.run(problems, tts.Majority(n=2), backend, seed=1.5)

    async def inside():
        tts.solve("What is 1 + 1?", tts.Majority(n=2), backend)

    with pytest.raises(RuntimeError, match="solve_async"):
        asyncio.run(inside())
    assert tts.solve("What is 1 + 1? Reply with just the number", tts.Majority(n=2), backend).answer in ("9", "8")
    assert not math.isnan(0.0)
