"""argparse types shared by the commands: quantities with units, bounded whole numbers, sweep ranges.

Each raises ``argparse.ArgumentTypeError`` so that argparse reports ``argument --flag: why`` on one line.
Every number is finite and inside its range (``gpucal.limits``), whole numbers are ASCII digits only, and an
empty string is refused rather than read as "not given".
"""

from __future__ import annotations

import argparse
import re

from gpucal import limits
from gpucal.units import UnitError, parse_positive, parse_quantity

__all__ = ["positive_int", "nonnegative_int", "int_in", "quantity", "budget", "nonempty", "whole", "sweep_spec",
           "sweep_size"]

_WHOLE = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def whole(text: str) -> int:
    """A whole number in ASCII digits (``int()`` alone reads ``٣`` as 3 and ``1_000`` as 1000)."""
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(text)


def _int(text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = whole(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int(text, 1)


def nonnegative_int(text: str) -> int:
    return _int(text, 0)


def int_in(minimum: int, maximum: int):
    """An argparse type for a whole number in [minimum, maximum] (the limit named in the message)."""

    def parse(text: str) -> int:
        return _int(text, minimum, maximum)

    parse.__name__ = "whole number"
    return parse


def nonempty(text: str) -> str:
    """Text that must not be empty: ``--pairs ''`` is a mistake, not "every pair"."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give a value or leave the flag out")
    return text


def quantity(kind: str, positive: bool = True, range_kind: str | None = None):
    """An argparse type for a quantity of ``kind`` (time, bytes, rate, flops, number), finite and inside
    ``limits.RANGES[range_kind]`` (default: the range of ``kind`` where it has one). ``positive=False``
    also takes zero (never a negative)."""
    range_kind = range_kind or (kind if kind in limits.RANGES else None)

    def parse(text: str) -> float:
        try:
            value = parse_positive(text, kind) if positive else parse_quantity(text, kind)
        except UnitError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
        if range_kind is not None and not (value == 0 and not positive):
            why = limits.check_range(value, range_kind)
            if why:
                raise argparse.ArgumentTypeError(f"{text}: {why}")
        return value

    parse.__name__ = kind
    return parse


def budget(text: str) -> float:
    """``--budget``: seconds of sampling per case, a positive time of at most ``limits.RANGES["time"]``
    (``2``, ``500ms``); nan, inf and 1e308 are refused."""
    return _TIME(text)


_TIME = quantity("time")


def sweep_size(key: str) -> int:
    """The largest value a ``--sweep`` range of ``key`` takes."""
    return {"batch": limits.MAX_BATCH, "cards": limits.MAX_CARDS}[key]


def _range(text: str, maximum: int) -> list[int]:
    """``A:B`` doubles from A up to B (B included); ``A:B:S`` steps by S; ``a,b,c`` lists values."""
    if ":" not in text:
        parts = text.split(",")
        if len(parts) > limits.MAX_SWEEP_VALUES:
            raise argparse.ArgumentTypeError(f"more than {limits.MAX_SWEEP_VALUES} values in one range")
        return [_int(part.strip(), 1, maximum) for part in parts]
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected START:STOP or START:STOP:STEP, got {text!r}")
    start, stop = _int(parts[0], 1, maximum), _int(parts[1], 1, maximum)
    if stop < start:
        raise argparse.ArgumentTypeError(f"STOP must not be below START, got {text!r}")
    if len(parts) == 3:
        step = _int(parts[2], 1)
        if (stop - start) // step + 1 > limits.MAX_SWEEP_VALUES:
            raise argparse.ArgumentTypeError(f"more than {limits.MAX_SWEEP_VALUES} values in {text!r} "
                                             f"(at most {limits.MAX_SWEEP_VALUES} per range)")
        return list(range(start, stop + 1, step))
    values, value = [], start
    while value < stop:
        values.append(value)
        value *= 2
    return values + [stop]


def sweep_spec(text: str) -> tuple[str, list]:
    """``batch=RANGE``, ``cards=RANGE`` or ``strategy=pp,tp,hybrid``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or key not in ("batch", "cards", "strategy"):
        raise argparse.ArgumentTypeError(
            f"expected batch=RANGE, cards=RANGE or strategy=LIST (RANGE: 1:1024 doubles, 1:64:1 steps), got {text!r}")
    if key == "strategy":
        values = [v.strip() for v in value.split(",")]
        bad = [v for v in values if v not in ("pp", "tp", "hybrid")]
        if bad:
            raise argparse.ArgumentTypeError(f"strategy: expected pp, tp or hybrid, got {bad[0]!r}")
        return key, values
    return key, _range(value, sweep_size(key))
