"""A request body becomes a job: the problem, the strategy built by the one typed builder
(tts.strategies.create, strict: an option the strategy does not take is an error), the budget under
the server's cap, and how to answer. Pure functions of the body and the server's settings, so every
malformed body is a :class:`RequestError` (status, one-line message, the field it names) and is
tested without a socket.

The strategy comes from the model name (``majority@8``, ``tts/beam_search@16``) or from the body's
``tts`` object (``{"strategy": "beam_search", "n": 16, "expansions": 4, "budget": {...}}``); the
served model's own name (or ``tts``) means the server's default strategy. The ``tts`` object's keys
beyond the ones below are strategy options, or budget-forcing options (``max_thinking_tokens``, ...)
that wrap whichever strategy runs, exactly as the command line's flags do.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from ..budget import UNITS, Budget
from ..data.grading import extractor_for_format
from ..options import MAX_TEMPERATURE, MAX_TOKENS, OptionError
from ..types import Message, Problem, SamplingParams
from .errors import RequestError, bounded_list
from .tools import ToolVote, check_tools, parse_tool_vote, text_answer, tools_prompt, vote_key

#: `tts` object keys that are not strategy options
TTS_KEYS = ("strategy", "n", "budget", "return_trace", "tool_vote", "answer", "seed")
#: how candidates' answers are read and voted on: the prompt formats tts run has, and plain text
ANSWER_FORMATS = {"number": "default", "boxed": "math", "expression": "game24", "code": "humaneval", "text": None}
ROLE_ALIASES = {"developer": "system"}
MAX_MESSAGES = 1024
MAX_CHOICES = 16


@dataclass(frozen=True)
class Defaults:
    """The server-wide settings a request starts from (``--config``) and the caps it cannot pass."""

    model: str  # the served model's name, as /v1/models lists it
    strategy: str = "single"
    options: Mapping[str, Any] = field(default_factory=dict)  # the default strategy's options
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    max_budget: Budget = field(default_factory=Budget)


@dataclass(frozen=True)
class Job:
    kind: str  # "chat" or "completion"
    model: str  # as the request named it (echoed back)
    problem: Problem
    strategy: Any  # a built tts.runtime.Strategy
    label: str  # the strategy as reports name it (majority@8)
    budget: Budget
    seed: int
    stream: bool = False
    include_usage: bool = False
    choices: int = 1
    return_trace: bool = False
    tools: tuple[dict, ...] = ()
    extract: Callable[[str], str | None] | None = None  # the answer reader (None: the problem's format)


def _number(body: Mapping, key: str, low: float, high: float, *, integer: bool = False, where: str = "") -> Any:
    value = body[key]
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)) \
            or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise RequestError(f"{where}{key} must be {what} from {low:g} to {high:g}, got {value!r:.60}", where + key)
    return value


def _flag(body: Mapping, key: str, where: str = "") -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{where}{key} must be true or false, got {value!r:.60}", where + key)
    return value


def _content(value: Any, where: str) -> str:
    """A message's content: a string, or a list of text parts (the newer OpenAI form)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(f"{where}[{i}] must be a text part {{type: text, text: ...}} (this server "
                                   "takes text only)", f"{where}[{i}]")
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"{where} must be a string or a list of text parts, got {type(value).__name__}", where)


def _messages(value: Any) -> tuple[Message, ...]:
    bounded_list(value, "messages", MAX_MESSAGES, "{role, content}")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with role and content", where)
        role = m.get("role")
        role = ROLE_ALIASES.get(role, role)
        content = _content(m.get("content"), f"{where}.content")
        if role == "assistant" and m.get("tool_calls"):
            content += "".join(f"\n<tool_call>\n{json.dumps(c.get('function', c), ensure_ascii=False)}\n</tool_call>"
                               for c in m["tool_calls"] if isinstance(c, dict))
        if role == "tool":  # a tool's result goes back to the model as a user turn (see tools.py)
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        if role not in ("system", "user", "assistant"):
            raise RequestError(f"{where}.role must be one of system, user, assistant, tool, developer, got "
                               f"{m.get('role')!r:.40}", f"{where}.role")
        out.append(Message(role, content))
    return tuple(out)


