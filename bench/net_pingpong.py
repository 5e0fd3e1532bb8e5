"""The network probe against the plain ping-pong loop that MPI latency benchmarks run (OSU's
osu_latency: warm-up, then a fixed number of round trips, the mean half round trip), interleaved size
by size in one MPI run on the same pair of ranks.

    mpiexec -n 2 python bench/net_pingpong.py [--sizes 8B..4MiB] [--iters 1000] [--json]

Prints, per size, gpucal's one-way time (median of adaptive samples, ``probes/net.py``) and the plain
loop's mean, and their ratio: near 1 means the probe's harness (control messages, checks, lockstep
timing) adds nothing to what it measures. Ranks on one host measure MPI's shared memory.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from gpucal.commands.options import link_sizes
from gpucal.kernels.comm import world
from gpucal.probes.net import NetConfig, measure_net


def plain_pingpong_s(comm, peer: int, nbytes: int, iters: int, warmup: int) -> float:
    """Mean one-way seconds of ``iters`` round trips after ``warmup`` (rank 0 times, the peer echoes)."""
    from mpi4py import MPI

    buf = np.zeros(nbytes, dtype=np.uint8)
    first = comm.Get_rank() == 0
    start = 0.0
    for i in range(warmup + iters):
        if i == warmup:
            comm.Barrier()
            start = MPI.Wtime()
        if first:
            comm.Send(buf, dest=peer)
            comm.Recv(buf, source=peer)
        else:
            comm.Recv(buf, source=peer)
            comm.Send(buf, dest=peer)
    return (MPI.Wtime() - start) / iters / 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8B..4MiB")
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)


    w = world()
    if w.size != 2:
        print("run with exactly 2 ranks: mpiexec -n 2 python bench/net_pingpong.py", file=sys.stderr)
        return 2
    sizes = link_sizes(args.sizes)
    rows = []
    for n in sizes:
        report = measure_net(w, NetConfig(sizes=(n,), budget_s=0.2))
        (result,) = report.results
        plain = plain_pingpong_s(w.comm, 1 - w.rank, n, max(10, args.iters if n <= 65536 else args.iters // 10),
                                 warmup=100 if n <= 65536 else 10)
        plain = w.comm.bcast(plain, root=0)
        probe = result.timing.median_s if result.timing else None
        rows.append({"bytes": n, "gpucal_s": probe, "plain_s": plain, "ratio": probe / plain if probe else None,
                     "status": result.status})
    if w.is_root:
        if args.json:
            print(json.dumps({"ranks": w.size, "same_host": w.same_host(0, 1), "library": w.library, "rows": rows}))
        else:
            print(f"2 ranks, {'one host' if w.same_host(0, 1) else 'two hosts'}, {w.library}")
            print(f"{'bytes':>10}  {'gpucal (median)':>16}  {'plain loop (mean)':>18}  {'ratio':>6}")
            for r in rows:
                probe = f"{r['gpucal_s'] * 1e6:.3f} us" if r["gpucal_s"] else r["status"]
                ratio = f"{r['ratio']:.3f}" if r["ratio"] else "-"
                print(f"{r['bytes']:>10}  {probe:>16}  {r['plain_s'] * 1e6:>15.3f} us  {ratio:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
