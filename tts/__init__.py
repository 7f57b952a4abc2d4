"""tts: test-time scaling for language models.

    import tts
    backend = tts.backends.create("hf")                     # the embedded SmolLM2-135M-Instruct
    problems = tts.data.load("add1", limit=20)
    results = tts.run(problems, tts.Majority(n=8), backend, budget=tts.Budget(generated_tokens=512))

Importing tts loads no engine: torch, transformers and vLLM are imported only when a backend needs them.
"""

from . import lifeline

lifeline.on_import()  # an engine process started by an armed tts process dies with its parent

from . import backends, data  # noqa: E402
from .api import Finished, Progress, Text, run, solve, solve_async, solve_stream  # noqa: E402
from .budget import Budget, BudgetExhausted, Ledger  # noqa: E402
from .runtime import Generator, Result, Strategy  # noqa: E402
from .scale import RayExecutor  # noqa: E402  (Ray itself is imported only when a run starts)
from .strategies import BestOfN, Majority, Single  # noqa: E402
from .types import Candidate, Completion, Message, Problem, SamplingParams, Trace  # noqa: E402
from .verifiers.confidence import ConfidenceVerifier  # noqa: E402

__version__ = "0.1.0"


def serve(model: str = "embedded", backend: str = "auto", **options):
    """Run the OpenAI-compatible server (``tts serve``) in this process until interrupted; the options
    are the command's, as keywords (host, port, api_key, base_url, max_concurrent_requests, ...; see
    tts.server.serve). Needs the ``serve`` extra."""
    from .server import serve as _serve

    return _serve(model, backend, **options)

__all__ = [
    "BestOfN", "Budget", "BudgetExhausted", "Candidate", "Completion", "ConfidenceVerifier", "Generator",
    "Ledger", "Majority", "Message", "Problem", "RayExecutor", "Result", "SamplingParams", "Single", "Strategy", "Trace",
    "Finished", "Progress", "Text", "backends", "data", "run", "serve", "solve", "solve_async", "solve_stream",
]