def _budget(value: Any, cap: Budget) -> Budget:
    """The request's budget, never above the server's cap; units it leaves out take the cap's value."""
    asked: dict[str, Any] = {}
    if value is not None:
        if not isinstance(value, dict):
            raise RequestError(f"tts.budget must be an object with any of {', '.join(UNITS)}", "tts.budget")
        for key in value:
            if key not in UNITS:
                raise RequestError(f"tts.budget: unknown unit {key!r:.40}; choose from {', '.join(UNITS)}",
                                   f"tts.budget.{key}"[:80])
            integer = key not in ("flops", "seconds")
            low = 0.001 if key == "seconds" else 1  # a budget of half a second is a real budget
            asked[key] = _number(value, key, low, 1e30, integer=integer, where="tts.budget.")
    for key in UNITS:
        limit = getattr(cap, key)
        if limit is None:
            continue
        if key in asked and asked[key] > limit:
            raise RequestError(f"tts.budget.{key} {asked[key]:g} is above this server's --max-budget {key} {limit:g}",
                               f"tts.budget.{key}")
        asked.setdefault(key, limit)
    return Budget(**asked)


def _strategy_spec(model: Any, spec: Any, defaults: Defaults) -> tuple[str, int | None, bool]:
    """(strategy, N, from_default) from the body's tts.strategy or else the model name."""
    from ..strategies import STRATEGIES
    from ..strategies.specs import parse_spec

    choices = f"{defaults.model}, tts, or a strategy spec NAME@N with NAME one of {', '.join(STRATEGIES)}"
    if spec is not None:
        if not isinstance(spec, str):
            raise RequestError(f"tts.strategy must be a string, one of {', '.join(STRATEGIES)}", "tts.strategy")
        where, text = "tts.strategy", spec
    else:
        if not isinstance(model, str) or not model:
            raise RequestError(f"model must be a string: {choices}", "model")
        if model in (defaults.model, "tts"):
            name, n = parse_spec(defaults.strategy)
            return name, n, True
        where, text = "model", model
    text = text[4:] if text.startswith("tts/") else text
    try:
        name, n = parse_spec(text)
    except ValueError as exc:
        raise RequestError(f"{where}: {exc}", where) from None
    if name not in STRATEGIES:
        if where == "model":
            raise RequestError(f"model {model!r:.80} is not served here; choose from {choices}", "model", 404,
                               code="model_not_found")
        raise RequestError(f"tts.strategy: unknown {name!r:.40}; choose from {', '.join(STRATEGIES)}", "tts.strategy")
    return name, n, False


def _refuse_local_values(asked: Mapping[str, Any], defaults: Defaults) -> None:
    """A client may not make the server read its files or load its models: an option that names one
    (tts.options.Option.remote) takes only the names it lists for remote requests (packaged policies,
    built-in verifiers) or the value the server's own recipe set."""
    from .. import options as opts
    from ..strategies import option_owners

    for key, value in asked.items():
        for owner in option_owners():
            if not opts.takes(owner, key):
                continue
            remote = opts.declared(owner)[key].option.remote
            if remote is None or value is None or value == defaults.options.get(key):
                continue
            allowed = list(remote())
            if not isinstance(value, str) or value not in allowed:
                raise RequestError(f"tts.{key}: a request may name {', '.join(allowed) or 'nothing here'}; files and "
                                   f"models on the server are set by its --config, not by clients", f"tts.{key}")


def _build(name: str, n: int | None, params: SamplingParams, options: Mapping[str, Any]):
    """The strategy, budget-forced when forcing options are given, by the same builder as the CLI."""
    from .. import options as opts
    from ..strategies import BudgetForcing, create
    from ..strategies.forcing import with_forcing

    forcing = opts.pick(BudgetForcing, options)
    own = {k: v for k, v in options.items() if k not in forcing}
    try:
        strategy = create(name, n, params, own, strict=True, where="tts.")
        policy = opts.build(BudgetForcing, forcing, where="tts.")
    except OptionError as exc:
        key = next((k for k in options if f"tts.{k}" in str(exc) or repr(k) in str(exc)), None)
        raise RequestError(str(exc), f"tts.{key}" if key else "tts") from None
    except (ValueError, TypeError) as exc:
        raise RequestError(f"tts: {exc}", "tts") from None
    return with_forcing(strategy, policy)


