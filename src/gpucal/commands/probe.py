"""``gpucal probe NAME``: run one probe and show its results (``gpucal probe --list`` lists them)."""

from __future__ import annotations

import argparse
import sys

from gpucal import limits, render
from gpucal.commands.args import budget, int_in, nonempty, whole
from gpucal.errors import InputError
from gpucal.limits import MODEL_MAXIMA
from gpucal.units import UnitError, format_flops, format_rate, format_time, parse_whole_bytes

__all__ = ["add_parser", "run", "results_table", "backend_arg", "link_sizes", "check_memory", "check_pairs"]


def _items(text: str) -> list[str]:
    """The comma-separated items of a list flag; an empty item or more than ``limits.MAX_LIST_VALUES`` is refused."""
    items = [v.strip() for v in text.split(",")]
    if any(not v for v in items):
        raise argparse.ArgumentTypeError(f"an empty item in {text!r}")
    if len(items) > limits.MAX_LIST_VALUES:
        raise argparse.ArgumentTypeError(f"more than {limits.MAX_LIST_VALUES} values in one list")
    return items


def _int_list(text: str) -> tuple[int, ...]:
    items = _items(text)
    try:
        values = tuple(whole(v) for v in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return values


def _bytes_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(parse_whole_bytes(v) for v in _items(text))
    except (UnitError, argparse.ArgumentTypeError) as exc:
        raise InputError(f"{flag}: {exc}") from None


def link_sizes(text: str, flag: str = "--sizes") -> tuple[int, ...]:
    """``4B..256MiB`` (powers of 2 between) or a list ``4B,1MiB``: copy sizes in whole bytes (``--sizes``)."""
    from gpucal.probes.links import sweep_sizes

    if ".." not in text:
        return _bytes_list(text, flag)
    lo_text, _, hi_text = text.partition("..")
    if ".." in hi_text or hi_text.startswith(".") or lo_text.endswith("."):
        raise InputError(f"{flag}: {text}: expected one range A..B of two sizes, such as 4B..256MiB")
    if not lo_text.strip() or not hi_text.strip():
        raise InputError(f"{flag}: {text}: a range needs both ends, such as 4B..256MiB")
    lo, hi = _bytes_list(lo_text, flag)[0], _bytes_list(hi_text, flag)[0]
    if "," in lo_text or "," in hi_text:
        raise InputError(f"{flag}: {text}: give a list or a range A..B, not both")
    if lo > hi:
        raise InputError(f"{flag}: {text}: the range runs from the smaller size to the larger")
    sizes = sweep_sizes(lo, hi)
    if not sizes:
        raise InputError(f"{flag}: {text}: no power of 2 lies in that range")
    return sizes


LINK_PROBES = ("host-link", "d2d", "peer", "latency")
# Probes that run over MPI (every rank of mpiexec), not on one backend: their own commands.
MPI_PROBES = {"net": "ping-pong between every pair of ranks over MPI, 8 B..64 MiB: alpha/beta per pair of hosts "
                     "(mpiexec -n N)",
              "collectives": "NCCL all-reduce, all-gather, reduce-scatter, broadcast, send/recv over the decode range, "
                             "one rank per GPU: alpha/beta, algbw and busbw (mpiexec -n N)"}


def backend_arg(p) -> None:
    p.add_argument("--backend", default="auto", metavar="NAME",
                   help="device layer: cupy (preferred), numba, simulator (the Numba simulator on the CPU: checks "
                        "kernels, no GPU figures), or virtual:PROFILE[:N][+OPTION...] (a simulated machine of N "
                        "cards of a profile, e.g. virtual:rtx4090:8; docs/links.md). Default: auto (cupy, then numba)")
    p.add_argument("--device", type=int_in(0, limits.MAX_DEVICES - 1), default=0, metavar="N",
                   help="CUDA device index (default 0)")


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="run one probe: membw, flops, host-link, d2d, peer, latency (gpucal probe --list)",
                       description="Run one probe: verified, timed measurements with their statistics.")
    p.add_argument("name", nargs="?", metavar="NAME", help="the probe (gpucal probe --list)")
    p.add_argument("--list", action="store_true", help="list the probes and exit")
    backend_arg(p)
    p.add_argument("--dtype", type=_names, metavar="LIST",
                   help="membw: GEMV dtypes (fp16,bf16,fp32); flops: dtypes or modes "
                        "(fp64,fp32,tf32,fp16,bf16 or e.g. fp16_fp16acc). Default: all the backend has")
    p.add_argument("--sizes", type=nonempty, metavar="LIST",
                   help="membw: bytes per stream buffer (e.g. 512MiB,1GiB); flops: square GEMM sizes (e.g. 4096,8192); "
                        "copy probes: sizes, as a list or a range of powers of 2 (4B..256MiB)")
    p.add_argument("--batches", type=_int_list, metavar="LIST",
                   help="GEMV batches (membw) and decode-shape m (flops); default 1,2,4,8,16")
    p.add_argument("--kernels", type=_names, metavar="LIST", help="membw: copy,read,write,triad,gemv (default all)")
    p.add_argument("--gemv-shape", type=nonempty, metavar="MxK", help="membw: rows and columns of the GEMV weight (default from the L2)")
    p.add_argument("--pairs", type=nonempty, metavar="LIST", help="peer, latency: pairs of devices, e.g. 0-1,2-3 (default every pair)")
    p.add_argument("--budget", type=budget, metavar="S",
                   help="seconds of sampling per case at most, e.g. 2 or 500ms (default 2)")
    mpi = p.add_argument_group("over MPI (mpiexec -n N gpucal probe net|collectives)")
    mpi.add_argument("--simulate-net", type=nonempty, metavar="LINK[+OPTION...]",
                     help="net, collectives: every rank a host of its own, joined by a simulated LINK (a link preset "
                          "such as eth1g, or alpha=50us,beta=1Gbit/s; options +noise=F, +seed=N); the bytes really "
                          "move over MPI and are checked, the times are priced by the link and say simulated")
    mpi.add_argument("--ops", type=_names, metavar="LIST",
                     help="collectives: all-reduce,all-gather,reduce-scatter,broadcast,send-recv (default all)")
    mpi.add_argument("--hidden", type=int_in(1, MODEL_MAXIMA["hidden"]), metavar="H",
                     help="collectives: hidden size of the decode range B*h*2 bytes, B = 1..1024 (default 8192)")
    mpi.add_argument("--graphs", action="store_true", help="collectives: also time each op captured in a CUDA graph")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(run=run)


