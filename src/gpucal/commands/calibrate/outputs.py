"""What ``gpucal calibrate`` writes and says, alone or for a cluster: the output paths checked before
anything is measured, the profile written atomically (kept aside where it does not validate), the plots,
what an interruption after writing says, and the summary's figure table and anomalies."""

from __future__ import annotations

import os
import re

from gpucal import profiles, render
from gpucal.errors import GpucalError, InputError, ProfileError, ProfileExistsError
from gpucal.calibrate.health import condensed_rows
from gpucal.figures.files import check_plots_output, write_plots
from gpucal.figures.report import check_report_output, write_report
from gpucal.files import check_output as check_output_path
from gpucal.files import deferred_signals, make_folder, write_atomic
from gpucal.profiles.model import Profile
from gpucal.profiles.model.documents import Anomaly
from gpucal.units import format_flops, format_rate, format_time

__all__ = ["ANOMALIES_SHOWN", "after_writing", "report_outcome", "check_output", "check_outputs", "figure_table", "print_figure_tables",
           "name_of", "print_anomalies", "validated", "write_outputs", "write_profile"]

ANOMALIES_SHOWN = 20


def check_output(path: str, force: bool) -> None:
    """``-o``: a new name or (with --force) a regular file, in a folder that is or can be made, writable."""
    check_output_path(path, force=force, flag="-o")


def check_outputs(args) -> None:
    """Every output path the flags name (-o, --plots), checked before anything is measured."""
    if args.output is not None:
        check_output(args.output, args.force)
    if args.plots is not None:
        check_plots_output(args.plots, force=args.force, flag="--plots")
    if getattr(args, "report", None) is not None:
        check_report_output(args.report, force=args.force, flag="--report")
        if args.output is not None and os.path.realpath(args.output) == os.path.realpath(args.report):
            raise InputError(f"--report: {args.report} is the profile's own file (-o): name another")


def name_of(path: str | None) -> str | None:
    """A profile name from the output file's stem (``-o rtx4090x8.json`` names it ``rtx4090x8``)."""
    if not path:
        return None
    stem = re.sub(r"[^a-z0-9._-]+", "-", os.path.basename(path).removesuffix(".json").lower()).strip("-._")
    return stem[:100] or None


def after_writing(written, plots_dir, plots, report=None, report_written=None) -> str:
    """What an interruption after the profile was written says: the file is complete; the plots, if asked for,
    were written or not (they are written all at once); so was the report."""
    text = f"after writing {written} (complete)"
    if plots_dir is not None:
        text += f"; the plots in {plots_dir} were " + ("written" if plots is not None else "not written")
    if report is not None:
        text += f"; the report {report} was " + ("written" if report_written is not None else "not written")
    return text


def write_outputs(args, doc: dict, path: str, done: dict):
    """Write the profile and then (``--plots``) its figures and (``--report``) its page, noting in ``done`` what is
    written (``profile``: its path, ``plots``: the figures, None until written; ``report``: the page's path), so
    that an interruption can say it. A signal while
    the profile is written is held until it is complete (``gpucal.files.deferred_signals``). Returns (the
    profile's path, the plots or [], the typed profile as written)."""
    with deferred_signals():
        done["profile"] = write_profile(doc, path, args.force)
    written = profiles.load(done["profile"])
    done["plots"] = []
    if args.plots is not None:
        done["plots"] = None
        done["plots"] = write_plots(written, args.plots, force=args.force, flag="--plots")
    if getattr(args, "report", None) is not None:
        done["report"] = None
        try:
            done["report"] = write_report(written, args.report, force=args.force, flag="--report")
        except GpucalError as exc:  # the measurement is written: the summary still prints, then this (exit 1)
            done["report_error"] = str(exc)
    return done["profile"], done["plots"], written.profile


def report_outcome(args, done: dict, console) -> int:
    """Say what became of ``--report`` after the summary: the page written, or why not (exit code 1: the
    profile is written and complete, the page is not); 0 where there is nothing to say against it."""
    if getattr(args, "report", None) is None:
        return 0
    if done.get("report") is not None:
        if not getattr(args, "json", False):  # the JSON summary names it ("report")
            render.line(f"wrote {done['report']} (gpucal report)", console)
        return 0
    render.line(f"gpucal calibrate: the profile {done['profile']} is written and complete; the report was not: "
                f"{done.get('report_error', 'not written')}", render.console(stderr=True))
    return 1


