"""The HTTP side of ``tts serve``: OpenAI-shaped endpoints over one shared backend.

Every request is solved as its own task on the server's event loop, under its own child of the
server ledger, so concurrent clients' samples meet in the same engine batches (as ``tts run``'s
problems do) and no request can see or change another's settings. Bodies are parsed by
requests.py; this module owns transport only: auth, size and concurrency limits, streaming, the
disconnect watch that cancels a request's strategy, and turning a trace into a response.
FastAPI is imported at the top (its handlers' annotations must resolve here); nothing imports this
module until a server starts.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from ..api import Finished, Progress, Text, solve_stream
from ..budget import Ledger
from ..runtime import solve_one
from ..types import Trace
from .metrics import Metrics, MeteredBackend
from .errors import RequestError
from .requests import Defaults, Job, parse
from .tools import parse_tool_calls

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: far above any chat request, far below what could hurt the server


@dataclass(frozen=True)
class Limits:
    api_key: str | None = None
    max_concurrent_requests: int = 64
    max_body_bytes: int = DEFAULT_MAX_BODY


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, content) of a reply that thinks in ``<think>...</think>``; (None, text) otherwise."""
    start, end = text.find("<think>"), text.find("</think>")
    if end < 0:
        return None, text
    reasoning = text[start + len("<think>") if 0 <= start < end else 0:end]
    return reasoning.strip(), text[end + len("</think>"):].lstrip()


def ranked_choices(trace: Trace, count: int) -> list[int]:
    """The chosen candidate, then one candidate for each next-most-voted distinct answer (the first
    that gave it), up to ``count``: ``n`` > 1 returns the top distinct answers."""
    if trace.chosen is None:
        return []
    order = [trace.chosen]
    if count <= 1:
        return order
    answers = [c.answer for c in trace.candidates]
    votes = Counter(a for a in answers if a is not None)
    seen = {answers[trace.chosen]}
    for answer, _ in sorted(votes.items(), key=lambda kv: (-kv[1], answers.index(kv[0]))):
        if len(order) >= count:
            break
        if answer not in seen:
            seen.add(answer)
            order.append(answers.index(answer))
    return order


def usage_of(ledger) -> dict:
    prompt, generated = int(ledger.get("prompt_tokens", 0)), int(ledger.get("generated_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated,
            "prompt_tokens_details": {"cached_tokens": int(ledger.get("cached_prompt_tokens", 0))}}


def tts_info(job: Job, trace: Trace) -> dict:
    info: dict[str, Any] = {"strategy": job.label, "ledger": dict(trace.ledger), "answer": trace.answer}
    if trace.info.get("budget_stop"):
        info["budget_stop"] = trace.info["budget_stop"]
    if job.return_trace:
        votes = Counter(c.answer for c in trace.candidates if c.answer is not None)
        info["candidates"] = [{"answer": c.answer, "scores": dict(c.scores), "votes": votes.get(c.answer, 0),
                               "tokens": c.num_tokens, "finish_reason": c.finish_reason, "chosen": i == trace.chosen,
                               "text": c.text} for i, c in enumerate(trace.candidates)]
    return info


def _tool_calls(job: Job, text: str) -> list[dict]:
    if not job.tools:
        return []
    known = {t["function"]["name"] for t in job.tools}
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments), ensure_ascii=False)}}
            for c in parse_tool_calls(text, known)]


def _finish(reason: str, calls: list) -> str:
    if calls:
        return "tool_calls"
    return "length" if reason == "length" else "stop"


