"""A small HTTP proxy that injects faults, and a fake OpenAI-compatible server, for backend tests.

``FaultProxy`` sits between a client and an upstream (a real server's URL, or an in-process handler
function acting as a fake server). For each request it asks its fault plan what to do:

* ``None``: forward the request and relay the answer;
* an HTTP status (``500``, ``503``, ``429``): answer with that error, never reaching the upstream;
* ``"drop"``: read the request and close the connection without answering;
* ``"drop_after"``: forward it (the upstream does the work), then close without answering;
* ``"delay:S"``: wait S seconds, then forward (longer than the client's timeout makes a timeout).

It runs its own event loop in a thread, so blocking clients (the backend's start-up check) and async
clients in the test's own loop can both use it.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import Counter
from typing import Any, Awaitable, Callable, Sequence, Union

import httpx

Fault = Union[None, int, str]
#: (method, path, JSON body or None) -> (status, JSON answer)
Handler = Callable[[str, str, Any], Union[tuple[int, Any], Awaitable[tuple[int, Any]]]]
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class FaultProxy:
    def __init__(self, upstream: str | Handler, faults: Sequence[Fault] | Callable[[int, str], Fault] = ()):
        """``faults``: a list used in order, one entry per request (then no more faults), or a function
        (request number, path) -> fault."""
        self.upstream = upstream
        self._plan = faults if callable(faults) else list(faults)
        self.counts: Counter = Counter()  # what was done, by fault kind
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._client: httpx.AsyncClient | None = None
        self._connections: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        if isinstance(self.upstream, str):
            self._client = httpx.AsyncClient(base_url=self.upstream.rstrip("/"), timeout=600)

    async def _stop(self) -> None:
        self._server.close()
        # Clients keep connections alive; end their handlers here, while the loop still runs.
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _fault(self, number: int, path: str) -> Fault:
        if callable(self._plan):
            return self._plan(number, path)
        return self._plan[number] if number < len(self._plan) else None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            while True:  # keep-alive: one connection carries many requests
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines if ":" in l)}
                body = await reader.readexactly(int(headers.get("content-length", 0) or 0))
                path = re.sub(r"^/v1", "", target)
                number = self.requests
                self.requests += 1
                fault = self._fault(number, path)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    kind = "ok" if fault is None else str(fault).split(":")[0]
                    self.counts[kind] += 1
                    if fault == "drop":
                        return
                    if isinstance(fault, int):
                        await _respond(writer, fault, {"error": {"message": f"injected {fault}", "code": fault}},
                                       {"Retry-After": "0"} if fault == 429 else None)
                        continue
                    if isinstance(fault, str) and fault.startswith("delay:"):
                        await asyncio.sleep(float(fault.split(":", 1)[1]))
                    status, answer = await self._forward(method, path, headers, body)
                    if fault == "drop_after":
                        return
                    await _respond(writer, status, answer)
                finally:
                    self.in_flight -= 1
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._connections.discard(task)
            writer.close()

    async def _forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, Any]:
        payload = json.loads(body) if body else None
        if callable(self.upstream):
            result = self.upstream(method, path, payload)
            return (await result) if asyncio.iscoroutine(result) else result
        keep = {k: v for k, v in headers.items() if k in ("authorization", "content-type")}
        # httpx appends the path to base_url (which holds /v1).
        response = await self._client.request(method, path, content=body, headers=keep)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"error": {"message": response.text}}


async def _respond(writer: asyncio.StreamWriter, status: int, answer: Any, extra: dict | None = None) -> None:
    data = json.dumps(answer).encode()
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", "Content-Type: application/json",
            f"Content-Length: {len(data)}", "Connection: keep-alive"]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    await writer.drain()


# --- a fake OpenAI-compatible server ------------------------------------------------------------------
_SUM = re.compile(r"(-?\d+)\s*\+\s*(-?\d+)")


class FakeOpenAI:
    """Answers arithmetic prompts correctly ("a + b" -> "The answer is a+b."), with usage counted by a
    whitespace tokenizer, so tests can check every count. ``usage=False`` leaves usage out."""

    def __init__(self, model: str = "fake-model", usage: bool = True, cached_tokens: int | None = None,
                 latency: float = 0.0):
        self.model = model
        self.usage = usage
        self.cached_tokens = cached_tokens
        self.latency = latency
        self.bodies: list[Any] = []

    async def __call__(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/models":
            return 200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]}
        if method != "POST" or path not in ("/chat/completions", "/completions"):
            return 404, {"error": {"message": f"no route {method} {path}"}}
        if body.get("model") != self.model:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
        self.bodies.append(body)
        await asyncio.sleep(self.latency)
        chat = path == "/chat/completions"
        prompt = " ".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
        match = _SUM.findall(prompt)
        reply = f"The answer is {int(match[-1][0]) + int(match[-1][1])}." if match else "I do not know."
        words = reply.split()[: body.get("max_tokens", 16)]
        choices = []
        for i in range(body.get("n", 1)):
            lps = [-0.1 * (k + 1) for k in range(len(words))]
            text = " ".join(words)
            if chat:
                choice = {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                if body.get("logprobs"):
                    choice["logprobs"] = {"content": [{"token": w, "logprob": lp} for w, lp in zip(words, lps)]}
            else:
                choice = {"index": i, "text": text, "finish_reason": "stop"}
                if body.get("logprobs") is not None:
                    choice["logprobs"] = {"tokens": words, "token_logprobs": lps}
            choices.append(choice)
        answer: dict[str, Any] = {"id": "x", "object": "chat.completion" if chat else "text_completion",
                                  "model": self.model, "choices": choices}
        if self.usage:
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words) * len(choices)}
            if self.cached_tokens is not None:
                usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
            answer["usage"] = usage
        return 200, answer
