"""GPU check: every probe of gpucal on a real GPU, against PyTorch doing the same operations in the same
process, timed by the same harness (CUDA events, warm-up, adaptive sampling, median).

    python bench/gpu_check.py [--out FILE.json] [--device N] [--quick]

Prints the probes' tables, then the ratios with their targets (H100 targets of the kernels issue):

    copy bandwidth             torch copy_ time / gpucal copy time (same buffers)    >= 0.97
    GEMV fp16 batch 1          torch.mv time / gpucal GEMV time (same W, x)          >= 1.00
    GEMV fp16 batch 1 vs copy  gpucal GEMV dram_Bps / gpucal copy dram_Bps (probes)  >= 0.90
    bf16 GEMM 8192³            torch.matmul time / gpucal cuBLAS time (same A, B)    >= 0.97
    H2D/D2H pinned, pageable   torch copy_ time / gpucal copy time (256 MiB each)    >= 0.97
    GEMV fp16 batch 1..16      cuBLAS decode GEMM time / gpucal GEMV time (same W)   >= 0.90 at every batch
    GEMV fp16 batch 1..4       gpucal GEMV dram_Bps / gpucal copy dram_Bps (probe)   >= 0.85
    decode layer, eager/graph  PyTorch layer time / gpucal layer time (llama-3.1-8b, >= 1/1.05 (ours <= 1.05 x)
                               tp 1, batch 1, 8, 64, context 2048, same weights)

It also runs the host-link, d2d and latency probes (and prints their α/β fits), the decode layer probe
(``probes/decode_layer.py``: the layer beside the sum of its parts), the launch probe's three costs and,
with two GPUs or more, the one-process all-reduce probe.

The PyTorch comparisons share the buffers through DLPack, cross-check the results, and alternate the
two timings over three rounds (median of each), so that clock and heat drift hit both alike. The GEMV is
compared with cuBLAS's decode GEMM (``Backend.decode_gemm_launcher``: C = X·Wᵀ with Wᵀ stored as (k, m)) on
the same weights, both outputs checked against the float64 reference first. The decode layer in PyTorch
(the residual add, RMS norm with its mean square in fp32, x @ W_qkv, rotate-half rotary with the same cos/sin
table, the KV-cache write, ``scaled_dot_product_attention`` with GQA, x @ W_o, the residual add and norm,
x @ W_gu, silu(g)·u, x @ W_down) runs on the very input values ours reads, eagerly and as a
``torch.cuda.CUDAGraph``; our layer's parts are checked against their float64 references on poisoned outputs
first, then its rotated q, attention, residual and output against PyTorch's (max |diff| <= 5e-2 · max |PyTorch's|,
each; PyTorch's graph outputs are set to NaN before its checked replay).

and writes every result (raw samples included) as JSON. Exit code 1 when a probe's check failed or
errored, or a decode comparison could not run or its cross-check failed; missed targets are reported, not
fatal. Needs CuPy and PyTorch on a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace

import numpy as np

from gpucal import render
from gpucal.calibrate.links import series_fits
from gpucal.commands.probe import results_table
from gpucal.kernels.backend import select
from gpucal.kernels.decode_ref import RMS_EPS, cos_sin_table, qkv_width
from gpucal.kernels.dtypes import DTYPES, POISON
from gpucal.probes import allreduce, decode_layer, flops, latency, launch, links, membw
from gpucal.probes.base import policy_for
from gpucal.probes.decode_common import check_decode_gemm, poison
from gpucal.probes.decode_layer import DecodeLayerConfig, LayerShape, build_layer, layer_dtype
from gpucal.probes.timing import measure
from gpucal.profiles.queries import resolve_model
from gpucal.units import format_time

GEMV_VS_CUBLAS_TARGET = 0.90  # cuBLAS decode-GEMM time / our GEMV time, at every batch
GEMV_VS_COPY_TARGET = 0.85  # our GEMV's DRAM bytes/s / our copy's, at batch 1-4
LAYER_TARGET = 1 / 1.05  # PyTorch's layer time / ours: ours at most 1.05 x PyTorch's
LAYER_MODEL = "llama-3.1-8b"
LAYER_BATCHES = (1, 8, 64)
LAYER_CONTEXT = 2048
LAYER_RTOL = 5e-2  # each cross-checked output, ours against PyTorch's: max|diff| <= rtol x max|PyTorch's|
# the outputs decode_layer.build_layer creates, in its order (tp 1: no all-reduce)
LAYER_OUTPUTS = ("norm1", "residual1", "qkv", "q", "attention", "o_proj", "norm2", "residual2", "gate_up", "act", "y")
CROSS_CHECKED = ("q", "attention", "residual2", "y")  # each stage's output: rotary, attention, the residual, the layer


def torch_timer(torch, fn):
    """``run_k(k)``: seconds that k calls of ``fn`` take, by PyTorch's CUDA events."""
    def run_k(k: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(k):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    return run_k


def _interleaved(measure, policy, ours, theirs, rounds: int):
    """Median of per-round times of ``ours`` and ``theirs``, timed alternately (clock and heat drift hit both)."""
    a, b = [], []
    for _ in range(rounds):
        a.append(measure(ours, policy).median_s)
        b.append(measure(theirs, policy).median_s)
    return statistics.median(a), statistics.median(b)


def compare_with_torch(torch, backend, copy_bytes: int, gemv_shape, gemm_n: int, measure, policy, rounds=3) -> dict:
    """gpucal's copy, GEMV (fp16, batch 1) and bf16 GEMM against PyTorch's copy_, mv and matmul on the same
    data (torch tensors shared with CuPy through DLPack), each result cross-checked, then timed alternately."""
    import cupy

    dev = torch.device("cuda")
    ours_k = lambda launch: (lambda k: backend.time_k(launch, k))  # noqa: E731
    out = {}
    src = backend.random_words(copy_bytes // 4, 11)
    dst = cupy.zeros_like(src)
    ts, td = torch.from_dlpack(src), torch.zeros(copy_bytes // 4, dtype=torch.int32, device=dev)
    ours = backend.stream_launcher("copy", {"src": src, "dst": dst})
    ours()
    td.copy_(ts.view(torch.int32))
    torch.cuda.synchronize()
    assert bool((dst == src).all()) and torch.equal(td, ts.view(torch.int32)), "a copy produced different bytes"
    t_ours, t_torch = _interleaved(measure, policy, ours_k(ours), torch_timer(torch, lambda: td.copy_(ts.view(torch.int32))), rounds)
    out["copy"] = {"bytes": copy_bytes, "ours_s": t_ours, "torch_s": t_torch, "ours_copy_Bps": copy_bytes / t_ours,
                   "torch_copy_Bps": copy_bytes / t_torch, "ratio": t_torch / t_ours}
    m, k = gemv_shape
    w, x = backend.random_uniform((m, k), "fp16", 12), backend.random_uniform((1, k), "fp16", 13)
    y = cupy.full((1, m), cupy.nan, dtype=cupy.float16)
    tw, tx = torch.from_dlpack(w), torch.from_dlpack(x).reshape(k)
    ty = torch.empty(m, dtype=torch.float16, device=dev)
    ours = backend.gemv_launcher(w, x, y, 1, "fp16")
    ours()
    torch.mv(tw, tx, out=ty)
    torch.cuda.synchronize()
    ref = tw.double() @ tx.double()
    scale = float((tw.double().abs() @ tx.double().abs()).max())
    for name, got in (("gpucal", torch.from_dlpack(y).reshape(m)), ("torch.mv", ty)):
        err = float((got.double() - ref).abs().max())
        assert err <= 2e-3 * scale, f"{name} GEMV error {err} (scale {scale})"
    t_ours, t_torch = _interleaved(measure, policy, ours_k(ours), torch_timer(torch, lambda: torch.mv(tw, tx, out=ty)), rounds)
    gemv_bytes = (m * k + k + m) * 2
    out["gemv_fp16_b1"] = {"m": m, "k": k, "ours_s": t_ours, "torch_s": t_torch, "ours_dram_Bps": gemv_bytes / t_ours,
                           "torch_dram_Bps": gemv_bytes / t_torch, "ratio": t_torch / t_ours}
    n = gemm_n
    a, b = backend.random_uniform((n, n), "bf16", 14), backend.random_uniform((n, n), "bf16", 15)
    c = cupy.zeros((n, n), dtype=cupy.uint16)
    ta, tb = torch.from_dlpack(a).view(torch.bfloat16), torch.from_dlpack(b).view(torch.bfloat16)
    tc = torch.empty((n, n), dtype=torch.bfloat16, device=dev)
    ours = backend.gemm_launcher(a, b, c, "bf16_fp32acc")
    ours()
    torch.matmul(ta, tb, out=tc)
    torch.cuda.synchronize()
    diff = (torch.from_dlpack(c).view(torch.bfloat16).float() - tc.float()).abs().max().item()
    assert diff <= 0.05 * tc.float().abs().max().item(), f"gpucal and torch bf16 GEMMs differ by {diff}"
    t_ours, t_torch = _interleaved(measure, policy, ours_k(ours), torch_timer(torch, lambda: torch.matmul(ta, tb, out=tc)), rounds)
    out["gemm_bf16"] = {"n": n, "ours_s": t_ours, "torch_s": t_torch, "ours_flops": 2 * n**3 / t_ours,
                        "torch_flops": 2 * n**3 / t_torch, "ratio": t_torch / t_ours}
    return out


def compare_links_with_torch(torch, backend, nbytes: int, measure, policy, rounds=3) -> dict:
    """H2D and D2H of ``nbytes``, pinned and pageable: gpucal's copy (its own buffers, blocked start where the
    memory allows) against PyTorch's ``copy_`` between buffers of the same size and kind, every copy checked
    byte for byte first, then timed alternately."""


    policy = replace(policy, max_k=64)
    d = backend.device_index
    dev = torch.device("cuda", d)
    data = np.random.default_rng(21).integers(0, 256, nbytes, dtype=np.uint8)
    out = {}
    for memory in ("pinned", "pageable"):
        host_src, host_dst = backend.alloc(memory, nbytes, d), backend.alloc(memory, nbytes, d)
        dev_src, dev_dst = backend.alloc("device", nbytes, d), backend.alloc("device", nbytes, d)
        backend.write(host_src, data)
        backend.write(dev_src, data)
        t_host = torch.from_numpy(data.copy())
        t_host = t_host.pin_memory() if memory == "pinned" else t_host
        t_host_dst = torch.empty(nbytes, dtype=torch.uint8, pin_memory=memory == "pinned")
        t_dev = torch.empty(nbytes, dtype=torch.uint8, device=dev)
        t_dev_src = t_host.to(dev)
        for path, src, dst, torch_copy in (
                ("h2d", host_src, dev_dst, lambda a=t_dev, b=t_host: a.copy_(b, non_blocking=True)),
                ("d2h", dev_src, host_dst, lambda a=t_host_dst, b=t_dev_src: a.copy_(b, non_blocking=True))):
            op = backend.copy_op(path, "ce", src, dst, nbytes)
            backend.write(dst, ~data)
            backend.run_op(op)
            torch_copy()
            torch.cuda.synchronize()
            got = t_dev.cpu().numpy() if path == "h2d" else t_host_dst.numpy()
            assert np.array_equal(backend.read(dst, nbytes), data), f"gpucal {path} {memory}: bytes differ"
            assert np.array_equal(got, data), f"torch {path} {memory}: bytes differ"
            t_ours, t_torch = _interleaved(measure, policy, lambda k, op=op: backend.time_ops([op], k)[0],
                                           torch_timer(torch, torch_copy), rounds)
            out[f"{path}_{memory}"] = {"bytes": nbytes, "ours_s": t_ours, "torch_s": t_torch,
                                       "ours_link_Bps": nbytes / t_ours, "torch_link_Bps": nbytes / t_torch,
                                       "ratio": t_torch / t_ours, "gated": op.state.get("gate")}
    return out


def compare_gemv_with_cublas(backend, gemv_shape, batches, measure, policy, rounds=3) -> dict:
    """Our fp16 GEMV (W (m, k), X (batch, k) -> Y (batch, m)) against cuBLAS's decode GEMM on the same weights
    (``decode_gemm_launcher`` with A = X and Wᵀ stored as (k, m)), per batch: both outputs poisoned, run and checked
    against the float64 reference, then timed alternately. ``dram_Bps = (W + X + Y bytes)/t`` for both."""
    m, k = gemv_shape
    store, bad = DTYPES["fp16"].storage, POISON["fp16"]
    w = backend.random_uniform((m, k), "fp16", 41)
    wt = backend.to_device(np.ascontiguousarray(backend.to_host(w).T))  # the same values, as cuBLAS's (k, m) operand
    out = {}
    for b in batches:
        x = backend.random_uniform((b, k), "fp16", 42 + b)
        y, c = backend.full((b, m), store, bad), backend.full((b, m), store, bad)
        ours, theirs = backend.gemv_launcher(w, x, y, b, "fp16"), backend.decode_gemm_launcher(x, wt, c, "fp16")
        poison(backend, y, "fp16")
        poison(backend, c, "fp16")
        ours()
        theirs()
        backend.synchronize()
        for name, got in (("gpucal GEMV", y), ("cuBLAS decode GEMM", c)):
            check = check_decode_gemm(backend, x, wt, got, "fp16")
            assert check.ok, (f"{name} batch {b}: {check.method}: at {check.index} got {check.got}, expected "
                              f"{check.expected} (tolerance {check.tolerance})")
        t_ours, t_cublas = _interleaved(measure, policy, lambda n, f=ours: backend.time_k(f, n),
                                        lambda n, f=theirs: backend.time_k(f, n), rounds)
        nbytes = (m * k + b * k + b * m) * DTYPES["fp16"].itemsize_bytes
        out[f"b{b}"] = {"batch": b, "m": m, "k": k, "ours_s": t_ours, "cublas_s": t_cublas,
                        "ours_dram_Bps": nbytes / t_ours, "cublas_dram_Bps": nbytes / t_cublas,
                        "ratio": t_cublas / t_ours}
    del w, wt
    backend.release_memory()
    return out


def as_torch(torch, array, dtype: str):
    """A PyTorch view of a backend array through DLPack (no copy): bf16, stored as uint16, viewed as bfloat16."""
    t = torch.from_dlpack(array)
    return t.view(torch.bfloat16) if dtype == "bf16" else t


def layer_inputs(backend, shape: LayerShape, batch: int, context: int, dtype: str, seed: int) -> dict:
    """The inputs ``decode_layer.build_layer(backend, shape, batch, context, dtype, seed)`` draws, drawn again with
    its seeds and scales (the PyTorch layer runs on the values ours reads; the cross-check fails if they differ)."""
    b, h, hq, hkv, d, f = batch, shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.ffn

    def rnd(shape_, s, scale=1.0):
        return backend.random_uniform(shape_, dtype, seed + s, scale=scale)

    return {"x": rnd((b, h), 1), "residual": rnd((b, h), 2), "w_norm1": rnd((h,), 3), "w_norm2": rnd((h,), 4),
            "w_qkv": rnd((h, qkv_width(hq, hkv, d)), 5, h ** -0.5), "w_o": rnd((hq * d, h), 6, (hq * d) ** -0.5),
            "w_gate_up": rnd((h, 2 * f), 7, h ** -0.5), "w_down": rnd((f, h), 8, f ** -0.5),
            "k_cache": rnd((b, hkv, context, d), 9), "v_cache": rnd((b, hkv, context, d), 10),
            "cos_sin": backend.to_device(cos_sin_table(context - 1, d))}


def torch_layer(torch, t: dict, shape: LayerShape, context: int, eps: float = RMS_EPS):
    """The decoder layer of ``probes/decode_layer.py`` in PyTorch ops on the tensors ``t`` (``layer_inputs`` as
    PyTorch views): a function of no arguments that runs it and returns the outputs of ``CROSS_CHECKED`` (the
    rotated q, the attention, residual2 and y, named as in ``LAYER_OUTPUTS``). It writes the new token's k and v
    into ``t``'s caches at position context - 1, as ours does."""
    functional = torch.nn.functional
    b = t["x"].shape[0]
    hq, hkv, d, f = shape.heads, shape.kv_heads, shape.head_dim, shape.ffn
    half, pos = d // 2, context - 1
    cos = torch.cat([t["cos_sin"][:half]] * 2).to(t["x"].dtype)
    sin = torch.cat([t["cos_sin"][half:]] * 2).to(t["x"].dtype)
    k_cache, v_cache = t["k_cache"], t["v_cache"]

    def rms(r, w):  # the sum of squares in fp32, as Llama's RMSNorm
        r32 = r.float()
        return (r32 * torch.rsqrt(r32.pow(2).mean(-1, keepdim=True) + eps)).to(r.dtype) * w

    def rotate(x):  # rotate-half: [x1 c - x2 s, x2 c + x1 s]
        x1, x2 = x[..., :half], x[..., half:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    try:  # GQA inside the attention call where this PyTorch has it, else K and V repeated per query head
        probe = torch.zeros((1, 2, 1, 8), dtype=t["x"].dtype, device=t["x"].device)
        functional.scaled_dot_product_attention(probe, probe[:, :1], probe[:, :1], enable_gqa=True)

        def attention(q, k, v):
            return functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    except (TypeError, RuntimeError):
        def attention(q, k, v):
            g = hq // hkv
            return functional.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1))

    def layer():
        r1 = t["x"] + t["residual"]
        qkv = (rms(r1, t["w_norm1"]) @ t["w_qkv"]).view(b, hq + 2 * hkv, d)
        q = rotate(qkv[:, :hq])
        k_cache[:, :, pos] = rotate(qkv[:, hq:hq + hkv])
        v_cache[:, :, pos] = qkv[:, hq + hkv:]
        attn = attention(q.unsqueeze(2), k_cache[:, :, :context], v_cache[:, :, :context])  # (b, hq, 1, d)
        r2 = attn.reshape(b, hq * d) @ t["w_o"] + r1
        gu = rms(r2, t["w_norm2"]) @ t["w_gate_up"]
        y = (functional.silu(gu[:, :f]) * gu[:, f:]) @ t["w_down"]
        return {"q": q, "attention": attn.reshape(b, hq, d), "residual2": r2, "y": y}

    return layer


class LayerPair:
    """Our decode layer (``build_layer``, tp 1) and the same layer in PyTorch on the same input values."""

    def __init__(self, torch, backend, shape: LayerShape, batch: int, context: int, dtype: str, seed: int):
        if shape.tp != 1:
            raise ValueError(f"the PyTorch layer is written for tp 1, not {shape.tp}")
        self.backend, self.dtype = backend, dtype
        self.layer = build_layer(backend, shape, batch, context, dtype, seed)
        if len(self.layer.outputs) != len(LAYER_OUTPUTS) or any(p.allreduce for p in self.layer.parts):
            raise ValueError(f"build_layer made {len(self.layer.outputs)} outputs, not the {len(LAYER_OUTPUTS)} "
                             "of LAYER_OUTPUTS: the PyTorch layer no longer matches it")
        self.launches = [p.launch for p in self.layer.parts]
        self.inputs = layer_inputs(backend, shape, batch, context, dtype, seed)
        self.tensors = {name: as_torch(torch, a, "fp32" if name == "cos_sin" else dtype)
                        for name, a in self.inputs.items()}
        self.outputs = {name: as_torch(torch, a, dt) for name, (a, dt) in zip(LAYER_OUTPUTS, self.layer.outputs)}
        self.torch_layer = torch_layer(torch, self.tensors, shape, context)

    def verify(self, run) -> str | None:
        """Poison our outputs, run our layer once with ``run``, check every part against its float64 reference:
        ``None``, or what failed."""
        for array, dt in self.layer.outputs:
            poison(self.backend, array, dt)
        run()
        self.backend.synchronize()
        for part in self.layer.parts:
            check = part.check()
            if not check.ok:
                return (f"{part.name}: {check.method}: at {check.index} got {check.got}, expected {check.expected} "
                        f"(tolerance {check.tolerance})")
        return None

    def cross_check(self, theirs: dict, rtol: float = LAYER_RTOL) -> dict:
        """Our outputs of the last run against PyTorch's ``theirs`` (by name, ``CROSS_CHECKED``): per output
        max |ours - theirs| / max |theirs|, and ``ok`` where each is within ``rtol`` (NaN is not)."""
        out = {"rtol": rtol}
        for name in CROSS_CHECKED:
            ours, got = self.outputs[name].float(), theirs[name].float()
            scale = float(got.abs().max())
            out[f"{name}_rel_err"] = float((ours - got).abs().max()) / scale if scale > 0 else float("nan")
        out["ok"] = all(out[f"{n}_rel_err"] <= rtol for n in CROSS_CHECKED)
        return out


def torch_graph_of(torch, fn):
    """``fn`` captured in a ``torch.cuda.CUDAGraph`` after three warm-up runs on a side stream: (graph, its
    static outputs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = fn()
    torch.cuda.synchronize()
    return graph, static


def compare_layer_with_torch(torch, backend, model, batches, context, measure, policy, rounds=3) -> list[dict]:
    """Our decode layer (tp 1) against the same layer in PyTorch, eager and as CUDA graphs, per batch: ours
    verified part by part and cross-checked against PyTorch's output, then the two timed alternately."""
    shape = LayerShape.of(model, 1)
    dtype = layer_dtype(backend, DecodeLayerConfig(model=model))
    rows = []
    for b in batches:
        pair = LayerPair(torch, backend, shape, b, context, dtype, seed=7 + 1000 * b + context)
        ours_graph = backend.graph_launcher(pair.launches)
        their_graph, static = torch_graph_of(torch, pair.torch_layer)
        modes = (("eager", backend.sequence_launcher(pair.launches), pair.torch_layer, None),
                 ("graph", ours_graph, their_graph.replay, static))
        for mode, ours, theirs, outputs in modes:
            row = {"model": model.name, "batch": b, "context": context, "dtype": dtype, "mode": mode}
            bad = pair.verify(ours)
            if outputs is None:
                got = theirs()
            else:
                for o in outputs.values():
                    o.fill_(float("nan"))  # PyTorch's graph must write its outputs again
                theirs()
                got = outputs
            torch.cuda.synchronize()
            row["cross_check"] = pair.cross_check(got)
            if bad is not None:
                row.update(verified=False, reason=bad)
                rows.append(row)
                continue
            t_ours, t_torch = _interleaved(measure, policy, lambda n, f=ours: backend.time_k(f, n),
                                           torch_timer(torch, theirs), rounds)
            row.update(verified=True, ours_s=t_ours, torch_s=t_torch, ratio=t_torch / t_ours)
            rows.append(row)
        del pair, ours_graph, their_graph, static
        backend.release_memory()
        torch.cuda.empty_cache()
    return rows


def _decode_layer_lines(results) -> list[str]:
    """Per case of the decode layer probe: layer, sum of parts, their ratio, and the parts."""
    lines = []
    for r in results:
        m = r.metrics or {}
        if "layer_s" not in m:
            lines.append(f"decode {r.case}: {r.status} {r.reason or ''}".rstrip())
            continue
        parts = ", ".join(f"{p['name']} {format_time(p['seconds'])}" for p in r.params.get("parts", []))
        lines.append(f"decode {r.case}: layer {format_time(m['layer_s'])}, parts {format_time(m['parts_s'])}, "
                     f"layer/parts {m['layer_over_parts']:.3f} ({parts})")
    return lines


def _launch_line(results) -> str:
    said = []
    for r in results:
        key = {"eager": "per_kernel_s", "graph": "per_node_s", "sync": "per_step_s"}.get(r.case)
        value = (r.metrics or {}).get(key)
        said.append(f"{r.case} {format_time(value)}" if value is not None else f"{r.case} {r.status} ({r.reason})")
    return "launch: " + ", ".join(said) + " (eager: per kernel back to back; graph: per node; sync: launch + wait)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="JSON file to write (default gpu_check.json)")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one plateau GEMM per mode, fewer decode shapes, GEMV "
                        "against cuBLAS at batch 1, 2, 4, 8, 16 only, shorter timing budgets")
    args = parser.parse_args(argv)

    import torch


    started = time.time()
    backend = select("cupy", args.device)
    torch.cuda.set_device(args.device)
    device = backend.device()
    print(f"== {device.name} (cc {device.compute_capability}, {device.sm_count} SMs, L2 {device.l2_bytes} B, "
          f"theoretical memory {device.theoretical_memory_Bps} B/s); {backend.versions()}; torch {torch.__version__}",
          flush=True)
    mem = membw.run(backend, membw.MembwConfig())
    print(f"-- membw done in {time.time() - started:.0f} s", flush=True)
    render.console().print(results_table(mem))
    batches = (1, 16) if args.quick else (1, 2, 4, 8, 16)
    fl = flops.run(backend, flops.FlopsConfig(decode_batches=batches))
    print(f"-- flops done in {time.time() - started:.0f} s", flush=True)
    render.console().print(results_table(fl))

    by_case = {r.case: r for r in mem + fl}
    copy = next(r for r in mem if r.case.startswith("copy-"))
    gemv = by_case["gemv-fp16-b1"]
    base = compare_with_torch(torch, backend, copy.params["bytes_per_buffer"], (gemv.params["m"], gemv.params["k"]),
                              8192, measure, policy_for(backend))
    print(f"-- torch done in {time.time() - started:.0f} s", flush=True)

    link_cfg = links.LinkConfig(sizes=links.sweep_sizes(4, 256 << 20)[::2] + (256 << 20,), devices=(args.device,),
                                budget_s=0.5)
    lk = links.run_host_link(backend, link_cfg) + links.run_d2d(backend, link_cfg) + latency.run_latency(
        backend, links.LinkConfig(devices=(args.device,), pairs=(), budget_s=0.3))
    print(f"-- links done in {time.time() - started:.0f} s", flush=True)
    render.console().print(results_table([r for r in lk if r.params.get("bytes") in (4, 1 << 20, 256 << 20)]))

    for f in series_fits(lk):
        print(f"fit {f.series}: alpha {f.fit.alpha_s * 1e6:.2f} us, beta {f.fit.beta_Bps / 1e9:.2f} GB/s, "
              f"R2 {f.fit.r2:.4f}, n {f.fit.n}, verified {f.verified}" if f.fit else f"fit {f.series}: {f.reason}")
    hl = compare_links_with_torch(torch, backend, 256 << 20, measure, policy_for(backend))
    print(f"-- torch copies done in {time.time() - started:.0f} s", flush=True)

    # the decode step: GEMV against cuBLAS, the decode layer (probe, and against PyTorch), launch, all-reduce
    budget_s = 0.25 if args.quick else 1.0
    policy = policy_for(backend, budget_s)
    errors: dict[str, str] = {}

    def attempt(name, fn, default):
        """``fn()``, or ``default`` with the error recorded (the JSON stays complete, the exit code 1)."""
        try:
            return fn()
        except Exception as exc:  # a comparison that cannot run or whose cross-check fails: report, go on
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"-- {name}: ERROR {errors[name]}", flush=True)
            return default

    gemv_batches = (1, 2, 4, 8, 16) if args.quick else tuple(range(1, 17))
    vs_cublas = attempt("gemv_vs_cublas", lambda: compare_gemv_with_cublas(
        backend, (gemv.params["m"], gemv.params["k"]), gemv_batches, measure, policy), {})
    print(f"-- GEMV vs cuBLAS done in {time.time() - started:.0f} s", flush=True)
    decode_reason = backend.decode_reason()
    model = resolve_model(LAYER_MODEL)
    layer_results, layer_rows, launch_results = [], [], []
    if decode_reason is None:
        layer_cfg = DecodeLayerConfig(model=model, tp=1, batches=LAYER_BATCHES, contexts=(LAYER_CONTEXT,), graph=True,
                                      budget_s=budget_s)
        layer_results = attempt("decode_layer", lambda: decode_layer.run(backend, layer_cfg), [])
        print(f"-- decode layer probe done in {time.time() - started:.0f} s", flush=True)
        render.console().print(results_table(layer_results))
        layer_rows = attempt("decode_layer_vs_torch", lambda: compare_layer_with_torch(
            torch, backend, model, LAYER_BATCHES, LAYER_CONTEXT, measure, policy), [])
        print(f"-- decode layer vs torch done in {time.time() - started:.0f} s", flush=True)
        launch_results = attempt("launch", lambda: launch.run(backend, launch.LaunchConfig(budget_s=budget_s)), [])
        render.console().print(results_table(launch_results))
    else:
        print(f"-- decode layer, its PyTorch comparison and the launch probe skipped: {decode_reason}", flush=True)
    allreduce_reason = allreduce.applicable(backend)
    allreduce_results = []
    if allreduce_reason is None:
        ar_cfg = allreduce.AllreduceConfig(budget_s=budget_s, **({"batches": (1, 8, 64, 512)} if args.quick else {}))
        allreduce_results = attempt("allreduce", lambda: allreduce.run(backend, ar_cfg), [])
        print(f"-- all-reduce done in {time.time() - started:.0f} s", flush=True)
        render.console().print(results_table(allreduce_results))
    decode_results = layer_results + launch_results + allreduce_results

    checks = [
        ("copy rate vs torch copy_ (interleaved)", base["copy"]["ratio"], 0.97),
        ("GEMV fp16 b1 vs torch.mv (interleaved)", base["gemv_fp16_b1"]["ratio"], 1.0),
        ("GEMV fp16 b1 DRAM vs own copy DRAM (probes)", gemv.metrics["dram_Bps"] / copy.metrics["dram_Bps"]
         if gemv.metrics and copy.metrics else None, 0.90),
        ("bf16 GEMM 8192^3 vs torch.matmul (interleaved)", base["gemm_bf16"]["ratio"], 0.97),
    ] + [(f"{key.replace('_', ' ')} 256 MiB vs torch copy_ (interleaved)", v["ratio"], 0.97) for key, v in hl.items()]
    copy_dram_Bps = copy.metrics.get("dram_Bps") if copy.metrics else None
    for row in vs_cublas.values():
        checks.append((f"GEMV fp16 b{row['batch']} vs cuBLAS decode GEMM (interleaved)", row["ratio"],
                       GEMV_VS_CUBLAS_TARGET))
    for row in vs_cublas.values():
        if row["batch"] <= 4:
            checks.append((f"GEMV fp16 b{row['batch']} DRAM vs own copy DRAM (probe)",
                           row["ours_dram_Bps"] / copy_dram_Bps if copy_dram_Bps else None, GEMV_VS_COPY_TARGET))
    for row in layer_rows:
        checks.append((f"decode layer b{row['batch']} t{row['context']} {row['mode']} vs torch (interleaved)",
                       row.get("ratio"), LAYER_TARGET))
    rows = [(name, f"{r:.3f}" if r else "-", f">= {target:.2f}", "met" if r and r >= target else "MISSED")
            for name, r, target in checks]
    render.console().print(render.table(("comparison (same process, same harness)", "ratio", "target", ""), rows,
                                        right=(1,)))
    print(f"copy {base['copy']['ours_copy_Bps'] / 1e9:.1f} vs torch {base['copy']['torch_copy_Bps'] / 1e9:.1f} GB/s (n/t); "
          f"GEMV {base['gemv_fp16_b1']['ours_dram_Bps'] / 1e9:.1f} vs torch.mv {base['gemv_fp16_b1']['torch_dram_Bps'] / 1e9:.1f} GB/s; "
          f"bf16 GEMM {base['gemm_bf16']['ours_flops'] / 1e12:.1f} vs torch {base['gemm_bf16']['torch_flops'] / 1e12:.1f} TFLOP/s; "
          f"total {time.time() - started:.0f} s")
    print("; ".join(f"{k} {v['ours_link_Bps'] / 1e9:.2f} vs torch {v['torch_link_Bps'] / 1e9:.2f} GB/s" for k, v in hl.items()))
    if vs_cublas:
        print("GEMV fp16 vs cuBLAS decode GEMM, DRAM GB/s: " + "; ".join(
            f"b{r['batch']} {r['ours_dram_Bps'] / 1e9:.0f} vs {r['cublas_dram_Bps'] / 1e9:.0f}" for r in vs_cublas.values())
            + (f" (copy {copy_dram_Bps / 1e9:.0f})" if copy_dram_Bps else ""))
    for row in layer_rows:
        xc = row["cross_check"]
        timing = (f"ours {format_time(row['ours_s'])} vs torch {format_time(row['torch_s'])}" if row["verified"]
                  else f"NOT verified: {row['reason']}")
        errs = ", ".join(f"{n} {xc[f'{n}_rel_err']:.1e}" for n in CROSS_CHECKED)
        print(f"decode layer {row['model']} b{row['batch']} t{row['context']} {row['mode']}: {timing}; vs torch, "
              f"max|diff|/max|torch|: {errs} (rtol {xc['rtol']:g}): {'ok' if xc['ok'] else 'FAILED'}")
    for line in _decode_layer_lines(layer_results):
        print(line)
    if launch_results:
        print(_launch_line(launch_results))
    if decode_reason is not None:
        print(f"decode layer and launch: skipped ({decode_reason})")
    if allreduce_reason is not None:
        print(f"all-reduce: skipped ({allreduce_reason})")
    for name, error in errors.items():
        print(f"{name}: ERROR {error}")
    failed = [r for r in mem + fl + lk + decode_results if r.status in ("failed", "error")]
    crossed = [r for r in layer_rows if not r["cross_check"]["ok"] or not r["verified"]]
    report = {"host": platform.node(), "date": time.strftime("%Y-%m-%d"), "device": device.name,
              "backend_versions": backend.versions(), "torch": torch.__version__, "torch_comparison": base, "torch_copies": hl,
              "gemv_vs_cublas": vs_cublas, "decode_layer_vs_torch": layer_rows,
              "skipped": {"decode": decode_reason, "allreduce": allreduce_reason}, "errors": errors,
              "ratios": [{"name": n, "ratio": r, "target": t} for n, r, t in checks],
              "results": [r.to_dict() for r in mem + fl + lk + decode_results], "elapsed_s": time.time() - started}
    with open(args.out, "w") as f:
        json.dump(render.json_ready(report), f, indent=1)
    return 1 if failed or crossed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
