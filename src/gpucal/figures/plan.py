"""``plan.png``: the planner's token latency and throughput against batch, as ``gpucal plan`` computes them.

``plan_curves`` calls the planner with the inputs ``gpucal plan --gpu PROFILE`` uses: the measured step
(``gpucal.plan.measured``) where the profile has its figures, drawn beside the article's step
(``gpucal.plan.evaluate``), else the article's step alone; ``plan_figure`` draws what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpucal import profiles
from gpucal.errors import InputError
from gpucal.figures.common import PlotSkipped, canvas_figure, title
from gpucal.plan import Layout, evaluate, valid_tp
from gpucal.plan.measured import measured_step
from gpucal.plan.spec import NO_LINK, GpuSpec
from gpucal.profiles.decode_queries import decode_inputs, has_decode_terms
from gpucal.profiles.queries import DTYPES, gpu_of, planner_link, resolve_model

__all__ = ["PLAN_BATCHES", "PLAN_STRATEGIES", "PlanCurves", "plan_curves", "plan_figure"]

PLAN_BATCHES = tuple(2 ** k for k in range(11))  # 1 .. 1024
PLAN_STRATEGIES = ("pp", "tp")


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
    step: str = "seed"  # the step drawn: "measured" (the article's beside it) or "seed"
    seed_token_latency_s: np.ndarray | None = None
    seed_aggregate_tokens_per_s: np.ndarray | None = None
    measured_terms: tuple = ()  # the measured step's terms per batch (``gpucal.plan.measured.MeasuredStep.terms``)
    measured_sources: dict | None = None  # where each of its terms came from
    measured_fallbacks: tuple | list = ()  # the terms priced ideally, for want of a figure


def _card(doc: profiles.Document) -> GpuSpec:
    """The profile's card at fp16, as ``gpucal plan --gpu`` builds it (``gpucal.profiles.queries.gpu_of``: each
    figure the slowest device's)."""
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
    n = max(doc.profile.device_count, 1) if cards is None else cards
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
    options = dict(link=link.spec if link else NO_LINK, cards_per_host=n, comm="seed", context_tokens=context_tokens,
                   bytes_per_weight=DTYPES["fp16"], kv_bytes_per_value=DTYPES["fp16"], act_bytes=2.0)
    step = evaluate(spec, gpu, batch=np.asarray(batches, dtype=float), tp=layout.tp, pp=layout.pp, **options)
    latency, aggregate = np.array(step.token_latency_s), np.array(step.aggregate_tokens_per_s)
    extra = {}
    if has_decode_terms(doc):  # as gpucal plan: the measured step where the profile has its figures
        decode = decode_inputs(doc, dtype="fp16", tp=layout.tp, cards_per_host=n, graphs=True)
        steps = [measured_step(spec, gpu, decode, batch=b, tp=layout.tp, pp=layout.pp, **options) for b in batches]
        rows = [m.step.row() for m in steps]
        extra = {"step": "measured", "seed_token_latency_s": latency, "seed_aggregate_tokens_per_s": aggregate,
                 "measured_terms": tuple(m.terms for m in steps), "measured_sources": steps[0].sources,
                 "measured_fallbacks": steps[0].fallbacks}
        latency = np.array([r["token_latency_s"] for r in rows])
        aggregate = np.array([r["aggregate_tokens_per_s"] for r in rows])
    return PlanCurves(model=spec.name, gpu=gpu.name, flops_mode=gpu.flops_mode, link=link.spec.name if link else None,
                      strategy=strategy, cards=n, tp=layout.tp, pp=layout.pp, context_tokens=context_tokens,
                      batch=np.asarray(batches, dtype=np.int64), token_latency_s=latency,
                      aggregate_tokens_per_s=aggregate, bound=np.array(step.bound),
                      fits=np.array(step.fits), balance_batch=float(np.ravel(step.balance_batch)[0]), **extra)


def _draw_panel(ax, curves: PlanCurves, values: np.ndarray, label: str, seed: np.ndarray | None = None) -> None:
    """One of the planner's terms (``values`` per batch) on ``ax``: the bound per point, the batches that do
    not fit, B*. ``PlotSkipped`` when no value is finite and positive (the log axis would be empty)."""
    b = curves.batch
    memory = curves.bound == "memory"
    drawable = np.isfinite(values) & (values > 0)  # extreme profiles: the planner's inf, NaN or 0
    if not drawable.any():
        raise PlotSkipped(f"the planner gives no finite, positive {label.split(' (')[0]} for this profile")
    values = np.where(drawable, values, np.nan)
    ax.plot(b, values, "-", color="C0", lw=1.5, label="measured step" if seed is not None else None)
    if seed is not None:
        ax.plot(b, np.where(np.isfinite(seed) & (seed > 0), seed, np.nan), "--", color="grey", lw=1.2,
                label="the article's step (ideal inputs)")
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


def plan_figure(doc: profiles.Document, curves: PlanCurves):
    """Latency and throughput against batch; the bound per point, B*, and the batches that do not fit."""
    fig = canvas_figure((9.5, 7.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    b = curves.batch
    _draw_panel(top, curves, curves.token_latency_s, "token latency (s)", curves.seed_token_latency_s)
    _draw_panel(bottom, curves, curves.aggregate_tokens_per_s, "throughput (aggregate tokens/s)",
                curves.seed_aggregate_tokens_per_s)
    bottom.set_xlabel("batch (sequences decoded together)")
    bottom.set_xticks(b, [str(x) for x in b])
    layout = f"{curves.strategy} over {curves.cards} cards" if curves.cards > 1 else "one card"
    context = f", context {curves.context_tokens} tokens" if curves.context_tokens else ""
    lines = [title(doc, f"{curves.model} on {curves.gpu} ({curves.flops_mode}): {layout}{context}")]
    if curves.link and curves.cards > 1:
        lines.append(f"link: {curves.link}")
    if not b.min() <= curves.balance_batch <= b.max():
        lines.append(f"balance batch B* = {curves.balance_batch:.4g}, outside the batches shown")
    fig.suptitle("\n".join(lines), fontsize=10)
    return fig
