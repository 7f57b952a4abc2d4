"""Tool calls: telling the model which tools it has, reading the calls out of its text, and the
canonical form candidates vote with.

The tools go to the model as a system message in the format most open chat models are trained on
(Hermes / Qwen: one ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` per call), because
a chat template that knows no tools (SmolLM2's) would drop them silently. A reply is read the same
way, and a bare JSON object with ``name`` and ``arguments`` (or ``parameters``) is read as one call
too, since small models often forget the tags.

Voting is over canonical calls: the JSON of [name, arguments] with sorted keys, so two samples that
call the same tool with the same arguments in a different key order are one vote. ``tool_vote``
chooses what must agree: ``name`` only, ``name_arguments`` (the default), or
``{"ignore": [keys]}``: name and arguments without the listed keys (a timestamp, a free-text note).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .errors import RequestError, bounded_list

TOOL_VOTES = ("name", "name_arguments")
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
MAX_TOOLS = 128


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any]

    def canonical(self, vote: "ToolVote") -> str:
        if vote.mode == "name":
            return json.dumps([self.name])
        args = {k: v for k, v in self.arguments.items() if k not in vote.ignore}
        return json.dumps([self.name, args], sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ToolVote:
    mode: str = "name_arguments"
    ignore: frozenset[str] = frozenset()


def check_tools(tools: Any) -> list[dict]:
    """The request's ``tools`` as OpenAI function tools, each with a name; anything else is an error."""
    bounded_list(tools, "tools", MAX_TOOLS, "{type: function, function: {name, ...}}")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise RequestError(f"tools[{i}] must be {{type: function, function: {{name, description, parameters}}}}",
                            f"tools[{i}]")
        name = fn.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RequestError(f"tools[{i}].function.name must be a non-empty string", f"tools[{i}].function.name")
        params = fn.get("parameters", {})
        if not isinstance(params, dict):
            raise RequestError(f"tools[{i}].function.parameters must be a JSON schema object",
                            f"tools[{i}].function.parameters")
        out.append({"type": "function", "function": {"name": name, "description": str(fn.get("description", "")),
                                                     "parameters": params}})
    return out


def parse_tool_vote(value: Any) -> ToolVote:
    if value is None:
        return ToolVote()
    if isinstance(value, str) and value in TOOL_VOTES:
        return ToolVote(value)
    if isinstance(value, dict) and set(value) == {"ignore"} and isinstance(value["ignore"], list) \
            and all(isinstance(k, str) for k in value["ignore"]):
        return ToolVote("name_arguments", frozenset(value["ignore"]))
    raise RequestError(f"tts.tool_vote must be one of {', '.join(TOOL_VOTES)} or {{\"ignore\": [argument names]}}, "
                    f"got {value!r:.80}", "tts.tool_vote")


def tools_prompt(tools: Sequence[dict]) -> str:
    """The system message that tells the model its tools and how to call them."""
    listed = "\n".join(json.dumps(t["function"], ensure_ascii=False, sort_keys=True) for t in tools)
    return ("You may call one or more functions to answer. The functions, as JSON signatures:\n"
            f"<tools>\n{listed}\n</tools>\n"
            "To call a function, reply with a JSON object with its name and arguments inside tags:\n"
            '<tool_call>\n{"name": "FUNCTION_NAME", "arguments": {"ARG": "VALUE"}}\n</tool_call>')


def _call_of(obj: Any, known: set[str] | None) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string, as the API does
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(name, str) or not isinstance(args, dict):
        return None
    if known is not None and name not in known:
        return None
    return ToolCall(name, args)


def _json_objects(text: str) -> list[Any]:
    """Every top-level JSON value that starts at a ``{`` in text, left to right."""
    decoder = json.JSONDecoder()
    out, i = [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return out
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        out.append(value)
        i = end


def parse_tool_calls(text: str, known: set[str] | None = None) -> list[ToolCall]:
    """The tool calls in a reply: tagged ones if there are any, else bare JSON objects that name a
    known tool. Calls to tools the request did not offer are not calls."""
    tagged = _TAGGED.findall(text)
    chunks = tagged if tagged else [text]
    calls = []
    for chunk in chunks:
        for obj in _json_objects(chunk):
            call = _call_of(obj, known)
            if call is not None:
                calls.append(call)
    return calls


def vote_key(known: set[str], vote: ToolVote) -> Callable[[str], str | None]:
    """text -> the canonical form of its tool calls (the answer candidates vote with), or None when
    it calls none (then the text is a plain reply: see :func:`text_answer`)."""
    def read(text: str) -> str | None:
        calls = parse_tool_calls(text, known)
        if not calls:
            return None
        return "tool_calls:" + "|".join(c.canonical(vote) for c in calls)

    return read


def text_answer(text: str) -> str | None:
    """A plain reply's vote key: its words, case and spacing ignored (None for an empty reply)."""
    words = " ".join(text.split()).strip().lower()
    return words or None
