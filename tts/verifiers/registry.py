"""Verifiers by name: the one place a string becomes a verifier (flags, recipes, routing policies and
the server all come here), and where each model is loaded once per process.

A spec is one of:

* ``confidence`` (= ``confidence_mean``), ``confidence_mean``, ``confidence_tail``,
  ``confidence_lowest_group``: token confidence of the candidate itself, no second model;
* ``testbed`` or ``testbed-verifier``: the testbed's PRM or its stronger verifier (``tts/testbed``);
* a local PRM folder, read by its ``tts_prm.json`` (else as a Math-Shepherd-style tagged PRM);
* ``qwen_prm:MODEL``, ``math_shepherd:MODEL``, ``rlhflow:MODEL``: the published PRM families on
  transformers, MODEL a local folder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

CONFIDENCE = ("confidence", "confidence_mean", "confidence_tail", "confidence_lowest_group")
FAMILIES = ("qwen_prm", "math_shepherd", "rlhflow")
ALIASES = ("testbed", "testbed-verifier")
#: what a spec may be, for messages and help
SPEC_HELP = (f"{', '.join(CONFIDENCE)}, {', '.join(ALIASES)}, a local PRM folder, or "
             f"{', '.join(f + ':MODEL' for f in FAMILIES)}")

_loaded: dict[str, Any] = {}
_lock = threading.Lock()


def resolve(spec: str) -> Any:
    """The verifier a spec names (ValueError with the valid forms otherwise). Model-backed verifiers
    are made once per spec and process, so every strategy of a run shares one model."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a verifier must be named: {SPEC_HELP}; got {spec!r}")
    with _lock:
        if spec not in _loaded:
            _loaded[spec] = _make(spec)
        return _loaded[spec]


def _make(spec: str) -> Any:
    if spec in CONFIDENCE:
        from .confidence import ConfidenceVerifier

        return ConfidenceVerifier("mean" if spec == "confidence" else spec.removeprefix("confidence_"))
    family, sep, model = spec.partition(":")
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
