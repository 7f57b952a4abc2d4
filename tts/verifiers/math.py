"""Math grading: final-answer extraction and answer equivalence through ``math-verify``.

* :func:`extract_math_answer` finds the final answer in a model's text: the last ``\\boxed{...}``
  (nested braces included), GSM8K's ``#### n``, "the (final) answer is ..." (a ``$...$`` / ``\\(...\\)``
  expression, a number, or a short phrase), and the last number as a fallback. Each marker can be
  switched off with :class:`Extraction`.
* :func:`equivalent` decides whether two answers are the same mathematical object (fractions,
  decimals, LaTeX, sets, intervals, tuples, percentages, units and ``\\text{}`` stripped);
  :func:`grade` extracts a candidate's answer and compares it with the reference.
* :func:`vote_key` maps an answer to a canonical string so that majority voting counts ``1/2``,
  ``0.5`` and ``\\frac{1}{2}`` as one vote; :func:`cluster` groups answers by pairwise equivalence,
  for answers no canonical string unifies.

Time limit. math-verify's own timeout uses ``signal.alarm``, which works only in the main thread and
cannot interrupt a computation stuck in C (a huge integer power, say). So every sympy-touching call runs
in a small pool of persistent worker processes (``python -I -c <source>``, talking JSON lines over
pipes): the worker applies math-verify's alarm to stop ordinary slow comparisons cleanly, and the parent
kills the worker if the wall-clock limit passes anyway. A timed-out comparison counts as "not
equivalent". This works the same from the main thread, other threads and async code (call the blocking
functions through ``asyncio.to_thread``). Plain numbers never reach a worker: they are compared exactly
in-process, which keeps grading of integer datasets (GSM8K) fast.

``math-verify`` is imported only inside the workers, so ``import tts`` stays light.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from .answers import _ANSWER_COLON, _ANSWER_IS, _GSM8K, _NUMBER_RE, last_boxed, normalize_answer

DEFAULT_TIMEOUT_S = 10.0

# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    """Which answer markers :func:`extract_math_answer` looks for, strongest first."""

    boxed: bool = True
    gsm8k: bool = True
    answer_is: bool = True
    last_number: bool = True
    #: longest undelimited phrase accepted after "the answer is" (longer ones are prose, not answers)
    max_phrase_chars: int = 40

    def __post_init__(self) -> None:
        for name in ("boxed", "gsm8k", "answer_is", "last_number"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Extraction.{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.max_phrase_chars, int) or self.max_phrase_chars < 1:
            raise ValueError(f"Extraction.max_phrase_chars must be a positive integer, got {self.max_phrase_chars!r}")


_MARKER = re.compile(r"(?:final\s+)?answer\s*(?:is\b|:)\s*(?:[:=]\s*)?", re.IGNORECASE)
_DELIMITED = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _after_answer_is(text: str, max_phrase: int) -> str | None:
    """What follows the last "answer is"/"answer:": a delimited expression, else a short phrase."""
    matches = list(_MARKER.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    for left, right in _DELIMITED:
        if rest.startswith(left):
            end = rest.find(right, len(left))
            if end > len(left):
                return rest[len(left):end].strip()
    # A number said in words nearby ("the answer is simply 4") is what answers.py already finds.
    for pattern in (_ANSWER_IS, _ANSWER_COLON):
        found = pattern.findall(text[matches[-1].start():])
        if found:
            return found[-1].strip()
    phrase = re.split(r"\n|\.(?:\s|$)|,\s", rest, maxsplit=1)[0].strip()
    return phrase if 0 < len(phrase) <= max_phrase else None


def extract_math_answer(text: str, extraction: Extraction | None = None) -> str | None:
    """The final answer stated in ``text`` (LaTeX kept as written), or None when it states none."""
    if not text:
        return None
    ex = extraction or Extraction()
    if ex.boxed:
        boxed = last_boxed(text)
        if boxed:
            return boxed
    if ex.gsm8k:
        found = _GSM8K.findall(text)
        if found:
            return found[-1].strip()
    if ex.answer_is:
        found = _after_answer_is(text, ex.max_phrase_chars)
        if found:
            return found
    if ex.last_number:
        numbers = _NUMBER_RE.findall(text)
        if numbers:
            return numbers[-1]
    return None


# --------------------------------------------------------------------------------------------------
# Cheap in-process normal forms
# --------------------------------------------------------------------------------------------------

_PLAIN_NUMBER = re.compile(r"-?\d+(?:/\d+)?")


def _plain_number(answer: str) -> str | None:
    """The exact normal form of an answer that is just a number (integer, decimal, fraction), else None."""
    norm = normalize_answer(answer)
    return norm if norm is not None and _PLAIN_NUMBER.fullmatch(norm) else None


_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")


def loose_form(answer: str) -> str:
    """A string normal form for answers no parser understands (names, choices, words).

    Drops what never changes meaning: spaces, ``$``, ``\\left``/``\\right``, thin spaces, ``\\text{}``
    wrappers, ``dfrac``/``tfrac`` spellings, degree signs, a trailing period, and a leading "x =".
    """
    s = answer.strip()
    s = _TEXT_CMD.sub(r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    s = s.replace("\\;", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("$", "")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"^[a-zA-Z]=(?!=)", "", s)
    choice = re.fullmatch(r"\(([A-Za-z])\)", s)  # "(C)" is the choice C
    return choice.group(1) if choice else s


# --------------------------------------------------------------------------------------------------
# Worker processes (math-verify and sympy live only there)
# --------------------------------------------------------------------------------------------------

_WORKER_SOURCE = r'''
import json, logging, sys
logging.disable(logging.CRITICAL)  # math-verify logs every timeout; the parent reports results instead
from math_verify import parse, verify
from math_verify.utils import timeout
import sympy

def wrap(s):
    return s if ("$" in s or "\\boxed" in s or "\\(" in s) else "$" + s + "$"

def parsed(s, t):
    out = parse(wrap(s), parsing_timeout=t)
    if not out and "$" not in s:
        out = parse(s, parsing_timeout=t)  # plain-text expressions such as "1/2" or "x**2"
    return out

def equiv(a, b, t):
    pa, pb = parsed(a, t), parsed(b, t)
    if not pa or not pb:
        return None  # not parseable: the parent falls back to string forms
    return bool(verify(pb, pa, timeout_seconds=t))

def key(s, t):
    out = parsed(s, t)
    exprs = [e for e in out if not isinstance(e, str)]
    if not exprs:
        return None
    expr = exprs[0]
    try:
        simplified = timeout(t)(sympy.simplify)(expr)
    except Exception:
        simplified = expr
    return sympy.srepr(simplified)

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    try:
        fn = equiv if job["op"] == "equiv" else key
        value = fn(*job["args"], job["t"])
        reply = {"ok": True, "value": value}
    except BaseException as exc:  # a timeout or a parser bug: report it, keep serving
        reply = {"ok": False, "error": type(exc).__name__ + ": " + str(exc)[:200]}
    print(json.dumps(reply), flush=True)
'''


class WorkerTimeout(Exception):
    pass


class _Worker:
    def __init__(self, start_timeout: float, source: str = _WORKER_SOURCE):
        # -I: ignore PYTHON* variables and user site; math-verify must be importable from the same
        # interpreter, which it is whenever it is installed in this environment.
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", source],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1,
        )
        reply = self._read(start_timeout)
        if not reply.get("ready"):
            self.kill()
            raise RuntimeError("math worker failed to start")

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, timeout))
        if not ready:
            raise WorkerTimeout()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                "math worker exited; is math-verify installed? (pip install 'math-verify>=0.7')"
            )
        return json.loads(line)

    def call(self, op: str, args: Sequence[str], timeout: float) -> dict:
        # The worker's own alarm gets a whole number of seconds for each of parse, parse, verify;
        # the parent's wall-clock limit covers all of them and is the hard stop.
        inner = max(1, int(timeout // 3))
        self.proc.stdin.write(json.dumps({"op": op, "args": list(args), "t": inner}) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:
            pass


class _Pool:
    """Up to ``size`` persistent workers; a worker that overruns its deadline is killed and replaced."""

    def __init__(self, size: int = 2, source: str = _WORKER_SOURCE):
        self.size = size
        self.source = source
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._pid = os.getpid()

    def call(self, op: str, args: Sequence[str], timeout: float) -> dict | None:
        """The worker's reply, or None when the deadline passed."""
        with self._cond:
            if self._pid != os.getpid():
                # A forked child must not share its parent's pipes: start its own workers.
                self._idle, self._count, self._pid = [], 0, os.getpid()
            while not self._idle and self._count >= self.size:
                self._cond.wait()
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                self._count += 1
        try:
            if worker is None:
                worker = _Worker(start_timeout=60.0, source=self.source)  # sympy + math-verify import takes a second or two
            reply = worker.call(op, args, timeout)
        except WorkerTimeout:
            worker.kill()
            worker = None
            return None
        except BaseException:
            if worker is not None:
                worker.kill()
            worker = None
            raise
        finally:
            with self._cond:
                if worker is not None and worker.proc.poll() is None:
                    self._idle.append(worker)
                else:
                    self._count -= 1
                self._cond.notify()
        return reply

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for w in idle:
            w.kill()


