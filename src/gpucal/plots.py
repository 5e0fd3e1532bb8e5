"""Figures of a profile, as PNG files: copy bandwidth, the P2P verdicts, the roofline, the planner's curves.

``gpucal.plot_files.write_plots(doc, out_dir)`` writes ``bandwidth.png``, ``p2p.png``, ``roofline.png``,
``plan.png`` and ``network.png`` and says, per figure, where it went or why it was skipped (a datasheet profile
has no copy series and no links; one device has no P2P; only a cluster profile has a network). Each figure is
a function here that returns the matplotlib ``Figure`` (``bandwidth_figure``, ``p2p_figure``, ``roofline_figure``,
``plan_figure``, and ``gpucal.plot_network.network_figure``), and the plan's numbers come from
``plan_curves``, which calls the planner (``gpucal.plan.evaluate``) exactly as ``gpucal plan`` does.

matplotlib is imported here only, lazily, and used without pyplot: each figure is a
``matplotlib.figure.Figure`` on its own Agg canvas, so that no global state is shared (thread-safe).
See docs/plots.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpucal import profiles
from gpucal.errors import InputError
from gpucal.profiles.queries import DTYPES, flops_entry, gpu_of, planner_link, resolve_model
from gpucal.plan import Layout, evaluate, valid_tp
from gpucal.plan.spec import NO_LINK, GpuSpec
from gpucal.units import format_flops, format_rate, format_time

__all__ = ["FIGURES", "PLAN_BATCHES", "VERDICT_COLOURS", "PlotSkipped", "PlanCurves", "plan_curves",
           "bandwidth_figure", "p2p_figure", "roofline_figure", "plan_figure"]

FIGURES = ("bandwidth", "p2p", "roofline", "plan", "network")
PLAN_BATCHES = tuple(2 ** k for k in range(11))  # 1 .. 1024
PLAN_STRATEGIES = ("pp", "tp")
VERDICT_COLOURS = {"nvlink": "#1b7837", "p2p-pcie": "#7fbf7b", "host-staged": "#fdb863",
                   "p2p-slower-than-staged": "#e66101", "p2p-corrupt": "#d7191c"}
NOT_MEASURED_COLOUR = "#d9d9d9"
PATH_ORDER = ("h2d", "d2h", "d2d", "p2p", "driver-staged", "host-staged")
LEGEND_MAX_SERIES = 10
_DPI = 100
_GB = 1e9


class PlotSkipped(Exception):
    """A figure the profile lacks the data for; ``reason`` says what is missing."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def fit_curves(pieces, alpha_s, beta_Bps, sizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(bytes, seconds) of each regime's ``t = alpha + n/beta`` over its own sizes (``pieces`` as a profile
    stores them); without regimes, the one line over ``sizes``; none without a fit."""
    if not pieces:
        if alpha_s is None or not beta_Bps:
            return []
        pieces = [{"lo_bytes": float(np.min(sizes)), "hi_bytes": float(np.max(sizes)), "alpha_s": alpha_s,
                   "beta_Bps": beta_Bps}]
    out = []
    for piece in pieces:
        grid = np.geomspace(max(piece["lo_bytes"], 1), max(piece["hi_bytes"], 1), 100)
        out.append((grid, max(piece["alpha_s"], 0.0) + grid / piece["beta_Bps"]))
    return out


def fit_label(curves: int, alpha_s, beta_Bps) -> str:
    if curves > 1:
        return f": {curves} regimes, α {format_time(alpha_s)} (small), β {format_rate(beta_Bps)} (large)"
    return f": α {format_time(alpha_s)}, β {format_rate(beta_Bps)}" if curves else ""


def _canvas_figure(figsize):
    """A Figure on its own Agg canvas (no pyplot); ``InputError`` when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("matplotlib is not installed: pip install 'gpucal[plot]'") from None
    fig = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _title(doc: profiles.Document, text: str) -> str:
    return f"{text} (simulated)" if doc.data.get("source") == "simulated" else text