def response_of(job: Job, trace: Trace, rid: str, created: int) -> dict:
    """The whole (non-streamed) response for a finished trace."""
    choices = []
    for index, i in enumerate(ranked_choices(trace, job.choices)):
        c = trace.candidates[i]
        reasoning, content = split_reasoning(c.text)
        calls = _tool_calls(job, content)
        if job.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": None if calls else content}
            if reasoning is not None:
                message["reasoning_content"] = reasoning
            if calls:
                message["tool_calls"] = calls
            choices.append({"index": index, "message": message, "finish_reason": _finish(c.finish_reason, calls),
                            "logprobs": None})
        else:
            choices.append({"index": index, "text": c.text, "finish_reason": _finish(c.finish_reason, []),
                            "logprobs": None})
    if not choices:  # the budget refused every sample: an empty answer, said so in tts.budget_stop
        empty = {"role": "assistant", "content": ""} if job.kind == "chat" else None
        choices = [{"index": 0, **({"message": empty} if empty else {"text": ""}), "finish_reason": "length",
                    "logprobs": None}]
    return {"id": rid, "object": "chat.completion" if job.kind == "chat" else "text_completion", "created": created,
            "model": job.model, "choices": choices, "usage": usage_of(trace.ledger), "tts": tts_info(job, trace)}


