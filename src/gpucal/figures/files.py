"""Writing a profile's figures: which ones, where, and all or none (``write_plots``).

Every output is checked before anything is drawn, each figure is drawn in memory (one a profile cannot
show is skipped, saying why), then the PNGs are written at once through ``gpucal.files``. See docs/plots.md.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from gpucal import profiles
from gpucal.errors import InputError
from gpucal.figures import FIGURES
from gpucal.figures.bandwidth import bandwidth_figure
from gpucal.figures.common import DPI, PlotSkipped, canvas_figure
from gpucal.figures.decode import allreduce_figure, decode_gemm_figure
from gpucal.figures.network import network_figure
from gpucal.figures.p2p import p2p_figure
from gpucal.figures.plan import PLAN_STRATEGIES, plan_curves, plan_figure
from gpucal.figures.roofline import roofline_figure
from gpucal.files import check_output, check_output_folder, make_folder, write_all_atomic
from gpucal.profiles.queries import resolve_model

__all__ = ["check_plots_output", "draw_figures", "write_plots"]


def _check_arguments(names, cards, strategy) -> None:
    unknown = [w for w in names if w not in FIGURES]
    if unknown or not names:
        raise InputError(f"--only: unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)}" if unknown
                         else f"--only: name at least one of {', '.join(FIGURES)}")
    if cards is not None and (isinstance(cards, bool) or not isinstance(cards, int) or cards < 1):
        raise InputError(f"--cards: must be a whole number of at least 1, got {cards!r}")
    if strategy is not None and strategy not in PLAN_STRATEGIES:
        raise InputError(f"--strategy: expected one of {', '.join(PLAN_STRATEGIES)}, got {strategy!r}")


def check_plots_output(out_dir, *, which=None, force: bool = False, flag: str = "-o") -> list[Path]:
    """Check, before anything is measured or drawn, that the figures ``which`` (default all) can be written
    into ``out_dir`` as ``write_plots`` writes them: a folder (or a new one), and no ``NAME.png`` there
    unless ``force`` (then a regular file). ``InputError`` naming ``flag`` otherwise. Returns the paths."""
    out = check_output_folder(out_dir, flag=flag)
    return [check_output(out / f"{name}.png", force=force, flag=flag)
            for name in FIGURES if which is None or name in which]


def _png(fig) -> bytes:
    """The figure as PNG bytes (drawn in memory: nothing is written until every figure is drawn)."""
    buffer = io.BytesIO()
    with np.errstate(all="ignore"):
        fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _drawn(make) -> bytes:
    """The PNG of the figure ``make()`` returns. Values a profile may hold (within the schema's bounds) can
    still span more decades than matplotlib can lay out on a log axis: such a figure is skipped, saying so,
    rather than crash the command; matplotlib's warnings about them are not printed."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return _png(make())
        except (OverflowError, FloatingPointError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise PlotSkipped(f"its values are beyond what a plot can show ({type(exc).__name__}: {exc})") from None


def write_plots(doc: profiles.Document, out_dir, *, model="llama-3.1-8b", cards: int | None = None,
                strategy: str | None = None, which=None, context_tokens: int = 0, force: bool = False,
                flag: str = "-o") -> list[tuple[str, Path | None, str | None]]:
    """Write the figures ``which`` (default all of ``FIGURES``) of ``doc`` as ``NAME.png`` in ``out_dir``
    (created). Returns (name, path or None, why skipped or None) per figure.

    Every output is checked before any figure is drawn (an existing ``NAME.png`` is replaced only with
    ``force``, and only if it is a regular file), every figure is drawn in memory, then all are written at
    once (``gpucal.files.write_all_atomic``): a failure leaves the folder as it was. Bad arguments raise
    ``InputError`` naming the CLI flag (``--only``, ``--model``, ``--cards``, ``--strategy``, and ``flag``
    for the folder), as does a missing matplotlib; a document that does not validate (one built from a dict
    without ``gpucal.profiles.validate``) raises ``ProfileError`` naming its origin and the field, before
    anything is drawn; a failure while writing (disk full) is a ``GpucalError``.
    """
    names = list(FIGURES if which is None else which)
    _check_arguments(names, cards, strategy)
    spec = resolve_model(model) if isinstance(model, str) else model
    doc.profile  # the figures read the typed profile: one that does not validate is refused here, in one line
    canvas_figure((1, 1))  # matplotlib is there, before anything is written
    check_plots_output(out_dir, which=names, force=force, flag=flag)
    out = Path(out_dir)
    results: list[tuple[str, Path | None, str | None]] = []
    drawn: list[tuple[Path, bytes]] = []
    for name, png, why in draw_figures(doc, names, model=spec, cards=cards, strategy=strategy,
                                       context_tokens=context_tokens):
        if png is None:
            results.append((name, None, why))
            continue
        path = out / f"{name}.png"
        drawn.append((path, png))
        results.append((name, path, None))
    if drawn:
        make_folder(out, flag=flag)
        write_all_atomic(drawn, force=force, flag=flag)
    return results


def draw_figures(doc: profiles.Document, names, *, model, cards: int | None = None, strategy: str | None = None,
                 context_tokens: int = 0) -> list[tuple[str, bytes | None, str | None]]:
    """Each figure of ``names`` (in ``FIGURES``' order) drawn in memory: (name, PNG bytes, None), or (name, None,
    why) for one the profile cannot show. ``model`` is a resolved ``ModelSpec``."""
    _check_arguments(list(names), cards, strategy)
    spec = model
    makers = {
        "bandwidth": lambda: bandwidth_figure(doc),
        "p2p": lambda: p2p_figure(doc),
        "roofline": lambda: roofline_figure(doc),
        "plan": lambda: plan_figure(doc, plan_curves(doc, model=spec, cards=cards, strategy=strategy,
                                                     context_tokens=context_tokens)),
        "network": lambda: network_figure(doc),
        "decode-gemm": lambda: decode_gemm_figure(doc),
        "allreduce": lambda: allreduce_figure(doc),
    }
    out: list[tuple[str, bytes | None, str | None]] = []
    for name in (n for n in FIGURES if n in names):
        try:
            out.append((name, _drawn(makers[name]), None))
        except PlotSkipped as skipped:
            out.append((name, None, skipped.reason))
    return out