def _lacks(doc: profiles.Document, what: str) -> PlotSkipped:
    source = doc.data.get("source")
    if source in ("measured", "simulated"):
        return PlotSkipped(f"{doc.name} has no {what}")
    return PlotSkipped(f"{doc.name} is a {source} profile: no {what}; gpucal calibrate measures them")


# -- bandwidth against size ------------------------------------------------------------------------------

def bandwidth_figure(doc: profiles.Document):
    """Per copy series in ``fits[]``: measured n/t against n (log-log) and the fit n/(alpha + n/beta)."""
    fits = [f for f in doc.data.get("fits") or [] if f.get("points")]
    if not fits:
        raise _lacks(doc, "copy series (fits[])")
    paths = [p for p in PATH_ORDER if any(f["path"] == p for f in fits)]
    paths += sorted({f["path"] for f in fits} - set(paths))
    ncols = min(2, len(paths))
    nrows = -(-len(paths) // ncols)
    fig = _canvas_figure((7.5 * ncols, 4.8 * nrows))
    fig.suptitle(_title(doc, f"{doc.name}: copy bandwidth against size"))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(paths):]:
        ax.set_visible(False)
    for ax, path in zip(axes, paths):
        series = sorted((f for f in fits if f["path"] == path), key=lambda f: (f["verified"], f["series"]))
        handles = []
        for i, fit in enumerate(series):
            pts = np.array([p for p in fit["points"] if p[0] > 0 and p[1] > 0], dtype=float).reshape(-1, 2)
            n, t = pts[:, 0], pts[:, 1]
            if not fit["verified"]:
                reason = (fit.get("reason") or "copy check failed")[:60]
                h = ax.plot(n, n / t / _GB, "x", color="red", markersize=8, mew=2,
                            label=f"{fit['series']}: NOT verified ({reason})")[0]
                handles.append(h)
                continue
            colour = f"C{i % 10}"
            ax.plot(n, n / t / _GB, "o", color=colour, markersize=4)
            alpha, beta = fit.get("alpha_s"), fit.get("beta_Bps")
            curves = fit_curves(fit.get("pieces"), alpha, beta, n)
            for grid, t_s in curves:
                ax.plot(grid, grid / t_s / _GB, "-", color=colour, lw=1.2)
            label = fit["series"] + fit_label(len(curves), alpha, beta)
            handles.append(ax.plot([], [], "o-", color=colour, markersize=4, label=label)[0])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(path)
        ax.set_xlabel("bytes per copy")
        ax.set_ylabel("bandwidth (GB/s)")
        ax.grid(True, which="both", alpha=0.3)
        shown = handles[:LEGEND_MAX_SERIES]
        labels = [h.get_label() for h in shown]
        if len(handles) > len(shown):
            shown.append(ax.plot([], [], " ")[0])
            labels.append(f"... and {len(handles) - LEGEND_MAX_SERIES} more series")
        ax.legend(shown, labels, fontsize=7, loc="lower right")
    return fig


# -- the P2P verdicts --------------------------------------------------------------------------------------

def _device_count(doc: profiles.Document) -> int:
    return sum(int(d.get("count", 1)) for d in doc.data.get("devices") or [])