def _keep_aside(path: str, text: str):
    """Write ``text`` beside ``path`` as ``path.invalid`` (``path.invalid.2``, ... where that exists: nothing a user
    had is replaced)."""
    for i in range(1, 1000):
        try:
            return write_atomic(f"{path}.invalid" + (f".{i}" if i > 1 else ""), text)
        except ProfileExistsError:
            continue
    raise GpucalError(f"-o: {path}: the profile built does not validate, and {path}.invalid.* are all taken")


def validated(doc: dict, path: str, origin: str | None = None) -> Profile:
    """``doc``, a profile gpucal built, as the typed model; one that does not validate is gpucal's fault (exit 1),
    and is kept beside ``path`` as ``path.invalid``."""
    try:
        return profiles.validate(doc, origin or path).profile
    except ProfileError as exc:  # gpucal's own fault, not the user's: keep the measurement
        aside = _keep_aside(path, profiles.dumps(doc))
        raise GpucalError(f"the profile built does not validate ({exc}); the measurement is kept in {aside}") from None


def write_profile(doc: dict, path: str, force: bool):
    """Validate ``doc`` and write it atomically to ``path``; a document gpucal built that does not validate is
    gpucal's fault (exit 1), and is kept as ``path.invalid``."""
    validated(doc, path)

    try:
        make_folder(os.path.dirname(os.path.abspath(path)), flag="-o")
    except GpucalError as exc:  # the same one line, naming the file: `-o: FILE: cannot write it (...)`
        why = f"cannot write it ({str(exc).removeprefix('-o: ')})"
        if isinstance(exc, ProfileError):
            raise ProfileError(f"-o: {path}", None, why) from None
        raise type(exc)(f"-o: {path}: {why}") from None  # InputError (exit 2) or the machine's GpucalError (1)
    return write_atomic(path, profiles.dumps(doc), force=force, flag="-o")


def figure_table(rows: list[dict], group: str | None = None):
    """The summary's table: one row per figure over every device (``condensed_rows``), against its peak; the rows
    of ``group`` (``decode``: the decode step's terms) only, or (None) the others."""
    table = []
    for r in condensed_rows([r for r in rows if r.get("group") == group]):
        fmt = {"FLOP/s": format_flops, "s": format_time}.get(r["unit"], format_rate)
        value = fmt(r["value"]) if r["value"] else "-"
        if r["low"] is not None:
            value += f" ({fmt(r['low'])} - {fmt(r['high'])})"
        peak = fmt(r["peak"]) if r["peak"] else "-"
        eff = f"{100 * r['efficiency_frac']:.1f} %" if r["efficiency_frac"] else "-"
        alpha = format_time(r["alpha_s"]) if r.get("alpha_s") is not None else ""
        table.append((r["figure"], r["where"], value, alpha, peak, r["peak_ref"] or "", eff))
    head = ("decode term" if group == "decode" else "figure", "where", "median", "alpha", "peak", "peak from", "share")
    return render.table(head, table, right=(2, 3, 4, 6), no_wrap=(0, 2))


def print_figure_tables(rows: list[dict], console) -> None:
    """The summary's tables: the figures against their peaks, then the decode step's terms where there are some."""
    console.print(figure_table(rows))
    if any(r.get("group") == "decode" for r in rows):
        console.print(figure_table(rows, "decode"))


def print_anomalies(found: list[Anomaly], console) -> None:
    """Every anomaly found (a profile's ``host.anomalies``), up to ``ANOMALIES_SHOWN`` of them, then how many
    more."""
    if not found:
        render.line("anomalies: none found", console)
        return
    render.line(f"anomalies ({len(found)}):", console)
    for a in found[:ANOMALIES_SHOWN]:
        render.line(f"  {a.kind}: {a.text}", console)
    if len(found) > ANOMALIES_SHOWN:
        render.line(f"  ... and {len(found) - ANOMALIES_SHOWN} more: the profile's host.anomalies lists them all",
                    console)
