"""``mpiexec -n N gpucal probe collectives``: NCCL all-reduce, all-gather, reduce-scatter, broadcast and
send/recv over the decode range, one rank per GPU (``probes/collectives.py``; docs/collectives.md).

Every rank checks the flags alike before the MPI world starts; only rank 0 prints. Exit 1 when a case
failed (a wrong output or an error), 0 when every case passed or was waived (no CuPy, no GPU).
"""

from __future__ import annotations

import sys

from gpucal import render
from gpucal.calibrate.collectives import run_collectives
from gpucal.commands.options import checked, link_sizes, mpi_world, simulated_net
from gpucal.errors import InputError
from gpucal.kernels.comm import RankError, abort
from gpucal.kernels.virtual_machine import parse_spec
from gpucal.probes.collectives import OPS, CollectivesConfig, decode_sizes
from gpucal.probes.memory import MPI_HOST_PER_BYTE, host_unfit
from gpucal.profiles.model import CollectiveEntry
from gpucal.profiles.names import resolve_document
from gpucal.units import format_bytes, format_rate, format_time, size_label

__all__ = ["run", "config_from_args"]

WHAT = "probe collectives"


def config_from_args(args):
    """The run's ``CollectivesConfig`` from the ``gpucal probe`` flags; flags that do not apply are refused."""
    for flag in ("dtype", "batches", "kernels", "gemv_shape", "pairs"):
        if getattr(args, flag, None) is not None:
            raise InputError(f"--{flag.replace('_', '-')}: the collectives probe does not take it")
    if getattr(args, "device", 0) != 0:
        raise InputError("--device: the collectives probe runs one rank per GPU, each on its host's GPU "
                         "numbered by its local rank; start it with mpiexec -n N instead")
    backend = args.backend
    virtual = backend == "virtual" or backend.startswith("virtual:")
    if not virtual and backend not in ("auto", "cupy"):
        raise InputError(f"--backend: the collectives probe runs on auto or cupy (NCCL through CuPy) or "
                         f"virtual:PROFILE[:N] (a simulated machine), not {backend!r}")
    if virtual:
        resolve_document(parse_spec(backend)[0], "--backend", "profile")
    extra = {"backend": backend}
    if args.ops:
        bad = [o for o in args.ops if o not in OPS]
        if bad:
            raise InputError(f"--ops: unknown op {bad[0]!r} (choose from {', '.join(OPS)})")
        extra["ops"] = tuple(dict.fromkeys(args.ops))
    if args.hidden is not None:
        extra["hidden"] = args.hidden
    if args.sizes is not None:
        extra["sizes"] = link_sizes(args.sizes)
    largest = max(extra.get("sizes") or decode_sizes(extra.get("hidden", CollectivesConfig.hidden)))
    why = host_unfit(f"a collective of {size_label(largest)}", MPI_HOST_PER_BYTE * largest)
    if why:
        raise InputError(f"{'--sizes' if args.sizes is not None else '--hidden'}: {why}; give smaller sizes")
    if args.budget is not None:
        if not args.budget > 0:  # argparse's type refuses it; a caller's namespace too
            raise InputError(f"--budget: must be positive, got {args.budget}")
        extra["budget_s"] = args.budget
    if args.simulate_net is not None:
        if not virtual:
            raise InputError("--simulate-net: needs --backend virtual:PROFILE (the simulated net joins virtual GPUs; "
                             "on real GPUs, NCCL's own transport is measured)")
        extra["simulate"] = simulated_net(args.simulate_net)
    extra["graphs"] = bool(args.graphs)
    return CollectivesConfig(**extra)


def run(args) -> int:
    config = checked(config_from_args, args)
    virtual = config.backend.startswith("virtual")
    # One rank is allowed on real GPUs (NCCL then moves nothing between GPUs, but its path can be checked on
    # a one-GPU machine); the simulated ring needs two.
    w = mpi_world(WHAT, simulate_hosts=config.simulate is not None, minimum=2 if virtual else 1,
                  ranks_per_host=config.simulate.ranks_per_host if config.simulate else 1)
    try:
        report = run_collectives(w, config)
    except RankError:
        raise  # every rank raises it alike; rank 0 prints it
    except BaseException as exc:  # a failure on this rank alone: end every rank rather than leave them waiting
        _abort(w, exc, abort)
        raise
    if w.is_root:
        if args.json:
            render.print_json({"probe": "collectives", "world": w.to_dict(), **report.to_dict()})
        else:
            show(w, report)
    return 1 if report.failed else 0


def _abort(w, exc: BaseException, abort) -> None:
    print(render.escape(f"gpucal {WHAT}: rank {w.rank}: {type(exc).__name__}: {exc}", layout=False), file=sys.stderr,
          flush=True)
    abort(1)


