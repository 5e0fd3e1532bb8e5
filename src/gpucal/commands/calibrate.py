"""``gpucal calibrate``: one command from a new machine to a profile that planners use.

Runs every probe (``gpucal.calibrate.run``), fits α/β per path, forms the P2P verdicts, and writes one
profile (default ``profiles/<host>-<gpu>.json`` in the current directory) with its provenance; then prints
each figure against its theoretical peak and every anomaly found. Nothing is written unless every step
ran; the file is written atomically and an existing one is kept unless ``--force`` is given. Exit code 1
when a case failed its check or a device errored (the profile is still written: it records them).
"""

from __future__ import annotations

import os
import sys

from gpucal import render
from gpucal.errors import GpucalError, InputError, ProfileError

__all__ = ["add_parser", "run"]

ANOMALIES_SHOWN = 20


def add_parser(sub) -> None:
    from gpucal.commands.args import budget
    from gpucal.commands.probe import backend_arg

    p = sub.add_parser("calibrate", help="measure this machine and write its profile (memory, FLOP/s, every link)",
                       description="Measure memory bandwidth and GEMV, FLOP/s per dtype, the host links, every pair "
                                   "of devices and the topology; fit alpha/beta per path, give the P2P verdicts, "
                                   "and write one profile that `gpucal plan --gpu FILE` uses.")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the profile (default: profiles/<host>-<gpu>.json in the current folder)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="what the planner and the P2P verdict need (the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="every probe in full: every dtype and mode, pageable memory, kernel engines, finer sizes")
    backend_arg(p)
    p.add_argument("--simulate", metavar="PROFILE[:N]",
                   help="calibrate a virtual machine of N cards of PROFILE (as --backend virtual:PROFILE[:N]; "
                        "options such as +noise=0.02 too) and check the kernels on the Numba simulator; the "
                        "profile says simulated")
    p.add_argument("--no-kernel-check", action="store_true",
                   help="with --simulate: skip checking the kernels on the Numba simulator (a few seconds)")
    p.add_argument("--name", metavar="NAME", help="the profile's name (default: the output file's stem, or "
                                                  "<host>-<gpu>)")
    p.add_argument("--budget", type=budget, metavar="S", help="seconds of sampling per case at most")
    p.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    p.add_argument("--plots", metavar="DIR", help="also write the plots (gpucal plot) into DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object (the summary) instead of tables")
    cluster = p.add_argument_group("cluster (mpiexec -n N gpucal calibrate --cluster -o FILE)")
    cluster.add_argument("--cluster", action="store_true",
                         help="under MPI, one rank per GPU: calibrate every host (on its first rank), measure the "
                              "network between hosts and the collectives over all ranks, and write one cluster "
                              "profile on rank 0")
    cluster.add_argument("--simulate-net", metavar="LINK[+OPTION...]",
                         help="with --cluster --simulate: every rank a simulated host of its own (+per-host=R: hosts "
                              "of R ranks), joined by a simulated LINK (a link preset such as eth1g, or "
                              "alpha=..,beta=..; +noise=F, +seed=N)")
    p.set_defaults(run=run, mode="quick")


def _backend(args):
    from gpucal.kernels.backend import select

    if args.simulate:
        if args.backend != "auto":
            raise InputError("--simulate: give either --simulate PROFILE[:N] or --backend, not both")
        spec = args.simulate.removeprefix("virtual:")
        try:
            return select(f"virtual:{spec}", args.device)
        except InputError as exc:
            raise InputError(str(exc).replace("--backend", "--simulate", 1)) from None
    if args.backend == "simulator":
        raise InputError("--backend: the simulator checks kernels but times nothing real; to calibrate without a GPU "
                         "use --simulate PROFILE[:N] (which checks the kernels on the simulator too)")
    from gpucal.kernels.backend import NoDeviceError

    try:
        return select(args.backend, args.device)
    except NoDeviceError as exc:
        raise NoDeviceError(f"{exc}; to calibrate a simulated machine: gpucal calibrate --simulate PROFILE[:N]") \
            from None


def _check_output(path: str, force: bool) -> None:
    """``-o``: a new name or (with --force) a regular file, in a folder that is or can be made, writable."""
    from gpucal.files import check_output

    check_output(path, force=force, flag="-o")


def check_outputs(args) -> None:
    """Every output path the flags name (-o, --plots), checked before anything is measured."""
    if args.output is not None:
        _check_output(args.output, args.force)
    if args.plots is not None:
        from gpucal.plot_files import check_plots_output

        check_plots_output(args.plots, force=args.force, flag="--plots")


