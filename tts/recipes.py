"""Recipes: YAML files that hold the options of a `tts run`, so a setup is named, shared and rerun.

A recipe is a flat mapping from `tts run` option names to values (``max-tokens`` and ``max_tokens`` both
work; ``strategy`` may be a list). The command line reads the recipe as its defaults, so any option
given on the command line overrides the recipe. Unknown keys and wrong shapes are errors that name the
key and the valid choices; values are checked by the same option types as the command line.

Experiment scripts (``experiments/``) read the same files: the ``tts run`` keys at the top level, and
their own settings under a section named after the script (for example ``compute_optimal:``), which
`tts run` ignores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

#: recipe keys that are spelled differently from the option's parameter name
ALIASES = {"strategy": "strategies"}
#: top-level sections that belong to experiment scripts, not to `tts run`
SECTIONS = ("compute_optimal", "budget_forcing_sweep", "experiment")


class RecipeError(ValueError):
    """A recipe that cannot be read; the message is one line that names the file and the problem."""


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a recipe file (sections included)."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: no such recipe file{_available(path)}")
    from .inputs import InputFileError, read_small_text

    try:
        text = read_small_text(path, "recipe file")
    except InputFileError as exc:
        raise RecipeError(str(exc)) from None
    import yaml

    try:
        data = yaml_load(text)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise RecipeError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of option names to values, got a {type(data).__name__}")
    return data


def yaml_load(text: str) -> Any:
    """YAML without aliases (a recipe is flat, and aliases are how a few lines expand into gigabytes)
    and without duplicate keys (the later one would silently win)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise RecipeError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed in a recipe")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise RecipeError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=StrictLoader)  # noqa: S506: a SafeLoader subclass


#: what a recipe value of each option kind must be: exactly these types (no bool for a number, no
#: float for an integer, no date or list for a string)
KINDS = {"int": ("an integer", (int,)), "float": ("a number", (int, float)), "bool": ("true or false", (bool,)),
         "str": ("a string", (str,))}


def check_types(options: Mapping[str, Any], kinds: Mapping[str, str], *, source: str) -> None:
    """RecipeError naming the first option whose value is not exactly of its option's kind."""
    import math

    for name, value in options.items():
        kind = kinds.get(name)
        if kind is None or value is None:
            continue
        label, types = KINDS[kind]
        ok = isinstance(value, types) and (kind == "bool" or not isinstance(value, bool))
        if ok and kind == "float" and not math.isfinite(value):
            ok = False
        if not ok:
            raise RecipeError(f"{source}: {_key_of(name)} must be {label}, got {value!r} ({type(value).__name__})")


def run_options(recipe: Mapping[str, Any], valid: Iterable[str], *, source: str) -> dict[str, Any]:
    """The recipe's `tts run` options keyed by parameter name, checked against ``valid`` names."""
    valid = set(valid)
    out: dict[str, Any] = {}
    for key, value in recipe.items():
        if key in SECTIONS:
            continue
        name = str(key).replace("-", "_")
        name = ALIASES.get(name, name)
        if name not in valid:
            choices = sorted({_key_of(v) for v in valid} | set(SECTIONS))
            raise RecipeError(f"{source}: unknown key {key!r}; choose from {', '.join(choices)}")
        if isinstance(value, (dict,)):
            raise RecipeError(f"{source}: {key} must be a single value, got a mapping")
        if isinstance(value, list):
            if name != "strategies":
                raise RecipeError(f"{source}: {key} must be a single value, got a list")
            value = ",".join(str(v) for v in value)
        out[name] = value
    return out


def _key_of(parameter: str) -> str:
    inverse = {v: k for k, v in ALIASES.items()}
    return inverse.get(parameter, parameter).replace("_", "-")


def _available(path: Path) -> str:
    folder = path.parent if str(path.parent) not in ("", ".") else Path("recipes")
    names = sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []
    return f"; recipes in {folder}: {', '.join(names)}" if names else ""
