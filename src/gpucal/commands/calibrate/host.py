"""Measuring one host for ``gpucal calibrate``, alone or as one host of a cluster: the flags checked before
any device is touched, the backend, the progress shown, and the calibration built into a profile."""

from __future__ import annotations

import contextlib
import math
import re
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gpucal import __version__, profiles, render
from gpucal.calibrate.build import build_profile
from gpucal.calibrate.health import anomalies
from gpucal.calibrate.provenance import iso, provenance
from gpucal.calibrate.run import CalibrateConfig, simulator_check
from gpucal.calibrate.run import run as calibrate
from gpucal.errors import InputError, ProfileError
from gpucal.kernels.backend import NoDeviceError, select
from gpucal.profiles.model import Profile

__all__ = ["check_flags", "check_plots", "measure_host", "select_backend"]


def select_backend(args):
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

    try:
        return select(args.backend, args.device)
    except NoDeviceError as exc:
        raise NoDeviceError(f"{exc}; to calibrate a simulated machine: gpucal calibrate --simulate PROFILE[:N]") \
            from None


def check_plots() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("--plots: matplotlib is not installed; pip install 'gpucal[plot]'") from None


def _progress(show_bar: bool, quiet: bool):
    """A progress callback (rich bar on a terminal, a line per step otherwise) and the context to run it in."""
    if quiet:
        return None, contextlib.nullcontext()
    if show_bar:
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
    for flag, value, what in (("-o", args.output, "a file name"), ("--simulate", args.simulate, "PROFILE[:N]"),
                              ("--plots", args.plots, "a folder"), ("--report", args.report, "a file name"),
                              ("--simulate-net", args.simulate_net, "a link")):
        if value is not None and not value.strip():  # an empty value is not the flag's absence
            raise InputError(f"{flag}: an empty value; give {what}")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        raise InputError(f"--budget: must be a positive number of seconds, got {args.budget}")
    if args.device != 0:
        raise InputError("--device: calibrate measures every device of the machine; --device does not apply")
    if args.name is not None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,99}", args.name):
            raise InputError(f"--name: {args.name!r}: use lowercase letters, digits, '.', '_' and '-'")
    if args.plots is not None:
        check_plots()
    if args.simulate_net is not None and not args.cluster:
        raise InputError("--simulate-net: only with --cluster (the network between the hosts of a cluster)")


def _typed(doc: dict, name: str) -> Profile | None:
    """The profile built, typed; ``None`` where it does not validate (writing it keeps it aside, saying why)."""
    try:
        return profiles.validate(doc, f"the profile built ({name})").profile
    except ProfileError:
        return None


def measure_host(args, backend, name: str, progress: bool = True):
    """Calibrate ``backend``'s machine into a profile named ``name``: (calibration, profile, anomalies,
    failed). ``progress``: show it on stderr (a bar on a terminal, a line per step otherwise)."""
    quiet = not progress or (args.json and not sys.stderr.isatty())
    report, ctx = _progress(sys.stderr.isatty() and not args.json, quiet=quiet)
    with ctx:
        cal = calibrate(backend, CalibrateConfig(mode=args.mode, budget_s=args.budget), report)
    if backend.simulated:
        cal.simulator_check = {"ran": False, "reason": "--no-kernel-check"} if args.no_kernel_check \
            else simulator_check()
    doc = render.json_ready(build_profile(cal, name, provenance(cal, args.argv), [], iso(cal.finished), __version__))
    built = _typed(doc, name)
    found = anomalies(cal, built) if built is not None else []
    doc["host"]["anomalies"] = found
    doc["notes"] += [a["text"][:2000] for a in found]
    doc = render.json_ready(doc)
    failed = any(r.status in ("failed", "error") for r in cal.all_results()) or bool(
        cal.simulator_check and cal.simulator_check.get("failed"))
    return cal, doc, found, failed
