"""Parsing quantities at the boundary: decimal prefixes are decimal, binary are binary, bits are 1/8."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpucal.units import (UnitError, format_bytes, format_flops, format_rate, format_time, parse_positive,
                          parse_quantity)


@pytest.mark.parametrize("text, kind, expected", [
    ("32GB/s", "rate", 32e9),
    ("32 GB/s", "rate", 32e9),
    ("1Gbit/s", "rate", 125e6),
    ("1Gbps", "rate", 125e6),
    ("100Gbit/s", "rate", 12.5e9),
    ("3.35e12", "rate", 3.35e12),
    ("1GiB/s", "rate", 2**30),
    ("30us", "time", 30e-6),
    ("30µs", "time", 30e-6),
    ("0.25ms", "time", 0.25e-3),
    ("2e-5", "time", 2e-5),
    ("1s", "time", 1.0),
    ("24GB", "bytes", 24e9),
    ("24GiB", "bytes", 24 * 2**30),
    ("40 GB", "bytes", 40e9),
    ("330TFLOP/s", "flops", 330e12),
    ("330TFLOPS", "flops", 330e12),
    ("1.979e15", "flops", 1.979e15),
    ("70e9", "number", 70e9),
])
def test_parses_units(text, kind, expected):
    assert parse_quantity(text, kind) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("text, kind", [
    ("nan", "rate"), ("inf", "time"), ("1e999", "bytes"), ("", "rate"), ("GB/s", "rate"), ("32GB", "rate"),
    ("30parsec", "time"), ("32GB/s", "time"), ("1.2.3", "number"), ("5 B", "number"),
    ("30Kus", "time"),
])
def test_refuses_what_is_not_a_quantity_of_that_kind(text, kind):
    with pytest.raises(UnitError):
        parse_quantity(text, kind)


@pytest.mark.parametrize("text", ["0", "-1GB/s", "0us"])
def test_parse_positive_refuses_zero_and_negative(text):
    kind = "time" if text.endswith("us") else "rate"
    with pytest.raises(UnitError, match="greater than zero"):
        parse_positive(text, kind)


@given(st.floats(min_value=1e-12, max_value=1e18, allow_nan=False, allow_infinity=False))
def test_a_bare_number_is_already_si(value):
    assert parse_quantity(repr(value), "rate") == value


def test_formatting_is_decimal_and_names_the_unit():
    assert format_time(0.0175) == "17.5 ms"
    assert format_time(30e-6) == "30 µs"
    assert format_time(2.5) == "2.5 s"
    assert format_bytes(140e9) == "140 GB"
    assert format_rate(32e9) == "32 GB/s"
    assert format_rate(125e6) == "125 MB/s"
    assert format_flops(330e12) == "330 TFLOP/s"
    assert format_time(math.inf) == "inf s"
