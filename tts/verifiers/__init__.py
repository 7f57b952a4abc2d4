"""Verifiers and graders.

Graders see the reference answer and decide correctness (``math.grade``, ``code.run_tests``); reward
verifiers never see it and score candidates for selection (``Verifier`` protocol: confidence, PRMs, ORMs,
LLM judge, code tests). Model-backed verifiers are imported on first use (module ``__getattr__``), so
importing this package loads neither torch nor transformers nor math-verify.
"""

from __future__ import annotations

import importlib

from .answers import extract_answer, normalize_answer, same_answer
from .base import Verifier
from .confidence import ConfidenceVerifier

# name -> submodule that defines it; loaded lazily
_LAZY = {
    "grade": "math", "equivalent": "math", "vote_key": "math", "cluster": "math",
    "extract_math_answer": "math", "Extraction": "math", "grade_answer": "math",
    "Sandbox": "code", "CodeVerifier": "code", "TestResult": "code", "run_tests": "code",
    "run_tests_many": "code",
    "TokenLogitPRM": "prm", "LikelihoodPRM": "prm", "load_folder": "prm", "RewardHeadPRM": "prm", "aggregate": "prm",
    "SequenceClassifierORM": "orm",
    "LLMJudge": "judge",
}

__all__ = ["ConfidenceVerifier", "Verifier", "extract_answer", "normalize_answer", "same_answer", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