def _rate(value) -> str:
    return format_rate(value) if value is not None else "-"


def show(w, report, out=None) -> None:
    """The report as text: the header, one row per op (its fit), then every size of every op."""
    out = out or render.console()
    hosts = len(w.hosts)
    per_host = max(r.local_size for r in w.ranks)
    library = report.library or "NCCL (not run)"
    transport = ", ".join(report.transport) if report.transport else f"unknown ({report.transport_reason})"
    render.line(f"gpucal {WHAT}: {w.size} ranks on {hosts} host(s) ({per_host} per host"
                f"{', simulated hosts' if w.simulated_hosts else ''}), {library}; MPI: {w.library}", out)
    if report.waived:
        out.print(render.table(("op", "status"), [(r.case, "WAIVED") for r in report.results]))
        render.line(f"waived: every op, because {report.waived}", out)
        return
    render.line(f"transport: {transport}", out)
    if w.size == 1:
        render.line("one rank: NCCL moves nothing between GPUs (busbw 0); start one rank per GPU: mpiexec -n N", out)
    rows, notes, fit_notes = [], {}, []
    for e in (CollectiveEntry.model_validate(render.json_ready(e)) for e in report.entries):
        last = e.busbw_Bps[-1] if e.busbw_Bps else None
        alpha, beta = e.alpha_s.value, e.beta_Bps.value
        note = f"[{notes.setdefault(e.reason, len(notes) + 1)}]" if e.reason else ""
        mine = [r for r in report.results if r.params.get("op") == e.op and "bytes" in r.params
                and r.params["series"].endswith("-graph") == bool(e.graphs)]
        fit_note = render.fit_note(e, sum(r.noisy for r in mine), len(mine))
        if fit_note:
            fit_notes.append(f"{e.op}{' (graph)' if e.graphs else ''}: {fit_note}")
        rows.append((e.op + (" (graph)" if e.graphs else ""), e.nranks,
                     format_time(alpha) if alpha is not None else "-", _rate(beta),
                     f"{e.r2:.4f}" if e.r2 is not None else "-", _rate(last), f"{e.busbw_factor:.4g}",
                     "yes" if e.verified else "no", note))
    out.print(render.table(("op", "N", "alpha", "beta (S/t)", "R²", "busbw @ largest", "busbw factor", "checked",
                            "notes"), rows, right=(1, 2, 3, 4, 5, 6)))
    for reason, number in notes.items():
        render.line(f"[{number}] {reason}", out)
    for line in fit_notes:
        render.line(line, out)
    whole = {}
    for r in report.results:
        if r.status == "waived" and "bytes" not in r.params:  # a whole series waived
            whole.setdefault(r.reason, []).append(r.case)
    for reason, cases in whole.items():
        render.line(f"waived: {', '.join(cases)}: {reason}", out)
    rows = []
    for r in report.results:
        t = r.timing
        if r.status == "waived" and "bytes" not in r.params:  # a whole series waived: said in the table above
            continue
        rows.append((r.params["op"] + (" (graph)" if r.params["series"].endswith("-graph") else ""),
                     format_bytes(r.params["bytes"]) if "bytes" in r.params else "-", r.status,
                     format_time(t.median_s) if t else "-", f"{100 * t.cv:.2g} %" if t else "-", t.n if t else "-",
                     _rate(r.metrics.get("algbw_Bps")), _rate(r.metrics.get("busbw_Bps")),
                     "; ".join(x for x in ("noisy" if r.noisy else "", r.reason or "") if x)))
    out.print(render.table(("op", "S", "status", "median", "CV", "n", "algbw", "busbw", "notes"), rows,
                           right=(1, 3, 4, 5, 6, 7)))
    for op in dict.fromkeys(r.params["op"] for r in report.results):
        conv = next(r.byte_convention for r in report.results if r.params["op"] == op)
        render.line(f"bytes, {op}: {conv}", out)
    clock = ("priced by the ring model on a virtual clock" if report.source == "simulated" else
             "timed by CUDA events after an MPI barrier")
    render.line(f"statistic: median of n samples, each k back-to-back ops {clock} (a sample is the slowest rank's "
                "time per op), after warm-up; alpha and beta: least squares of "
                "t = alpha + S/beta, weighted by 1/t, over the median times, per regime (alpha of the smallest "
                "sizes', beta of the largest sizes'); every output checked exactly on every rank before and after "
                "timing", out)
    if report.source == "simulated" and report.link:
        link = report.link
        render.line(f"simulated: the bytes really move over MPI and are checked; the times are priced by the ring "
                    f"algorithms over {link['description']} (alpha {format_time(link['alpha_s'])}, beta "
                    f"{format_rate(link['beta_Bps'])}): no figure here is a measurement", out)
