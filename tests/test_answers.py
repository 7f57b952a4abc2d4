import pytest

from tts.verifiers.answers import extract_answer, last_boxed, normalize_answer, same_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7", "7"),
        ("The answer is 12.", "12"),
        ("The answer is simply 0.", "0"),
        ("The answer is 6, but some say 7", "6"),
        ("Answer: $-3$", "-3"),
        ("so #### 1,234", "1,234"),
        (r"thus \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{\{1, \{2\}\}} then 5", r"\{1, \{2\}\}"),
        ("the numbers 1, 2, 3, 4, and so on", "4"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_unbalanced_box_is_not_an_answer():
    assert last_boxed(r"\boxed{\frac{1}{2}") is None


@pytest.mark.parametrize(
    "a, b", [("4", "4.0"), ("1/2", "0.5"), (r"\frac{1}{2}", "0.5"), ("1,000", "1000"), ("$12$.", "12"), ("8/2", "4")]
)
def test_equivalent_notations_share_a_normal_form(a, b):
    assert normalize_answer(a) == normalize_answer(b)
    assert same_answer(a, b)


def test_different_answers_differ():
    assert not same_answer("5", "4")
    assert not same_answer(None, "4")