_POOL = _Pool(size=max(1, min(4, (os.cpu_count() or 2))))
atexit.register(_POOL.close)


def _check_timeout(timeout: float) -> float:
    if not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


_CACHE_SIZE = 65536
_equiv_cache: dict[tuple[str, str], bool] = {}


def equivalent(answer_a: str | None, answer_b: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two final answers denote the same value. False when either is missing or on timeout."""
    if answer_a is None or answer_b is None:
        return False
    a, b = answer_a.strip(), answer_b.strip()
    if not a or not b:
        return False
    na, nb = _plain_number(a), _plain_number(b)
    if na is not None and nb is not None:
        return na == nb  # exact rationals: no parser needed
    if loose_form(a) == loose_form(b):
        return True
    cached = _equiv_cache.get((a, b))
    if cached is not None:
        return cached
    reply = _POOL.call("equiv", (a, b), _check_timeout(timeout))
    if reply is None:
        return False  # timed out: not cached, a later call with more time may decide it
    # A worker error or an unparseable side (not mathematics, and the text forms differ) is "different".
    result = bool(reply.get("ok") and reply.get("value"))
    if len(_equiv_cache) >= _CACHE_SIZE:
        _equiv_cache.clear()
    _equiv_cache[(a, b)] = result
    return result


def grade(
    candidate_text: str | None,
    reference: str,
    *,
    extraction: Extraction | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> bool:
    """Extract the final answer from a model's text and compare it with the reference answer.

    A reference written as a whole solution (GSM8K's "... #### 72", MATH's "... \\boxed{3}") is reduced
    to its final answer first.
    """
    if not candidate_text:
        return False
    answer = extract_math_answer(candidate_text, extraction)
    if answer is None:
        return False
    return equivalent(answer, reference_answer(reference), timeout)


def grade_answer(answer: str | None, reference: str) -> bool:
    """A grader with the runtime's signature ``(extracted answer, reference) -> bool``."""
    return equivalent(answer, reference_answer(reference))


def reference_answer(reference: str) -> str:
    """The final answer of a reference: itself, unless it is a worked solution with a marked answer."""
    ref = reference.strip()
    boxed = last_boxed(ref)
    if boxed:
        return boxed
    found = _GSM8K.findall(ref)
    return found[-1].strip() if found else ref


@lru_cache(maxsize=65536)
def vote_key(answer: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> str | None:
    """A canonical string for voting: equal keys mean equivalent answers.

    Plain numbers become exact fractions in lowest terms (``0.5``, ``1/2`` and ``\\frac{1}{2}`` all give
    ``"1/2"``); other mathematics becomes the simplified sympy expression; anything unparseable (or
    timed out) keeps its :func:`loose_form`. Two equivalent answers can still get different keys when
    simplification fails to unify them; :func:`cluster` groups by pairwise equivalence instead.
    """
    if answer is None or not answer.strip():
        return None
    number = _plain_number(answer)
    if number is not None:
        return number
    form = loose_form(answer)
    number = _plain_number(form)
    if number is not None:
        return number
    reply = _POOL.call("key", (answer.strip(),), _check_timeout(timeout))
    if reply is not None and reply.get("ok") and reply.get("value"):
        value = reply["value"]
        # A number sympy could simplify keys like a plain number, so "\frac{6}{4}" votes with "1.5".
        rational = re.fullmatch(r"Integer\((-?\d+)\)|Rational\((-?\d+), (\d+)\)", value)
        if rational:
            return rational.group(1) or f"{rational.group(2)}/{rational.group(3)}"
        return "sympy:" + value
    return form


def cluster(answers: Sequence[str | None], timeout: float = DEFAULT_TIMEOUT_S) -> list[str | None]:
    """Map each answer to the first earlier answer it is equivalent to (its cluster's representative).

    Answers with equal :func:`vote_key` join without a comparison; the rest are compared with
    :func:`equivalent` against each representative, so the cost is answers x clusters comparisons.
    """
    reps: list[str] = []
    rep_of_key: dict[str, str] = {}
    out: list[str | None] = []
    for a in answers:
        key = vote_key(a, timeout)
        if key is None:
            out.append(None)
            continue
        if key in rep_of_key:
            out.append(rep_of_key[key])
            continue
        rep = next((r for r in reps if equivalent(a, r, timeout)), None)
        if rep is None:
            rep = a
            reps.append(a)
        rep_of_key[key] = rep
        out.append(rep)
    return out