def _pieces(text: str, size: int = 24) -> list[str]:
    """Content deltas: the text in runs of about ``size`` characters, cut after whitespace."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        while end < len(text) and not text[end - 1].isspace() and end - start < 4 * size:
            end += 1
        out.append(text[start:end])
        start = end
    return out


def streams_live(job: Job) -> bool:
    """Whether the engine's text is streamed as it is generated: only where the one sample is the
    answer (``single``; a ``BudgetForced`` single is named budget_forcing and streams when it is
    done, since its continuations rewrite the text) and no tool call has to be read whole."""
    return type(job.strategy).__name__ == "Single" and not job.tools


class LiveText:
    """The text of sample 0 sent so far, split into reasoning (inside ``<think>``) and content."""

    def __init__(self) -> None:
        self.reasoning = ""
        self.content = ""
        self.started = False

    def deltas(self, text: str, chat: bool) -> list[dict]:
        out: list[dict] = []
        if not self.started and chat:
            out.append({"role": "assistant"})
        self.started = True
        if chat and "<think>" in text and "</think>" not in text:
            reasoning, content = text.split("<think>", 1)[1], ""
        elif chat:
            reasoning, content = split_reasoning(text)
            reasoning = reasoning or ""
        else:
            reasoning, content = "", text
        # text so far can shrink at its end (a stop string being recognized): send only what grows
        if reasoning.startswith(self.reasoning) and reasoning != self.reasoning:
            out.append({"reasoning_content": reasoning[len(self.reasoning):]})
            self.reasoning = reasoning
        if content.startswith(self.content) and content != self.content:
            out.append({"content": content[len(self.content):]})
            self.content = content
        return out


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


class Server:
    """What the endpoints share: the backend, the server ledger, the counters and the limits."""

    def __init__(self, backend, defaults: Defaults, limits: Limits):
        self.metrics = Metrics()
        self.backend = MeteredBackend(backend, self.metrics)
        self.defaults = defaults
        self.limits = limits
        self.ledger = Ledger()

    def progress_chunk(self, job: Job, rid: str, created: int, event: Progress | None) -> dict:
        obj = "chat.completion.chunk" if job.kind == "chat" else "text_completion"
        tts: dict[str, Any] = {"strategy": job.label, "samples": 0, "leader": None, "votes": 0,
                               "generated_tokens": 0, "seconds": 0.0}
        if event is not None:
            tts.update(samples=event.samples, leader=event.leader, votes=event.votes,
                       generated_tokens=event.generated_tokens, prompt_tokens=event.prompt_tokens,
                       engine_calls=event.engine_calls, seconds=event.seconds)
        return {"id": rid, "object": obj, "created": created, "model": job.model, "choices": [], "tts": tts}

    async def stream(self, job: Job, rid: str, created: int) -> AsyncIterator[bytes]:
        """SSE: a progress chunk at once and after every answered engine request, then the chosen
        text as deltas, the finish, and usage when asked; ``[DONE]`` last."""
        started = time.perf_counter()
        status = 200
        obj = "chat.completion.chunk" if job.kind == "chat" else "text_completion"
        try:
            yield sse(self.progress_chunk(job, rid, created, None))
            trace = None
            live = LiveText()  # what of sample 0 was already sent while it was generated
            async for event in solve_stream(job.problem, job.strategy, self.backend, seed=job.seed,
                                            ledger=self.ledger.child(job.budget), extract=job.extract,
                                            stream_text=streams_live(job)):
                if isinstance(event, Finished):
                    trace = event.trace
                elif isinstance(event, Text):
                    if event.sample == 0:
                        for delta in live.deltas(event.text, job.kind == "chat"):
                            yield sse(self._delta(rid, obj, created, job, 0, delta))
                else:
                    yield sse(self.progress_chunk(job, rid, created, event))
            assert trace is not None
            full = response_of(job, trace, rid, created)
            for choice in full["choices"]:
                index, finish = choice["index"], choice["finish_reason"]
                sent = live if index == 0 else LiveText()
                if job.kind == "chat":
                    message = choice["message"]
                    if not sent.started:
                        yield sse(self._chunk(rid, obj, created, job, index, {"role": "assistant"}))
                    reasoning = message.get("reasoning_content")
                    if reasoning is not None and reasoning.startswith(sent.reasoning) and reasoning != sent.reasoning:
                        yield sse(self._chunk(rid, obj, created, job, index,
                                              {"reasoning_content": reasoning[len(sent.reasoning):]}))
                    for k, call in enumerate(message.get("tool_calls") or []):
                        yield sse(self._chunk(rid, obj, created, job, index, {"tool_calls": [{"index": k, **call}]}))
                    content = message.get("content") or ""
                    # the rest of what was streamed live (a stop string the engine cut is not resent)
                    rest = content[len(sent.content):] if content.startswith(sent.content) else ""
                    for piece in _pieces(rest):
                        yield sse(self._chunk(rid, obj, created, job, index, {"content": piece}))
                    yield sse(self._chunk(rid, obj, created, job, index, {}, finish))
                else:
                    text = choice["text"]
                    rest = text[len(sent.content):] if text.startswith(sent.content) else ""
                    for piece in _pieces(rest):
                        yield sse({"id": rid, "object": obj, "created": created, "model": job.model,
                                   "choices": [{"index": index, "text": piece, "finish_reason": None, "logprobs": None}]})
                    yield sse({"id": rid, "object": obj, "created": created, "model": job.model,
                               "choices": [{"index": index, "text": "", "finish_reason": finish, "logprobs": None}]})
            if job.include_usage:
                yield sse({"id": rid, "object": obj, "created": created, "model": job.model, "choices": [],
                           "usage": full["usage"], "tts": full["tts"]})
            yield b"data: [DONE]\n\n"
        except asyncio.CancelledError:
            status = 499  # the client went away; solve_stream has cancelled the strategy
            raise
        except Exception as exc:  # an engine failure mid-stream: say so in the stream, one line
            status = 502
            yield sse(engine_error(exc).body())
            yield b"data: [DONE]\n\n"
        finally:
            self.metrics.active -= 1
            self.metrics.count(job.kind, job.label, status)
            self.metrics.observe(job.label, time.perf_counter() - started)

    def _delta(self, rid, obj, created, job, index, delta: dict) -> dict:
        if job.kind == "chat":
            return self._chunk(rid, obj, created, job, index, delta)
        return {"id": rid, "object": obj, "created": created, "model": job.model,
                "choices": [{"index": index, "text": delta.get("content", ""), "finish_reason": None, "logprobs": None}]}

    def _chunk(self, rid, obj, created, job, index, delta, finish=None) -> dict:
        return {"id": rid, "object": obj, "created": created, "model": job.model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    async def solve(self, job: Job, disconnected) -> Trace:
        """Solve, cancelling the strategy (and its engine requests) as soon as the client is gone."""
        # no progress events to send, so none are made (solve_stream would read every sample's answer)
        task = asyncio.ensure_future(solve_one(job.problem, job.strategy, self.backend,
                                               self.ledger.child(job.budget), job.seed))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.1)
                if done:
                    return task.result()
                if await disconnected():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise asyncio.CancelledError
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def engine_error(exc: BaseException) -> RequestError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
    return RequestError(f"the engine failed: {first}", None, 502, "engine_error")


def create_app(backend, defaults: Defaults, limits: Limits | None = None):
    """The FastAPI application serving ``backend``."""
    from ..strategies import STRATEGIES

    limits = limits or Limits()
    server = Server(backend, defaults, limits)
    app = FastAPI(title="tts serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    def fail(err: RequestError, endpoint: str = "", label: str = "-") -> Response:
        if endpoint:
            server.metrics.count(endpoint, label, err.status)
        headers = {"Retry-After": "1"} if err.status == 429 else None
        if err.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    def authorized(request: Request) -> bool:
        if limits.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        # compare_digest takes as long whatever prefix matches, so the key cannot be guessed byte by byte
        return hmac.compare_digest(token.strip().encode("utf-8", "replace"), limits.api_key.encode()) and \
            scheme.lower() == "bearer"

    def unauthorized() -> Response:
        return fail(RequestError("missing or wrong API key: send Authorization: Bearer KEY", None, 401,
                                 "authentication_error", "invalid_api_key"))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):  # never a traceback to the client
        return fail(RequestError(f"internal error: {type(exc).__name__}: {str(exc)[:200]}", None, 500, "server_error"))

    async def read_json(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            raise RequestError(f"the request body is over this server's limit of {limits.max_body_bytes} bytes",
                               None, 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise RequestError(f"the request body is over this server's limit of {limits.max_body_bytes} bytes",
                                   None, 413)
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestError(f"the request body is not valid JSON: {str(exc)[:120]}") from None

    async def completion(request: Request, kind: str) -> Response:
        endpoint = kind
        if not authorized(request):
            return unauthorized()
        try:
            body = await read_json(request)
            job = parse(body, defaults, kind)
        except RequestError as err:
            return fail(err, endpoint)
        except RecursionError:
            return fail(RequestError("the request body is nested too deeply"), endpoint)
        if server.metrics.active >= limits.max_concurrent_requests:
            return fail(RequestError(f"this server is solving {limits.max_concurrent_requests} requests, its "
                                     "--max-concurrent-requests; retry after a moment", None, 429,
                                     "rate_limit_error", "too_many_requests"), endpoint, job.label)
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        server.metrics.active += 1
        if job.stream:
            # Started here, so that its `finally` (which releases the concurrency slot) runs even if the
            # client leaves before the response begins: a never-started generator skips its finally.
            events = server.stream(job, rid, created)
            first = await events.__anext__()

            async def body():
                yield first
                async for chunk in events:
                    yield chunk

            return StreamingResponse(body(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        started = time.perf_counter()
        status = 200
        try:
            trace = await server.solve(job, request.is_disconnected)
            return JSONResponse(response_of(job, trace, rid, created))
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception as exc:
            err = engine_error(exc)
            status = err.status
            return fail(err)
        finally:
            server.metrics.active -= 1
            server.metrics.count(endpoint, job.label, status)
            server.metrics.observe(job.label, time.perf_counter() - started)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await completion(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await completion(request, "completion")

    @app.get("/v1/models")
    async def models(request: Request):
        if not authorized(request):
            return unauthorized()
        created = int(time.time())
        data = [{"id": defaults.model, "object": "model", "created": created, "owned_by": "tts",
                 "tts": {"default_strategy": defaults.strategy}}]
        data += [{"id": f"tts/{name}", "object": "model", "created": created, "owned_by": "tts"} for name in STRATEGIES]
        return {"object": "list", "data": data}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics(request: Request):
        if not authorized(request):
            return unauthorized()
        return PlainTextResponse(server.metrics.render(server.ledger.snapshot()),
                                 media_type="text/plain; version=0.0.4")

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return fail(RequestError(f"no such endpoint {request.url.path[:80]}; this server has POST /v1/chat/completions, "
                                 "POST /v1/completions, GET /v1/models, GET /health, GET /metrics", None, 404,
                                 "not_found_error"))

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc):
        return fail(RequestError(f"{request.method} is not allowed on {request.url.path[:80]}", None, 405,
                                 "invalid_request_error"))

    return app
