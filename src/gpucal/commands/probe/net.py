"""``mpiexec -n N gpucal probe net``: MPI ping-pong between every pair of ranks, alpha/beta per pair
(``probes/net.py``; ``docs/network.md``). Only rank 0 prints."""

from __future__ import annotations

import sys

from gpucal import render
from gpucal.calibrate.network import run_net
from gpucal.commands.options import checked, link_sizes, mpi_world, simulated_net
from gpucal.errors import GpucalError, InputError
from gpucal.kernels.comm import abort
from gpucal.probes.memory import MPI_HOST_PER_BYTE, host_unfit
from gpucal.probes.net import BYTE_CONVENTION, NetConfig
from gpucal.profiles.model import NetworkEntry
from gpucal.units import format_rate, format_time, size_label

__all__ = ["run", "config_from_args"]

# flags of ``gpucal probe`` that the net probe refuses (attribute, flag, whether it is set)
_REFUSED = (
    ("backend", "--backend", lambda v: v not in (None, "auto")),
    ("device", "--device", lambda v: v not in (None, 0)),
    ("dtype", "--dtype", bool),
    ("batches", "--batches", bool),
    ("kernels", "--kernels", bool),
    ("gemv_shape", "--gemv-shape", bool),
    ("pairs", "--pairs", lambda v: v is not None),
    ("ops", "--ops", bool),
    ("hidden", "--hidden", lambda v: v is not None),
    ("graphs", "--graphs", bool),
)


def config_from_args(args):
    """The ``NetConfig`` of the flags, checked the same way on every rank (no communication)."""
    for attr, flag, is_set in _REFUSED:
        if is_set(getattr(args, attr, None)):
            raise InputError(f"{flag}: the net probe does not take it")
    net = simulated_net(getattr(args, "simulate_net", None))
    if net is not None and net.ranks_per_host > 1:
        raise InputError("--simulate-net: per-host: the net probe makes every rank a simulated host of its own "
                         "(ranks on one host would meet in shared memory, which a link preset does not price)")
    sizes = None
    if args.sizes is not None:
        sizes = tuple(sorted(set(link_sizes(args.sizes))))
        if len(sizes) < 3:
            raise InputError(f"--sizes: {args.sizes}: the alpha-beta fit needs at least 3 distinct sizes, "
                             f"got {len(sizes)}")
        why = host_unfit(f"a ping-pong of {size_label(sizes[-1])}", MPI_HOST_PER_BYTE * sizes[-1])
        if why:
            raise InputError(f"--sizes: {why}; give smaller sizes")
    if args.budget is not None and not args.budget > 0:  # argparse's type refuses it; a caller's namespace too
        raise InputError(f"--budget: must be positive, got {args.budget}")
    return NetConfig(sizes=sizes, budget_s=args.budget, simulate=net)


def run(args) -> int:
    config = checked(config_from_args, args)
    w = mpi_world("probe net", simulate_hosts=config.simulate is not None)
    try:
        report = run_net(w, config)
    except GpucalError:
        raise
    except Exception as exc:  # one rank's failure would leave the others waiting: end them all
        print(render.escape(f"gpucal probe net: rank {w.rank}: {type(exc).__name__}: {exc}", layout=False),
              file=sys.stderr)
        abort(1)
        raise
    code = 1 if report.failed else 0
    if not w.is_root:
        return code
    if args.json:
        render.print_json({"probe": "net", "simulated": report.source == "simulated", **report.to_dict()})
    else:
        _print_text(report)
    return code


def _pct(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_text(report) -> None:
    out = render.console()
    world = report.world
    hosts = world["hosts"]
    render.line(f"gpucal probe net: {world['size']} ranks on {len(hosts)} host(s), "
                f"{'simulated ' if world['simulated_hosts'] else ''}MPI library {' '.join(world['library'].split())}", out)
    if not report.entries:
        render.line("no pair to measure (one host, pairs between host leaders)", out)
    entries = [NetworkEntry.model_validate(render.json_ready(e)) for e in report.entries]
    rows, notes = [], []
    for e in entries:
        alpha, beta, lat = e.alpha_s.value, e.beta_Bps.value, e.latency_s.value
        pair = [r for r in report.results if (r.params["src_rank"], r.params["dst_rank"]) == (e.src_rank, e.dst_rank)]
        rows.append((f"rank{e.src_rank}<->rank{e.dst_rank}", f"{e.src_hostname}<->{e.dst_hostname}",
                     "yes" if e.same_host else "no", format_time(alpha) if alpha is not None else "-",
                     format_rate(beta) if beta is not None else "-", _pct(e.r2),
                     format_time(lat) if lat is not None else "-", len(e.points),
                     "yes" if e.verified else "NO"))
        note = render.fit_note(e, sum(r.noisy for r in pair), len(pair))
        if note:
            notes.append(f"rank{e.src_rank}<->rank{e.dst_rank}: {note}")
    if rows:
        out.print(render.table(("pair", "hosts", "same host", "alpha", "beta", "R²", "latency", "sizes", "checked"),
                               rows, right=(3, 4, 5, 6, 7), no_wrap=(0, 1)))
    for note in notes:
        render.line(note, out)
    for e in entries:
        if e.reason:
            render.line(f"rank{e.src_rank}<->rank{e.dst_rank}: no fit: {e.reason}", out)
    for r in report.results:
        if r.status != "passed":
            render.line(f"{r.case}: {r.status}: {r.reason}", out)
    if len(hosts) >= 2:
        matrix = report.matrix()
        out.print(render.table(("beta (B/s)", *hosts),
                               [(name, *("-" if v is None else format_rate(v) for v in row))
                                for name, row in zip(hosts, matrix)],
                               title="host to host: fitted beta, one way (slowest rank pair)",
                               right=range(1, len(hosts) + 1)))
    for e in entries:
        if e.same_host:
            render.line(f"ranks {e.src_rank} and {e.dst_rank} share host {e.src_hostname}: MPI's shared "
                        "memory, not the network", out)
    render.line(f"bytes: {BYTE_CONVENTION}", out)
    render.line("statistic: per size the median of n samples (each k round trips, after warm-up); alpha, beta: "
                "least squares of t = alpha + n/beta on relative error over the sizes, per regime (MPI's eager and "
                "rendezvous protocols): alpha of the smallest sizes' regime, beta of the largest sizes'; latency: "
                "median at the smallest size; times through mpi4py (alpha includes its cost per call, about "
                "0.7 µs over a C loop); every message's bytes compared before and after timing", out)
    net = report.simulated_net
    if net is not None:
        render.line(f"simulated: every rank is a host of its own and the times are priced by the link {net['name']} "
                    f"(alpha {format_time(net['alpha_s'])}, beta {format_rate(net['beta_Bps'])}, noise "
                    f"{100 * net['noise_frac']:g} %); the bytes really moved over MPI and were compared; no figure "
                    "here is a measurement", out)
