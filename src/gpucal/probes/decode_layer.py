"""``decode``: one transformer decoder layer of a model's shard, as a server runs it in decode, timed as a
whole and beside its parts as ``gpucal.plan.decode`` prices them — the check that the parts add up.

The layer (one token per sequence, B sequences, context T; the card's shard at TP size tp: H_q/tp query heads,
max(1, H_kv/tp) KV heads, F/tp of the FFN; ``kernels/decode_ref.py`` for each kernel):

    add_rmsnorm → QKV projection → rotary + KV-cache write → decode attention → output projection
    → [all-reduce] → add_rmsnorm → gate/up projection → SiLU·mul → down projection → [all-reduce]

Projections are the decode GEMMs (``Backend.decode_gemm_launcher``: cuBLAS on a GPU). Where tp > 1 and the
backend can all-reduce over devices 0…tp−1 of this process, the two all-reduces run (NCCL: each moves the
activations' bytes, B·h·itemsize, as float32 words of small integers whose sum is checked exactly; the next
kernel reads the shard's own output); otherwise they are reported as not measured, with the reason.

Method: every output of every part is poisoned, the layer runs once, and each part's output is checked against
its float64 reference from that part's actual inputs (NumPy, or CuPy on a GPU); then the layer is timed as a
whole, again and again (``layer_s``: eager, each kernel launched back to back; or ``--graph``: the runs of
kernels between all-reduces captured in CUDA graphs, the all-reduces launched between them); then each part
alone as the probes time it (a node of a replayed graph over copies of what it streams, an all-reduce launched
back to back) and the host's launch interval; ``parts_s`` is the layer priced from them (``parts_time_s``:
max(launches·eager_s, the sum)), ``layer_over_parts = layer_s / parts_s``. Statistic: the median of each
timing (``probes/timing.py``). docs/decode.md says more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from gpucal.kernels.base import Backend, decode_gemm_mode
from gpucal.kernels.decode_ref import (RMS_EPS, TICK_POISON, add_rmsnorm_work, attention_work, check_add_rmsnorm,
                                       check_attention, check_rotary, check_silu_mul, check_tick, cos_sin_table,
                                       qkv_width, rotary_work, silu_mul_work)
from gpucal.kernels.dtypes import DTYPES, POISON
from gpucal.kernels.reference import Check, Footprint, Work, gemm_work
from gpucal.plan.models import ModelSpec
from gpucal.probes.base import Probe, Result, policy_for, source_of, timed_case, waived
from gpucal.probes.collective_cases import case_arrays, compare
from gpucal.plan.decode import LaunchCosts, repeated_time_s
from gpucal.probes.decode_common import check_decode_gemm, l2_copies, poison, timed_launch
from gpucal.probes.memory import Need
from gpucal.probes.timing import measure

__all__ = ["DecodeLayerConfig", "LayerShape", "run", "applicable", "needs", "build_layer", "layer_dtype", "parts_time_s"]


@dataclass(frozen=True)
class LayerShape:
    """One card's shard of a decoder layer at TP size ``tp``."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    tp: int

    @classmethod
    def of(cls, model: ModelSpec, tp: int) -> LayerShape:
        """The shard a server runs at TP size ``tp``: the heads split evenly, the KV heads split evenly or each
        replicated on tp/H_kv cards. ``ValueError`` for a shard no server runs."""
        if model.ffn is None:
            raise ValueError(f"the model {model.name} has no FFN size (ffn): the layer needs it")
        if model.head_dim % 2:
            raise ValueError(f"the model {model.name} has an odd head dimension ({model.head_dim}): rotary needs "
                             "an even one")
        if model.heads % tp:
            raise ValueError(f"tp {tp} does not divide the model's {model.heads} attention heads")
        if model.kv_heads % tp and tp % model.kv_heads:
            raise ValueError(f"tp {tp} neither divides the model's {model.kv_heads} KV heads nor is a multiple of "
                             "them: no server shards the KV heads so")
        return cls(model.hidden, model.heads // tp, max(1, model.kv_heads // tp), model.head_dim,
                   -(-model.ffn // tp), tp)


@dataclass(frozen=True)
class DecodeLayerConfig:
    model: ModelSpec | None = None  # required: gpucal probe decode --model NAME|FILE
    tp: int = 1
    batches: tuple[int, ...] = (1, 8, 64)
    contexts: tuple[int, ...] = (2048,)
    graph: bool = False  # time as CUDA graphs too (eager always)
    dtype: str | None = None  # default bf16 where the backend has it, else fp16, else fp32
    budget_s: float | None = None
    seed: int = 0


@dataclass
class Part:
    name: str
    launch: Callable[[], None]
    check: Callable[[], Check]
    work: Work
    allreduce: bool = False
    streamed_bytes: int = 0  # the weights or KV it streams (timed alone over copies of them: l2_copies)
    copies_of: Callable[[int], list] | None = None  # n -> n launches over n copies of what it streams
    captured: Callable[[], Callable[[], None]] | None = None  # an all-reduce: the launch of it captured in a graph
    in_graph: str = ""  # an all-reduce in a graph run: "captured", or why it is launched eagerly instead


@dataclass
class Layer:
    parts: list[Part] = field(default_factory=list)
    outputs: list = field(default_factory=list)  # (device array, dtype) to poison before a verified run
    poisons: list = field(default_factory=list)  # (backend of its device, float32 array): the all-reduces' outputs
    cache_rows: list = field(default_factory=list)  # the KV-cache rows rotary writes (poisoned before a graph run)
    allreduce: str = "not needed (tp 1)"


def applicable(backend: Backend) -> str | None:
    return backend.decode_reason()


def layer_dtype(backend: Backend, config: DecodeLayerConfig) -> str:
    if config.dtype:
        return config.dtype
    have = [d for d in backend.decode_dtypes if d in backend.decode_gemm_dtypes()]
    return next((d for d in ("bf16", "fp16", "fp32") if d in have), have[0] if have else "fp32")


def _allreduce_part(backend: Backend, layer: Layer, devices: tuple[int, ...], size: int, seed: int,
                    name: str) -> Part:
    tp = len(devices)
    sends, recvs, owners = [], [], []
    expected = None
    for rank, d in enumerate(devices):
        mine, count, expected = case_arrays("all-reduce", size, rank, tp, seed)
        other = backend.on_device(d)
        sends.append(other.to_device(mine))
        recvs.append(other.full(count, np.float32, np.nan))
        owners.append(other)
    backend.activate()
    launch = backend.allreduce_launcher(devices, sends, recvs)

    def check():
        checks = [compare(owner.to_host(r), expected) for owner, r in zip(owners, recvs)]
        backend.activate()
        bad = next((c for c in checks if not c.ok), None)
        return bad or replace(checks[0], checked=sum(c.checked for c in checks))

    layer.poisons.extend((owner, r) for owner, r in zip(owners, recvs))
    part = Part(name, launch, check, Work(size, size, size // 4 * (tp - 1)), allreduce=True)
    cache: list = []

    def captured():  # a server's CUDA graph holds its all-reduces: captured once, on first use
        if not cache:
            try:
                cache.append(backend.allreduce_graph_launcher(devices, sends, recvs, 1))
                part.in_graph = "captured"
            except Exception as exc:  # a capture NCCL or the driver refuses: launched eagerly, and said so
                cache.append(launch)
                part.in_graph = f"launched eagerly: {type(exc).__name__}: {exc}"[:200]
            backend.activate()
        return cache[0]
    part.captured = captured
    return part


def build_layer(backend: Backend, shape: LayerShape, batch: int, context: int, dtype: str, seed: int) -> Layer:
    """The layer's arrays and parts (not yet run)."""
    b, h, hq, hkv, d, f = batch, shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.ffn
    store, bad = DTYPES[dtype].storage, POISON[dtype]
    layer = Layer()

    def rnd(shape_, s, scale=1.0):
        return backend.random_uniform(shape_, dtype, seed + s, scale=scale)

    def out(shape_):
        a = backend.full(shape_, store, bad)
        layer.outputs.append((a, dtype))
        return a

    x_in, res_in = rnd((b, h), 1), rnd((b, h), 2)
    w_n1, w_n2 = rnd((h,), 3), rnd((h,), 4)
    wqkv = qkv_width(hq, hkv, d)
    w_qkv, w_o = rnd((h, wqkv), 5, h ** -0.5), rnd((hq * d, h), 6, (hq * d) ** -0.5)
    w_gu, w_down = rnd((h, 2 * f), 7, h ** -0.5), rnd((f, h), 8, f ** -0.5)
    k_cache, v_cache = rnd((b, hkv, context, d), 9), rnd((b, hkv, context, d), 10)
    cos_sin = cos_sin_table(context - 1, d)  # the host's table; the kernel reads its device copy
    cos_sin_dev = backend.to_device(cos_sin)
    n1, res1, qkv, q, attn = out((b, h)), out((b, h)), out((b, wqkv)), out((b, hq, d)), out((b, hq, d))
    o, n2, res2, gu, act, y = out((b, h)), out((b, h)), out((b, h)), out((b, 2 * f)), out((b, f)), out((b, h))
    attn2d = attn.reshape(b, hq * d)
    xp = backend.xp

    def g(a):
        return backend.to_xp(a)

    def gemm_part(name, a, w, c, k, n):
        return Part(name, backend.decode_gemm_launcher(a, w, c, dtype), lambda: check_decode_gemm(backend, a, w, c, dtype),
                    gemm_work(b, n, k, decode_gemm_mode(dtype)), streamed_bytes=k * n * DTYPES[dtype].itemsize_bytes,
                    copies_of=lambda count: [backend.decode_gemm_launcher(a, w if i == 0 else backend.copy_array(w), c,
                                                                         dtype) for i in range(count)])

    def attention_copies(count):
        caches = [(k_cache, v_cache)] + [(backend.copy_array(k_cache), backend.copy_array(v_cache))
                                         for _ in range(count - 1)]
        return [backend.attention_launcher(q, kc, vc, attn, dtype, context) for kc, vc in caches]

    P = layer.parts
    P.append(Part("add_rmsnorm", backend.add_rmsnorm_launcher(x_in, res_in, w_n1, n1, res1, dtype, RMS_EPS),
                  lambda: check_add_rmsnorm(g(n1), g(res1), g(x_in), g(res_in), g(w_n1), dtype, RMS_EPS, xp),
                  add_rmsnorm_work(b, h, dtype)))
    P.append(gemm_part("qkv", n1, w_qkv, qkv, h, wqkv))
    P.append(Part("rotary", backend.rotary_launcher(qkv, cos_sin_dev, q, k_cache, v_cache, context - 1, dtype, hq, hkv,
                                                    d),
                  lambda: check_rotary(g(q), g(k_cache), g(v_cache), context - 1, g(qkv), cos_sin, hq, hkv, d, dtype,
                                       xp),
                  rotary_work(b, hq, hkv, d, dtype)))
    P.append(Part("attention", backend.attention_launcher(q, k_cache, v_cache, attn, dtype, context),
                  lambda: check_attention(g(attn), g(q), g(k_cache), g(v_cache), context, dtype, xp),
                  attention_work(b, hq, hkv, d, context, dtype),
                  streamed_bytes=2 * b * hkv * context * d * DTYPES[dtype].itemsize_bytes, copies_of=attention_copies))
    layer.cache_rows += [k_cache[:, :, context - 1], v_cache[:, :, context - 1]]
    P.append(gemm_part("o_proj", attn2d, w_o, o, hq * d, h))
    ar_bytes = b * h * DTYPES[dtype].itemsize_bytes
    group = tuple(range(shape.tp))
    if shape.tp > 1:
        if backend.device_count() < shape.tp:
            why = f"the layer needs {shape.tp} devices for tp {shape.tp}; this backend has {backend.device_count()}"
        elif backend.device_index not in group:
            why = (f"the layer runs on device {backend.device_index}, outside the TP group of devices 0-{shape.tp - 1} "
                   "(--device 0)")
        else:
            why = backend.allreduce_reason(group)
        if why is None:
            P.append(_allreduce_part(backend, layer, group, ar_bytes, seed + 11, "allreduce_attn"))
            layer.allreduce = (f"measured: {backend.allreduce_library()} all-reduce of {ar_bytes} B over devices "
                               f"0-{shape.tp - 1}")
        else:
            layer.allreduce = f"not measured: {why}"
    P.append(Part("add_rmsnorm_mlp", backend.add_rmsnorm_launcher(o, res1, w_n2, n2, res2, dtype, RMS_EPS),
                  lambda: check_add_rmsnorm(g(n2), g(res2), g(o), g(res1), g(w_n2), dtype, RMS_EPS, xp),
                  add_rmsnorm_work(b, h, dtype)))
    P.append(gemm_part("gate_up", n2, w_gu, gu, h, 2 * f))
    P.append(Part("silu_mul", backend.silu_mul_launcher(gu, act, dtype), lambda: check_silu_mul(g(act), g(gu), dtype, xp),
                  silu_mul_work(b, f, dtype)))
    P.append(gemm_part("down", act, w_down, y, f, h))
    if shape.tp > 1 and layer.allreduce.startswith("measured"):
        P.append(_allreduce_part(backend, layer, group, ar_bytes, seed + 12, "allreduce_mlp"))
    return layer


def _poison_all(backend: Backend, layer: Layer, dtype: str, graph: bool) -> None:
    """Every output of every part, the all-reduces' on each device, and in graph mode the KV-cache rows that
    rotary writes (the capture ran the kernels once: those rows would already hold their values)."""
    for array, kind in layer.outputs:
        poison(backend, array, kind)
    for owner, array in layer.poisons:
        owner.fill(array, np.nan)
    backend.activate()
    if graph:
        for row in layer.cache_rows:
            poison(backend, row, dtype)


def _check_all(layer: Layer) -> Check:
    checks = []
    for part in layer.parts:
        c = part.check()
        if not c.ok:
            return replace(c, method=f"{part.name}: {c.method}")
        checks.append(c)
    return Check(True, "every part against its float64 reference (" + "; ".join(p.name for p in layer.parts) + ")",
                 sum(c.checked for c in checks), max_abs_err=max((c.max_abs_err or 0.0) for c in checks))


def _segments(backend: Backend, layer: Layer) -> Callable[[], None]:
    """The layer as a server runs it with CUDA graphs: each run of kernels between all-reduces one graph, each
    all-reduce captured in a graph of its own (one graph a device: the shard's kernels run on one device, the
    all-reduce on all of the group's)."""
    steps, run_ = [], []
    for part in layer.parts:
        if part.allreduce:
            if run_:
                steps.append(backend.graph_launcher(run_))
                run_ = []
            steps.append(part.captured())
        else:
            run_.append(part.launch)
    if run_:
        steps.append(backend.graph_launcher(run_))
    return backend.sequence_launcher(steps)


def _part_seconds(backend: Backend, part: Part, graph_nodes: bool, policy, graph: bool) -> tuple[float, str, int]:
    """One part alone, as the probes above time it: where the backend has graphs, as a node of a replayed graph
    (an all-reduce: launched back to back as the layer launches it, captured in its graph in a graph run), over
    copies of the weights or KV it streams in turn (``l2_copies``); else launched back to back."""
    copies = l2_copies(backend, part.streamed_bytes) if part.copies_of is not None else 1
    one = part.captured() if (graph and part.captured is not None) else part.launch
    launches = part.copies_of(copies) if copies > 1 else [one]
    timed = timed_launch(backend, launches, graph_nodes and not part.allreduce)
    timing = measure(lambda k: backend.time_k(timed.launch, k) / timed.ops_per_call, policy, clock_name=backend.clock)
    return timing.median_s, timed.how, copies


def _eager_launch_s(backend: Backend, policy) -> float:
    """The host's interval between kernels launched back to back (the launch probe's eager case)."""
    counter = backend.to_device(np.asarray([TICK_POISON], dtype=np.uint32))
    tick = backend.tick_launcher(counter)
    tick()
    backend.synchronize()
    check = check_tick(backend.to_host(counter), 1)
    if not check.ok:
        raise RuntimeError(f"the tick kernel wrote {check.got!r}, expected {check.expected!r}")
    return measure(lambda k: backend.time_k(tick, k), policy, clock_name=backend.clock).median_s


def parts_time_s(layer: Layer, seconds: list[float], eager_s: float | None, graph: bool) -> tuple[float, str]:
    """The layer's time as its parts price it (``gpucal.plan.decode``): each part's time as a graph node (an
    all-reduce's as launched) run as the layer runs them, launched back to back again and again, the host
    issuing one launch every ``eager_s``: eagerly every part a launch (max(n·eager_s, sum)); with graphs each
    run of kernels between all-reduces one launch of their sum. Without graph-node times (``eager_s`` None), the
    sum of each part's own eager time."""
    if eager_s is None:
        return float(sum(seconds)), "the sum of each part's time launched back to back (no CUDA graphs here)"
    launch = LaunchCosts(eager_s, eager_s, eager_s)
    if not graph:
        return repeated_time_s(seconds, launch, graph=False), "max(n·eager_s, sum of the parts' graph-node times)"
    children, run_ = [], 0.0
    for part, t in zip(layer.parts, seconds):
        if part.allreduce:
            if run_:
                children.append(run_)
                run_ = 0.0
            children.append(t)
        else:
            run_ += t
    if run_:
        children.append(run_)
    return (repeated_time_s(children, launch, graph=False),
            "max(launches·eager_s, sum of the parts' graph-node times), a graph a launch between all-reduces")


def _case(backend: Backend, config: DecodeLayerConfig, shape: LayerShape, batch: int, context: int, dtype: str,
          graph: bool) -> Result:
    how = "graph" if graph else "eager"
    case = f"{config.model.name}-tp{shape.tp}-b{batch}-t{context}-{how}"
    params = {"model": config.model.name, "tp": shape.tp, "batch": batch, "context": context, "dtype": dtype,
              "mode": how, "hidden": shape.hidden, "heads": shape.heads, "kv_heads": shape.kv_heads,
              "head_dim": shape.head_dim, "ffn": shape.ffn}
    base = dict(probe="decode", case=case, backend=backend.name, source=source_of(backend), device=backend.device().name)
    try:
        layer = build_layer(backend, shape, batch, context, dtype, config.seed + 1000 * batch + context)
        whole = _segments(backend, layer) if graph else backend.sequence_launcher([p.launch for p in layer.parts])
    except Exception as exc:
        return Result(status="error", params=params, reason=f"building the layer: {type(exc).__name__}: {exc}"[:300],
                      **base)
    _poison_all(backend, layer, dtype, graph)  # capture may have run the kernels: the check sees only the verified run
    params["allreduce"] = layer.allreduce
    work = Work(sum(p.work.bytes_read for p in layer.parts), sum(p.work.bytes_written for p in layer.parts),
                sum(p.work.flop for p in layer.parts))
    policy = policy_for(backend, config.budget_s)
    result = timed_case(backend, "decode", case, params, work, whole, lambda: _check_all(layer),
                        "dram_Bps = (bytes every part reads and writes)/t", policy,
                        library=f"{backend.name}; decode GEMMs: {backend.gemm_modes().get(decode_gemm_mode(dtype))}")
    if result.status == "failed" and result.check is not None:  # name the part whose output was wrong
        return replace(result, reason=f"{result.check.method.split(':')[0]}: {result.reason}")
    if result.status != "passed":
        return result
    nodes = backend.graph_reason() is None
    parts = []
    try:
        eager_s = _eager_launch_s(backend, policy) if nodes else None
        for part in layer.parts:
            seconds, timed_as, copies = _part_seconds(backend, part, nodes, policy, graph)
            entry = {"name": part.name, "seconds": seconds, "timed_as": timed_as, "copies": copies}
            if graph and part.allreduce:
                entry["in_graph"] = part.in_graph
            parts.append(entry)
    except Exception as exc:
        return replace(result, status="error", reason=f"timing the parts: {type(exc).__name__}: {exc}"[:300])
    layer_s = result.timing.median_s
    parts_s, model = parts_time_s(layer, [p["seconds"] for p in parts], eager_s, graph)
    metrics = dict(result.metrics, layer_s=layer_s, parts_s=parts_s, layer_over_parts=layer_s / parts_s,
                   sum_of_parts_s=float(sum(p["seconds"] for p in parts)), launch_eager_s=eager_s)
    return replace(result, metrics=metrics, params=dict(params, parts=parts, parts_model=model))


def needs(backend: Backend, config: DecodeLayerConfig = DecodeLayerConfig()) -> list[Need]:
    if config.model is None:
        return []
    shape = LayerShape.of(config.model, config.tp)
    s = DTYPES[layer_dtype(backend, config)].itemsize_bytes
    out = []
    for b in config.batches:
        for t in config.contexts:
            weights = (shape.hidden * (qkv_width(shape.heads, shape.kv_heads, shape.head_dim) + 2 * shape.ffn)
                       + shape.heads * shape.head_dim * shape.hidden + shape.ffn * shape.hidden)
            kv = 2 * b * shape.kv_heads * t * shape.head_dim
            # the weights and caches, then the largest check's float64 copies (a GEMM's, or attention's)
            check = max(16 * max(shape.hidden * 2 * shape.ffn, shape.ffn * shape.hidden), 16 * kv)
            out.append(Need(f"the decode layer of {config.model.name} (tp {config.tp}) at B={b}, T={t}",
                            ("batches", "contexts"), Footprint((weights + kv) * s + check, (weights + kv) * (8 + s))))
    return out


def run(backend: Backend, config: DecodeLayerConfig = DecodeLayerConfig()) -> list[Result]:
    reason = applicable(backend) or (None if config.model is not None else "no model given (--model NAME|FILE)")
    if reason is not None:
        return [waived(backend, "decode", "decode", reason)]
    shape = LayerShape.of(config.model, config.tp)
    dtype = layer_dtype(backend, config)
    results = []
    for b in config.batches:
        for t in config.contexts:
            for graph in (False, True) if config.graph else (False,):
                if graph and backend.graph_reason() is not None:
                    results.append(waived(backend, "decode", f"{config.model.name}-tp{config.tp}-b{b}-t{t}-graph",
                                          backend.graph_reason(), {"batch": b, "context": t, "mode": "graph"}))
                    continue
                results.append(_case(backend, config, shape, b, t, dtype, graph))
            backend.release_memory()
    return results


PROBE = Probe("decode", "one decoder layer of a model's shard, timed whole and beside its parts as priced "
              "(gpucal probe decode --model NAME --tp N)", DecodeLayerConfig, applicable, run, needs)
