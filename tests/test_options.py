"""One way from options to objects (issue 20): components declare their options, one builder fills them
from any source, every command-line option reaches the component that declares it, an option nobody
chosen takes is an error, and config hashes are derived from every field."""

import dataclasses

import pytest
from click.testing import CliRunner

from tts import options as opts
from tts.cli import cli, run_command
from tts.results import config_hash
from tts.strategies import STRATEGIES, BudgetForcing, create, option_owners
from tts.types import SamplingParams

P = SamplingParams()


def other_value(d):
    """A valid value of option ``d`` other than its default (None for objects: chosen per option below)."""
    o = d.option
    if o.choices is not None:
        return next(c for c in o.choices if c != d.default)
    if d.kind == "int":
        base = d.default if isinstance(d.default, int) else int(o.low or 1)
        value = base + 1
        return value if o.high is None or value <= o.high else base - 1
    if d.kind == "float":
        base = d.default if isinstance(d.default, float) else 0.5
        lo, hi = o.low if o.low is not None else 0.0, o.high if o.high is not None else 10.0
        return (base + lo) / 2 if base > lo else (base + min(hi, base + 2)) / 2
    if d.kind == "str":
        return (d.default or "x") + "y"
    if d.kind == "bool":
        return not d.default
    return None


OBJECTS = {"verifier": "confidence_tail", "prm": "confidence_tail", "step_scorer": "confidence_tail",
           "rollout_verifier": "confidence_mean"}


def settable(cls):
    """(key, value) for every option of ``cls`` (canonical keys), with a value other than the default."""
    out = []
    for key, d in opts.declared(cls).items():
        if key != d.key or key in ("routing_policy", "adaptive_calibration"):
            continue  # aliases set the same field; policy and calibration files: test_routing, test_adaptive_calibration
        value = OBJECTS.get(key) if d.kind == "object" else other_value(d)
        if key in ("step_pattern",):
            continue  # only read in regex mode (covered below)
        out.append((key, value))
    return out


def build_with(name, values):
    values = dict(values)
    if name == "revise":
        values.setdefault("revisions", 2)
    if name == "deepconf":
        values.setdefault("deepconf_warmup", 2)
    return create(name, 8, P, values, strict=True)


@pytest.mark.parametrize("name", [n for n in STRATEGIES if n != "auto"])
def test_changing_any_option_changes_the_config_hash(name):
    cls = STRATEGIES[name]
    base = config_hash(build_with(name, {}).config())
    for key, value in settable(cls):
        if key == "step_mode" and value == "regex":
            changed = build_with(name, {key: value, "step_pattern": r"\n"})
        else:
            changed = build_with(name, {key: value})
        assert config_hash(changed.config()) != base, f"{name}: {key}={value!r} keeps the hash"
    assert config_hash(create(name, 9, P).config()) != base or cls.width_option is None  # N too
    assert config_hash(create(name, 8, dataclasses.replace(P, temperature=0.3)).config()) != base


def test_two_prm_folders_never_share_a_hash(tmp_path):
    from tts.options import model_identity

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, weights in ((a, b"1"), (b, b"2")):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(weights)
    assert model_identity(a) != model_identity(b)
    (b / "model.safetensors").write_bytes(b"1")
    assert model_identity(a)["digest"] == model_identity(b)["digest"]  # same content, same digest


def test_the_builder_refuses_what_a_component_does_not_take():
    with pytest.raises(opts.OptionError, match=r"majority takes no option 'expansions'; its options: n"):
        create("majority", 8, P, {"expansions": 4}, strict=True)
    with pytest.raises(opts.OptionError, match="adaptive_threshold: needs a number > 0 and < 1"):
        create("adaptive", 8, P, {"adaptive_threshold": 1.5})
    for bad in (True, "3", 2.5):
        with pytest.raises(opts.OptionError, match="expansions: needs an integer"):
            create("beam_search", 8, P, {"expansions": bad})
    with pytest.raises(opts.OptionError, match="unknown 'sideways'; choose from best, weighted, majority"):
        create("dvts", 8, P, {"tree_select": "sideways"})
    with pytest.raises(ValueError, match=r"Majority.n: needs an integer >= 1"):
        STRATEGIES["majority"](n=0)  # the Python API is held to the same declarations


