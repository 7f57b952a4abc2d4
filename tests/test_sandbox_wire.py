"""Property tests of the values that cross the sandbox boundary (tts/sandbox/wire.py)."""

import io
import json
import math

import pytest
from hypothesis import given, settings, strategies as st

import tts.sandbox as sandbox
from tts.sandbox import Sandbox, run_tests
from tts.sandbox.wire import MAX_MESSAGE, WireError, decode, dumps, encode, read_message

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary())
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=8)
values = st.recursive(
    st.one_of(scalars, st.just(float("inf")), st.just(float("-inf"))),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(hashables, inner, max_size=3)
    | st.sets(hashables, max_size=3),
    max_leaves=20,
)
BUILTIN = (type(None), bool, int, float, str, bytes, list, tuple, dict, set, frozenset, complex)


def builtin_only(value) -> bool:
    if type(value) not in BUILTIN:
        return False
    if isinstance(value, dict):
        return all(builtin_only(k) and builtin_only(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(builtin_only(v) for v in value)
    return True


@given(values)
def test_values_round_trip_exactly(value):
    back = decode(json.loads(dumps(encode(value))))
    assert back == value and type(back) is type(value) and builtin_only(back)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    | st.fixed_dictionaries({"$": st.sampled_from(["tuple", "set", "dict", "bytes", "float", "complex", "eval"]),
                             "v": inner}),
    max_leaves=20,
)


@given(json_values)
def test_any_reply_decodes_to_plain_values_or_a_wire_error(data):
    try:
        value = decode(data)
    except WireError:
        return
    assert builtin_only(value)


@given(st.binary(max_size=300))
def test_any_bytes_on_the_pipe_are_a_message_none_or_a_wire_error(raw):
    stream = io.BytesIO(raw)
    try:
        read_message(stream)
    except WireError:
        pass


def test_limits_hold():
    nested = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(WireError):
        encode(nested)
    with pytest.raises(WireError):
        decode(json.loads("[" * 100 + "]" * 100))
    with pytest.raises(WireError):
        encode(10 ** 5000)
    with pytest.raises(WireError):
        read_message(io.BytesIO(b"[" + b"1," * (MAX_MESSAGE // 2) + b"1]\n"))
    with pytest.raises(WireError):
        encode(object())
    assert math.isnan(decode({"$": "float", "v": "nan"}))


@pytest.mark.skipif(sandbox._host_problem() is not None, reason=str(sandbox._host_problem()))
@settings(max_examples=12, deadline=None)
@given(values)
def test_any_value_a_program_returns_is_graded_by_plain_equality(value):
    # repr() writes infinities as inf, so both sides define the name
    program = f"inf = float('inf')\ndef f():\n    return {value!r}\n"
    result = run_tests(program, f"assert f() == {value!r}\n", Sandbox(timeout_s=30), entry_point="f",
                       setup="inf = float('inf')\n")
    assert result.passed, result.detail
