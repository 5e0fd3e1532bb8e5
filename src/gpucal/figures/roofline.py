"""``roofline.png``: the roofline of the profile's first device, with its GEMV, GEMM and stream kernels, and the
decode GEMMs of its decode-GEMM curve (``devices[].decode.gemm``: each measured point at m, n, k, with FLOP 2mnk
over the weight bytes and the activations, m·(n + k) elements, read and written)."""

from __future__ import annotations

import numpy as np

from gpucal import profiles
from gpucal.errors import InputError
from gpucal.figures.common import PlotSkipped, canvas_figure, title
from gpucal.profiles.model import Device, FlopsQuantity, KernelEntry
from gpucal.profiles.queries import DTYPES, flops_quantity
from gpucal.units import format_flops, format_rate

__all__ = ["roofline_figure"]


def _roofs(doc: profiles.Document, device: Device, kernels: list[KernelEntry]) -> list[tuple[str, float]]:
    """(mode, FLOP/s) of the planner's fp16 mode and of every dense mode the kernels ran at."""
    modes: list[tuple[str, float]] = []

    def add(mode: str, entry: FlopsQuantity) -> None:
        if entry.value and mode not in (m for m, _ in modes):
            modes.append((mode, float(entry.value)))

    for dtype in ["fp16"] + [k.dtype for k in kernels]:
        if dtype in DTYPES:
            try:
                add(*flops_quantity(device, doc, dtype, None))
            except InputError:
                continue
        elif dtype in device.dense_flops:
            add(dtype, device.dense_flops[dtype])
    return modes


def _draw_kernels(ax, kernels: list[KernelEntry], points: list[KernelEntry], intensity: list[float],
                  grid: np.ndarray, top_flops: float) -> None:
    """The stream kernels as dotted lines of their achieved bandwidth (up to ``top_flops``), the GEMV and
    GEMM cases as points at their intensity, each labelled by its case."""
    for k in kernels:
        if k.flop == 0 and k.bytes > 0:  # a stream kernel: its achieved bandwidth, up to the highest roof
            achieved_Bps = k.bytes / k.median_s
            under = grid[achieved_Bps * grid <= top_flops]
            ax.plot(under, achieved_Bps * under, ":", color="grey", lw=1.2,
                    label=f"{k.kind} {k.case}: {format_rate(achieved_Bps)}")
    for kind, marker in (("gemv", "o"), ("gemm", "s")):
        mine = [(i, k) for i, k in zip(intensity, points) if k.kind == kind]
        if not mine:
            continue
        xs = [i for i, _ in mine]
        ys = [k.flop / k.median_s for _, k in mine]
        how = "simulated" if any(k.source == "simulated" for _, k in mine) else "measured"
        ax.plot(xs, ys, marker, color="black", markersize=6, linestyle="none", label=f"{kind.upper()} ({how})")
        for x, y, (_, k) in zip(xs, ys, mine):
            below = kind == "gemm"  # on the flat roof: label under the point
            ax.annotate(k.case, (x, y), textcoords="offset points", xytext=(0, -14) if below else (5, 6),
                        ha="center" if below else "left", fontsize=7)


_ITEM_BYTES = {"fp16": 2, "bf16": 2, "fp8": 1, "fp32": 4}


def decode_points(device: Device) -> list[tuple[float, float, str]]:
    """(intensity FLOP/B, achieved FLOP/s, dtype) of every measured decode-GEMM point of ``device``."""
    out = []
    for dtype, curve in ((device.decode.gemm or {}) if device.decode else {}).items():
        item = _ITEM_BYTES[dtype]
        shapes = {n * k * item: (n, k) for n, k in curve.shapes}
        for row in curve.rows:
            for weight_bytes, seconds in row.points:
                shape = shapes.get(int(weight_bytes))
                if shape is None or seconds <= 0:
                    continue
                n, k = shape
                flop = 2.0 * row.m * n * k
                moved = weight_bytes + row.m * (n + k) * item
                out.append((flop / moved, flop / seconds, dtype))
    return out


def _draw_decode(ax, device: Device) -> list[float]:
    points = decode_points(device)
    for dtype in sorted({d for _, _, d in points}):
        mine = [(x, y) for x, y, d in points if d == dtype]
        ax.plot([x for x, _ in mine], [y for _, y in mine], "^", color="C2" if dtype == "bf16" else "C4",
                markersize=5, alpha=0.8, linestyle="none", label=f"decode GEMM {dtype} (m = 1 …)")
    return [x for x, _, _ in points]


def roofline_figure(doc: profiles.Document):
    """min(F, BW·I) for the first device's memory bandwidth and FLOP/s modes; its GEMV and GEMM cases and its
    decode GEMMs."""
    profile = doc.profile
    device = profile.devices[0]
    index = 0 if device.index is None else device.index
    bw_Bps = device.memory_bandwidth_Bps.value
    if bw_Bps is None:
        raise PlotSkipped(f"{doc.name}: devices[0] has no memory bandwidth ({device.memory_bandwidth_Bps.reason})")
    kernels = [k for k in profile.kernels or [] if k.device == index]
    roofs = _roofs(doc, device, kernels)
    if not roofs:
        raise PlotSkipped(f"{doc.name}: devices[0] has no FLOP/s for fp16 or for the kernels' dtypes")
    points = [k for k in kernels if k.flop > 0 and k.bytes > 0]
    intensity = [k.flop / k.bytes for k in points] + [x for x, _, _ in decode_points(device)]
    ridges = [f / bw_Bps for _, f in roofs]
    lo = min([0.1] + [i / 3 for i in intensity])
    hi = max([r * 30 for r in ridges] + [i * 3 for i in intensity])
    grid = np.geomspace(lo, hi, 400)
    fig = canvas_figure((9.5, 6.0))
    ax = fig.add_subplot()
    for i, ((mode, flops), ridge) in enumerate(zip(roofs, ridges)):
        colour = f"C{i}"
        ax.plot(grid, np.minimum(flops, bw_Bps * grid), "-", color=colour, lw=2,
                label=f"roof {mode}: {format_flops(flops)}, {format_rate(bw_Bps)}")
        ax.plot([ridge], [flops], "D", color=colour, markersize=7)
        ax.annotate(f"ridge {ridge:.3g} FLOP/B", (ridge, flops), textcoords="offset points", xytext=(6, -14),
                    fontsize=8, color=colour)
    _draw_kernels(ax, kernels, points, intensity[:len(points)], grid, max(f for _, f in roofs))
    decoded = _draw_decode(ax, device)
    if not points and not decoded:
        ax.text(0.02, 0.97, "no kernel measurements in this profile: the roof only", transform=ax.transAxes,
                va="top", fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("FLOP/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title(doc, f"{doc.name}: roofline of device {index} ({device.name})"))
    return fig
