"""tts: test-time scaling for language models.

    import tts
    backend = tts.backends.create("hf")                     # the embedded SmolLM2-135M-Instruct
    problems = tts.data.load("add1", limit=20)
    results = tts.run(problems, tts.Majority(n=8), backend, budget=tts.Budget(generated_tokens=512))

Importing tts loads no engine: torch, transformers and vLLM are imported only when a backend needs them.
"""

from . import backends, data
from .api import run, solve, solve_async
from .budget import Budget, BudgetExhausted, Ledger
from .runtime import Generator, Result, Strategy
from .strategies import BestOfN, Majority, Single
from .types import Candidate, Completion, Message, Problem, SamplingParams, Trace
from .verifiers.confidence import ConfidenceVerifier

__version__ = "0.1.0"

__all__ = [
    "BestOfN", "Budget", "BudgetExhausted", "Candidate", "Completion", "ConfidenceVerifier", "Generator",
    "Ledger", "Majority", "Message", "Problem", "Result", "SamplingParams", "Single", "Strategy", "Trace",
    "backends", "data", "run", "solve", "solve_async",
]