def _name_of(path: str | None) -> str | None:
    """A profile name from the output file's stem (``-o rtx4090x8.json`` names it ``rtx4090x8``)."""
    import re

    if not path:
        return None
    stem = re.sub(r"[^a-z0-9._-]+", "-", os.path.basename(path).removesuffix(".json").lower()).strip("-._")
    return stem[:100] or None


def _check_plots() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("--plots: matplotlib is not installed; pip install 'gpucal[plot]'") from None


def _progress(show_bar: bool, quiet: bool):
    """A progress callback (rich bar on a terminal, a line per step otherwise) and the context to run it in."""
    import contextlib

    if quiet:
        return None, contextlib.nullcontext()
    if show_bar:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("gpucal calibrate"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.description}", markup=False), TimeElapsedColumn(), console=render.console(stderr=True),
                       transient=True)
        task = {}

        def report(i, total, step):
            label = render.escape(step.label, layout=False)
            if "id" not in task:
                task["id"] = bar.add_task(label, total=total)
            bar.update(task["id"], completed=i, description=label)
        return report, bar

    def report(i, total, step):
        if step.name != "done":
            print(render.escape(f"gpucal calibrate: [{i + 1}/{total}] {step.label}", layout=False), file=sys.stderr,
                  flush=True)
    return report, contextlib.nullcontext()


def check_flags(args) -> None:
    """The checks of calibrate's flags that need no device (the same on every rank under MPI)."""
    import math

    for flag, value, what in (("-o", args.output, "a file name"), ("--simulate", args.simulate, "PROFILE[:N]"),
                              ("--plots", args.plots, "a folder"), ("--simulate-net", args.simulate_net, "a link")):
        if value is not None and not value.strip():  # an empty value is not the flag's absence
            raise InputError(f"{flag}: an empty value; give {what}")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        raise InputError(f"--budget: must be a positive number of seconds, got {args.budget}")
    if args.device != 0:
        raise InputError("--device: calibrate measures every device of the machine; --device does not apply")
    if args.name is not None:
        import re

        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,99}", args.name):
            raise InputError(f"--name: {args.name!r}: use lowercase letters, digits, '.', '_' and '-'")
    if args.plots is not None:
        _check_plots()
    if args.simulate_net is not None and not args.cluster:
        raise InputError("--simulate-net: only with --cluster (the network between the hosts of a cluster)")


def run(args) -> int:
    from gpucal.calibrate.build import default_name

    if args.cluster:
        from gpucal.commands.calibrate_cluster import run_cluster

        return run_cluster(args)
    check_flags(args)
    check_outputs(args)
    backend = _backend(args)
    count = backend.device_count() if backend.links_reason() is None else 1
    import socket

    name = args.name or _name_of(args.output) or default_name(socket.gethostname(), backend.devices()[0].name,
                                                                count, backend.simulated)
    path = args.output or os.path.join("profiles", f"{name}.json")
    if not args.output:
        _check_output(path, args.force)
    cal, doc, found, failed = measure_host(args, backend, name)
    done: dict = {}
    try:
        written, plots = write_outputs(args, doc, path, done)
        return _report(args, doc, cal, found, failed, backend, name, written, plots)
    except KeyboardInterrupt as exc:  # after the profile was written: say so (exit 130, or 143 for SIGTERM)
        if "profile" in done:
            exc.detail = after_writing(done["profile"], args.plots, done.get("plots"))
        raise


def after_writing(written, plots_dir, plots) -> str:
    """What an interruption after the profile was written says: the file is complete; the plots, if asked for,
    were written or not (they are written all at once)."""
    text = f"after writing {written} (complete)"
    if plots_dir is not None:
        text += f"; the plots in {plots_dir} were " + ("written" if plots is not None else "not written")
    return text


def write_outputs(args, doc: dict, path: str, done: dict):
    """Write the profile and then (``--plots``) its figures, noting in ``done`` what is written (``profile``:
    its path, ``plots``: the figures, None until written), so that an interruption can say it. A signal while
    the profile is written is held until it is complete (``gpucal.files.deferred_signals``). Returns (the
    profile's path, the plots or [])."""
    from gpucal import profiles
    from gpucal.files import deferred_signals

    with deferred_signals():
        done["profile"] = write_profile(doc, path, args.force)
    done["plots"] = []
    if args.plots is not None:
        from gpucal.plot_files import write_plots

        done["plots"] = None
        done["plots"] = write_plots(profiles.load(done["profile"]), args.plots, force=args.force, flag="--plots")
    return done["profile"], done["plots"]


