"""The physical range of every quantity gpucal reads, and the most of anything it will build.

Flags (``gpucal.commands.args``) and the profile schema (``profiles/schema.json``, pinned to these values by
``tests/unit/test_limits.py``) refuse what lies outside, naming the flag or field and the limit, so that no
number from a user or a file reaches the planner, a plot or an allocation as infinity, as a denormal or as
more than the machine holds. The bounds are generous (orders of magnitude past today's hardware) and exist
to stop nonsense, not to judge hardware. docs/limits.md lists them with their reasons.
"""

from __future__ import annotations

__all__ = [
    "RANGES",
    "MAX_DEVICES",
    "MAX_SWEEP_VALUES",
    "MAX_SWEEP_CONFIGURATIONS",
    "MAX_INPUT_FILE_BYTES",
    "MAX_PATH_CHARS",
    "check_range",
]

# quantity kind -> (smallest, largest) accepted, both included; SI base units.
RANGES: dict[str, tuple[float, float]] = {
    "bytes": (1.0, 1e15),  # a memory, a buffer, a message: 1 B .. 1 PB
    "rate": (1.0, 1e15),  # a bandwidth: 1 B/s .. 1 PB/s (HBM3e today: 4.8e12 B/s)
    "flops": (1.0, 1e19),  # a FLOP rate: 1 .. 10 EFLOP/s (one GB200 today: ~1e16 sparse FP4)
    "time": (0.0, 3600.0),  # a latency or a duration: 0 .. 1 hour
    "params": (1.0, 1e15),  # a model's parameters: 1 .. a quadrillion
    "tokens_per_s": (0.0, 1e9),  # a throughput target
}

MAX_DEVICES = 64  # devices in one machine (a virtual machine, a profile's devices, a device count)
MAX_SWEEP_VALUES = 1 << 16  # values in one --sweep range
MAX_SWEEP_CONFIGURATIONS = 1 << 16  # configurations a plan sweep evaluates (the product over its ranges)
MAX_INPUT_FILE_BYTES = 64 << 20  # a profile, link, model or config.json file
MAX_PATH_CHARS = 4096  # a path given on the command line (PATH_MAX on Linux)


def check_range(value: float, kind: str) -> str | None:
    """Why ``value`` lies outside the range of ``kind`` (one phrase), or ``None`` when it is inside."""
    lo, hi = RANGES[kind]
    if value != value or value in (float("inf"), float("-inf")):
        return "not a finite number"
    if value < lo:
        return f"below the smallest accepted, {lo:g}"
    if value > hi:
        return f"above the largest accepted, {hi:g}"
    return None
