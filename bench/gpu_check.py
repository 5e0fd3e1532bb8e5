"""GPU check: every probe of gpucal on a real GPU, against PyTorch doing the same operations in the same
process, timed by the same harness (CUDA events, warm-up, adaptive sampling, median).

    python bench/gpu_check.py [--out FILE.json] [--device N] [--quick]

Prints the probes' tables, then the ratios with their targets (H100 targets of the kernels issue):

    copy bandwidth             torch copy_ time / gpucal copy time (same buffers)    >= 0.97
    GEMV fp16 batch 1          torch.mv time / gpucal GEMV time (same W, x)          >= 1.00
    GEMV fp16 batch 1 vs copy  gpucal GEMV dram_Bps / gpucal copy dram_Bps (probes)  >= 0.90
    bf16 GEMM 8192³            torch.matmul time / gpucal cuBLAS time (same A, B)    >= 0.97
    H2D/D2H pinned, pageable   torch copy_ time / gpucal copy time (256 MiB each)    >= 0.97

It also runs the host-link, d2d and latency probes (and prints their α/β fits).

The PyTorch comparisons share the buffers through DLPack, cross-check the results, and alternate the
two timings over three rounds (median of each), so that clock and heat drift hit both alike.

and writes every result (raw samples included) as JSON. Exit code 1 when a probe's check failed or
errored; missed targets are reported, not fatal. Needs CuPy and PyTorch on a CUDA GPU.
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
from gpucal.probes import flops, latency, links, membw
from gpucal.probes.base import policy_for
from gpucal.probes.timing import measure


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="JSON file to write (default gpu_check.json)")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one plateau GEMM per mode, fewer decode shapes")
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

    checks = [
        ("copy rate vs torch copy_ (interleaved)", base["copy"]["ratio"], 0.97),
        ("GEMV fp16 b1 vs torch.mv (interleaved)", base["gemv_fp16_b1"]["ratio"], 1.0),
        ("GEMV fp16 b1 DRAM vs own copy DRAM (probes)", gemv.metrics["dram_Bps"] / copy.metrics["dram_Bps"]
         if gemv.metrics and copy.metrics else None, 0.90),
        ("bf16 GEMM 8192^3 vs torch.matmul (interleaved)", base["gemm_bf16"]["ratio"], 0.97),
    ] + [(f"{key.replace('_', ' ')} 256 MiB vs torch copy_ (interleaved)", v["ratio"], 0.97) for key, v in hl.items()]
    rows = [(name, f"{r:.3f}" if r else "-", f">= {target:.2f}", "met" if r and r >= target else "MISSED")
            for name, r, target in checks]
    render.console().print(render.table(("comparison (same process, same harness)", "ratio", "target", ""), rows,
                                        right=(1,)))
    print(f"copy {base['copy']['ours_copy_Bps'] / 1e9:.1f} vs torch {base['copy']['torch_copy_Bps'] / 1e9:.1f} GB/s (n/t); "
          f"GEMV {base['gemv_fp16_b1']['ours_dram_Bps'] / 1e9:.1f} vs torch.mv {base['gemv_fp16_b1']['torch_dram_Bps'] / 1e9:.1f} GB/s; "
          f"bf16 GEMM {base['gemm_bf16']['ours_flops'] / 1e12:.1f} vs torch {base['gemm_bf16']['torch_flops'] / 1e12:.1f} TFLOP/s; "
          f"total {time.time() - started:.0f} s")
    print("; ".join(f"{k} {v['ours_link_Bps'] / 1e9:.2f} vs torch {v['torch_link_Bps'] / 1e9:.2f} GB/s" for k, v in hl.items()))
    report = {"host": platform.node(), "date": time.strftime("%Y-%m-%d"), "device": device.name,
              "backend_versions": backend.versions(), "torch": torch.__version__, "torch_comparison": base, "torch_copies": hl,
              "ratios": [{"name": n, "ratio": r, "target": t} for n, r, t in checks],
              "results": [r.to_dict() for r in mem + fl + lk], "elapsed_s": time.time() - started}
    with open(args.out, "w") as f:
        json.dump(render.json_ready(report), f, indent=1)
    return 1 if any(r.status in ("failed", "error") for r in mem + fl + lk) else 0


if __name__ == "__main__":
    sys.exit(main())