def _report(args, doc, cal, found, failed, backend, name, written, plots) -> int:
    from gpucal.calibrate.health import summary_rows

    rows = summary_rows(doc)
    if args.json:
        render.print_json({"command": "calibrate", "profile": str(written), "name": name, "source": doc["source"],
                           "backend": backend.name, "mode": args.mode, "duration_s": doc["host"]["duration_s"],
                           "summary": rows, "anomalies": found,
                           "verdicts": [v.to_dict() for v in cal.verdicts], "simulator_check": cal.simulator_check,
                           "plots": [{"name": n, "path": str(p) if p else None, "skipped": why}
                                     for n, p, why in plots]})
        return 1 if failed else 0
    _print(doc, rows, found, cal, str(written), plots)
    return 1 if failed else 0


def measure_host(args, backend, name: str, progress: bool = True):
    """Calibrate ``backend``'s machine into a profile named ``name``: (calibration, profile, anomalies,
    failed). ``progress``: show it on stderr (a bar on a terminal, a line per step otherwise)."""
    from gpucal import __version__
    from gpucal.calibrate.build import build_profile
    from gpucal.calibrate.health import anomalies
    from gpucal.calibrate.provenance import iso, provenance
    from gpucal.calibrate.run import CalibrateConfig, run as calibrate, simulator_check

    quiet = not progress or (args.json and not sys.stderr.isatty())
    report, ctx = _progress(sys.stderr.isatty() and not args.json, quiet=quiet)
    with ctx:
        cal = calibrate(backend, CalibrateConfig(mode=args.mode, budget_s=args.budget), report)
    if backend.simulated:
        cal.simulator_check = {"ran": False, "reason": "--no-kernel-check"} if args.no_kernel_check \
            else simulator_check()
    doc = build_profile(cal, name, provenance(cal, args.argv), [], iso(cal.finished), __version__)
    found = anomalies(cal, doc)
    doc["host"]["anomalies"] = found
    doc["notes"] += [a["text"][:2000] for a in found]
    doc = render.json_ready(doc)
    failed = any(r.status in ("failed", "error") for r in cal.all_results()) or bool(
        cal.simulator_check and cal.simulator_check.get("failed"))
    return cal, doc, found, failed


def _keep_aside(path: str, text: str):
    """Write ``text`` beside ``path`` as ``path.invalid`` (``path.invalid.2``, ... where that exists: nothing a user
    had is replaced)."""
    from gpucal.errors import ProfileExistsError
    from gpucal.files import write_atomic

    for i in range(1, 1000):
        try:
            return write_atomic(f"{path}.invalid" + (f".{i}" if i > 1 else ""), text)
        except ProfileExistsError:
            continue
    raise GpucalError(f"-o: {path}: the profile built does not validate, and {path}.invalid.* are all taken")


def write_profile(doc: dict, path: str, force: bool):
    """Validate ``doc`` and write it atomically to ``path``; a document gpucal built that does not validate is
    gpucal's fault (exit 1), and is kept as ``path.invalid``."""
    from gpucal import profiles

    try:
        profiles.validate(doc, path)
    except ProfileError as exc:  # gpucal's own fault, not the user's: keep the measurement
        aside = _keep_aside(path, profiles.dumps(doc))
        raise GpucalError(f"the profile built does not validate ({exc}); the measurement is kept in {aside}") from None
    from gpucal.files import make_folder, write_atomic

    try:
        make_folder(os.path.dirname(os.path.abspath(path)), flag="-o")
    except GpucalError as exc:  # the same one line, naming the file: `-o: FILE: cannot write it (...)`
        why = f"cannot write it ({str(exc).removeprefix('-o: ')})"
        if isinstance(exc, ProfileError):
            raise ProfileError(f"-o: {path}", None, why) from None
        raise type(exc)(f"-o: {path}: {why}") from None  # InputError (exit 2) or the machine's GpucalError (1)
    return write_atomic(path, profiles.dumps(doc), force=force, flag="-o")


