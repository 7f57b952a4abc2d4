"""The one interface every generation engine implements.

A backend offers a single batched primitive, :meth:`Backend.generate`; search lives outside the engine
(strategies loop over it). Backends are called concurrently from many problems and turn those
concurrent calls into engine batches themselves. They report usage as the engine counted it
(:class:`Generation`), and the runtime charges the ledger from that, never from estimates.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from ..budget import ModelShape
from ..types import Completion, Message, SamplingParams



#: A caller that wants a request's text while it is generated (``tts serve`` streaming a ``single``
#: answer) sets this, in the context the request is made from, to ``listener(sample_index, text_so_far)``;
#: backends that can stream call it on the caller's event loop as tokens arrive (the hf backend per
#: decode step, the scripted backend once per reply). It is a context variable rather than a request
#: field because it is about who is listening, not about what to generate: it changes no result.
TEXT_LISTENER: ContextVar[Callable[[int, str], None] | None] = ContextVar("tts_text_listener", default=None)

class EngineError(RuntimeError):
    """An engine failed while a run was using it (it died, or a server stopped answering); the message
    says what happened. The command line prints it as one line and keeps the results written so far."""


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt to continue.

    ``prompt`` is either chat messages (the backend applies the model's chat template) or raw text
    (sent as is). ``prefix`` is text the assistant has already written (budget forcing and tree search
    continue a partial answer); it is appended after the chat template's generation prompt.
    """

    prompt: tuple[Message, ...] | str
    params: SamplingParams
    prefix: str = ""


@dataclass(frozen=True)
class Generation:
    """The engine's answer to one request: n completions and how much prompt it processed.

    ``prompt_tokens`` is counted once per request, as engines compute a prompt once for n samples;
    ``cached_prompt_tokens`` is the part of it served from a prefix cache.
    """

    completions: tuple[Completion, ...]
    prompt_tokens: int
    cached_prompt_tokens: int = 0


PartialUsage = Callable[[Generation], None]


@runtime_checkable
class Backend(Protocol):
    name: str
    model_name: str
    shape: ModelShape
    #: the model's tokenizer where the backend has one locally (budget forcing reads thinking delimiters
    #: and stop token ids from it); None where it has none (a remote server without one, scripted)
    tokenizer: Any

    def render(self, request: GenerationRequest) -> str:
        """The text the model sees for a request (chat template applied, prefix appended)."""

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens the engine will see for this request's prompt (template and prefix included)."""

    async def generate(
        self, request: GenerationRequest, on_cancel: PartialUsage | None = None
    ) -> Generation:
        """Sample ``request.params.n`` completions.

        If the calling task is cancelled, the backend stops the work as soon as it can, reports what it
        had already computed through ``on_cancel`` (so the ledger stays honest), and re-raises.
        """

    async def aclose(self) -> None:
        """Release the engine."""


def render_chat_fallback(messages: Sequence[Message]) -> str:
    """Plain-text rendering for models without a chat template."""
    lines = [f"{m.role.capitalize()}: {m.content}" for m in messages]
    return "\n".join(lines) + "\nAssistant: "


def render_prompt(tokenizer, request: GenerationRequest) -> str:
    """The text a model sees for a request: raw text as is; chat messages through the tokenizer's chat
    template (with the generation prompt) or the plain fallback; then the assistant's prefix."""
    if isinstance(request.prompt, str):
        return request.prompt + request.prefix
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": m.role, "content": m.content} for m in request.prompt]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = render_chat_fallback(request.prompt)
    return text + request.prefix


class PromptEncoder:
    """Renders and tokenizes requests with a local tokenizer, remembering recent encodings: the runtime
    counts a prompt's tokens and then generates from it, so each prompt is tokenized once."""

    def __init__(self, tokenizer, capacity: int = 4096):
        self.tokenizer = tokenizer
        self.capacity = capacity
        self._encoded: OrderedDict[tuple, list[int]] = OrderedDict()

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(self.tokenizer, request)

    def encode(self, request: GenerationRequest) -> list[int]:
        key = (request.prompt, request.prefix)
        ids = self._encoded.get(key)
        if ids is None:
            # A chat template already holds the special tokens; raw text gets the tokenizer's BOS.
            add_special = isinstance(request.prompt, str)
            ids = self.tokenizer(self.render(request), add_special_tokens=add_special)["input_ids"]
            self._encoded[key] = ids
            if len(self._encoded) > self.capacity:
                self._encoded.popitem(last=False)
        else:
            self._encoded.move_to_end(key)
        return ids


@contextmanager
def quiet_loading():
    """transformers' progress bars (weight loading, GGUF conversion) and its info and warning chatter
    off while a model loads, so a run prints its own lines only; errors still raise."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