def _config(args, name: str):
    from gpucal.kernels.reference import GEMM_MODES
    from gpucal.probes import flops, membw

    extra = {}
    if name in LINK_PROBES:
        return _link_config(args, name)
    if args.pairs is not None:
        raise InputError(f"--pairs: the {name} probe does not take it (only peer and latency)")
    if args.batches:
        extra["batches" if name == "membw" else "decode_batches"] = args.batches
    if args.budget is not None:
        extra["budget_s"] = args.budget
    if name == "membw":
        if args.dtype:
            bad = [d for d in args.dtype if d not in ("fp16", "bf16", "fp32")]
            if bad:
                raise InputError(f"--dtype: unknown GEMV dtype {bad[0]!r} (choose from fp16, bf16, fp32)")
            extra["dtypes"] = args.dtype
        if args.kernels:
            bad = [k for k in args.kernels if k not in membw.KERNELS]
            if bad:
                raise InputError(f"--kernels: unknown kernel {bad[0]!r} (choose from {', '.join(membw.KERNELS)})")
            extra["kernels"] = args.kernels
        if args.sizes is not None:
            sizes = _bytes_list(args.sizes, "--sizes")
            if any(s % 16 for s in sizes):
                raise InputError("--sizes: each stream buffer must be a multiple of 16 bytes")
            extra["stream_sizes"] = sizes
        if args.gemv_shape is not None:
            try:
                m, k = (whole(v) for v in args.gemv_shape.lower().split("x"))
                if m < 1 or k < 1:
                    raise ValueError
            except ValueError:
                raise InputError(f"--gemv-shape: expected MxK with positive whole numbers, got {args.gemv_shape!r}") from None
            extra["gemv_shape"] = (m, k)
        return membw.MembwConfig(**extra)
    if args.kernels or args.gemv_shape is not None:
        raise InputError(f"--{'kernels' if args.kernels else 'gemv-shape'}: only the membw probe takes it")
    if args.dtype:
        modes = []
        for d in args.dtype:
            found = [m for m in GEMM_MODES if m == d or GEMM_MODES[m].dtype_in == d and m != "tf32"]
            if not found:
                raise InputError(f"--dtype: unknown dtype or mode {d!r} (modes: {', '.join(GEMM_MODES)})")
            modes += [m for m in found if m not in modes]
        extra["modes"] = tuple(modes)
    if args.sizes is not None:
        try:
            extra["sizes"] = _int_list(args.sizes)
        except argparse.ArgumentTypeError as exc:
            raise InputError(f"--sizes: {exc}") from None
    return flops.FlopsConfig(**extra)


