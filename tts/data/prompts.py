"""Prompt formats as data: ``prompts.json`` in this package (or a user's own JSON file).

A format is an instruction template, an optional system prompt and optional few-shot examples. They live
in data so that changing how a dataset is asked never touches the loaders, and so that the format is part
of what a results file's configuration names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ..types import Message
from .errors import DatasetError

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
EXTRACTORS = ("number", "boxed", "expression", "code")


@dataclass(frozen=True)
class PromptFormat:
    name: str
    instruction: str = "{question}"
    system: str | None = None
    few_shot: tuple[Mapping[str, str], ...] = ()
    extractor: str = "number"

    def fill(self, question: str, **values: Any) -> str:
        """The instruction with ``{question}`` and ``values`` filled in. Only known placeholders are
        replaced, so LaTeX such as ``\\boxed{}`` or code braces in a template stay as written."""
        table = {"question": question, **{k: str(v) for k, v in values.items()}}
        return _PLACEHOLDER.sub(lambda m: table.get(m.group(1), m.group(0)), self.instruction)

    def render(self, question: str, **values: Any) -> dict:
        """Keyword arguments for :class:`~tts.types.Problem`: ``prompt`` when the format is one user turn,
        ``messages`` when it has a system prompt or few-shot turns."""
        text = self.fill(question, **values)
        if self.system is None and not self.few_shot:
            return {"prompt": text}
        messages = [Message("system", self.system)] if self.system is not None else []
        for shot in self.few_shot:
            # few-shot questions fill only {question}; per-problem values such as {target} would be wrong
            messages += [Message("user", self.fill(shot["question"], numbers=shot["question"])),
                         Message("assistant", shot["answer"])]
        messages.append(Message("user", text))
        return {"messages": tuple(messages)}


def _parse(name: str, raw: Any, source: str) -> PromptFormat:
    if not isinstance(raw, Mapping):
        raise DatasetError(f"prompt format {name!r} must be an object", path=source, field=name)
    unknown = set(raw) - {"instruction", "system", "few_shot", "extractor"}
    if unknown:
        raise DatasetError(f"prompt format {name!r}: unknown keys {', '.join(sorted(unknown))}; "
                           "choose from instruction, system, few_shot, extractor", path=source, field=name)
    instruction = raw.get("instruction", "{question}")
    system = raw.get("system")
    shots = raw.get("few_shot", [])
    extractor = raw.get("extractor", "number")
    if not isinstance(instruction, str) or "{question}" not in instruction and "{numbers}" not in instruction:
        raise DatasetError(f"prompt format {name!r}: instruction must be a string containing {{question}}",
                           path=source, field=f"{name}.instruction")
    if system is not None and not isinstance(system, str):
        raise DatasetError(f"prompt format {name!r}: system must be a string or null", path=source,
                           field=f"{name}.system")
    if not isinstance(shots, list) or any(
        not isinstance(s, Mapping) or not isinstance(s.get("question"), str) or not isinstance(s.get("answer"), str)
        for s in shots
    ):
        raise DatasetError(f"prompt format {name!r}: few_shot must be a list of {{question, answer}} strings",
                           path=source, field=f"{name}.few_shot")
    if extractor not in EXTRACTORS:
        raise DatasetError(f"prompt format {name!r}: extractor {extractor!r}; choose from {', '.join(EXTRACTORS)}",
                           path=source, field=f"{name}.extractor")
    return PromptFormat(name, instruction, system, tuple(dict(s) for s in shots), extractor)


def load_formats(path: str | Path | None = None) -> dict[str, PromptFormat]:
    """Formats from ``path`` (a JSON object of name -> format), or the package's ``prompts.json``."""
    if path is None:
        source = "tts/data/prompts.json"
        text = resources.files(__package__).joinpath("prompts.json").read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise DatasetError(f"cannot read prompt formats ({exc.strerror})", path=path) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"not JSON ({exc.msg})", path=source, line=exc.lineno) from None
    if not isinstance(raw, Mapping):
        raise DatasetError("prompt formats must be a JSON object of name -> format", path=source)
    return {name: _parse(name, value, source) for name, value in raw.items() if not name.startswith("_")}


_FORMATS: dict[str, PromptFormat] | None = None


def get(name: str) -> PromptFormat:
    global _FORMATS
    if _FORMATS is None:
        _FORMATS = load_formats()
    if name not in _FORMATS:
        raise DatasetError(f"unknown prompt format {name!r}; choose from {', '.join(_FORMATS)}", field="prompt_format")
    return _FORMATS[name]


def render(name: str | PromptFormat, question: str, **values: Any) -> dict:
    fmt = name if isinstance(name, PromptFormat) else get(name)
    return fmt.render(question, **values)
