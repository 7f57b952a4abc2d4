"""Components declare their settings; one builder turns settings from anywhere into objects.

A strategy, verifier or generation policy is a frozen dataclass, and the fields made with
:func:`option` are its options: typed (by the field's annotation), bounded, documented. Everything that
turns outside values into components goes through this module:

* :func:`build` fills a component from a mapping of option keys (command-line flags, a recipe, a
  ``tts serve`` request body, a routing policy's rule) and refuses, in one line naming the valid ones,
  a key the component does not take or a value of the wrong type;
* :func:`check` validates a component made directly in Python against the same declarations (every
  declared component calls it from ``__post_init__``), so the Python API and the flags agree;
* :func:`declared` lists a component's options, from which the command line makes its flags and help
  and recipes their type checks;
* :func:`config_of` derives the settings that key a results file, recursively from the fields, so no
  hand-written ``config()`` can leave one out.

An option's key is its external name (``--adaptive-batch`` on the command line is key
``adaptive_batch`` of ``AdaptiveConsistency.batch``); it defaults to the field name. A key may have
aliases (older flag names). An option whose value is an object (a verifier, a routing policy) declares
``parse``: a function from the outside value (a string) to the object.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import types
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

#: The largest value each size option takes (README, "The command line"): far beyond any real run, and
#: small enough that a typo (--n 10**23) is refused at once instead of running for ever.
MAX_SAMPLES = 4096
MAX_TOKENS = 1_000_000
MAX_DEPTH = 1024
MAX_SIMULATIONS = 100_000
MAX_TEMPERATURE = 100.0

KINDS = ("int", "float", "str", "bool", "object")


class OptionError(ValueError):
    """A setting a component does not take, or a value of the wrong type or range: one line naming the
    option and what it accepts."""


@dataclass(frozen=True)
class Option:
    help: str
    key: str | None = None
    aliases: tuple[str, ...] = ()
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    #: outside value (a string) -> the field's object; objects given directly are checked by the class
    parse: Callable[[str], Any] | None = None
    #: "\n", "\t", "\xNN" written on the command line or in a recipe mean those characters (the command
    #: line decodes them, once; values from Python or JSON are taken as they are)
    escapes: bool = False
    #: what the value of a parsed option looks like, for help texts
    metavar: str | None = None
    #: the field is itself a component whose options are options of this one (a tree search's segmenter)
    nested: bool = False
    #: the value names a file or a model on the machine that runs it (a policy file, a PRM folder): the
    #: values a remote request (tts serve) may give, e.g. packaged names; None: any value. Local paths
    #: are for whoever runs the command or the server, never for its clients.
    remote: Callable[[], Iterable[str]] | None = None


def option(default: Any = MISSING, *, default_factory: Any = MISSING, help: str = "", key: str | None = None,
           aliases: Iterable[str] = (), choices: Iterable[Any] | None = None, low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False,
           parse: Callable[[str], Any] | None = None, escapes: bool = False, metavar: str | None = None,
           nested: bool = False, hashed: bool = True, remote: Callable[[], Iterable[str]] | None = None) -> Any:
    """A dataclass field that is an option (see the module docstring). ``nested``: the field holds a
    component of its own whose options this one offers (built from them when any is given).
    ``hashed=False``: where the setting came from, not what it is (a file name whose content another
    field holds), so it does not key results."""
    meta = Option(help, key, tuple(aliases), tuple(choices) if choices is not None else None, low, high,
                  low_open, high_open, parse, escapes, metavar, nested, remote)
    return dataclasses.field(default=default, default_factory=default_factory, compare=hashed,
                             metadata={"tts.option": meta})


@dataclass(frozen=True)
class Declared:
    """One option of one component, as the builder, the flags and the recipes see it."""

    key: str
    field: str
    kind: str
    optional: bool  # None is a valid value (meaning: the component's own default behaviour)
    option: Option
    default: Any
    owner: type
    #: the field of the owner that holds the nested component this option belongs to (None: its own)
    parent: str | None = None

    @property
    def help(self) -> str:
        return self.option.help

    def describe(self) -> str:
        """What the option accepts, for error messages."""
        o = self.option
        if o.choices is not None:
            return "one of " + ", ".join(map(str, o.choices))
        if self.kind in ("int", "float"):
            word = "an integer" if self.kind == "int" else "a number"
            lo = "" if o.low is None else f"{'>' if o.low_open else '>='} {o.low:g}"
            hi = "" if o.high is None else f"{'<' if o.high_open else '<='} {o.high:g}"
            return word + (" " + " and ".join(x for x in (lo, hi) if x) if lo or hi else "")
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a string"
        return o.metavar or "a value"


def _kind(annotation: Any) -> tuple[str, bool]:
    """(kind, optional) of a field annotation: int, float, str, bool (optionally | None), else object."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else object
    if annotation in (int, float, str, bool):
        return annotation.__name__, optional
    return "object", optional