def _link_config(args, name: str):
    from gpucal.commands.p2p import _pairs
    from gpucal.probes.links import LinkConfig

    for flag in ("dtype", "batches", "kernels", "gemv_shape"):
        if getattr(args, flag) is not None:
            raise InputError(f"--{flag.replace('_', '-')}: the {name} probe does not take it")
    if args.pairs is not None and name not in ("peer", "latency"):
        raise InputError(f"--pairs: the {name} probe does not take it (only peer and latency)")
    extra = {"budget_s": args.budget, "pairs": _pairs(args.pairs)}
    if args.sizes is not None:
        extra["latency_sizes" if name == "latency" else "sizes"] = link_sizes(args.sizes)
    return LinkConfig(**extra)


# the config fields a case's size comes from -> the flag that sets them
_FLAGS = {"stream_sizes": "--sizes", "sizes": "--sizes", "latency_sizes": "--sizes", "gemv_shape": "--gemv-shape",
          "batches": "--batches", "decode_batches": "--batches"}


def check_memory(backend, needs, args) -> None:
    """Refuse (naming the flag and the limit) a config whose largest case cannot fit this machine's device
    or host memory, before anything is allocated."""
    from gpucal.probes.memory import unfit

    found = unfit(backend, needs)
    if found is None:
        return
    need, why = found
    flags = list(dict.fromkeys(_FLAGS[f] for f in need.fields))
    given = [f for f in flags if getattr(args, f[2:].replace("-", "_"), None) is not None]
    raise InputError(f"{', '.join(given or flags)}: {why}{'' if given else ' (the default)'}; give smaller sizes")


def check_pairs(backend, pairs) -> None:
    """``--pairs`` against the machine: each pair two of its devices (on one device, no pair exists)."""
    if pairs is None:
        return
    n = backend.device_count()
    for a, b in pairs:
        if a == b or not (0 <= a < n and 0 <= b < n):
            raise InputError(f"--pairs: {a}-{b} is not a pair of two of this machine's {n} device(s)")


def _rate(r) -> str:
    m = r.metrics
    parts = []
    if "link_Bps" in m:
        parts.append(format_rate(m["link_Bps"]))
    if "sum_Bps" in m:
        parts.append(f"{format_rate(m['fwd_Bps'])} + {format_rate(m['rev_Bps'])} = {format_rate(m['sum_Bps'])}")
    if "latency_s" in m:
        parts.append(f"{format_time(m['latency_s'])} per copy")
    if "copy_Bps" in m:
        parts.append(f"copy {format_rate(m['copy_Bps'])}")
    if "dram_Bps" in m:
        parts.append(f"DRAM {format_rate(m['dram_Bps'])}")
    if "flops" in m and r.probe == "flops":
        parts.insert(0, format_flops(m["flops"]))
    return ", ".join(parts)