def _condense(rows: list[dict]) -> list[dict]:
    """One row per figure over every device (or every pair with the same path and verdict): the median
    value, the range where the devices differ by more than 1 %, the peak and the median's efficiency."""
    import statistics

    groups: dict = {}
    for r in rows:
        key = (f"link {r['verdict']}" if r.get("verdict") else r["figure"], r["unit"])
        groups.setdefault(key, []).append(r)
    out = []
    for (figure, unit), rs in groups.items():
        values = [r["value"] for r in rs if r["value"]]
        alphas = [r["alpha_s"] for r in rs if r.get("alpha_s") is not None]
        value = statistics.median(values) if values else None
        peak = rs[0]["peak"]
        where = (f"{len(rs)} pair(s)" if rs[0].get("verdict") else
                 f"dev{rs[0]['device']}" if len(rs) == 1 else f"{len(rs)} devices")
        spread = (max(values) - min(values)) / value if values and value else 0.0
        out.append({"figure": figure, "where": where, "unit": unit, "value": value,
                    "low": min(values) if spread > 0.01 else None, "high": max(values) if spread > 0.01 else None,
                    "alpha_s": statistics.median(alphas) if alphas else None, "peak": peak,
                    "peak_ref": rs[0]["peak_ref"], "efficiency_frac": value / peak if value and peak else None})
    return out


def figure_table(rows: list[dict]):
    """The summary's table: one row per figure over every device (``_condense``), against its peak."""
    from gpucal.units import format_flops, format_rate, format_time

    table = []
    for r in _condense(rows):
        fmt = format_flops if r["unit"] == "FLOP/s" else format_rate
        value = fmt(r["value"]) if r["value"] else "-"
        if r["low"] is not None:
            value += f" ({fmt(r['low'])} - {fmt(r['high'])})"
        peak = fmt(r["peak"]) if r["peak"] else "-"
        eff = f"{100 * r['efficiency_frac']:.1f} %" if r["efficiency_frac"] else "-"
        alpha = format_time(r["alpha_s"]) if r.get("alpha_s") is not None else ""
        table.append((r["figure"], r["where"], value, alpha, peak, r["peak_ref"] or "", eff))
    return render.table(("figure", "where", "median", "alpha", "peak", "peak from", "share"), table,
                        right=(2, 3, 4, 6), no_wrap=(0, 2))


def print_anomalies(found: list[dict], console) -> None:
    """Every anomaly found, up to ``ANOMALIES_SHOWN`` of them, then how many more."""
    if not found:
        render.line("anomalies: none found", console)
        return
    render.line(f"anomalies ({len(found)}):", console)
    for a in found[:ANOMALIES_SHOWN]:
        render.line(f"  {a['kind']}: {a['text']}", console)
    if len(found) > ANOMALIES_SHOWN:
        render.line(f"  ... and {len(found) - ANOMALIES_SHOWN} more: the profile's host.anomalies lists them all",
                    console)


def _print(doc, rows, found, cal, path, plots) -> None:

    console = render.console()
    host = doc["host"]
    names = ", ".join(sorted({d["name"] for d in doc["devices"]}))
    render.line(f"gpucal calibrate: {len(doc['devices'])} x {names} ({doc['source']}, {host['backend']}), "
                f"{host['mode']} mode", console)
    console.print(figure_table(rows))
    if cal.verdicts:
        counts: dict = {}
        for v in cal.verdicts:
            counts[v.label] = counts.get(v.label, 0) + 1
        render.line("P2P verdicts: " + ", ".join(f"{label} ({n} ordered pair(s))" for label, n in counts.items())
                    + "; gpucal p2p shows the evidence", console)
    print_anomalies(found, console)
    check = cal.simulator_check
    if check is not None:
        if check["ran"]:
            render.line(f"kernels on the Numba simulator: {check['passed']} of {len(check['cases'])} checked "
                        "against float64 references" + (f"; FAILED: {'; '.join(check['failed'])}"
                                                        if check["failed"] else ""), console)
        else:
            render.line(f"kernels on the Numba simulator: not run ({check['reason']})", console)
    for name, p, why in plots:
        render.line(f"plot {name}: {p}" if p else f"plot {name}: skipped ({why})", console)
    failed = sum(r.status in ("failed", "error") for r in cal.all_results())
    checked = ("every output and copied byte verified" if not failed else
               f"{failed} case(s) failed their check or errored (exit code 1); every figure written passed its check")
    render.line("statistic: medians after warm-up (p10/p90 and n in the profile); links: alpha is one copy issued "
                f"and waited for, beta the fit t = alpha + n/beta (per regime: the largest sizes'); {checked}", console)
    if doc["source"] == "simulated":
        render.line("simulated: a virtual machine priced by its profile; no figure here is a measurement", console)
    render.line(f"wrote {path}", console)
