"""The measured step: one decode step of a model on a layout of cards with every term as the decode really pays
it, from figures measured on the card (or published for its model). Pure: numbers in, numbers out; the caller
reads the figures from a profile (``gpucal.profiles.decode_queries.decode_inputs``).

The step runs what a server runs for one token of B sequences, on the card's shard at TP size tp (H/tp query
heads, max(1, H_kv/tp) KV heads, F/tp of the FFN, V/tp of the vocabulary), as the decode-layer probe
(``gpucal probe decode``) runs a layer:

- per layer: add+RMSNorm, QKV projection, rotary and the KV-cache write, decode attention over the context,
  output projection, [all-reduce], add+RMSNorm, gate/up projection, SiLU·mul, down projection, [all-reduce];
- per step: the embedding lookup (and, at tp > 1, the all-reduce of the vocabulary-parallel embedding) on the
  first stage; the final add+RMSNorm and the LM head on the last stage; the host's round trip for the token.

Each kernel's time is its time as a node of a replayed CUDA graph:

- matrix products from the decode-GEMM curve (``GemmCurve``) at m = B and the shard's weight bytes; without
  one, the published decode-GEMM weight rate (plus a graph node); without that, the ideal ``max(W/stream,
  2·m·n·k/F)``;
- attention from the decode-attention fit (``AttentionFit``) over the KV bytes it reads; without one, a graph
  node + KV/stream;
- norms, rotary, SiLU·mul and the embedding as memory traffic: a graph node + the bytes they read and write over
  the stream bandwidth (the bytes the decode-layer probe's arrays hold);
- each TP all-reduce of S = B·h·w_act bytes from the all-reduce measured over that TP group (one host: the
  one-process NCCL all-reduce; across hosts: the cluster's), in CUDA graphs or eager as the step runs; without
  one, the TP exchange of the article's step (``fallback_exchange_s``);
- each pipeline hop as the article's step has it (``alpha + S/beta`` of the link or the network).

A stage runs its kernels as one CUDA graph (``graphs``: the graph's launch + the sum of its nodes) or eagerly (a
pipeline from an idle GPU: the host issues one kernel every ``eager_s``, ``gpucal.plan.decode.step_time_s``).
The token's latency is the sum of the stages, the hops and one ``sync_s``. Without launch costs the fixed costs
are zero (the ideal). Each term that falls back says so in ``fallbacks``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from gpucal.plan.decode import AttentionFit, GemmCurve, LaunchCosts, repeated_time_s, step_time_s
from gpucal.plan.models import ModelSpec
from gpucal.plan.spec import GpuSpec, LinkSpec, check_positive
from gpucal.plan.step import Step, evaluate

__all__ = ["DecodeInputs", "Shard", "Kernel", "MeasuredStep", "shard_of", "layer_kernels", "step_kernels",
           "measured_step"]



@dataclass(frozen=True)
class DecodeInputs:
    """The figures the measured step takes; ``None`` where there is none (that term then falls back to the ideal
    one and ``fallbacks`` says so).

    ``stream_Bps``: the memory bandwidth a streaming kernel reaches (measured, or published for the card's
    model). ``gemm``: the decode-GEMM curve of the weight dtype. ``gemm_weight_Bps``: a published weight rate of
    decode-shape GEMMs, used where there is no curve. ``attention``: the decode-attention fit. ``launch``: the
    host's fixed costs. ``allreduce``: the all-reduce over the TP group (``alpha + S/beta``, per regime).
    ``graphs``: the step runs as CUDA graphs (as servers decode) or eagerly. ``sources``: where each figure came
    from, in words (``term -> text``), passed through to the result.
    """

    stream_Bps: float | None = None
    gemm: GemmCurve | None = None
    gemm_weight_Bps: float | None = None
    attention: AttentionFit | None = None
    launch: LaunchCosts | None = None
    allreduce: LinkSpec | None = None
    graphs: bool = True
    sources: dict[str, str] = field(default_factory=dict)
    allreduce_note: str | None = None  # why there is no all-reduce, where the caller knows better than "none"

    def __post_init__(self):
        for name in ("stream_Bps", "gemm_weight_Bps"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))


@dataclass(frozen=True)
class Shard:
    """One card's shard at TP size ``tp``: its heads, KV heads, FFN and vocabulary columns."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int | None
    tp: int