def flag_values():
    """Every strategy flag of `tts run` with a value its declaration accepts (not its default)."""
    out = {}
    for cls in option_owners():
        for key, d in opts.declared(cls).items():
            if key == "n" or key in out or key in ("prm", "step_scorer", "routing_policy", "route_budget"):
                continue
            out[key] = OBJECTS.get(key) if d.kind == "object" else other_value(d)
    out["adaptive_calibration"] = "testbed-steps4"  # a file: a packaged one, by name
    return out


def test_every_flag_reaches_the_component_that_declares_it(monkeypatch):
    """Each strategy flag, given on the command line with the strategies that declare it, arrives in
    their built objects (captured before any model loads)."""
    import tts.cli as cli_module

    built = {}

    def capture(names, n, params, values):
        built["strategies"] = real(names, n, params, values)
        raise SystemExit(0)

    real = cli_module._build_strategies
    monkeypatch.setattr(cli_module, "_build_strategies", capture)
    for key, value in flag_values().items():
        owners = [name for name, cls in STRATEGIES.items() if opts.takes(cls, key) and name != "auto"]
        forcing = opts.takes(BudgetForcing, key)
        names = owners[:1] or ["single"]
        if names == ["deepconf"]:
            extra = ["--deepconf-warmup", "2"] if key != "deepconf_warmup" else []
        elif names == ["revise"] and key != "revisions":
            extra = ["--revisions", "2"]
        else:
            extra = []
        if key == "step_mode" and value == "regex":
            extra += ["--step-pattern", "x"]
        flag = "--" + key.replace("_", "-")
        CliRunner().invoke(cli, ["run", "--strategy", ",".join(names), flag, str(value), *extra])
        [strategy] = built.pop("strategies")
        target = strategy.policy if forcing else strategy
        d = opts.declared(type(target))[key]
        holder = getattr(target, d.parent) if d.parent else target
        got = getattr(holder, d.field)
        if d.kind == "object":
            assert getattr(got, "name", None) == value or getattr(getattr(got, "verifier", None), "name", None) == value, key
        else:
            assert got == value, (key, got, value)


def test_an_option_no_chosen_strategy_takes_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--strategy", "rebase", "--expansions", "3", "--out", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --expansions: none of the chosen strategies (rebase) takes it; "
                                     "it is an option of beam_search, dvts, mcts")
    assert not (tmp_path / "r.jsonl").exists()
    result = CliRunner().invoke(cli, ["run", "--strategy", "beam_search", "--prm", "confidence_mean",
                                      "--step-scorer", "confidence_tail"])
    assert result.exit_code == 2 and "set the same thing" in result.output


def test_help_and_recipe_kinds_come_from_the_declarations():
    from tts.cli import _param_kinds

    kinds = _param_kinds(run_command)
    for cls in option_owners():
        for key, d in opts.declared(cls).items():
            if key == "n":
                continue
            expected = {"int": "int", "float": "float", "str": "str", "object": "str"}[d.kind]
            assert kinds[key] == expected, key
    assert "--c-explore" in CliRunner().invoke(cli, ["run", "--help"]).output  # no hand-written list to forget one


def test_one_rule_for_a_missing_score_everywhere():
    """Selection lives in tts.strategies.select; before, auto counted a missing score as 0 while
    best-of-N in the sweep counted it below everything."""
    import math

    from tts.strategies import select

    assert select.best([None, -3.0, float("nan")]) == 1  # any real score beats a missing one
    assert select.best([None, None]) == 0 and select.best([]) is None
    chosen, totals = select.choose("weighted", ["a", "b", "b"], [0.9, None, math.inf], seed=0)
    assert (chosen, totals) == (0, {"a": 0.9, "b": 0.0})
    assert select.choose("majority", [None, None], [0.2, 0.7], seed=0) == (1, {})  # no answers: best score
    with pytest.raises(ValueError, match="selection rule"):
        select.choose("loudest", ["a"], None, seed=0)