@functools.lru_cache(maxsize=None)
def _declared(cls: type) -> tuple[Declared, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("tts.option")
        if meta is None:
            continue
        if meta.nested:
            out += [dataclasses.replace(d, parent=f.name) for d in _declared(hints[f.name])]
            continue
        kind, optional = _kind(hints[f.name])
        if kind == "object" and meta.parse is None:
            raise TypeError(f"{cls.__name__}.{f.name}: an option holding an object needs parse=")
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        out.append(Declared(meta.key or f.name, f.name, kind, optional, meta, default, cls))
    return tuple(out)


def declared(cls: type) -> dict[str, Declared]:
    """A component's options by key (aliases included, each pointing at its option)."""
    out: dict[str, Declared] = {}
    for d in _declared(cls):
        out[d.key] = d
        for alias in d.option.aliases:
            out[alias] = d
    return out


def label(cls: type) -> str:
    """How messages name a component: its registered name when it has one."""
    name = getattr(cls, "name", None)
    return name if isinstance(name, str) and name else cls.__name__


# --- values --------------------------------------------------------------------------------------------

def convert(d: Declared, value: Any, *, where: str = "", key: str | None = None) -> Any:
    """An outside value of option ``d`` (given under ``key``: its own or an alias) as the field takes it,
    or OptionError naming the option."""
    name = f"{where}{key or d.key}"
    if value is None:
        if d.optional:
            return None
        raise OptionError(f"{name}: needs {d.describe()}, got nothing")
    o = d.option
    if o.parse is not None and d.kind == "object":
        if isinstance(value, str):
            try:
                return o.parse(value)
            except OptionError:
                raise
            except (ValueError, OSError) as exc:
                raise OptionError(f"{name}: {exc}") from None
        return value  # an object given directly; the class checks it
    if d.kind == "bool":
        if not isinstance(value, bool):
            raise OptionError(f"{name}: needs true or false, got {value!r}")
        return value
    if d.kind == "str":
        if not isinstance(value, str):
            raise OptionError(f"{name}: needs a string, got {value!r}")
        if o.choices is not None and value not in o.choices:
            raise OptionError(f"{name}: unknown {value!r}; choose from {', '.join(map(str, o.choices))}")
        return value
    if d.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"{name}: needs {d.describe()}, got {value!r}")
    elif d.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise OptionError(f"{name}: needs {d.describe()}, got {value!r}")
        value = float(value)
    if o.choices is not None and value not in o.choices:
        raise OptionError(f"{name}: needs {d.describe()}, got {value!r}")
    if ((o.low is not None and (value < o.low or (o.low_open and value == o.low)))
            or (o.high is not None and (value > o.high or (o.high_open and value == o.high)))):
        raise OptionError(f"{name}: needs {d.describe()}, got {value!r}")
    return value


def check(component: Any) -> None:
    """Validate a component's option fields against their declarations (called from ``__post_init__``,
    so a component made in Python is held to what the flags are); ValueError naming Class.field."""
    cls = type(component)
    for d in _declared(cls):
        if d.parent is not None:
            continue  # the nested component checks its own
        value = getattr(component, d.field)
        if d.kind == "object":
            continue  # objects are checked by the component (it knows what it needs of them)
        try:
            convert(d, value)
        except OptionError as exc:
            raise ValueError(f"{cls.__name__}.{d.field}{str(exc)[len(d.key):]}") from None


