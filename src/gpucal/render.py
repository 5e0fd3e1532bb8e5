"""Everything gpucal shows people: tables (rich) and JSON. Library code returns data; this renders it.

JSON output rounds floats to 12 significant digits (far below any input's precision), so that the
article's 0.02238192 s prints as such rather than as 0.022381920000000003.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any
from collections.abc import Iterable

__all__ = ["JSON_DIGITS", "console", "line", "json_ready", "print_json", "table", "print_table", "number", "percent",
           "fit_note"]

JSON_DIGITS = 12


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
    stream.write(json.dumps(json_ready(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def console(stderr: bool = False):
    """A rich console; 100 columns when the output is not a terminal, so that output is stable."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100
    return Console(file=stream, width=width, highlight=False, markup=False, soft_wrap=False, emoji=False)


def line(text: str, out=None) -> None:
    """One line of text, never wrapped and never read as markup."""
    (out or console()).print(text, soft_wrap=True)


def table(columns: Iterable[str], rows: Iterable[Iterable[Any]], title: str | None = None, right: Iterable[int] = (),
          no_wrap: Iterable[int] = ()):
    """A simple rich table; column indexes in ``right`` are right-aligned, those in ``no_wrap`` never wrap."""
    from rich import box
    from rich.table import Table

    right, no_wrap = set(right), set(no_wrap)
    out = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, show_edge=False)
    for i, name in enumerate(columns):
        out.add_column(name, justify="right" if i in right else "left", overflow="fold", no_wrap=i in no_wrap)
    for row in rows:
        out.add_row(*("" if cell is None else str(cell) for cell in row))
    return out


def print_table(*args, **kwargs) -> None:
    console().print(table(*args, **kwargs))


def number(value: float) -> str:
    """A count or rate for people: 4 significant digits, thousands separated from 1,000 up."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def percent(fraction: float) -> str:
    return f"{100.0 * fraction:.3g} %"


def fit_note(pieces: list | tuple = (), poor: bool = False, noisy_sizes: int = 0, sizes: int = 0) -> str:
    """What a fitted curve's row says besides its numbers, as the JSON does: its regimes (``pieces``, as a
    profile stores them) and where they break, a poor fit (the worst point's distance from the curve), and
    how many sizes stopped sampling noisy."""
    from gpucal.units import size_label

    notes = []
    if len(pieces) > 1:
        notes.append(f"{len(pieces)} regimes (at " + ", ".join(size_label(p["lo_bytes"]) for p in pieces[1:]) + ")")
    if poor:
        worst = max((p.get("max_abs_residual_frac") or 0.0 for p in pieces), default=0.0)
        notes.append("poor fit" + (f" ({100 * worst:.0f} % off)" if worst else ""))
    if noisy_sizes:
        notes.append(f"noisy {noisy_sizes}" + (f"/{sizes}" if sizes else "") + " sizes")
    return "; ".join(notes)
