"""gpucal's GEMV against cuBLAS's decode GEMM on the same shape and against the suite's copy, batch 1 to 16,
timed alternately round by round in one process; then the GEMV's variants (``GEMV_VARIANTS``).

    python bench/gemv_variants.py [--shape 16384x8192] [--dtype fp16] [--rounds 2] [--budget 0.1]

W is m×k (the GEMV's Y = X·Wᵀ); cuBLAS runs ``CupyBackend.decode_gemm_launcher`` (C = X·W', fp32
accumulation) with W' = Wᵀ held as a k×m matrix, the same bytes. Per batch it prints the GEMV's DRAM rate
((W + X + Y)/t), cuBLAS's on the same bytes, and the copy kernel's DRAM rate (2n/t), with the two ratios
and their targets: GEMV/cuBLAS ≥ 0.90 at every batch, GEMV/copy ≥ 0.85 at batch 1-4. Every output is
checked against the float64 reference before it is timed. The last lines are the verdicts. Needs CuPy on
a GPU.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

from gpucal.kernels.backend import select
from gpucal.kernels.cuda_src import GEMV_SHAPES, GEMV_VARIANTS
from gpucal.kernels.dtypes import DTYPES, POISON, to_float64
from gpucal.kernels.reference import GEMM_MODES, check_close, gemm_tolerance
from gpucal.probes.membw import default_stream_bytes
from gpucal.probes.timing import POLICY_GPU, measure

TARGET_CUBLAS = 0.90  # GEMV / cuBLAS decode GEMM, every batch
TARGET_COPY = 0.85  # GEMV DRAM / copy DRAM, batch 1-4
COPY_BATCHES = (1, 2, 3, 4)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="16384x8192", help="m x k of W")
    parser.add_argument("--dtype", default="fp16", choices=sorted(GEMV_SHAPES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", type=float, default=0.1, help="host seconds per timing")
    args = parser.parse_args(argv)

    import cupy


    m, k = (int(v) for v in args.shape.split("x"))
    dtype, size = args.dtype, DTYPES[args.dtype].itemsize_bytes
    policy = replace(POLICY_GPU, min_samples=5, budget_s=args.budget)
    backend = select("cupy")
    w = backend.random_uniform((m, k), dtype, 1)
    w_kn = cupy.ascontiguousarray(w.T)  # W' (k×m) for cuBLAS: C = X·W' = X·Wᵀ
    w64 = to_float64(w, dtype, cupy)
    w64_abs = cupy.abs(w64)
    mode = GEMM_MODES[f"{dtype}_fp32acc" if dtype != "fp32" else "fp32"]

    def timed(launch) -> float:
        return measure(lambda n: backend.time_k(launch, n), policy).median_s

    def checked(name: str, launch, x, out, batch: int) -> None:
        out.fill(POISON[dtype])
        launch()
        backend.synchronize()
        x64 = to_float64(x, dtype, cupy)
        ref, abs_product = x64 @ w64.T, cupy.abs(x64) @ w64_abs.T
        check = check_close(to_float64(out, dtype, cupy), ref, gemm_tolerance(mode, k, abs_product, ref, cupy),
                            "float64 reference", cupy)
        assert check.ok, f"{name} at batch {batch} is wrong: {check}"

    n_copy = default_stream_bytes(backend)
    src = backend.random_words(n_copy // 4, 3)
    dst = cupy.zeros_like(src)
    copy = backend.stream_launcher("copy", {"src": src, "dst": dst})
    copy()
    backend.synchronize()
    assert bool((dst == src).all()), "the copy kernel copied wrong bytes"

    cases = {}  # (name, batch) -> (launch, bytes moved)
    for batch in range(1, 17):
        x = backend.random_uniform((batch, k), dtype, 100 + batch)
        y = cupy.empty((batch, m), dtype=DTYPES[dtype].storage)
        c = cupy.empty((batch, m), dtype=DTYPES[dtype].storage)
        ours = backend.gemv_launcher(w, x, y, batch, dtype)
        blas = backend.decode_gemm_launcher(x, w_kn, c, dtype)
        checked("gpucal GEMV", ours, x, y, batch)
        checked("cuBLAS decode GEMM", blas, x, c, batch)
        moved = (m * k + batch * k + batch * m) * size
        cases["ours", batch], cases["cuBLAS", batch] = (ours, moved), (blas, moved)
    variants = [v for v in GEMV_VARIANTS if v[0] == dtype]
    for variant in variants:
        batch = variant[1]
        x = backend.random_uniform((batch, k), dtype, 100 + batch)
        y = cupy.empty((batch, m), dtype=DTYPES[dtype].storage)
        launch = backend.gemv_launcher(w, x, y, batch, dtype, variant=variant[2:])
        checked(f"variant {variant}", launch, x, y, batch)
        cases[f"{variant[2]} r{variant[3]} u{variant[4]}", batch] = (launch, (m * k + batch * k + batch * m) * size)

    times = {key: [] for key in cases}
    copy_times = []
    for _ in range(args.rounds):
        copy_times.append(timed(copy))
        for key, (launch, _) in cases.items():
            times[key].append(timed(launch))
    rate = {key: cases[key][1] / statistics.median(ts) for key, ts in times.items()}
    copy_Bps = 2 * n_copy / statistics.median(copy_times)

    print(f"{dtype} GEMV W {m}x{k} ({'/'.join(map(str, GEMV_SHAPES[dtype]))}) on {backend.device().name}; "
          f"medians of {args.rounds} interleaved rounds; copy of {n_copy} B: DRAM {copy_Bps / 1e9:.1f} GB/s")
    print("batch   GEMV GB/s  cuBLAS GB/s  GEMV/cuBLAS  GEMV/copy")
    for batch in range(1, 17):
        ours, blas = rate["ours", batch], rate["cuBLAS", batch]
        print(f"{batch:5d} {ours / 1e9:11.1f} {blas / 1e9:12.1f} {ours / blas:12.3f} {ours / copy_Bps:10.3f}")
    if variants:
        print("variants (engine, rows per warp, unroll): GB/s, ratio to the default at that batch")
        for key, value in rate.items():
            if key[0] not in ("ours", "cuBLAS"):
                print(f"  b{key[1]:<3d}{key[0]:16s} {value / 1e9:9.1f}   {value / rate['ours', key[1]]:.3f}")
    worst_blas = min(range(1, 17), key=lambda b: rate["ours", b] / rate["cuBLAS", b])
    worst_copy = min(COPY_BATCHES, key=lambda b: rate["ours", b])
    r_blas = rate["ours", worst_blas] / rate["cuBLAS", worst_blas]
    r_copy = rate["ours", worst_copy] / copy_Bps
    print(f"worst GEMV/cuBLAS over batch 1-16: {r_blas:.3f} at batch {worst_blas} "
          f"(target {TARGET_CUBLAS}: {'met' if r_blas >= TARGET_CUBLAS else 'missed'})")
    print(f"worst GEMV/copy DRAM over batch 1-4: {r_copy:.3f} at batch {worst_copy} "
          f"(target {TARGET_COPY}: {'met' if r_copy >= TARGET_COPY else 'missed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