def build(cls: type, values: Mapping[str, Any], *, fixed: Mapping[str, Any] | None = None,
          where: str = "") -> Any:
    """``cls`` with its options from ``values`` (keys as declared; a None value means "not given") and
    any non-option fields from ``fixed`` (sampling params, an extractor). A key ``cls`` does not take,
    a value of the wrong type or range, or two keys for one field is an OptionError in one line."""
    decl = declared(cls)
    kwargs: dict[str, Any] = dict(fixed or {})
    nested: dict[str, dict[str, Any]] = {}
    given_by: dict[tuple, str] = {}
    for key, value in values.items():
        d = decl.get(key)
        if d is None:
            valid = ", ".join(sorted(x.key for x in _declared(cls))) or "none"
            raise OptionError(f"{where}{label(cls)} takes no option {key!r}; its options: {valid}")
        if value is None:
            continue
        slot = (d.parent, d.field)
        if slot in given_by:
            raise OptionError(f"{where}{given_by[slot]} and {key} set the same thing ({label(cls)}.{d.field}); give one")
        given_by[slot] = key
        if d.parent is None:
            kwargs[d.field] = convert(d, value, where=where, key=key)
        else:
            nested.setdefault(d.parent, {})[d.key] = value
    hints = typing.get_type_hints(cls) if nested else {}
    for parent, sub in nested.items():
        kwargs[parent] = build(hints[parent], sub, where=where)
    try:
        return cls(**kwargs)
    except OptionError:
        raise
    except (ValueError, TypeError) as exc:
        # the component names itself (Class.field); ``where`` prefixes option keys, not class names
        raise OptionError(str(exc)) from None


def takes(cls: type, key: str) -> bool:
    return key in declared(cls)


def pick(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``values`` that ``cls`` takes (for a command line that sets options of several
    components at once; :func:`unclaimed` finds the keys nobody takes)."""
    decl = declared(cls)
    return {k: v for k, v in values.items() if k in decl}


def unclaimed(values: Mapping[str, Any], classes: Iterable[type]) -> list[str]:
    """Keys with a value that none of ``classes`` takes."""
    classes = list(classes)
    return [k for k, v in values.items() if v is not None and not any(takes(c, k) for c in classes)]


# --- derived configuration -----------------------------------------------------------------------------

def config_of(value: Any) -> Any:
    """Plain data that changes whenever ``value``'s settings change: dataclasses field by field (fields
    with ``compare=False`` are state, not settings), local model folders by a digest of their content,
    backends by their kind and model, functions by their qualified name. Anything else is a TypeError,
    so a new kind of setting cannot silently drop out of the hash."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [config_of(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): config_of(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, Path):
        return model_identity(str(value))
    own = getattr(value, "config_identity", None)
    if callable(own):  # objects that are not dataclasses say what identifies them (a policy, a model)
        return {"type": type(value).__name__, **config_of(own())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            if not f.compare:
                continue
            item = getattr(value, f.name)
            out[f.name] = model_identity(item) if f.name == "model" and isinstance(item, (str, Path)) else config_of(item)
        return out
    if hasattr(value, "generate") and hasattr(value, "model_name"):  # a backend (an LLM judge's)
        return {"backend": getattr(value, "name", type(value).__name__), "model": model_identity(value.model_name)}
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    raise TypeError(f"config_of: no configuration for {type(value).__name__} {value!r}")


def model_identity(model: str | Path) -> Any:
    """A model by name, or a local model folder by its path and a digest of its files, so two folders
    (two PRMs without labels) never share a results file, and a retrained one in the same place neither."""
    path = Path(str(model)).expanduser()
    if not path.is_dir():
        return str(model)
    return {"path": str(model), "digest": folder_digest(path)}


#: bytes read from each end of a large file for its digest
_EDGE = 1 << 20


def folder_digest(folder: Path) -> str:
    """A digest of a model folder's files: every file's relative path and size, and its content (all of
    it up to 2 MiB; the first and last MiB of larger ones, so weights of gigabytes cost milliseconds,
    and a retrained model differs in both). Remembered per (path, size, mtime) within a process."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((str(p.relative_to(folder)), str(p), st.st_size, st.st_mtime_ns))
    h = hashlib.blake2b(digest_size=16)
    for rel, full, size, mtime in entries:
        h.update(f"{rel}\0{size}\0{_file_digest(full, size, mtime)}\n".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            if size <= 2 * _EDGE:
                h.update(fh.read())
            else:
                h.update(fh.read(_EDGE))
                fh.seek(size - _EDGE)
                h.update(fh.read(_EDGE))
    except OSError:
        return "unreadable"
    return h.hexdigest()
