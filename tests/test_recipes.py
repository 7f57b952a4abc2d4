"""Recipes (`tts run --config`) and NAME@N strategy specs."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from tts.cli import cli
from tts.recipes import RecipeError, read_recipe, run_options
from tts.results import read_records
from tts.strategies.specs import parse_spec

REPO = Path(__file__).resolve().parent.parent


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_recipe_values_are_defaults_and_the_command_line_overrides_them(script, tmp_path):
    recipe = write(tmp_path, f"backend: scripted\nmodel: {script}\nlimit: 3\nstrategy: [single, majority@4]\nmax-tokens: 16\n")
    out = tmp_path / "a.jsonl"
    code, output = invoke("run", "--config", recipe, "--out", out)
    assert code == 0, output
    records = read_records(out)
    assert sorted({r["strategy"] for r in records}) == ["majority@4", "single"]
    assert len(records) == 6
    assert all(len(r["candidates"]) == 4 for r in records if r["strategy"] == "majority@4")
    assert all(r["recipe"] == str(recipe) for r in records)
    # --limit on the command line beats the recipe's 3
    out2 = tmp_path / "b.jsonl"
    code, output = invoke("run", "--config", recipe, "--limit", "2", "--strategy", "single", "--out", out2)
    assert code == 0, output
    assert len(read_records(out2)) == 2


def test_recipe_and_equivalent_flags_give_the_same_config_hash(script, tmp_path):
    recipe = write(tmp_path, f"backend: scripted\nmodel: {script}\nlimit: 2\nstrategy: majority\nn: 3\n")
    out = tmp_path / "same.jsonl"
    assert invoke("run", "--config", recipe, "--out", out)[0] == 0
    # the same settings as flags resume the same file instead of being refused as a different config
    code, output = invoke("run", "--backend", "scripted", "--model", script, "--limit", "2", "--strategy", "majority",
                          "--n", "3", "--out", out)
    assert code == 0, output
    assert "resuming" in output


@pytest.mark.parametrize("text, message", [
    ("backend: scripted\nbogus: 1\n", "unknown key 'bogus'; choose from"),
    ("- a\n- b\n", "a recipe is a mapping"),
    ("limit: [1, 2]\n", "limit must be a single value"),
    ("backend: [scripted\n", "not valid YAML (line"),
    ("n: many\n", "n must be an integer, got 'many'"),
    ("n: 1.9\n", "n must be an integer, got 1.9"),
    ("n: true\n", "n must be an integer, got True"),
    ("temperature: 2026-01-01\n", "temperature must be a number, got datetime.date"),
    ("model: 12\n", "model must be a string, got 12"),
    ("n: 4\nn: 8\n", "key 'n' given twice"),
    ("a: &x [1, 2]\nb: *x\n", "YAML aliases"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n", "YAML aliases"),
])
def test_bad_recipes_give_one_line_and_exit_2(text, message, tmp_path):
    out = tmp_path / "never.jsonl"
    code, output = invoke("run", "--config", write(tmp_path, text), "--out", out)
    assert code == 2
    assert message in output
    assert len(output.strip().splitlines()) == 1 and output.startswith("error:")
    assert not out.exists()


def test_missing_recipe_names_the_file_and_lists_recipes(tmp_path):
    write(tmp_path, "limit: 1\n", "one.yaml")
    code, output = invoke("run", "--config", tmp_path / "nope.yaml")
    assert code == 2
    assert "no such recipe file" in output and "one.yaml" in output


def test_committed_recipes_are_valid():
    from tts.cli import run_command

    valid = [p.name for p in run_command.params if p.expose_value]
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes, "the repository ships recipes"
    for path in recipes:
        options = run_options(read_recipe(path), valid, source=str(path))
        assert options.get("model") and options.get("strategies"), path.name
        for spec in options["strategies"].split(","):
            from tts.strategies import STRATEGIES

            assert parse_spec(spec)[0] in STRATEGIES, (path.name, spec)


def test_parse_spec():
    assert parse_spec("majority") == ("majority", None)
    assert parse_spec(" best_of_n@16 ") == ("best_of_n", 16)
    for bad in ("majority@", "majority@0", "majority@x", "majority@-2", "majority@4097", "majority@" + "9" * 5000,
                "majority@\u0663"):
        with pytest.raises(ValueError, match="an integer from 1 to 4096"):
            parse_spec(bad)


@pytest.mark.parametrize("spec, message", [("majority@0", "--strategy 'majority@0'"), ("nope@4", "unknown nope@4"),
                                           ("single,single", "single given twice")])
def test_bad_specs_on_the_command_line(script, spec, message, tmp_path):
    code, output = invoke("run", "--backend", "scripted", "--model", script, "--strategy", spec, "--out", tmp_path / "x.jsonl")
    assert code == 2 and message in output, output


def test_read_recipe_errors(tmp_path):
    with pytest.raises(RecipeError, match="not UTF-8"):
        p = tmp_path / "bin.yaml"
        p.write_bytes(b"\xff\xfe\x00")
        read_recipe(p)
    assert read_recipe(write(tmp_path, "")) == {}
