"""Final-answer extraction and the normal form used both for voting and for exact grading.

Extraction tries, in order: the last ``\\boxed{...}`` (nested braces included), GSM8K's ``#### n``,
"the answer is ...", "Answer: ...", and finally the last number in the text. The order goes from the
most explicit marker to the weakest, so a model that states its answer is never overruled by a number
it mentions afterwards in passing.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?"
_NUMBER_RE = re.compile(r"(?<![\w.])" + _NUMBER)
_GSM8K = re.compile(r"####\s*(" + _NUMBER + ")")
# "the answer is simply 4", "Answer: $4$": a number within a few words after the marker.
_ANSWER_IS = re.compile(r"answer\s+is\b[^\d\n]{0,24}?(" + _NUMBER + ")", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"answer\s*:[^\d\n]{0,24}?(" + _NUMBER + ")", re.IGNORECASE)


_FRAC = re.compile(r"^\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}$")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...}, with nested braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None  # unbalanced: the model was cut off inside the box


def extract_answer(text: str) -> str | None:
    """The final answer stated in a model's text, or None when it states none."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    for pattern in (_GSM8K, _ANSWER_IS, _ANSWER_COLON):
        matches = pattern.findall(text)
        if matches:
            return matches[-1].strip()
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def normalize_answer(answer: str | None) -> str | None:
    """A canonical string for an answer: numbers in lowest terms ("4.0", "4", "8/2" -> "4"; "0.5" and
    "1/2" -> "1/2"); anything else stripped of spaces, dollar signs and a trailing period."""
    if answer is None:
        return None
    s = answer.strip().rstrip(".").strip().strip("$").strip().rstrip(".").strip()
    s = _FRAC.sub(r"\1/\2", s)  # \frac{1}{2} -> 1/2, so it votes with 0.5
    compact = s.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s) else s
    if re.fullmatch(r"-?\d+(?:\.\d+)?(?:/\d+)?", compact):
        try:
            value = Fraction(compact)
        except (ValueError, ZeroDivisionError):
            return compact
        return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    return re.sub(r"\s+", "", s) or None


def same_answer(answer: str | None, reference: str) -> bool:
    """Exact grading on normal forms: what the built-in datasets (integers, fractions) need."""
    got = normalize_answer(answer)
    return got is not None and got == normalize_answer(reference)
