"""Everything gpucal shows people: tables (rich) and JSON. Library code returns data; this renders it.

JSON output rounds floats to 12 significant digits (far below any input's precision), so that the
article's 0.02238192 s prints as such rather than as 0.022381920000000003.

Text that reaches the terminal may come from a file (a profile's name, notes, device names, a model's
title): everything printed goes through ``escape``, which writes control characters as visible escapes
(``\\x1b``, ``\\u202e``) so that a crafted file can neither drive the terminal (set its title, clear the
screen) nor reorder what is shown (bidi overrides). The consoles here escape every string they render
(tables, titles, lines) and never read markup; ``print_json`` escapes the same characters as JSON ``\\u``
escapes; ``gpucal.cli`` escapes its error lines.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from gpucal.limits import CONTROL_CHARACTERS
from gpucal.units import size_label

if TYPE_CHECKING:
    from gpucal.profiles.model import FitRecord

__all__ = ["JSON_DIGITS", "console", "escape", "line", "json_ready", "print_json", "table", "print_table", "number",
           "percent", "fit_note", "SafeConsole"]

JSON_DIGITS = 12
# C0 controls (ESC among them), DEL, C1 controls (8-bit CSI, OSC...), and the invisible characters that reorder
# or split text: bidi marks, embeddings, overrides and isolates, line and paragraph separators, BOM
# (one set for reading and showing: gpucal.limits.CONTROL_CHARACTERS)
_INVISIBLE = CONTROL_CHARACTERS.removeprefix("\x00-\x1f")  # all but the C0 controls
_UNSAFE_RE = re.compile("[" + CONTROL_CHARACTERS + "]")
_UNSAFE_EXCEPT_LAYOUT_RE = re.compile("[\x00-\x08\x0b-\x1f" + _INVISIBLE + "]")  # newline and tab kept
_JSON_UNSAFE_RE = re.compile("[" + _INVISIBLE + "]")


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str, *, layout: bool = True) -> str:
    """``text`` with every control character written as a visible escape (``ESC`` -> ``\\x1b``, U+202E ->
    ``\\u202e``); with ``layout`` newlines and tabs are kept (multi-line text), else escaped too (one line)."""
    text = str(text)
    return (_UNSAFE_EXCEPT_LAYOUT_RE if layout else _UNSAFE_RE).sub(_visible, text)


def json_ready(value: Any) -> Any:
    """``value`` with floats rounded to ``JSON_DIGITS`` significant digits and NumPy scalars made Python."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{JSON_DIGITS}g}")
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def print_json(value: Any, stream=None) -> None:
    """One JSON document on stdout (and nothing else there)."""
    stream = stream or sys.stdout
    text = json.dumps(json_ready(value), indent=2, ensure_ascii=False, allow_nan=False)
    # json escapes C0 controls itself; DEL, C1 and the bidi characters it leaves as they are (they are valid JSON
    # characters, but a terminal acts on them): the same text with those as \\u escapes (only strings hold them)
    stream.write(_JSON_UNSAFE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")


class SafeConsole(Console):
    """rich's Console, rendering every string it is given through ``escape`` (and never as markup)."""

    def render_str(self, text, **kwargs):
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(escape(text), **kwargs)


def console(stderr: bool = False):
    """A rich console; 100 columns when the output is not a terminal, so that output is stable. Every string
    it renders (lines, table cells, titles, headers) is escaped (``escape``) and never read as markup."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100
    return SafeConsole(file=stream, width=width, highlight=False, markup=False, soft_wrap=False, emoji=False)


def line(text: str, out=None) -> None:
    """One line of text, never wrapped and never read as markup."""
    (out or console()).print(text, soft_wrap=True)


def table(columns: Iterable[str], rows: Iterable[Iterable[Any]], title: str | None = None, right: Iterable[int] = (),
          no_wrap: Iterable[int] = ()):
    """A simple rich table; column indexes in ``right`` are right-aligned, those in ``no_wrap`` never wrap."""
    right, no_wrap = set(right), set(no_wrap)
    out = Table(title=None if title is None else escape(title), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, show_edge=False)
    for i, name in enumerate(columns):
        out.add_column(name, justify="right" if i in right else "left", overflow="fold", no_wrap=i in no_wrap)
    for row in rows:
        out.add_row(*("" if cell is None else escape(str(cell)) for cell in row))
    return out


def print_table(*args, **kwargs) -> None:
    console().print(table(*args, **kwargs))


def number(value: float) -> str:
    """A count or rate for people: 4 significant digits, thousands separated from 1,000 up."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def percent(fraction: float) -> str:
    return f"{100.0 * fraction:.3g} %"


def fit_note(fit: FitRecord | None = None, noisy_sizes: int = 0, sizes: int = 0) -> str:
    """What a fitted curve's row says besides its numbers, as the JSON does: its regimes (the ``pieces`` of
    ``fit``, a profile's fit record) and where they break, a poor fit (the worst point's distance from the
    curve), and how many sizes stopped sampling noisy."""
    notes = []
    pieces = (fit.pieces if fit is not None else None) or []
    if len(pieces) > 1:
        notes.append(f"{len(pieces)} regimes (at " + ", ".join(size_label(p.lo_bytes) for p in pieces[1:]) + ")")
    if fit is not None and fit.poor_fit:
        worst = max((p.max_abs_residual_frac or 0.0 for p in pieces), default=0.0)
        notes.append("poor fit" + (f" ({100 * worst:.0f} % off)" if worst else ""))
    if noisy_sizes:
        notes.append(f"noisy {noisy_sizes}" + (f"/{sizes}" if sizes else "") + " sizes")
    return "; ".join(notes)
