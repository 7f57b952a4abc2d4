"""Backend for any OpenAI-compatible server: ``vllm serve``, SGLang, llama.cpp's server, a hosted API.

Requests
    A chat prompt goes to ``/chat/completions``; a raw text prompt to ``/completions``. A ``prefix``
    (budget forcing and tree search continue a partial answer) needs the text to continue *inside* the
    assistant's turn. With a local tokenizer (``tokenizer=`` a model folder, or ``model`` itself a local
    folder) the chat template is rendered here, the prefix appended, and the text sent to
    ``/completions``: it works on every server that has that endpoint and is exactly what the vllm and
    hf backends send. Without one, the chat endpoint is asked to continue the final assistant message
    (``continue_final_message``, a vLLM and SGLang extension). ``prefix_mode`` forces either.

Usage and the ledger
    The ledger is charged from the server's ``usage``: ``prompt_tokens`` once per request (the prompt is
    computed once for n samples), ``completion_tokens`` split over the samples by their own token counts,
    and ``prompt_tokens_details.cached_tokens`` when the server reports it (vLLM does with
    ``--enable-prompt-tokens-details``). Per-sample token counts come from the token ids vLLM returns
    (``return_token_ids``, asked for only when ``/models`` says the server is vLLM), else from the logprob
    entries, else from the local tokenizer. When a server sends no ``usage`` the counts are made locally:
    with the model's tokenizer when one is given, else estimated at one token per 3 UTF-8 bytes. Each
    :class:`ServerGeneration` says which in ``usage_source`` ("server", "tokenizer" or "estimate"), and
    :attr:`OpenAIBackend.usage_sources` counts them for the run.

    Compute spent on attempts that failed (a dropped connection after the server started generating) is
    not reported by any server and so is not in the ledger; neither is the work of a request cancelled
    mid-flight (the server aborts it when the connection closes, but does not say how far it got).

Stop reasons
    ``Completion.stop_reason`` (the stop string or stop token id that ended a sample) is the server's
    ``stop_reason`` where it sends one (vLLM, SGLang); otherwise it is inferred from the returned token
    ids with the local tokenizer, or from the sample having more tokens than its text.

Failures
    429, 5xx, timeouts and dropped connections are retried with exponential backoff and full jitter
    (honouring ``Retry-After``), bounded by :class:`RetryPolicy` in attempts and in total seconds. At
    start-up ``/models`` is checked, so an unreachable server or a model the server does not serve fails
    at once with :class:`ServerUnreachable` or :class:`UnknownModel` (both :class:`OpenAIBackendError`).

ModelShape (for FLOP accounting)
    Read from the local model folder's config and safetensors headers when there is one; otherwise pass
    ``shape=ModelShape(...)`` or ``shape="n_params,n_layers,d_model"``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import httpx

from ..budget import ModelShape
from ..types import Completion, FINISH_REASONS
from .base import EngineError, Generation, GenerationRequest, PartialUsage, render_prompt

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
BYTES_PER_TOKEN_ESTIMATE = 3  # conservative for BPE vocabularies on English text (they average ~4)


class OpenAIBackendError(EngineError):
    """The server cannot be used: unreachable, wrong model, rejected request, or retries exhausted."""


class ServerUnreachable(OpenAIBackendError):
    pass


class UnknownModel(OpenAIBackendError):
    pass


class RequestFailed(OpenAIBackendError):
    """A request failed for good (a 4xx the server will repeat, or every retry failed)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServerGeneration(Generation):
    """A Generation that also says where its usage counts came from."""

    usage_source: str = "server"  # "server", "tokenizer" or "estimate"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures: at most ``max_attempts`` tries within ``max_total_s`` seconds,
    waiting a random time in [0, min(max_delay_s, initial_delay_s * 2**k)] before retry k+1."""

    max_attempts: int = 6
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_total_s: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be a positive integer, got {self.max_attempts!r}")
        for name in ("initial_delay_s", "max_delay_s", "max_total_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RetryPolicy.{name} must be > 0, got {getattr(self, name)!r}")

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        cap = min(self.max_delay_s, self.initial_delay_s * (2 ** attempt))
        wait = rng.uniform(0, cap)  # full jitter: clients retrying together spread out
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay_s))
        return wait


def _parse_shape(shape: ModelShape | str | Mapping | None) -> ModelShape | None:
    if shape is None or isinstance(shape, ModelShape):
        return shape
    if isinstance(shape, str):
        parts = [p.strip() for p in shape.split(",")]
        if len(parts) != 3:
            raise ValueError(f"shape must be 'n_params,n_layers,d_model', got {shape!r}")
        return ModelShape(float(parts[0]), int(parts[1]), int(parts[2]))
    return ModelShape(float(shape["n_params"]), int(shape["n_layers"]), int(shape["d_model"]))


def _is_model_folder(path: str | None) -> bool:
    return bool(path) and Path(path).expanduser().is_dir() and (Path(path).expanduser() / "config.json").is_file()


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        tokenizer: str | None = None,
        shape: ModelShape | str | Mapping | None = None,
        max_concurrency: int = 64,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        prefix_mode: str = "auto",
        headers: Mapping[str, str] | None = None,
        check_model: bool = True,
        seed: int | None = None,
    ):
        if not base_url:
            raise OpenAIBackendError("the openai backend needs base_url, e.g. http://127.0.0.1:8000/v1")
        if prefix_mode not in ("auto", "completions", "continue_final_message"):
            raise ValueError(f"prefix_mode must be auto, completions or continue_final_message, got {prefix_mode!r}")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
        self.model_name = model
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.max_concurrency = max_concurrency
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._rng = random.Random(seed)
        self.usage_sources: Counter = Counter()
        self.retries = 0  # transient failures retried, for tests and run reports

        local = tokenizer or (model if _is_model_folder(model) else None)
        self.tokenizer = self._load_tokenizer(local)
        self.prefix_mode = prefix_mode
        if prefix_mode == "auto":
            self.prefix_mode = "completions" if self.tokenizer is not None else "continue_final_message"
        if self.prefix_mode == "completions" and self.tokenizer is None:
            raise ValueError("prefix_mode='completions' renders the chat template locally: pass tokenizer=<model folder>")

        parsed = _parse_shape(shape)
        if parsed is None and _is_model_folder(local):
            from .vllm import shape_from_folder  # safetensors headers only; does not import vLLM

            parsed = shape_from_folder(Path(local).expanduser())
        if parsed is None:
            raise OpenAIBackendError(
                f"cannot tell the size of model {model!r} for FLOP accounting: pass tokenizer=<local model folder> "
                "or shape='n_params,n_layers,d_model'"
            )
        self.shape = parsed
        self.server_kind = "unknown"
        self.check_model = check_model
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._gate: asyncio.Semaphore | None = None

    # --- start-up --------------------------------------------------------------------------------
    def connect(self) -> "OpenAIBackend":
        """The network half of start-up (the constructor does none): check that the server answers and
        serves this model, and learn what kind of server it is. Returns the backend, so
        ``OpenAIBackend(...).connect()`` reads as one step; ``tts.backends.create`` calls it."""
        if self.check_model:
            self._check_model()
        return self

    @staticmethod
    def _load_tokenizer(folder: str | None):
        if folder is None:
            return None
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise OpenAIBackendError(f"a local tokenizer needs transformers: pip install transformers ({exc})") from None
        try:
            return AutoTokenizer.from_pretrained(str(Path(folder).expanduser()))
        except (OSError, ValueError) as exc:
            raise OpenAIBackendError(f"cannot load a tokenizer from {folder!r}: {str(exc).splitlines()[0]}") from exc

    def _check_model(self) -> None:
        url = f"{self.base_url}/models"
        try:
            response = httpx.get(url, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ServerUnreachable(
                f"cannot reach an OpenAI-compatible server at {self.base_url} ({type(exc).__name__}: {exc}); "
                "is it running, and does base_url end in /v1?"
            ) from None
        if response.status_code in (401, 403):
            raise OpenAIBackendError(f"{url} refused the API key (HTTP {response.status_code}): {response.text[:200]}")
        if response.status_code != 200:
            raise ServerUnreachable(
                f"{url} answered HTTP {response.status_code}; is base_url the API root (it usually ends in /v1)?"
            )
        try:
            entries = response.json().get("data", [])
        except ValueError:
            raise ServerUnreachable(f"{url} did not answer JSON; is base_url the API root?") from None
        ids = [m.get("id") for m in entries]
        if self.model_name not in ids:
            raise UnknownModel(
                f"the server at {self.base_url} does not serve model {self.model_name!r}; it serves: "
                f"{', '.join(map(str, ids)) or 'nothing'}"
            )
        owner = next((m.get("owned_by") for m in entries if m.get("id") == self.model_name), None)
        self.server_kind = "vllm" if owner == "vllm" else "unknown"

    # --- prompt ----------------------------------------------------------------------------------
    def _messages(self, request: GenerationRequest) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in request.prompt]

    def render(self, request: GenerationRequest) -> str:
        """The prompt text as the model sees it (needs the local tokenizer for chat prompts)."""
        return render_prompt(self.tokenizer, request)

    def _local_count(self, text: str, add_special: bool) -> tuple[int, str]:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=add_special)["input_ids"]), "tokenizer"
        return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN_ESTIMATE), "estimate"

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        # Exact with a local tokenizer; otherwise an over-estimate, which only sizes the reservation:
        # the ledger is settled from the server's usage.
        return self._local_count(self.render(request), isinstance(request.prompt, str))[0]

    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        p = request.params
        body: dict[str, Any] = {
            "model": self.model_name,
            "n": p.n,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
        }
        # Extensions and optional fields only when used, so that strict servers accept the rest.
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if p.top_k:
            body["top_k"] = p.top_k
        if p.stop_token_ids:
            body["stop_token_ids"] = list(p.stop_token_ids)
        if self.server_kind == "vllm":
            body["return_token_ids"] = True
        chat = not isinstance(request.prompt, str) and not (request.prefix and self.prefix_mode == "completions")
        if chat:
            messages = self._messages(request)
            if request.prefix:
                messages.append({"role": "assistant", "content": request.prefix})
                body.update(add_generation_prompt=False, continue_final_message=True)
            body["messages"] = messages
            if p.logprobs:
                body.update(logprobs=True, top_logprobs=0)
            return "/chat/completions", body
        body["prompt"] = self.render(request)
        if not isinstance(request.prompt, str):
            # The rendered chat template already holds BOS and role tokens.
            body["add_special_tokens"] = False
        if p.logprobs:
            body["logprobs"] = 0
        return "/completions", body

    # --- HTTP ------------------------------------------------------------------------------------
    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        # httpx clients and semaphores belong to one event loop; tts.run starts a new one per run.
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None:
            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self.headers)
            self._gate = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._client, self._gate

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries of transient failures; returns the decoded JSON answer."""
        client, gate = self._session()
        url = self.base_url + path
        deadline = time.monotonic() + self.retry.max_total_s
        last = ""
        async with gate:
            for attempt in range(self.retry.max_attempts):
                retry_after = None
                try:
                    response = await client.post(url, content=json.dumps(body))
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        try:
                            return response.json()
                        except ValueError:
                            last = f"HTTP 200 with a body that is not JSON: {response.text[:200]!r}"
                    elif response.status_code in RETRY_STATUS:
                        last = f"HTTP {response.status_code}: {response.text[:200]}"
                        retry_after = _retry_after(response)
                    else:
                        raise self._client_error(response)
                wait = self.retry.delay(attempt, self._rng, retry_after)
                if attempt + 1 >= self.retry.max_attempts or time.monotonic() + wait > deadline:
                    break
                self.retries += 1
                await asyncio.sleep(wait)
        raise RequestFailed(
            f"{url} failed after {attempt + 1} attempt(s) within {self.retry.max_total_s:g} s; last error: {last}"
        )

    def _client_error(self, response: httpx.Response) -> OpenAIBackendError:
        try:
            detail = response.json()
            message = detail.get("error", {}).get("message") if isinstance(detail.get("error"), dict) else None
            message = message or detail.get("message") or str(detail)
        except ValueError:
            message = response.text
        message = str(message)[:500]
        if response.status_code == 404 and "model" in message.lower():
            return UnknownModel(f"the server does not serve model {self.model_name!r}: {message}")
        return RequestFailed(f"{response.request.url} rejected the request (HTTP {response.status_code}): {message}",
                             response.status_code)

    # --- generation ------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest, on_cancel: PartialUsage | None = None) -> Generation:
        path, body = self._body(request)
        try:
            answer = await self.post(path, body)
        except asyncio.CancelledError:
            # Closing the connection makes the server abort the request; it does not say how many
            # tokens it had produced, so nothing can be charged (documented above).
            if on_cancel is not None:
                on_cancel(ServerGeneration((), 0, 0, usage_source="estimate"))
            raise
        return self._generation(request, answer, chat=path == "/chat/completions")

    def _generation(self, request: GenerationRequest, answer: Mapping[str, Any], chat: bool) -> ServerGeneration:
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != request.params.n:
            raise RequestFailed(f"asked for {request.params.n} samples, the server answered {len(choices)}")
        want_logprobs = request.params.logprobs
        texts, token_ids, logprobs, counts, finishes, reasons = [], [], [], [], [], []
        for choice in choices:
            text = (choice.get("message") or {}).get("content") or "" if chat else choice.get("text") or ""
            ids = tuple(choice.get("token_ids") or ())
            lps = _choice_logprobs(choice, chat)
            if ids:
                count = len(ids)
            elif lps is not None:
                count = len(lps)
            else:
                count = None
            texts.append(text)
            token_ids.append(ids)
            logprobs.append(lps)
            counts.append(count)
            finish = choice.get("finish_reason") or "stop"
            finishes.append(finish if finish in FINISH_REASONS else ("cancelled" if finish == "abort" else "stop"))
            # vLLM (and SGLang) servers say which stop string or stop token id ended a sample; others
            # do not, and it is inferred below.
            reasons.append(choice["stop_reason"] if "stop_reason" in choice else _UNREPORTED)

        usage = answer.get("usage") or {}
        source = "server"
        if "prompt_tokens" in usage:
            prompt_tokens = int(usage["prompt_tokens"])
        else:
            prompt_tokens, source = self._local_count(self.render(request), isinstance(request.prompt, str))
        # Samples whose length the server did not give are counted locally.
        for i, count in enumerate(counts):
            if count is None:
                counts[i], how = self._local_count(texts[i], False)
                if "completion_tokens" not in usage:
                    source = how if source == "server" else source
        if "completion_tokens" in usage:
            counts = _apportion(counts, int(usage["completion_tokens"]))
        details = usage.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0)
        self.usage_sources[source] += 1

        completions = []
        for text, ids, lps, count, finish, reason in zip(texts, token_ids, logprobs, counts, finishes, reasons):
            if finish != "stop":
                reason = None
            elif reason is _UNREPORTED:
                reason = self._infer_stop_reason(request.params, text, ids, count)
            elif isinstance(reason, bool) or not isinstance(reason, (str, int)):
                reason = None
            if want_logprobs and lps is not None and len(lps) != count:
                # A server may leave out the end-of-sequence token's logprob while counting the token;
                # the logprob of a token the model was forced to end on is not informative, so 0.0.
                lps = (lps + [0.0] * count)[:count]
            completions.append(
                Completion(
                    text=text,
                    num_tokens=count,
                    finish_reason=finish,
                    token_ids=ids if len(ids) == count else (),
                    logprobs=tuple(lps) if want_logprobs and lps is not None else None,
                    prompt_tokens=prompt_tokens,
                    cached_prompt_tokens=cached,
                    stop_reason=reason,
                )
            )
        return ServerGeneration(tuple(completions), prompt_tokens, cached, usage_source=source)

    def _infer_stop_reason(self, params, text: str, ids: tuple[int, ...], count: int) -> str | int | None:
        """What ended a "stop" sample when the server does not say. With token ids and a local tokenizer:
        a stop token id at the end, or a stop string in the decoded last tokens (an end-of-sequence
        token decodes to nothing). Otherwise the sample ended at a stop string when it has more tokens
        than its text (the server counted the tokens that completed the stop and cut them from the
        text); with several stop strings the first one is reported, which is then a guess."""
        if ids and params.stop_token_ids and ids[-1] in params.stop_token_ids:
            return ids[-1]
        if not params.stop:
            return None
        if ids and self.tokenizer is not None:
            tail = self.tokenizer.decode(list(ids[-_STOP_TAIL_TOKENS:]), skip_special_tokens=True)
            hits = sorted((tail.find(s), k) for k, s in enumerate(params.stop) if s in tail)
            return params.stop[hits[0][1]] if hits else None
        return params.stop[0] if count > self._local_count(text, False)[0] else None

    async def prompt_logprobs(self, text: str) -> list[float | None]:
        """Logprob of each token of ``text`` given the ones before it (the first has none), for verifiers
        that score a given text. Uses ``/completions`` with ``echo``; servers without echo support fail
        with :class:`RequestFailed`."""
        body = {"model": self.model_name, "prompt": text, "max_tokens": 1, "echo": True, "logprobs": 0,
                "temperature": 0.0}
        answer = await self.post("/completions", body)
        lps = (answer["choices"][0].get("logprobs") or {}).get("token_logprobs")
        if lps is None:
            raise RequestFailed("the server does not return prompt logprobs for echo requests")
        return list(lps[:-1])  # the last entry is the one generated token

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


_UNREPORTED = object()  # a choice without a stop_reason key
_STOP_TAIL_TOKENS = 16  # tokens decoded from the end of a sample to find the stop string that ended it


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _choice_logprobs(choice: Mapping[str, Any], chat: bool) -> list[float] | None:
    lp = choice.get("logprobs")
    if not lp:
        return None
    if chat:
        content = lp.get("content")
        return None if content is None else [float(t["logprob"]) for t in content]
    values = lp.get("token_logprobs")
    return None if values is None else [float(v) for v in values]


def _apportion(counts: list[int], total: int) -> list[int]:
    """Make per-sample counts add up to the server's total (what it charged for), changing them as
    little as possible: a server that counts each sample's end-of-sequence token but returns no
    logprob for it is short by one per sample, so a shortfall is spread one token at a time."""
    counts = list(counts)
    diff = total - sum(counts)
    i = 0
    while diff != 0 and counts:
        k = i % len(counts)
        if diff > 0:
            counts[k] += 1
            diff -= 1
        elif counts[k] > 0:
            counts[k] -= 1
            diff += 1
        i += 1
        if diff < 0 and not any(counts):
            break
    return counts
