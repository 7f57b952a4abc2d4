"""A deterministic backend that replies from a script: for unit tests of algorithm logic and for docs.

It is not a model and never stands in for one in a feature users run. It behaves like an engine in
every way the rest of the toolkit can observe: it tokenizes (a word/punctuation tokenizer), honours
``max_tokens``, stop strings (reported as ``stop_reason``) and ``n``, returns logprobs, batches requests
that arrive in the same event loop turn (and records the batch sizes, so tests can check that concurrency
reaches it), can be slowed down with ``latency`` and cancelled mid-flight.

A script is one of:
  * a mapping from a prompt substring to a list of replies; the k-th sample drawn for a matching prompt
    gets reply k (cycling), counted across calls, so a strategy that samples twice sees new replies;
  * a callable ``(prompt_text, sample_index) -> reply``;
  * a list of replies, cycled for every prompt.
A reply is a string or a :class:`ScriptedReply` carrying per-token logprobs.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

from ..budget import ModelShape
from ..types import Completion
from .base import TEXT_LISTENER, Generation, GenerationRequest, PartialUsage, render_chat_fallback

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")
DEFAULT_LOGPROB = -0.5


@dataclass(frozen=True)
class ScriptedReply:
    text: str
    logprobs: Sequence[float] | None = None  # one per token; DEFAULT_LOGPROB for each if None


Reply = Union[str, ScriptedReply]
Script = Union[Mapping[str, Sequence[Reply]], Callable[[str, int], Reply], Sequence[Reply]]


def tokenize(text: str) -> list[str]:
    """The scripted tokenizer: each token is a word or a punctuation mark with its leading spaces."""
    return _TOKEN.findall(text)


class ScriptedBackend:
    name = "scripted"
    tokenizer = None  # the scripted tokenizer is a regex, not a model's: no delimiters to read

    def __init__(self, script: Script, *, latency: float = 0.0, model_name: str = "scripted"):
        self.script = script
        self.latency = latency
        self.model_name = model_name
        # Nominal size so FLOP accounting has something to multiply; documented as not a real model.
        self.shape = ModelShape(n_params=1e6, n_layers=4, d_model=64)
        self.batches: list[int] = []
        self.requests: list[GenerationRequest] = []
        self._drawn: dict[str, int] = defaultdict(int)
        self._pending: list[tuple[GenerationRequest, asyncio.Future]] = []
        self._flush: asyncio.Task | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> "ScriptedBackend":
        """Load a script from JSON: ``{"prompt substring": ["reply", ...], ...}``, or
        ``{"replies": {...}, "latency": seconds}`` to make each batch take that long."""
        data = json.loads(Path(path).read_text())
        latency = 0.0
        if isinstance(data, dict) and isinstance(data.get("replies"), dict):
            latency = float(data.get("latency", 0.0))
            data = data["replies"]
        if not isinstance(data, dict) or not all(isinstance(v, list) and v for v in data.values()):
            raise ValueError(f"{path}: a script must be a JSON object mapping prompt substrings to non-empty lists of replies")
        return cls(data, latency=latency, model_name=str(path))

    # --- prompt ----------------------------------------------------------------------------------
    def render(self, request: GenerationRequest) -> str:
        text = request.prompt if isinstance(request.prompt, str) else render_chat_fallback(request.prompt)
        return text + request.prefix

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(tokenize(self.render(request)))

    # --- generation ------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest, on_cancel: PartialUsage | None = None) -> Generation:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        listener = TEXT_LISTENER.get()
        if listener is not None:  # a script has no tokens to stream: each reply arrives whole
            future.add_done_callback(lambda f: None if f.cancelled() or f.exception() else
                                     [listener(i, c.text) for i, c in enumerate(f.result().completions)])
        self._pending.append((request, future))
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._run_batch())
        try:
            return await future
        except asyncio.CancelledError:
            # Cancelled before the batch ran: nothing was computed.
            if on_cancel is not None:
                on_cancel(Generation((), 0))
            raise

    async def _run_batch(self) -> None:
        await asyncio.sleep(self.latency)  # also yields once, so requests of this loop turn join the batch
        batch, self._pending = self._pending, []
        live = [(r, f) for r, f in batch if not f.done()]
        if live:
            self.batches.append(len(live))
        for request, future in live:
            self.requests.append(request)
            try:
                future.set_result(self._answer(request))
            except Exception as exc:  # a broken script must fail the caller, not the batch task
                future.set_exception(exc)

    def _reply(self, prompt: str, index: int) -> Reply:
        script = self.script
        if callable(script):
            return script(prompt, index)
        if isinstance(script, Mapping):
            for key, replies in script.items():
                if key in prompt:
                    return replies[index % len(replies)]
            from . import BackendError

            keys = ", ".join(repr(k[:40]) for k in list(script)[:5])
            raise BackendError(f"the script has no reply for the prompt ending {prompt[-60:]!r}; "
                               f"a reply is used when its key is part of the prompt (keys: {keys})")
        return script[index % len(script)]

    def _answer(self, request: GenerationRequest) -> Generation:
        prompt = self.render(request)
        prompt_tokens = len(tokenize(prompt))
        params = request.params
        completions = []
        for _ in range(params.n):
            index = self._drawn[prompt]
            self._drawn[prompt] += 1
            reply = self._reply(prompt, index)
            if isinstance(reply, str):
                reply = ScriptedReply(reply)
            completions.append(self._complete(reply, params, prompt_tokens))
        return Generation(tuple(completions), prompt_tokens, 0)

    @staticmethod
    def _complete(reply: ScriptedReply, params, prompt_tokens: int) -> Completion:
        tokens = tokenize(reply.text)
        logprobs = list(reply.logprobs) if reply.logprobs is not None else [DEFAULT_LOGPROB] * len(tokens)
        if len(logprobs) != len(tokens):
            raise ValueError(f"scripted reply has {len(tokens)} tokens but {len(logprobs)} logprobs: {reply.text!r}")
        finish = "stop"
        if len(tokens) > params.max_tokens:
            tokens, logprobs, finish = tokens[: params.max_tokens], logprobs[: params.max_tokens], "length"
        if params.confidence_stop is not None:
            window, threshold = params.confidence_stop
            for i in range(window, len(tokens) + 1):
                if sum(logprobs[i - window:i]) / window < threshold:
                    tokens, logprobs, finish = tokens[:i], logprobs[:i], "low_confidence"
                    break
        text = "".join(tokens)
        stop_reason = None
        # Stop strings: cut the text before the stop, but count the tokens up to the one completing it.
        for i in range(1, len(tokens) + 1):
            partial = "".join(tokens[:i])
            hits = sorted((partial.find(s), k) for k, s in enumerate(params.stop) if s in partial)
            if hits:
                at, k = hits[0]
                text, tokens, logprobs, finish = partial[:at], tokens[:i], logprobs[:i], "stop"
                stop_reason = params.stop[k]
                break
        return Completion(
            text=text,
            num_tokens=len(tokens),
            finish_reason=finish,
            logprobs=tuple(logprobs) if params.logprobs else None,
            prompt_tokens=prompt_tokens,
            stop_reason=stop_reason,
        )

    async def aclose(self) -> None:
        return None