def parse(body: Any, defaults: Defaults, kind: str = "chat") -> Job:
    """A /v1/chat/completions (``kind="chat"``) or /v1/completions body as a job."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if kind == "chat":
        if "messages" not in body:
            raise RequestError("messages is required: a non-empty list of {role, content}", "messages")
        messages = _messages(body["messages"])
        problem_kwargs: dict[str, Any] = {"messages": messages}
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise RequestError("prompt must be a string (one prompt per request)", "prompt")
        problem_kwargs = {"prompt": prompt}
    extra = body.get("tts")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise RequestError("tts must be an object: strategy, n, budget, options", "tts")

    name, n, from_default = _strategy_spec(body.get("model"), extra.get("strategy"), defaults)
    if "n" in extra:
        n = _number(extra, "n", 1, 4096, integer=True, where="tts.")
    options = dict(defaults.options) if from_default and "strategy" not in extra else {}
    asked = {k: v for k, v in extra.items() if k not in TTS_KEYS}
    _refuse_local_values(asked, defaults)
    options.update(asked)

    sampling: dict[str, Any] = {"temperature": defaults.temperature, "top_p": defaults.top_p,
                                "max_tokens": defaults.max_tokens}
    if body.get("temperature") is not None:
        sampling["temperature"] = _number(body, "temperature", 0, MAX_TEMPERATURE)
    if body.get("top_p") is not None:
        sampling["top_p"] = _number(body, "top_p", 1e-9, 1)
    for key in ("max_tokens", "max_completion_tokens"):
        if body.get(key) is not None:
            sampling["max_tokens"] = _number(body, key, 1, MAX_TOKENS, integer=True)
    stop = body.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or len(stop) > 16 or not all(isinstance(s, str) and s for s in stop):
            raise RequestError("stop must be a non-empty string or a list of up to 16 of them", "stop")
        sampling["stop"] = tuple(stop)
    params = SamplingParams(**sampling)

    # No seed: a fresh one, so two clients asking the same question draw different samples (as an
    # OpenAI server does); with one, the request reproduces.
    seed = random.getrandbits(62)
    for where, holder in (("", body), ("tts.", extra)):
        if holder.get("seed") is not None:
            seed = _number(holder, "seed", -(2 ** 63), 2 ** 63 - 1, integer=True, where=where)
    choices = 1
    if body.get("n") is not None:
        choices = _number(body, "n", 1, MAX_CHOICES, integer=True)
    stream = _flag(body, "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise RequestError("stream_options must be an object such as {include_usage: true}", "stream_options")
    include_usage = _flag(stream_options, "include_usage", "stream_options.")

    answer = extra.get("answer", "number")
    if answer not in ANSWER_FORMATS:
        raise RequestError(f"tts.answer must be one of {', '.join(ANSWER_FORMATS)}, got {answer!r:.40}", "tts.answer")
    tools: tuple[dict, ...] = ()
    extract = None
    if body.get("tools") is not None and body.get("tool_choice") != "none":
        tools = tuple(check_tools(body["tools"]))
        vote: ToolVote = parse_tool_vote(extra.get("tool_vote"))
        calls = vote_key({t["function"]["name"] for t in tools}, vote)
        plain = text_answer if answer == "text" else extractor_for_format(ANSWER_FORMATS[answer])
        extract = lambda text: calls(text) or plain(text)  # noqa: E731  (a call, else the reply)
    elif "tool_vote" in extra:
        parse_tool_vote(extra["tool_vote"])  # still checked, so a typo is not silently ignored
    if answer == "text" and extract is None:
        extract = text_answer
    if tools:
        system = Message("system", tools_prompt(tools))
        if "messages" in problem_kwargs:
            problem_kwargs["messages"] = (system, *problem_kwargs["messages"])
        else:
            problem_kwargs = {"messages": (system, Message("user", problem_kwargs["prompt"]))}

    if name == "auto" and options.get("routing_policy") is None:
        from ..strategies.auto import policy_for_model

        if policy_for_model(defaults.model):  # the model's packaged policy (testbed)
            options = {**options, "routing_policy": policy_for_model(defaults.model)}
    strategy = _build(name, n, params, options)
    if extract is not None:
        if "extract" not in getattr(type(strategy), "__dataclass_fields__", {}):
            raise RequestError(f"tts.answer text and tool calls need a strategy that reads its own answers "
                               f"(single, majority, best_of_n, weighted_majority); {name} reads them by "
                               "the answer format only", "tts.strategy")
        strategy = replace(strategy, extract=extract)
    label = f"{name}@{n}" if n else name
    fmt = ANSWER_FORMATS.get(answer)
    problem = Problem(id="request", metadata={"prompt_format": fmt} if fmt else {}, **problem_kwargs)
    budget = _budget(extra.get("budget"), defaults.max_budget)
    return Job(kind, str(body.get("model")), problem, strategy, label, budget, seed, stream, include_usage, choices,
               _flag(extra, "return_trace", "tts."), tools, extract)