def _ffn_of(model: ModelSpec) -> int:
    """The FFN size: the model's, else what its parameter count leaves for a gated MLP (3·h·F per layer)."""
    if model.ffn is not None:
        return model.ffn
    h, d = model.hidden, model.head_dim
    embeddings = 2 * model.vocab * h if model.vocab else 0
    attention = 2 * h * model.heads * d + 2 * h * model.kv_heads * d
    per_layer = (model.params - embeddings - h) / model.layers
    return max(1, round((per_layer - attention - 2 * h) / (3 * h)))


def shard_of(model: ModelSpec, tp: int) -> Shard:
    """The shard a server runs at TP size ``tp`` (heads and FFN split evenly, rounded up; KV heads split, or
    replicated once tp passes them; the vocabulary split for the vocabulary-parallel embedding and LM head)."""
    vocab = -(-model.vocab // tp) if model.vocab else None
    return Shard(model.hidden, -(-model.heads // tp), max(1, -(-model.kv_heads // tp)), model.head_dim,
                 -(-_ffn_of(model) // tp), vocab, tp)


@dataclass(frozen=True)
class Kernel:
    """One kernel of the step: ``kind`` gemm, lm_head, attention, elementwise or allreduce; for a GEMM ``m`` and
    its weight bytes; for attention its KV bytes; for the rest the bytes it reads and writes; an all-reduce its
    bytes."""

    name: str
    kind: str
    nbytes: float
    m: int = 0
    flop: float = 0.0


def layer_kernels(shard: Shard, batch: int, kv_layer_bytes: float, w_bytes: float, act_bytes: float) -> list[Kernel]:
    """One decoder layer's kernels on the card, in order (the decode-layer probe's), with the bytes each moves."""
    b, h, hq, hkv, d, f = batch, shard.hidden, shard.heads, shard.kv_heads, shard.head_dim, shard.ffn
    a = act_bytes
    qkv = (hq + 2 * hkv) * d
    norm = (4 * b * h + h) * a  # x, residual, weight read; out, residual out written

    def gemm(name, k, n):
        return Kernel(name, "gemm", k * n * w_bytes, b, 2.0 * b * k * n)

    out = [Kernel("add_rmsnorm", "elementwise", norm), gemm("qkv", h, qkv),
           Kernel("rotary", "elementwise", b * qkv * a + d * 4 + b * hq * d * a + 2 * b * hkv * d * a),
           Kernel("attention", "attention", kv_layer_bytes, b), gemm("o_proj", hq * d, h)]
    if shard.tp > 1:
        out.append(Kernel("allreduce_attn", "allreduce", b * h * a))
    out += [Kernel("add_rmsnorm_mlp", "elementwise", norm), gemm("gate_up", h, 2 * f),
            Kernel("silu_mul", "elementwise", 3 * b * f * a), gemm("down", f, h)]
    if shard.tp > 1:
        out.append(Kernel("allreduce_mlp", "allreduce", b * h * a))
    return out


def step_kernels(shard: Shard, batch: int, layers: list[int], kv_layer_bytes: float, w_bytes: float,
                 act_bytes: float) -> list[list[Kernel]]:
    """The kernels of each pipeline stage (``layers``: the layers of each stage): the first stage starts with the
    embedding lookup (and its all-reduce at tp > 1), the last ends with the final norm and the LM head."""
    b, h, a = batch, shard.hidden, act_bytes
    layer = layer_kernels(shard, batch, kv_layer_bytes, w_bytes, act_bytes)
    stages = [layer * count for count in layers]
    head = [Kernel("embedding", "elementwise", 2 * b * h * a)]
    if shard.tp > 1:
        head.append(Kernel("allreduce_embedding", "allreduce", b * h * a))
    tail = [Kernel("final_norm", "elementwise", (4 * b * h + h) * a)]
    if shard.vocab:
        tail.append(Kernel("lm_head", "lm_head", h * shard.vocab * w_bytes, b, 2.0 * b * h * shard.vocab))
    stages[0] = head + stages[0]
    stages[-1] = stages[-1] + tail
    return stages


@dataclass(frozen=True)
class MeasuredStep:
    """The measured step: ``step`` has the article's step's fields (the roofline's memory and compute terms and
    the memory per card as there; latency, throughput and communication as measured); ``terms`` the step's parts
    (each term in seconds over the step), its counts, and ``layer_time_s``, one decoder layer among layers (as
    ``gpucal probe decode`` times one: its kernels' sum in a graph, max(n·eager_s, the sum) eagerly); ``sources`` and ``fallbacks`` say where each figure came
    from and which terms fell back to the ideal."""

    step: Step
    terms: dict
    sources: dict
    fallbacks: list


def _stage_layers(layers: int, pp: int) -> list[int]:
    base, extra = divmod(layers, pp)
    return [base + (1 if i < extra else 0) for i in range(pp)]


def measured_step(model: ModelSpec, gpu: GpuSpec, decode: DecodeInputs, *, batch: int, tp: int, pp: int,
                  link: LinkSpec, **options) -> MeasuredStep:
    """The measured step of ``model`` on ``tp``·``pp`` cards of ``gpu`` at ``batch`` (module docstring).

    ``options`` are ``evaluate``'s (net, cards_per_host, comm, collective, context_tokens, bytes_per_weight,
    kv_bytes_per_value, act_bytes, kv_cache_bytes): the article's step is evaluated with them for the memory
    terms, the pipeline hops and, where no all-reduce was measured, the TP exchange."""
    batch, tp, pp = int(batch), int(tp), int(pp)
    base = evaluate(model, gpu, batch=batch, tp=tp, pp=pp, link=link, **options)
    seed = base.row()
    w_bytes = options.get("bytes_per_weight", 2.0)
    act_bytes = options.get("act_bytes", 2.0)
    shard = shard_of(model, tp)
    kv_layer = seed["kv_cache_bytes"] / model.layers * shard.kv_heads / model.kv_heads
    if kv_layer == 0:  # no context: the new token attends to itself alone
        kv_layer = 2.0 * batch * shard.kv_heads * shard.head_dim * options.get("kv_bytes_per_value", 2.0)
    stages = step_kernels(shard, batch, _stage_layers(model.layers, pp), kv_layer, w_bytes, act_bytes)

    sources = dict(decode.sources)
    fallbacks: list[str] = []
    stream = decode.stream_Bps
    if stream is None:
        stream = gpu.memory_bandwidth_Bps
        fallbacks.append("stream bandwidth: none measured or published; the profile's memory bandwidth (ideal)")
    launch = decode.launch
    node_s = launch.graph_node_s if launch is not None else 0.0
    if launch is None:
        fallbacks.append("launch costs: none measured or published; no fixed cost per kernel or step (ideal)")
    if decode.gemm is None:
        if decode.gemm_weight_Bps is not None:
            fallbacks.append("decode GEMMs: no measured curve; the published decode-GEMM weight rate")
        else:
            fallbacks.append("decode GEMMs: no measured curve or published rate; max(W/stream, FLOP/F) (ideal)")
    if decode.attention is None:
        fallbacks.append("attention: no measured fit; a graph node + KV bytes over the stream bandwidth")
    exchange_s = float(seed["tp_exchange_time_s"])
    if tp > 1 and decode.allreduce is None:
        why = decode.allreduce_note or f"none measured or published over {tp} ranks"
        fallbacks.append(f"TP all-reduce: {why}; the article's exchange ({options.get('comm', 'seed')} model)")

    def gemm_s(k: Kernel) -> float:
        if decode.gemm is not None:
            return decode.gemm.time_s(k.m, k.nbytes)
        ideal = max(k.nbytes / (decode.gemm_weight_Bps or stream), k.flop / gpu.flops)
        return (node_s if decode.gemm_weight_Bps is not None else 0.0) + ideal

    def allreduce_s(k: Kernel) -> float:
        if decode.allreduce is None:
            return exchange_s
        alpha, beta = decode.allreduce.at(k.nbytes)
        return float(alpha) + k.nbytes / float(beta)

    priced: dict[int, float] = {}  # a layer's kernels repeat (the same objects): each priced once

    def seconds(k: Kernel) -> float:
        if id(k) not in priced:
            priced[id(k)] = price(k)
        return priced[id(k)]

    def price(k: Kernel) -> float:
        if k.kind in ("gemm", "lm_head"):
            return gemm_s(k)
        if k.kind == "attention":
            if decode.attention is not None:
                return decode.attention.time_s(k.nbytes)
            return node_s + k.nbytes / stream
        if k.kind == "allreduce":
            return allreduce_s(k)
        return node_s + k.nbytes / stream

    totals = dict.fromkeys(("gemm", "lm_head", "attention", "elementwise", "allreduce"), 0.0)
    stage_s = []
    for kernels in stages:
        times = [seconds(k) for k in kernels]
        for k, t in zip(kernels, times):
            totals[k.kind] += t
        if launch is None:
            run_s = float(sum(times))
        elif decode.graphs:
            run_s = launch.eager_s + float(sum(times))  # one graph launched, its nodes back to back
        else:
            run_s = step_time_s(times, launch, graph=False)
        stage_s.append(run_s)
    layer_times = [price(k) for k in layer_kernels(shard, batch, kv_layer, w_bytes, act_bytes)]
    if launch is None or decode.graphs:
        layer_s = float(sum(layer_times))  # a layer among layers in one graph: its nodes back to back
    else:
        layer_s = repeated_time_s(layer_times, launch, graph=False)  # layer after layer, launched eagerly
    sync_s = launch.sync_s if launch is not None else 0.0
    work_s = sum(totals.values())
    launch_s = max(0.0, sum(stage_s) - work_s) if launch is not None else 0.0
    pp_comm = float(seed["pp_comm_time_s"])
    latency = sum(stage_s) + pp_comm + sync_s
    exchanges = sum(1 for kernels in stages for k in kernels if k.kind == "allreduce")
    tp_comm = totals["allreduce"]
    exchange_each = tp_comm / exchanges if exchanges else 0.0
    card_t = (sum(stage_s) - tp_comm + sync_s) / pp
    slowest = max(stage_s)
    hop = 0.0
    if pp > 1:  # the slowest hop, as the article's step: over the network where a hop crosses one
        over = options.get("net") if seed["pp_network_hops"] > 0 else link
        alpha, beta = over.at(seed["transfer_bytes"])
        hop = float(alpha) + seed["transfer_bytes"] / float(beta)
    aggregate = batch / (slowest + hop + sync_s)
    comm = tp_comm + pp_comm
    changed = {
        "card_time_s": card_t, "tp_exchanges": exchanges, "tp_exchange_time_s": exchange_each,
        "tp_comm_time_s": tp_comm, "comm_time_s": comm, "token_latency_s": latency, "tokens_per_s": 1.0 / latency,
        "aggregate_tokens_per_s": aggregate, "comm_share_frac": comm / latency,
        "compute_utilization_frac": seed["compute_time_s"] / card_t if card_t > 0 else 0.0,
    }
    step = replace(base, **{name: np.asarray(value) for name, value in changed.items()})
    terms = {
        "graphs": decode.graphs,
        "gemm_time_s": totals["gemm"], "lm_head_time_s": totals["lm_head"], "attention_time_s": totals["attention"],
        "elementwise_time_s": totals["elementwise"], "launch_time_s": launch_s, "sync_time_s": sync_s,
        "tp_comm_time_s": tp_comm, "pp_comm_time_s": pp_comm, "token_latency_s": latency,
        "tp_allreduces": exchanges, "tp_allreduce_bytes": float(batch * model.hidden * act_bytes) if exchanges else 0.0,
        "kernels_per_step": sum(len(k) for k in stages), "stage_time_s": [float(s) for s in stage_s],
        "layer_time_s": layer_s,
        "stream_Bps": float(stream), "kv_bytes_per_layer_per_card": float(kv_layer),
        "shard": {"heads": shard.heads, "kv_heads": shard.kv_heads, "ffn": shard.ffn, "vocab": shard.vocab},
    }
    if not all(math.isfinite(v) for v in (latency, aggregate)):
        raise ValueError("batch: the measured step is not finite at this size")
    return MeasuredStep(step, terms, sources, fallbacks)
