"""``tts serve``: an OpenAI-compatible server that runs a test-time scaling strategy per request.

* requests.py: a request body -> a job (problem, strategy from the typed builder, budget, answer
  format); every malformed body is one OpenAI-shaped error naming its field.
* tools.py: tool calls offered to the model, read from its replies, and voted on canonically.
* app.py: the FastAPI endpoints, streaming, limits, cancellation on disconnect.
* metrics.py: Prometheus counters and the in-flight count of engine requests.

FastAPI and uvicorn are the ``serve`` extra and are imported only when a server starts.
"""

from __future__ import annotations

from typing import Any

from ..budget import Budget
from .app import Limits, create_app
from .errors import RequestError
from .requests import Defaults, parse

__all__ = ["Defaults", "Limits", "RequestError", "create_app", "parse", "run_server", "serve", "server_defaults"]


def server_defaults(model_name: str, recipe: dict[str, Any] | None, *, max_budget: Budget,
                    max_tokens: int | None = None) -> Defaults:
    """The server-wide default request from a recipe's keys (strategy, n, temperature, top-p,
    max-tokens and strategy options; run-only keys such as dataset are not a request's). The default
    strategy is built once here, so a bad recipe fails at start, not on the first request."""
    from ..recipes import RecipeError

    recipe = {str(k).replace("-", "_"): v for k, v in (recipe or {}).items()}
    run_only = {"model", "backend", "base_url", "api_key", "dataset", "data_path", "split", "question_field",
                "answer_field", "id_field", "prompt_format", "limit", "concurrency", "out", "budget_tokens",
                "budget_flops", "run_budget_tokens", "prm_backend", "seed", "compute_optimal"}
    strategy = recipe.pop("strategy", recipe.pop("strategies", "single"))
    if isinstance(strategy, list):
        strategy = strategy[0] if strategy else "single"
    if not isinstance(strategy, str):
        raise RecipeError(f"strategy must be a strategy name, got {strategy!r:.60}")
    n = recipe.pop("n", None)
    if n is not None and "@" not in strategy:
        strategy = f"{strategy}@{n}"
    sampling = {k: recipe.pop(k) for k in ("temperature", "top_p", "max_tokens") if k in recipe}
    if max_tokens is not None:
        sampling["max_tokens"] = max_tokens
    options = {k: v for k, v in recipe.items() if k not in run_only}
    defaults = Defaults(model=model_name, strategy=strategy, options=options, max_budget=max_budget,
                        **{k: v for k, v in sampling.items() if v is not None})
    try:
        parse({"model": model_name, "messages": [{"role": "user", "content": "1 + 1"}]}, defaults)
    except RequestError as exc:
        raise RecipeError(f"the default request does not build: {exc.message}") from None
    return defaults


def run_server(*, backend, defaults: Defaults, host: str = "127.0.0.1", port: int = 8000,
               limits: Limits | None = None, on_ready=None) -> None:
    """Serve ``backend`` until interrupted (SIGINT/SIGTERM), then close it inside the server's own
    event loop (its engine processes die with it). ``on_ready(url)`` is called once the socket listens."""
    import asyncio

    import uvicorn

    app = create_app(backend, defaults, limits)

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if on_ready is not None and self.started:
                on_ready(f"http://{host}:{port}/v1")

        async def shutdown(self, sockets=None):
            try:
                await super().shutdown(sockets)
            finally:
                await backend.aclose()

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, lifespan="off")
    asyncio.run(_Server(config).serve())


def serve(model: str = "embedded", backend: str = "auto", *, host: str = "127.0.0.1", port: int = 8000,
          base_url: str | None = None, upstream_api_key: str | None = None, api_key: str | None = None,
          recipe: dict[str, Any] | None = None, max_concurrent_requests: int = 64,
          max_budget: Budget | None = None, max_tokens: int | None = None,
          max_body_bytes: int = Limits.max_body_bytes, engine_options: dict[str, Any] | None = None,
          on_ready=None) -> None:
    """``tts serve`` from Python: load the backend, build the default request, serve until
    interrupted. ``api_key`` guards this server; ``upstream_api_key`` is the openai backend's key;
    ``engine_options`` go to the backend (``block_size`` for vllm, ``max_batch_rows`` for hf, ...)."""
    from .. import backends

    name = backends.default_backend_name() if backend == "auto" else backend
    if name not in backends.BACKENDS:
        raise ValueError(f"backend must be auto or one of {', '.join(backends.BACKENDS)}, got {backend!r}")
    options: dict[str, Any] = {}
    if name == "openai":
        if not base_url:
            raise ValueError("the openai backend needs base_url, e.g. http://127.0.0.1:8000/v1")
        options = {"base_url": base_url, **({"api_key": upstream_api_key} if upstream_api_key else {})}
    options.update(engine_options or {})
    defaults = server_defaults(model, recipe, max_budget=max_budget or Budget(), max_tokens=max_tokens)
    try:
        engine = backends.create(name, model, **options)
    except TypeError as exc:  # an engine option this backend does not take
        raise backends.BackendError(f"engine options {', '.join(engine_options or {}) or '-'}: {exc}") from None
    limits = Limits(api_key=api_key, max_concurrent_requests=max_concurrent_requests, max_body_bytes=max_body_bytes)
    run_server(backend=engine, defaults=defaults, host=host, port=port, limits=limits, on_ready=on_ready)