def results_table(results):
    rows = []
    for r in results:
        t = r.timing
        notes = [x for x in ("noisy" if r.noisy else "", "throttled" if r.throttled else "") if x]
        if r.status != "passed":
            notes.append(r.reason or "")
        eff = r.metrics.get("efficiency_frac")
        rows.append((r.case, r.status, format_time(t.median_s) if t else "-",
                     f"{format_time(t.p10_s)}–{format_time(t.p90_s)}" if t else "-",
                     f"{100 * t.cv:.2g} %" if t else "-", t.n if t else "-", _rate(r) or "-",
                     render.percent(eff) if eff is not None else "-", "; ".join(notes)))
    return render.table(("case", "status", "median", "p10–p90", "CV", "n", "rate", "of peak", "notes"), rows,
                        right=(2, 4, 5, 7))


def run(args) -> int:
    from gpucal.kernels.backend import select
    from gpucal.probes.base import all_probes

    probes = all_probes()
    if args.name is not None and not args.name.strip():
        raise InputError("NAME: the probe's name is empty (gpucal probe --list lists them)")
    if args.list or args.name is None:
        listing = {name: p.description for name, p in probes.items()} | MPI_PROBES
        if args.json:
            render.print_json(listing)
        else:
            render.print_table(("probe", "what it measures"), list(listing.items()))
        return 0
    if args.name in MPI_PROBES:
        from importlib import import_module

        return import_module(f"gpucal.commands.{args.name}").run(args)
    mpi_flags = [f for f in ("simulate_net", "ops", "hidden", "graphs") if getattr(args, f) not in (None, False)]
    if mpi_flags:
        raise InputError(f"--{mpi_flags[0].replace('_', '-')}: only the net and collectives probes take it")
    if args.name not in probes:
        raise InputError(f"NAME: unknown probe {args.name!r} (choose from {', '.join([*probes, *MPI_PROBES])})")
    config = _config(args, args.name)
    backend = select(args.backend, args.device)
    probe = probes[args.name]
    if args.name in ("peer", "latency"):
        check_pairs(backend, config.pairs)  # before applicability: on one device, --pairs is what is wrong
    waived = probe.applicable(backend)
    if waived:
        raise InputError(f"--backend: the {args.name} probe cannot run on {backend.name}: {waived}")
    if probe.needs is not None:
        check_memory(backend, probe.needs(backend, config), args)
    show = sys.stderr.isatty() and not args.json
    if show:
        with render.console(stderr=True).status(f"gpucal probe {args.name} on {backend.name} ..."):
            results = probe.run(backend, config)
    else:
        results = probe.run(backend, config)
    device = backend.device()
    failed = any(r.status in ("failed", "error") for r in results)
    if args.json:
        render.print_json({"probe": args.name, "backend": backend.name, "simulated": backend.simulated,
                           "device": device.name, "versions": backend.versions(),
                           "results": [r.to_dict() for r in results]})
        return 1 if failed else 0
    out = render.console()
    render.line(f"gpucal probe {args.name}: backend {backend.name}, device {device.name}", out)
    out.print(results_table(results))
    conventions = sorted({r.byte_convention for r in results if r.byte_convention})
    for c in conventions:
        render.line(f"bytes: {c}", out)
    render.line("statistic: median of n samples (each of k back-to-back runs), after warm-up; every output verified "
                "before timing", out)
    if backend.simulated and backend.clock == "virtual":
        render.line("simulated: a virtual machine computes in NumPy and prices each case by its profile; no figure "
                    "here is a measurement", out)
    elif backend.simulated:
        render.line("simulated: the Numba simulator runs kernels on the CPU; these times check nothing but that "
                    "the kernels ran, and are no GPU figures", out)
    return 1 if failed else 0
