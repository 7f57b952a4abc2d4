import asyncio
import json
import os
import random
import threading
import time

import pytest

pytest.importorskip("math_verify")

from tts.verifiers.math import (  # noqa: E402
    Extraction,
    cluster,
    equivalent,
    extract_math_answer,
    grade,
    grade_answer,
    loose_form,
    reference_answer,
    vote_key,
)


@pytest.mark.parametrize(
    "a, b",
    [
        ("0.5", r"\frac{1}{2}"),
        (r"\dfrac{1}{2}", "1/2"),
        ("[1,2)", "[1, 2)"),
        (r"\{1,2\}", r"\{2,1\}"),
        (r"10\text{ cm}", "10"),
        (r"50\%", "50"),
        ("x=3", "3"),
        (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}"),
        (r"\sqrt{2}/2", r"\frac{1}{\sqrt 2}"),
        (r"\text{(C)}", "C"),
        ("1,000", "1000"),
        ("2x+1", "1+2x"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\pi/2)"),
        (r"\text{Monday}", "Monday"),
    ],
)
def test_equivalent_notations(a, b):
    assert equivalent(a, b)
    assert equivalent(b, a)


@pytest.mark.parametrize(
    "a, b",
    [("3", "4"), ("(1,2]", "[1,2]"), (r"\pi", "3.14"), (r"\infty", r"-\infty"), ("Monday", "Tuesday"), (None, "1"), ("", "1")],
)
def test_different_answers(a, b):
    assert not equivalent(a, b)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{\frac{1}{\sqrt{2}}} and then 7", r"\frac{1}{\sqrt{2}}"),
        ("work...\n#### 1,234", "1,234"),
        (r"So the final answer is $\frac{3}{4}$. Done 5", r"\frac{3}{4}"),
        (r"The answer is \(x^2\)", "x^2"),
        ("The answer is 6, but some say 7", "6"),
        ("Answer: Monday.", "Monday"),
        ("we get 3 and then 12", "12"),
        ("nothing here", None),
    ],
)
def test_extract_math_answer(text, expected):
    assert extract_math_answer(text) == expected


def test_extraction_markers_can_be_switched_off():
    text = r"The answer is 5. Check: \boxed{6}"
    assert extract_math_answer(text) == "6"
    assert extract_math_answer(text, Extraction(boxed=False)) == "5"
    assert extract_math_answer("about 3 apples", Extraction(last_number=False)) is None
    with pytest.raises(ValueError, match="Extraction.max_phrase_chars"):
        Extraction(max_phrase_chars=0)


def test_grade_uses_extraction_and_reference_solutions():
    assert grade(r"... so it is \boxed{0.5}", r"\frac{1}{2}")
    assert not grade(r"... so it is \boxed{0.6}", r"\frac{1}{2}")
    assert grade("she has 72 clips", "Natalia sold 48/2 = 24 ...\n#### 72")
    assert reference_answer(r"thus \boxed{7}.") == "7"
    assert grade_answer("0.5", "1/2") and not grade_answer(None, "1/2")
    assert not grade("", "1")


def test_vote_keys_unify_notations():
    assert vote_key("1/2") == vote_key("0.5") == vote_key(r"\frac{1}{2}") == vote_key(r"$\dfrac{1}{2}$") == "1/2"
    assert vote_key(r"\frac{6}{4}") == vote_key("1.5")
    assert vote_key(r"\frac{\sqrt{3}}{2}") == vote_key(r"\dfrac{\sqrt 3}{2}")
    assert vote_key("4") != vote_key("5")
    assert vote_key(None) is None
    assert cluster(["0.5", r"\frac{1}{2}", "3", None, r"\sqrt{2}/2", r"\frac{1}{\sqrt2}"]) == [
        "0.5", "0.5", "3", None, r"\sqrt{2}/2", r"\sqrt{2}/2",
    ]


def test_pathological_expression_is_time_limited():
    start = time.perf_counter()
    assert not equivalent("2^{2^{2^{2^{100}}}}", "1", timeout=2)
    assert time.perf_counter() - start < 6


def test_hard_deadline_kills_a_worker_stuck_in_c():
    # A worker that hangs where no signal reaches it (here a C-level sleep standing in for a huge integer
    # power): the parent's wall-clock deadline kills it and the pool hands out a fresh one next time.
    from tts.verifiers.math import _Pool

    stuck = 'import json, sys, time\nprint(json.dumps({"ready": True}), flush=True)\nsys.stdin.readline()\ntime.sleep(600)\n'
    pool = _Pool(size=1, source=stuck)
    start = time.perf_counter()
    assert pool.call("equiv", ("1", "2"), 0.5) is None
    assert pool.call("equiv", ("1", "2"), 0.5) is None  # a second, fresh worker: the first was replaced
    assert time.perf_counter() - start < 5
    assert pool._count == 0 and pool._idle == []


def test_works_from_threads_and_async():
    results = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(equivalent(rf"\frac{{{i}}}{{7}}", f"{i}/7 + 0*x")))
        for i in range(1, 5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4

    async def main():
        return await asyncio.gather(*(asyncio.to_thread(equivalent, r"\sqrt{8}", rf"{k}\sqrt{{2}}") for k in (2, 3)))

    assert asyncio.run(main()) == [True, False]


def _rates(pairs_own, pairs_other):
    own = sum(grade(text, ref) for text, ref in pairs_own) / len(pairs_own)
    wrong = sum(not grade(text, ref) for text, ref in pairs_other) / len(pairs_other)
    return own, wrong


def _shifted(rows, answer_of):
    """Each solution paired with the next problem's answer, skipping pairs whose answers coincide."""
    out = []
    for i, row in enumerate(rows):
        other = answer_of(rows[(i + 1) % len(rows)])
        if loose_form(other) != loose_form(answer_of(row)):
            out.append((row, other))
    return out


def test_math500_reference_solutions(shared_data):
    rows = [json.loads(line) for line in (shared_data / "math500" / "test.jsonl").open()]
    assert len(rows) == 500
    own_pairs = [(r["solution"], r["answer"]) for r in rows]
    other_pairs = [(r["solution"], other) for r, other in _shifted(rows, lambda r: r["answer"])]
    own, wrong = _rates(own_pairs, other_pairs)
    print(f"\nMATH-500: own solution graded correct {own:.3f} (n=500); "
          f"another problem's answer graded wrong {wrong:.3f} (n={len(other_pairs)})")
    assert own >= 0.99
    assert wrong >= 0.99


def test_gsm8k_reference_solutions(shared_data):
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").open()]
    rows = random.Random(0).sample(rows, 1000)  # a fixed subsample keeps the test fast

    def final(r):
        return r["answer"].rsplit("####", 1)[1].strip()

    own_pairs = [(r["answer"], final(r)) for r in rows]
    other_pairs = [(r["answer"], other) for r, other in _shifted(rows, final)]
    own, wrong = _rates(own_pairs, other_pairs)
    print(f"\nGSM8K train (1000 sampled): own solution graded correct {own:.3f}; "
          f"another problem's answer graded wrong {wrong:.3f} (n={len(other_pairs)})")
    assert own >= 0.99
    assert wrong >= 0.99


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_workers():
    assert equivalent(r"\sqrt{4}", "2.0")  # the parent has a worker now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = equivalent(r"\sqrt{9}", "3.0") and not equivalent(r"\sqrt{9}", "4")
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert equivalent(r"\sqrt{16}", "4")  # and the parent's pool still works
