"""Batch-1 fp16 GEMV: gpucal's kernel and its variants (loads in flight, rows per warp) against
``torch.mv`` on the same W and x, timed alternately round by round in one process.

    python bench/gemv_variants.py [--shape 16384x8192] [--rounds 3]

Prints each variant's DRAM rate ((W + x + y)/t) and its ratio to torch.mv. Needs CuPy and PyTorch on a GPU.
"""

from __future__ import annotations

import argparse
import statistics

from gpu_check import torch_timer

from gpucal.kernels.backend import select
from gpucal.kernels.cuda_src import GEMV_ROWS_PER_WARP, GEMV_VARIANTS
from gpucal.probes.timing import measure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="16384x8192")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import cupy
    import torch


    m, k = (int(v) for v in args.shape.split("x"))
    backend = select("cupy")
    w, x = backend.random_uniform((m, k), "fp16", 1), backend.random_uniform((1, k), "fp16", 2)
    y = cupy.zeros((1, m), dtype=cupy.float16)
    tw, tx = torch.from_dlpack(w), torch.from_dlpack(x).reshape(k)
    ty = torch.empty(m, dtype=torch.float16, device="cuda")
    ref = (tw.double() @ tx.double()).cpu().numpy()
    scale = float((tw.double().abs() @ tx.double().abs()).max())  # |W|·|x|: what rounding errors scale with
    variants = {f"default (r{GEMV_ROWS_PER_WARP})": backend.gemv_launcher(w, x, y, 1, "fp16")}
    for dtype, batch, unroll, rows in GEMV_VARIANTS:
        variants[f"u{unroll} r{rows}"] = backend.gemv_launcher(w, x, y, batch, dtype, variant=(unroll, rows))
    variants["torch.mv"] = lambda: torch.mv(tw, tx, out=ty)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, launch in variants.items():
            y.fill(cupy.nan)
            launch()
            torch.cuda.synchronize()
            got = ty.double().cpu().numpy() if name == "torch.mv" else cupy.asnumpy(y[0]).astype("float64")
            assert abs(got - ref).max() <= 2e-3 * scale, f"{name} is wrong"
            times[name].append(measure(torch_timer(torch, launch)).median_s)
    bytes_moved = (m * k + k + m) * 2
    base = statistics.median(times["torch.mv"])
    print(f"fp16 GEMV {m}x{k}, batch 1, on {backend.device().name}; median over {args.rounds} interleaved rounds")
    for name, ts in sorted(times.items(), key=lambda item: statistics.median(item[1])):
        t = statistics.median(ts)
        print(f"{name:22s} {bytes_moved / t / 1e9:8.1f} GB/s   ratio to torch.mv {base / t:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
