"""Code verification: candidate programs graded by tests in the kernel sandbox of :mod:`tts.sandbox`.

The sandbox (isolation, limits, the two-process test protocol) lives in ``tts.sandbox``; this module
turns problems and model replies into its jobs: HumanEval's ``check(candidate)`` tests for grading, and
a problem's *public* tests (for HumanEval, the examples in the prompt's docstring) for the reward
verifier, which never sees the hidden grading tests.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..budget import Ledger
from ..sandbox import (  # noqa: F401: the public names of code verification
    STATUSES,
    Sandbox,
    SandboxUnavailable,
    TestResult,
    availability,
    require_isolation,
    run_program,
    run_tests,
    run_tests_many,
)
from ..types import Completion, Problem

_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def code_from_text(text: str) -> str:
    """The program in a model's reply: the last fenced code block, else the whole text."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def humaneval_job(problem: Mapping[str, str], completion: str) -> dict:
    """The :func:`run_tests` job that grades ``completion`` on a HumanEval problem: the program is the
    prompt followed by the completion (a body, or a whole function that redefines the prompt's); the
    harness runs the prompt (its helper functions) and the problem's tests, then ``check(candidate)``."""
    return {"program": problem["prompt"] + completion, "tests": problem["test"],
            "entry_point": problem["entry_point"], "setup": problem["prompt"], "call": "check"}


@dataclass(frozen=True)
class CodeVerifier:
    """Reward verifier: 1.0 when a candidate passes the tests a deployed system could see, else 0.0.

    The tests come from ``problem.metadata[tests_key]`` (``public_tests`` by default: for HumanEval the
    docstring's examples, never the hidden grading tests), asserts that call ``metadata[entry_point_key]``;
    the candidate's program is ``metadata[prefix_key]`` (the signature the model continued) followed by
    the code in its reply, and the prefix also runs before the tests (its helper functions). It runs no
    model, so it charges the ledger nothing but wall time.
    """

    sandbox: Sandbox = field(default_factory=Sandbox)
    tests_key: str = "public_tests"
    prefix_key: str = "prompt"
    entry_point_key: str = "entry_point"
    workers: int = 2
    name: str = "code_tests"
    needs_logprobs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ValueError(f"CodeVerifier.workers must be a positive integer, got {self.workers!r}")
        for key in ("tests_key", "prefix_key", "entry_point_key", "name"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"CodeVerifier.{key} must be a string, got {getattr(self, key)!r}")
        if self.tests_key == "test":
            raise ValueError("CodeVerifier.tests_key 'test' names HumanEval's hidden grading tests; a reward "
                             "verifier must use tests a deployed system could see (default: public_tests)")

    async def score(self, problem: Problem, completions: Sequence[Completion], ledger: Ledger) -> list[float]:
        meta = problem.metadata
        for key in (self.tests_key, self.entry_point_key):
            if not meta.get(key):
                raise ValueError(f"CodeVerifier needs problem.metadata[{key!r}] (problem {problem.id!r})")
        prefix = meta.get(self.prefix_key, "")
        jobs = [{"program": prefix + "\n" + code_from_text(c.text), "tests": meta[self.tests_key],
                 "entry_point": meta[self.entry_point_key], "setup": prefix} for c in completions]
        results = await asyncio.to_thread(run_tests_many, jobs, self.sandbox, self.workers)
        return [1.0 if r.passed else 0.0 for r in results]
