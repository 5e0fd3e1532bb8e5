"""Quantities with units, parsed at the boundary and formatted for people.

Inside gpucal every quantity is a float in SI base units with the unit in its name (``_s``,
``_bytes``, ``_Bps``, ``_flops``). This module is the only place where text such as ``32GB/s``,
``1Gbit/s``, ``30us``, ``24GiB`` or ``1.5e12`` becomes a number, and where numbers become text again.

Conventions: decimal prefixes are decimal (1 GB = 1e9 B, 1 Gbit/s = 125e6 B/s); binary prefixes
(``Ki``, ``Mi``, ``Gi``, ``Ti``) are binary; a bare number is already in the SI base unit.
"""

from __future__ import annotations

import math
import re
import sys

__all__ = [
    "UnitError",
    "parse_quantity",
    "parse_positive",
    "parse_whole_bytes",
    "format_time",
    "format_bytes",
    "format_rate",
    "format_flops",
    "format_si",
    "size_label",
]


class UnitError(ValueError):
    """Text that is not a quantity of the expected kind."""


_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}

# Unit spellings per kind: base spelling -> factor to the SI base unit of that kind.
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_BYTES = {"B": 1.0}
_RATE = {"B/s": 1.0, "Bps": 1.0, "bit/s": 0.125, "b/s": 0.125, "bps": 0.125}
_FLOPS = {"FLOP/s": 1.0, "FLOPS": 1.0, "flop/s": 1.0, "flops": 1.0}

_KINDS = {
    "time": ("s", _TIME, False, "a time such as 30us, 0.25ms or 2e-5"),
    "bytes": ("B", _BYTES, True, "a size in bytes such as 24GB, 40GiB or 1.4e11"),
    "rate": ("B/s", _RATE, True, "a bandwidth such as 32GB/s, 1Gbit/s or 3.35e12"),
    "flops": ("FLOP/s", _FLOPS, True, "a FLOP rate such as 330TFLOP/s or 1.979e15"),
    "number": ("", {}, False, "a number such as 70e9"),
}

# ASCII digits only: float() reads an Arabic-Indic or full-width digit as its value, which no user means
_NUMBER = re.compile(r"^\s*([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*(\S*)\s*$", re.ASCII)


def _unit_factor(unit: str, kind: str) -> float | None:
    """The factor that turns one ``unit`` into the SI base unit of ``kind``, or None."""
    _, spellings, prefixed, _ = _KINDS[kind]
    if unit == "":
        return 1.0
    if unit in spellings:
        return spellings[unit]
    if not prefixed:
        return None
    for table in (_BINARY, _DECIMAL):
        for prefix, scale in table.items():
            if prefix and unit.startswith(prefix) and unit[len(prefix):] in spellings:
                return scale * spellings[unit[len(prefix):]]
    return None


def parse_quantity(text: str, kind: str) -> float:
    """Parse ``text`` as a quantity of ``kind`` (time, bytes, rate, flops, number) in SI units.

    >>> parse_quantity("32GB/s", "rate")
    32000000000.0
    >>> parse_quantity("1Gbit/s", "rate")
    125000000.0
    >>> parse_quantity("30us", "time")
    3e-05

    Raises ``UnitError`` for text that is not a finite number with a unit of that kind.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown quantity kind {kind!r}")
    what = _KINDS[kind][3]
    match = _NUMBER.match(str(text))
    if not match:
        raise UnitError(f"expected {what}, got {text!r}")
    number, unit = match.groups()
    factor = _unit_factor(unit, kind)
    if factor is None:
        raise UnitError(f"expected {what}, got {text!r} (unknown unit {unit!r})")
    value = float(number) * factor
    if not math.isfinite(value):
        raise UnitError(f"expected {what}, got {text!r} (not finite)")
    if value != 0 and abs(value) < sys.float_info.min:  # a denormal: no quantity gpucal reads is that small
        raise UnitError(f"expected {what}, got {text!r} (too small: below {sys.float_info.min:g})")
    return value


def parse_positive(text: str, kind: str) -> float:
    """``parse_quantity`` that also refuses zero and negative values."""
    value = parse_quantity(text, kind)
    if value <= 0:
        raise UnitError(f"must be greater than zero, got {text!r}")
    return value


def parse_whole_bytes(text: str) -> int:
    """A positive size in whole bytes (a buffer's size): ``parse_whole_bytes("1.5KiB") == 1536``; ``0.5B`` or
    ``1.1B`` is refused, never rounded to a size nobody asked for."""
    value = parse_positive(text, "bytes")
    if not value.is_integer():
        raise UnitError(f"must be a whole number of bytes, got {text!r} ({value:g} B)")
    return int(value)


def format_si(value: float, unit: str, digits: int = 4) -> str:
    """``value`` with a decimal prefix: ``format_si(3.2e10, "B/s") == "32 GB/s"``."""
    if value is None:
        return "-"
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}".strip()
    magnitude = abs(value)
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if magnitude >= scale:
            return f"{value / scale:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def format_time(seconds: float, digits: int = 4) -> str:
    """A time for people: ``format_time(0.0175) == "17.5 ms"``."""
    if seconds is None:
        return "-"
    magnitude = abs(seconds)
    if magnitude == 0 or not math.isfinite(seconds):
        return f"{seconds:g} s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if magnitude >= scale:
            return f"{seconds / scale:.{digits}g} {unit}"
    return f"{seconds / 1e-9:.{digits}g} ns"


def format_bytes(nbytes: float, digits: int = 4) -> str:
    """A size for people, decimal: ``format_bytes(1.4e11) == "140 GB"``."""
    return format_si(nbytes, "B", digits)


def format_rate(bytes_per_s: float, digits: int = 4) -> str:
    """A bandwidth for people, decimal: ``format_rate(3.2e10) == "32 GB/s"``."""
    return format_si(bytes_per_s, "B/s", digits)


def format_flops(flops: float, digits: int = 4) -> str:
    """A FLOP rate for people: ``format_flops(3.3e14) == "330 TFLOP/s"``."""
    return format_si(flops, "FLOP/s", digits)


def size_label(n_bytes: int) -> str:
    """A message size as a sweep names it: ``8 B``, ``1 KiB``, ``64 MiB`` for whole multiples of a binary unit
    from 1 KiB up; other sizes in bytes (``1000 B``)."""
    n_bytes = int(n_bytes)
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n_bytes >= 1 << shift and n_bytes % (1 << shift) == 0:
            return f"{n_bytes >> shift} {unit}"
    return f"{n_bytes} B"