def p2p_figure(doc: profiles.Document):
    """A source x destination matrix of ``links[]``, coloured by verdict, each cell its verdict and beta."""
    links = doc.data.get("links") or []
    n = max([_device_count(doc)] + [max(item["src"], item["dst"]) + 1 for item in links])
    if not links and doc.data.get("source") not in ("measured", "simulated"):
        raise _lacks(doc, "measured links (links[])")
    if n < 2:
        raise PlotSkipped("one device: P2P not applicable")
    if not links:
        raise PlotSkipped(f"{doc.name} has no links measured between its {n} devices")
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    verdicts = list(VERDICT_COLOURS)
    codes = np.full((n, n), float(len(verdicts)))  # not measured
    np.fill_diagonal(codes, np.nan)
    size = min(max(5.0, 1.5 * n + 2.0), 20.0)  # inches; cells of 1.5 in up to 12 devices, then smaller
    fig = _canvas_figure((size, size + 0.8))
    ax = fig.add_subplot()
    font = 8.0 * min(1.0, size / (1.5 * n + 2.0))
    for item in links:
        codes[item["src"], item["dst"]] = verdicts.index(item["verdict"])
        beta = (item.get("beta_Bps") or {}).get("value")
        text = f"{item['verdict']}\n" + (f"{beta / _GB:.3g} GB/s" if beta is not None else "beta unknown")
        if item.get("flags"):
            text += "\n" + ", ".join(item["flags"])
        ax.text(item["dst"], item["src"], text, ha="center", va="center", fontsize=font)
    cmap = ListedColormap([VERDICT_COLOURS[v] for v in verdicts] + [NOT_MEASURED_COLOUR]).with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(codes), cmap=cmap, vmin=-0.5, vmax=len(verdicts) + 0.5)
    ticks = range(n)
    ax.set_xticks(ticks, [f"dev{i}" for i in ticks])
    ax.set_yticks(ticks, [f"dev{i}" for i in ticks])
    ax.set_xlabel("destination device")
    ax.set_ylabel("source device")
    ax.set_title(_title(doc, f"{doc.name}: P2P verdict and beta per ordered pair"))
    present = sorted({item["verdict"] for item in links}, key=verdicts.index)
    legend = [Patch(color=VERDICT_COLOURS[v], label=v) for v in present]
    if np.any(codes == len(verdicts)):
        legend.append(Patch(color=NOT_MEASURED_COLOUR, label="not measured"))
    fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8)
    return fig


# -- the roofline --------------------------------------------------------------------------------------------

def _roofs(doc: profiles.Document, device: dict, kernels: list) -> list[tuple[str, float]]:
    """(mode, FLOP/s) of the planner's fp16 mode and of every dense mode the kernels ran at."""
    modes: list[tuple[str, float]] = []

    def add(mode, entry):
        if entry.get("value") and mode not in (m for m, _ in modes):
            modes.append((mode, float(entry["value"])))

    for dtype in ["fp16"] + [k.get("dtype") for k in kernels]:
        if dtype in DTYPES:
            try:
                add(*flops_entry(device, doc, dtype, None))
            except InputError:
                continue
        elif dtype in device.get("dense_flops", {}):
            add(dtype, device["dense_flops"][dtype])
    return modes


