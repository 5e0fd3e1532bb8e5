"""The physical range of every quantity gpucal reads, and the most of anything it will build.

Flags (``gpucal.commands.options``) and the profile schema (``profiles/schema.json``, pinned to these values by
``tests/unit/test_limits.py``) refuse what lies outside, naming the flag or field and the limit, so that no
number from a user or a file reaches the planner, a plot or an allocation as infinity, as a denormal or as
more than the machine holds. The bounds are generous (orders of magnitude past today's hardware) and exist
to stop nonsense, not to judge hardware. docs/limits.md lists them with their reasons.
"""

from __future__ import annotations

from gpucal.units import format_si

__all__ = [
    "RANGES",
    "MAX_DEVICES",
    "MODEL_MAXIMA",
    "MAX_JSON_INT_DIGITS",
    "MAX_SWEEP_VALUES",
    "MAX_SWEEP_CONFIGURATIONS",
    "MAX_INPUT_FILE_BYTES",
    "MAX_PATH_CHARS",
    "MAX_CARDS",
    "MAX_BATCH",
    "MAX_CONTEXT_TOKENS",
    "MAX_LIST_VALUES",
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

# a model's sizes (plan/models.py; the model schema): the largest of each, far past any model published
MODEL_MAXIMA = {"layers": 10_000, "hidden": 1 << 20, "heads": 1 << 16, "kv_heads": 1 << 16, "head_dim": 1 << 16,
                "vocab": 1 << 24, "ffn": 1 << 24}
MAX_JSON_INT_DIGITS = 40  # a longer integer in a file is no quantity gpucal knows (the largest bound is ~1e22)
MAX_DEVICES = 64  # devices in one machine (a virtual machine, a profile's devices, a device count)
MAX_SWEEP_VALUES = 1 << 16  # values in one --sweep range
MAX_SWEEP_CONFIGURATIONS = 1 << 16  # configurations a plan sweep evaluates (the product over its ranges)
MAX_INPUT_FILE_BYTES = 64 << 20  # a profile, link, model or config.json file
MAX_PATH_CHARS = 4096  # a path given on the command line (PATH_MAX on Linux)
# whole numbers the planner and the probes take (flags; the planner's arrays are int64 and float64)
MAX_CARDS = 1 << 20  # cards in a plan (--cards, --tp, --pp, --cards-per-host): the largest clusters hold ~1e5
MAX_BATCH = 1 << 24  # sequences decoded together (--batch, a --sweep batch range; the --target-tps search's top)
MAX_CONTEXT_TOKENS = 1 << 24  # tokens of context per sequence (--context): today's longest windows are ~1e7
MAX_LIST_VALUES = 1 << 10  # values in one comma-separated list flag (--sizes, --batches, --pairs)


# Characters no text gpucal reads may hold (the schema's text fields refuse them, ``TEXT_PATTERN``) and that
# everything it prints shows as escapes (``gpucal.render.escape``): C0 controls (ESC among them), DEL, C1
# controls (8-bit CSI, OSC), and the invisible characters that reorder or split text: bidi marks, embeddings,
# overrides and isolates, the line and paragraph separators, the BOM; and lone surrogates (a JSON "\\udfff", a
# file name that is not UTF-8), which no terminal can be sent. As the body of a regex character class.
CONTROL_CHARACTERS = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff"
TEXT_PATTERN = "^[^" + "".join(c if c == "-" else f"\\u{ord(c):04x}" for c in CONTROL_CHARACTERS) + "]*$"


def check_range(value: float, kind: str) -> str | None:
    """Why ``value`` lies outside the range of ``kind`` (one phrase), or ``None`` when it is inside."""
    lo, hi = RANGES[kind]
    if value != value or value in (float("inf"), float("-inf")):
        return "not a finite number"
    if value < lo:
        return f"below the smallest accepted, {_shown(lo, kind)}"
    if value > hi:
        return f"above the largest accepted, {_shown(hi, kind)}"
    return None


_UNITS = {"bytes": "B", "rate": "B/s", "flops": "FLOP/s", "time": "s", "params": "", "tokens_per_s": "tokens/s"}


def _shown(value: float, kind: str) -> str:
    return format_si(value, _UNITS.get(kind, "")) if kind != "time" else f"{value:g} s"
