"""``gpucal calibrate`` on one machine: measure it, write its profile (and plots), print the summary."""

from __future__ import annotations

import os
import socket

from gpucal import render
from gpucal.calibrate.build import default_name
from gpucal.calibrate.health import summary_rows
from gpucal.commands.calibrate.host import check_flags, measure_host, select_backend
from gpucal.commands.calibrate.outputs import (
    after_writing,
    report_outcome,
    check_output,
    check_outputs,
    print_figure_tables,
    name_of,
    print_anomalies,
    write_outputs,
)
from gpucal.profiles.model import Profile

__all__ = ["run_local"]


def run_local(args) -> int:
    """``gpucal calibrate`` (without ``--cluster``): this machine's profile, its summary and exit code."""
    check_flags(args)
    check_outputs(args)
    backend = select_backend(args)
    count = backend.device_count() if backend.links_reason() is None else 1
    name = args.name or name_of(args.output) or default_name(socket.gethostname(), backend.devices()[0].name,
                                                             count, backend.simulated)
    path = args.output or os.path.join("profiles", f"{name}.json")
    if not args.output:
        check_output(path, args.force)
    cal, doc, found, failed = measure_host(args, backend, name)
    done: dict = {}
    try:
        written, plots, profile = write_outputs(args, doc, path, done)
        code = _report(args, profile, cal, found, failed, backend, name, written, plots)
        return max(code, report_outcome(args, done, render.console()))
    except KeyboardInterrupt as exc:  # after the profile was written: say so (exit 130, or 143 for SIGTERM)
        if "profile" in done:
            exc.detail = after_writing(done["profile"], args.plots, done.get("plots"), args.report,
                                       done.get("report"))
        raise


def _report(args, profile: Profile, cal, found, failed, backend, name, written, plots) -> int:
    """The summary of the profile written (``profile``): tables, or one JSON object."""
    rows = summary_rows(profile)
    if args.json:
        render.print_json({"command": "calibrate", "profile": str(written), "name": name, "source": profile.source,
                           "backend": backend.name, "mode": args.mode, "duration_s": profile.host.duration_s,
                           "summary": rows, "anomalies": found,
                           "verdicts": [v.to_dict() for v in cal.verdicts], "simulator_check": cal.simulator_check,
                           "plots": [{"name": n, "path": str(p) if p else None, "skipped": why}
                                     for n, p, why in plots],
            "report": args.report})
        return 1 if failed else 0
    _print(profile, rows, cal, str(written), plots)
    return 1 if failed else 0


def _print(profile: Profile, rows, cal, path, plots) -> None:
    console = render.console()
    host = profile.host
    names = ", ".join(sorted({d.name for d in profile.devices}))
    render.line(f"gpucal calibrate: {len(profile.devices)} x {names} ({profile.source}, {host.backend}), "
                f"{host.mode} mode", console)
    print_figure_tables(rows, console)
    if cal.verdicts:
        counts: dict = {}
        for v in cal.verdicts:
            counts[v.label] = counts.get(v.label, 0) + 1
        render.line("P2P verdicts: " + ", ".join(f"{label} ({n} ordered pair(s))" for label, n in counts.items())
                    + "; gpucal p2p shows the evidence", console)
    print_anomalies(host.anomalies or [], console)
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
    if profile.source == "simulated":
        render.line("simulated: a virtual machine priced by its profile; no figure here is a measurement", console)
    render.line(f"wrote {path}", console)
