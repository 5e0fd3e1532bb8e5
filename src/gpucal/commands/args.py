"""argparse types shared by the commands: quantities with units, positive integers, sweep ranges.

Each raises ``argparse.ArgumentTypeError`` so that argparse reports ``argument --flag: why`` on one line.
"""

from __future__ import annotations

import argparse

from gpucal.units import UnitError, parse_positive, parse_quantity

__all__ = ["positive_int", "nonnegative_int", "quantity", "sweep_spec", "MAX_SWEEP_VALUES"]

MAX_SWEEP_VALUES = 1 << 20


def _int(text: str, minimum: int) -> int:
    try:
        value = int(text, 10)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int(text, 1)


def nonnegative_int(text: str) -> int:
    return _int(text, 0)


def quantity(kind: str, positive: bool = True):
    """An argparse type for a quantity of ``kind`` (time, bytes, rate, flops, number)."""

    def parse(text: str) -> float:
        try:
            return parse_positive(text, kind) if positive else parse_quantity(text, kind)
        except UnitError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = kind
    return parse


def _range(text: str) -> list[int]:
    """``A:B`` doubles from A up to B (B included); ``A:B:S`` steps by S; ``a,b,c`` lists values."""
    if ":" not in text:
        return [_int(part.strip(), 1) for part in text.split(",")]
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected START:STOP or START:STOP:STEP, got {text!r}")
    start, stop = _int(parts[0], 1), _int(parts[1], 1)
    if stop < start:
        raise argparse.ArgumentTypeError(f"STOP must not be below START, got {text!r}")
    if len(parts) == 3:
        step = _int(parts[2], 1)
        if (stop - start) // step + 1 > MAX_SWEEP_VALUES:
            raise argparse.ArgumentTypeError(f"more than {MAX_SWEEP_VALUES} values in {text!r}")
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
    return key, _range(value)
