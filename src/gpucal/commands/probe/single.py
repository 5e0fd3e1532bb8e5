"""``gpucal probe NAME`` for the probes that run on one backend (membw, flops and the copy probes): the
flags checked into the probe's config, the run, and its results as a table or JSON."""

from __future__ import annotations

import argparse
import sys

from gpucal import render
from gpucal.commands.options import (
    bytes_list,
    check_memory,
    check_pairs,
    device_pairs,
    link_sizes,
    list_items,
    whole,
)
from gpucal.errors import InputError
from gpucal.kernels.backend import select
from gpucal.kernels.reference import GEMM_MODES
from gpucal.probes import flops, membw
from gpucal.probes.allreduce import AllreduceConfig
from gpucal.probes.attention import AttentionConfig
from gpucal.probes.decode_gemm import DecodeGemmConfig
from gpucal.probes.launch import LaunchConfig
from gpucal.probes.links import LinkConfig
from gpucal.units import format_flops, format_rate, format_time

__all__ = ["LINK_PROBES", "MPI_FLAGS", "config_of", "int_list", "names", "results_table", "run_single"]

LINK_PROBES = ("host-link", "d2d", "peer", "latency")
# the flags only the probes over MPI take (attribute names)
MPI_FLAGS = ("simulate_net", "ops", "hidden", "graphs")


def int_list(text: str) -> tuple[int, ...]:
    """``1,2,4``: positive whole numbers separated by commas (``--batches``)."""
    items = list_items(text)
    try:
        values = tuple(whole(v) for v in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def names(text: str) -> tuple[str, ...]:
    """``fp16,bf16``: names separated by commas (``--dtype``, ``--kernels``, ``--ops``)."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return values


DECODE_PROBES = ("decode-gemm", "attention", "launch", "allreduce")
# the flags each decode probe takes (attribute names), beyond --backend, --device, --budget and --json
_DECODE_FLAGS = {"decode-gemm": ("dtype", "batches", "shapes"), "attention": ("dtype", "batches", "context"),
                 "launch": (), "allreduce": ("batches", "sizes", "hidden", "graphs")}
_OTHER_FLAGS = ("dtype", "sizes", "batches", "kernels", "gemv_shape", "pairs", "shapes", "context", "hidden", "graphs")


def _shapes(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in list_items(text):
        try:
            n, k = (whole(v) for v in item.lower().split("x"))
            if n < 1 or k < 1:
                raise ValueError
        except ValueError:
            raise InputError(f"--shapes: expected NxK,NxK... with positive whole numbers, got {text!r}") from None
        out.append((n, k))
    return tuple(out)


def _decode_config(args, name: str):
    takes = _DECODE_FLAGS[name]
    for flag in _OTHER_FLAGS:
        if flag not in takes and getattr(args, flag, None) not in (None, False):
            raise InputError(f"--{flag.replace('_', '-')}: the {name} probe does not take it")
    extra = {"budget_s": args.budget} if args.budget is not None else {}
    if args.dtype:
        bad = [d for d in args.dtype if d not in ("fp16", "bf16", "fp8", "fp32")]
        if bad:
            raise InputError(f"--dtype: unknown dtype {bad[0]!r} (choose from fp16, bf16, fp8, fp32)")
        extra["dtypes"] = args.dtype
    if args.batches:
        extra["batches"] = args.batches
    if name == "decode-gemm":
        if args.shapes is not None:
            extra["shapes"] = _shapes(args.shapes)
        return DecodeGemmConfig(**extra)
    if name == "attention":
        if args.context:
            extra["contexts"] = args.context
        return AttentionConfig(**extra)
    if name == "launch":
        return LaunchConfig(**extra)
    if args.sizes is not None:
        if args.batches:
            raise InputError("--sizes: give the all-reduce's sizes or its batches (--batches, sizes B·hidden·2), "
                             "not both")
        extra["sizes"] = bytes_list(args.sizes, "--sizes")
    if args.hidden is not None:
        extra["hidden"] = args.hidden
    return AllreduceConfig(graphs=bool(args.graphs), **extra)


def config_of(args, name: str):
    """The config of probe ``name`` from the flags; a flag that probe does not take is refused by name."""
    extra = {}
    if name in DECODE_PROBES:
        return _decode_config(args, name)
    for flag in ("shapes", "context"):
        if getattr(args, flag, None) is not None:
            raise InputError(f"--{flag}: the {name} probe does not take it")
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
            sizes = bytes_list(args.sizes, "--sizes")
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
            extra["sizes"] = int_list(args.sizes)
        except argparse.ArgumentTypeError as exc:
            raise InputError(f"--sizes: {exc}") from None
    return flops.FlopsConfig(**extra)


def _link_config(args, name: str):
    for flag in ("dtype", "batches", "kernels", "gemv_shape"):
        if getattr(args, flag) is not None:
            raise InputError(f"--{flag.replace('_', '-')}: the {name} probe does not take it")
    if args.pairs is not None and name not in ("peer", "latency"):
        raise InputError(f"--pairs: the {name} probe does not take it (only peer and latency)")
    extra = {"budget_s": args.budget, "pairs": device_pairs(args.pairs)}
    if args.sizes is not None:
        extra["latency_sizes" if name == "latency" else "sizes"] = link_sizes(args.sizes)
    return LinkConfig(**extra)


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


def run_single(args, probes) -> int:
    """Run the probe ``args.name`` (one of ``probes``) on one backend and show its results."""
    config = config_of(args, args.name)
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
