"""Verifiers by name: the one place a string becomes a verifier (flags, recipes, routing policies and
the server all come here), and where each model is loaded once per process.

A spec is one of:

* ``confidence`` (= ``confidence_mean``), ``confidence_mean``, ``confidence_tail``,
  ``confidence_lowest_group``: token confidence of the candidate itself, no second model;
* ``testbed`` or ``testbed-verifier``: the testbed's PRM or its stronger verifier (``tts/testbed``);
* a local PRM folder, read by its ``tts_prm.json`` (else as a Math-Shepherd-style tagged PRM);
* ``probe`` or ``probe:FOLDER``: a probe on the policy's own hidden states (``tts.verifiers.probe``;
  default the testbed's, ``tts/testbed/probe``); it runs on transformers whatever the PRM backend;
* ``qwen_prm:MODEL``, ``math_shepherd:MODEL``, ``rlhflow:MODEL``: the published PRM families on
  transformers, MODEL a local folder.

Reward models (PRMs, ORMs) run on a PRM backend: ``hf`` (transformers, in-process, the default) or
``vllm`` (``tts.verifiers.vllm_rm``: the same model and settings scoring in a vLLM engine). The backend
is the ``backend`` argument of :func:`resolve`, else the one :func:`prm_backend` set for the current
context (``tts run --prm-backend``), else ``hf``; verifiers that run no model ignore it.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from pathlib import Path
from typing import Any, Iterator

CONFIDENCE = ("confidence", "confidence_mean", "confidence_tail", "confidence_lowest_group")
FAMILIES = ("qwen_prm", "math_shepherd", "rlhflow")
ALIASES = ("testbed", "testbed-verifier")
PROBE = "probe"
def builtin_specs() -> tuple[str, ...]:
    """The specs that name no file or folder (what a tts serve client may ask for)."""
    return (*CONFIDENCE, *ALIASES, PROBE)


#: what a spec may be, for messages and help
SPEC_HELP = (f"{', '.join(CONFIDENCE)}, {', '.join(ALIASES)}, {PROBE} (or {PROBE}:FOLDER), a local PRM folder, or "
             f"{', '.join(f + ':MODEL' for f in FAMILIES)}")

#: where reward models run: transformers in this process, or a vLLM engine
PRM_BACKENDS = ("hf", "vllm")

_loaded: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()
_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar("tts_prm_backend", default=None)
#: where reward models run outside any prm_backend block (a server sets it once for its whole process)
_process_backend = "hf"


def check_prm_backend(name: str) -> str:
    if name not in PRM_BACKENDS:
        raise ValueError(f"unknown PRM backend {name!r}; choose from {', '.join(PRM_BACKENDS)}")
    return name


@contextlib.contextmanager
def prm_backend(name: str) -> Iterator[None]:
    """Within this block (and the tasks and worker threads it starts), specs resolve to reward models
    on ``name``."""
    token = _backend.set(check_prm_backend(name))
    try:
        yield
    finally:
        _backend.reset(token)


def set_process_prm_backend(name: str) -> None:
    """Reward models run on ``name`` in every thread and task of this process that is not inside a
    :func:`prm_backend` block: for ``tts serve``, whose request handlers run on threads a context variable
    set at start-up may not reach."""
    global _process_backend
    _process_backend = check_prm_backend(name)


def current_prm_backend() -> str:
    return _backend.get() or _process_backend


def resolve(spec: str, backend: str | None = None) -> Any:
    """The verifier a spec names (ValueError with the valid forms otherwise), its reward model on
    ``backend`` (default: :func:`current_prm_backend`). Model-backed verifiers are made once per spec,
    backend and process, so every strategy of a run shares one model."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a verifier must be named: {SPEC_HELP}; got {spec!r}")
    backend = check_prm_backend(backend or current_prm_backend())
    with _lock:
        if (spec, backend) not in _loaded:
            verifier = _make(spec)
            if backend == "vllm":
                from .vllm_rm import on_vllm, started

                verifier = started(on_vllm(verifier))  # a model vLLM cannot load fails here, in one line
            _loaded[spec, backend] = verifier
        return _loaded[spec, backend]


def forget_states() -> None:
    """Drop what every loaded verifier kept of the prefixes it scored (incremental PRM states, the vLLM
    reward models' memos), so the next strategy of a run pays for its own verifier work: a strategy's
    cost must not depend on which strategies ran before it on the same problems."""
    with _lock:
        loaded = list(_loaded.values())
    for verifier in loaded:
        lazy = getattr(verifier, "_lazy", None)
        if lazy is not None and hasattr(lazy, "states"):
            with lazy.lock:
                lazy.states = None


def _make(spec: str) -> Any:
    if spec in CONFIDENCE:
        from .confidence import ConfidenceVerifier

        return ConfidenceVerifier("mean" if spec == "confidence" else spec.removeprefix("confidence_"))
    family, sep, model = spec.partition(":")
    if spec == PROBE or family == PROBE and sep:
        if sep and not model:
            raise ValueError(f"verifier {spec!r}: give the probe folder after the colon")
        from ..testbed import load_probe

        return load_probe(model or None)
    if sep and family in FAMILIES:
        if not model:
            raise ValueError(f"verifier {spec!r}: give the model folder after the colon")
        from .prm import RewardHeadPRM, TokenLogitPRM

        makers = {"qwen_prm": RewardHeadPRM.qwen_math_prm, "math_shepherd": TokenLogitPRM.math_shepherd,
                  "rlhflow": TokenLogitPRM.rlhflow}
        return makers[family](model)
    if spec in ALIASES or Path(spec).expanduser().is_dir():
        from ..testbed import load_prm

        return load_prm(spec)
    raise ValueError(f"unknown verifier {spec!r} (not a folder here either); choose from {SPEC_HELP}")
