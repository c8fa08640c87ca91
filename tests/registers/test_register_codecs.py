"""Codecs: known answers for every type, both word orders, and round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm4324.registers.codecs import CodecError, bcd_decode, bcd_encode, decode, encode

ORDERS = ("low-first", "high-first")


@pytest.mark.parametrize(
    ("type_", "value", "low_first", "high_first"),
    [
        # 230.5 = 0x43668000 (A B C D): the vendor order sends C D then A B
        ("float32", 230.5, [0x8000, 0x4366], [0x4366, 0x8000]),
        ("float32", -1.0, [0x0000, 0xBF80], [0xBF80, 0x0000]),
        ("float32", 50.0, [0x0000, 0x4248], [0x4248, 0x0000]),
        ("uint32", 0x12345678, [0x5678, 0x1234], [0x1234, 0x5678]),
        ("uint32", 4_294_967_295, [0xFFFF, 0xFFFF], [0xFFFF, 0xFFFF]),
        ("int32", -2, [0xFFFE, 0xFFFF], [0xFFFF, 0xFFFE]),
        ("int32", 70_000, [0x1170, 0x0001], [0x0001, 0x1170]),
        ("uint16", 43240, [0xA8E8], [0xA8E8]),
        ("int16", -1, [0xFFFF], [0xFFFF]),
        ("int16", -32768, [0x8000], [0x8000]),
        ("bcd", 100, [0x0100], [0x0100]),
        ("bcd", 1234, [0x1234], [0x1234]),
    ],
)
def test_known_answers(type_, value, low_first, high_first):
    assert encode(type_, value) == low_first  # low word first is the default
    assert encode(type_, value, "low-first") == low_first
    assert encode(type_, value, "high-first") == high_first
    assert decode(type_, low_first) == value
    assert decode(type_, high_first, "high-first") == value


def test_nan_is_the_canonical_quiet_nan():
    assert encode("float32", math.nan) == [0x0000, 0x7FC0]
    assert math.isnan(decode("float32", [0x0000, 0x7FC0]))


def test_float_beyond_float32_is_infinity():
    assert decode("float32", encode("float32", 1e39)) == math.inf
    assert decode("float32", encode("float32", -1e39)) == -math.inf


def test_bcd():
    assert bcd_encode(105) == 0x0105
    assert bcd_decode(0x0105) == 105
    with pytest.raises(CodecError, match="not BCD"):
        bcd_decode(0x00A0)
    with pytest.raises(CodecError):
        bcd_encode(10000)


@pytest.mark.parametrize(
    ("type_", "value"),
    [("uint16", -1), ("uint16", 65536), ("int16", 40000), ("uint32", -1), ("uint32", 2**32),
     ("int32", 2**31), ("uint16", 1.5), ("bcd", -1)],
)
def test_out_of_range_raw_values_raise(type_, value):
    with pytest.raises(CodecError):
        encode(type_, value)


def test_bad_calls_raise():
    with pytest.raises(CodecError, match="word order"):
        encode("float32", 1.0, "middle-first")
    with pytest.raises(CodecError, match="needs 2"):
        decode("float32", [1])
    with pytest.raises(CodecError, match="unknown"):
        encode("float64", 1.0)


@given(st.integers(0, 2**32 - 1), st.sampled_from(ORDERS))
def test_uint32_round_trip(value, order):
    assert decode("uint32", encode("uint32", value, order), order) == value


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(ORDERS))
def test_int32_round_trip(value, order):
    assert decode("int32", encode("int32", value, order), order) == value


@given(st.floats(width=32, allow_nan=False), st.sampled_from(ORDERS))
def test_float32_round_trip(value, order):
    assert decode("float32", encode("float32", value, order), order) == value


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_word_orders_are_swapped_words(value):
    low, high = encode("float32", value, "low-first")
    assert encode("float32", value, "high-first") == [high, low]