def roofline_figure(doc: profiles.Document):
    """min(F, BW·I) for the first device's memory bandwidth and FLOP/s modes; its GEMV and GEMM cases."""
    device = doc.data["devices"][0]
    index = device.get("index", 0)
    bw = device["memory_bandwidth_Bps"]["value"]
    if bw is None:
        raise PlotSkipped(f"{doc.name}: devices[0] has no memory bandwidth ({device['memory_bandwidth_Bps'].get('reason')})")
    kernels = [k for k in doc.data.get("kernels") or [] if k["device"] == index]
    roofs = _roofs(doc, device, kernels)
    if not roofs:
        raise PlotSkipped(f"{doc.name}: devices[0] has no FLOP/s for fp16 or for the kernels' dtypes")
    points = [k for k in kernels if k["flop"] > 0 and k["bytes"] > 0]
    intensity = [k["flop"] / k["bytes"] for k in points]
    ridges = [f / bw for _, f in roofs]
    lo = min([0.1] + [i / 3 for i in intensity])
    hi = max([r * 30 for r in ridges] + [i * 3 for i in intensity])
    grid = np.geomspace(lo, hi, 400)
    fig = _canvas_figure((9.5, 6.0))
    ax = fig.add_subplot()
    for i, ((mode, flops), ridge) in enumerate(zip(roofs, ridges)):
        colour = f"C{i}"
        ax.plot(grid, np.minimum(flops, bw * grid), "-", color=colour, lw=2,
                label=f"roof {mode}: {format_flops(flops)}, {format_rate(bw)}")
        ax.plot([ridge], [flops], "D", color=colour, markersize=7)
        ax.annotate(f"ridge {ridge:.3g} FLOP/B", (ridge, flops), textcoords="offset points", xytext=(6, -14),
                    fontsize=8, color=colour)
    top = max(f for _, f in roofs)
    for k in kernels:
        if k["flop"] == 0 and k["bytes"] > 0:  # a stream kernel: its achieved bandwidth, up to the highest roof
            achieved = k["bytes"] / k["median_s"]
            under = grid[achieved * grid <= top]
            ax.plot(under, achieved * under, ":", color="grey", lw=1.2,
                    label=f"{k['kind']} {k['case']}: {format_rate(achieved)}")
    for kind, marker in (("gemv", "o"), ("gemm", "s")):
        mine = [(i, k) for i, k in zip(intensity, points) if k["kind"] == kind]
        if not mine:
            continue
        xs = [i for i, _ in mine]
        ys = [k["flop"] / k["median_s"] for _, k in mine]
        how = "simulated" if any(k.get("source") == "simulated" for _, k in mine) else "measured"
        ax.plot(xs, ys, marker, color="black", markersize=6, linestyle="none", label=f"{kind.upper()} ({how})")
        for x, y, (_, k) in zip(xs, ys, mine):
            below = kind == "gemm"  # on the flat roof: label under the point
            ax.annotate(k["case"], (x, y), textcoords="offset points", xytext=(0, -14) if below else (5, 6),
                        ha="center" if below else "left", fontsize=7)
    if not points:
        ax.text(0.02, 0.97, "no kernel measurements in this profile: the roof only", transform=ax.transAxes,
                va="top", fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("FLOP/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    name = device.get("name", doc.name)
    ax.set_title(_title(doc, f"{doc.name}: roofline of device {index} ({name})"))
    return fig


# -- the planner -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanCurves:
    """What the plan figure draws: the planner's terms per batch (``PLAN_BATCHES``), and its inputs."""

    model: str
    gpu: str
    flops_mode: str
    link: str | None
    strategy: str
    cards: int
    tp: int
    pp: int
    context_tokens: int
    batch: np.ndarray
    token_latency_s: np.ndarray
    aggregate_tokens_per_s: np.ndarray
    bound: np.ndarray
    fits: np.ndarray
    balance_batch: float


def _card(doc: profiles.Document) -> GpuSpec:
    """The profile's card at fp16, as ``gpucal plan --gpu`` builds it (``gpucal.profiles.queries.gpu_of``: each figure
    the slowest device's)."""
    try:
        return gpu_of(doc).spec
    except InputError as exc:
        raise PlotSkipped(str(exc).split(": ", 1)[-1]) from None


def plan_curves(doc: profiles.Document, *, model="llama-3.1-8b", cards: int | None = None,
                strategy: str | None = None, context_tokens: int = 0, batches=PLAN_BATCHES) -> PlanCurves:
    """Token latency and aggregate tokens/s against batch from ``gpucal.plan.evaluate``, with the inputs
    ``gpucal plan --gpu PROFILE --model MODEL --cards N --strategy S --batch B --context T`` uses
    (fp16, the seed communication model, all cards on one host, the profile's ``planner_link``).

    ``cards`` defaults to the profile's device count and ``strategy`` to tp (pp where the TP degree
    would not divide the model's heads). A layout the flags ask for that cannot run raises
    ``InputError``; one that follows from the defaults raises ``PlotSkipped``.
    """
    spec = resolve_model(model) if isinstance(model, str) else model
    explicit = cards is not None or strategy is not None
    n = max(_device_count(doc), 1) if cards is None else cards
    if strategy is None:
        strategy = "tp" if valid_tp(spec, n) else "pp"

    def refuse(message: str):
        if explicit:
            return InputError(f"{'--cards' if cards is not None else '--strategy'}: {message}")
        return PlotSkipped(f"{message} (the profile's {n} cards)")

    layout = Layout.of(strategy, n)
    if not valid_tp(spec, layout.tp):
        raise refuse(f"a TP degree of {layout.tp} does not divide {spec.name}'s {spec.heads} attention heads and "
                     f"{spec.kv_heads} KV heads")
    if layout.pp > spec.layers:
        raise refuse(f"{layout.pp} pipeline stages for {spec.name}'s {spec.layers} layers; at most one per layer")
    gpu = _card(doc)
    try:
        link = planner_link(doc)
    except InputError as exc:
        raise PlotSkipped(str(exc)) from None
    if link is None and n > 1:
        raise refuse(f"{doc.name} names no link between cards (no measured links, no plan_defaults.link)")
    step = evaluate(spec, gpu, batch=np.asarray(batches, dtype=float), tp=layout.tp, pp=layout.pp,
                    link=link.spec if link else NO_LINK, cards_per_host=n, comm="seed",
                    context_tokens=context_tokens, bytes_per_weight=DTYPES["fp16"],
                    kv_bytes_per_value=DTYPES["fp16"], act_bytes=2.0)
    return PlanCurves(model=spec.name, gpu=gpu.name, flops_mode=gpu.flops_mode, link=link.spec.name if link else None,
                      strategy=strategy, cards=n, tp=layout.tp, pp=layout.pp, context_tokens=context_tokens,
                      batch=np.asarray(batches, dtype=np.int64), token_latency_s=np.array(step.token_latency_s),
                      aggregate_tokens_per_s=np.array(step.aggregate_tokens_per_s), bound=np.array(step.bound),
                      fits=np.array(step.fits), balance_batch=float(np.ravel(step.balance_batch)[0]))


def plan_figure(doc: profiles.Document, curves: PlanCurves):
    """Latency and throughput against batch; the bound per point, B*, and the batches that do not fit."""
    fig = _canvas_figure((9.5, 7.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    b = curves.batch
    memory = curves.bound == "memory"
    for ax, values, label in ((top, curves.token_latency_s, "token latency (s)"),
                              (bottom, curves.aggregate_tokens_per_s, "throughput (aggregate tokens/s)")):
        drawable = np.isfinite(values) & (values > 0)  # extreme profiles: the planner's inf, NaN or 0
        if not drawable.any():
            raise PlotSkipped(f"the planner gives no finite, positive {label.split(' (')[0]} for this profile")
        values = np.where(drawable, values, np.nan)
        ax.plot(b, values, "-", color="C0", lw=1.5)
        for where, marker, colour, text in ((memory & drawable, "o", "C0", "memory-bound"),
                                            (~memory & drawable, "s", "C3", "compute-bound")):
            if where.any():
                ax.plot(b[where], values[where], marker, color=colour, label=text)
        for i, batch in enumerate(b[~curves.fits]):
            ax.axvspan(batch / math.sqrt(2), batch * math.sqrt(2), color="grey", alpha=0.25, lw=0,
                       label=None if i else "does not fit in memory")
        if b.min() <= curves.balance_batch <= b.max():
            ax.axvline(curves.balance_batch, color="black", ls="--", lw=1,
                       label=f"balance batch B* = {curves.balance_batch:.4g}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    bottom.set_xlabel("batch (sequences decoded together)")
    bottom.set_xticks(b, [str(x) for x in b])
    layout = f"{curves.strategy} over {curves.cards} cards" if curves.cards > 1 else "one card"
    context = f", context {curves.context_tokens} tokens" if curves.context_tokens else ""
    lines = [_title(doc, f"{curves.model} on {curves.gpu} ({curves.flops_mode}): {layout}{context}")]
    if curves.link and curves.cards > 1:
        lines.append(f"link: {curves.link}")
    if not b.min() <= curves.balance_batch <= b.max():
        lines.append(f"balance batch B* = {curves.balance_batch:.4g}, outside the batches shown")
    fig.suptitle("\n".join(lines), fontsize=10)
    return fig
