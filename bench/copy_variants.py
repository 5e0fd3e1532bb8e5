"""Device-local copy: gpucal's copy kernels and grid sizes against the driver's own device-to-device
``cudaMemcpyAsync``, interleaved round by round in one process (same buffers, same harness).

    python bench/copy_variants.py [--bytes 512MiB] [--rounds 3]

Prints, per variant, the copy rate (n/t) and its ratio to the driver's memcpy; the fastest variant is
what ``CupyBackend.copy_kernel`` / ``copy_waves`` should name. Needs CuPy on a CUDA GPU.
"""

from __future__ import annotations

import argparse
import statistics

from gpucal.kernels.backend import select
from gpucal.kernels.cuda_src import COPY_VARIANTS
from gpucal.probes.timing import measure
from gpucal.units import parse_positive


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", default="512MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernels", default="copy_plain_plain_u4,copy_plain_plain_u8,copy_plain_stream_u4",
                        help=f"comma-separated copy kernels (all: {','.join(COPY_VARIANTS)})")
    args = parser.parse_args(argv)

    import cupy


    n = int(parse_positive(args.bytes, "bytes")) // 16 * 16
    backend = select("cupy")
    src = backend.random_words(n // 4, 1)
    dst = cupy.zeros_like(src)
    stream = cupy.cuda.get_current_stream()

    def memcpy():
        cupy.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, n, 3, stream.ptr)  # 3: device to device

    variants = {"driver memcpyAsync D2D": memcpy}
    for kernel in COPY_VARIANTS:
        if kernel not in args.kernels.split(","):
            continue
        for waves in (4, 8, 16, 32, 128, 0):
            backend.copy_kernel, backend.copy_waves = kernel, waves
            variants[f"{kernel} x{waves or 'one-per-thread'}"] = backend.stream_launcher("copy", {"src": src, "dst": dst})
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, launch in variants.items():
            dst.fill(0)
            launch()
            stream.synchronize()
            assert bool((dst == src).all()), f"{name} copied wrong bytes"
            times[name].append(measure(lambda k, launch=launch: backend.time_k(launch, k)).median_s)
    base = statistics.median(times["driver memcpyAsync D2D"])
    print(f"copy of {n} B on {backend.device().name}, median over {args.rounds} interleaved rounds")
    for name, ts in sorted(times.items(), key=lambda item: statistics.median(item[1])):
        t = statistics.median(ts)
        print(f"{name:28s} {n / t / 1e9:9.1f} GB/s copy rate   ratio to driver {base / t:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
