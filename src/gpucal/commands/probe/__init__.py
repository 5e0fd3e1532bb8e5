"""``gpucal probe NAME``: run one probe and show its results (``gpucal probe --list`` lists them).

The probes on one backend run in ``single``; the probes over MPI, ``net`` (ping-pong between ranks) and
``collectives`` (NCCL), in their own modules.
"""

from __future__ import annotations

from gpucal import render
from gpucal.commands.options import backend_arg, budget, int_in, nonempty
from gpucal.commands.probe import collectives, decode, net
from gpucal.commands.probe.single import (
    MPI_FLAGS,
    int_list,
    names,
    results_table,
    run_single,
)
from gpucal.errors import InputError
from gpucal.limits import MODEL_MAXIMA
from gpucal.probes.registry import all_probes

__all__ = ["DESCRIPTION", "MPI_PROBES", "add_arguments", "results_table", "run"]

DESCRIPTION = "Run one probe: verified, timed measurements with their statistics."
# the probes that run over MPI (every rank of mpiexec), not on one backend: their own modules here
MPI_PROBES = {"net": "ping-pong between every pair of ranks over MPI, 8 B..64 MiB: alpha/beta per pair of hosts "
                     "(mpiexec -n N)",
              "collectives": "NCCL all-reduce, all-gather, reduce-scatter, broadcast, send/recv over the decode range, "
                             "one rank per GPU: alpha/beta, algbw and busbw (mpiexec -n N)"}


def add_arguments(p) -> None:
    """``gpucal probe``'s flags (those of the probes over MPI in their own group)."""
    p.add_argument("name", nargs="?", metavar="NAME", help="the probe (gpucal probe --list)")
    p.add_argument("--list", action="store_true", help="list the probes and exit")
    backend_arg(p)
    p.add_argument("--dtype", type=names, metavar="LIST",
                   help="membw: GEMV dtypes (fp16,bf16,fp32); flops: dtypes or modes "
                        "(fp64,fp32,tf32,fp16,bf16 or e.g. fp16_fp16acc). Default: all the backend has")
    p.add_argument("--sizes", type=nonempty, metavar="LIST",
                   help="membw: bytes per stream buffer (e.g. 512MiB,1GiB); flops: square GEMM sizes (e.g. 4096,8192); "
                        "copy probes: sizes, as a list or a range of powers of 2 (4B..256MiB)")
    p.add_argument("--batches", "--batch", type=int_list, metavar="LIST",
                   help="GEMV batches (membw), decode-shape m (flops, decode-gemm), batches (attention, decode); "
                        "default by probe (membw, flops: 1,2,4,8,16; decode-gemm: 1,2,4,...,512; decode: 1,8,64)")
    p.add_argument("--kernels", type=names, metavar="LIST", help="membw: copy,read,write,triad,gemv (default all)")
    p.add_argument("--gemv-shape", type=nonempty, metavar="MxK", help="membw: rows and columns of the GEMV weight (default from the L2)")
    p.add_argument("--shapes", type=nonempty, metavar="LIST",
                   help="decode-gemm: weight shapes NxK, e.g. 4096x1024,6144x4096 (default: 8 to 512 MiB of fp16)")
    p.add_argument("--context", type=int_list, metavar="LIST",
                   help="attention, decode: context lengths T (default attention 512,2048,8192; decode 2048)")
    p.add_argument("--model", metavar="NAME|FILE", help="decode: the model (a preset, a gpucal.model/1 file or a "
                                                        "config.json)")
    p.add_argument("--tp", type=int_in(1, 1024), metavar="N", help="decode: the TP size whose shard runs (default 1)")
    p.add_argument("--graph", action="store_true", help="decode: also time the layer as CUDA graphs")
    p.add_argument("--pairs", type=nonempty, metavar="LIST", help="peer, latency: pairs of devices, e.g. 0-1,2-3 (default every pair)")
    p.add_argument("--budget", type=budget, metavar="S",
                   help="seconds of sampling per case at most, e.g. 2 or 500ms (default 2)")
    mpi = p.add_argument_group("over MPI (mpiexec -n N gpucal probe net|collectives)")
    mpi.add_argument("--simulate-net", type=nonempty, metavar="LINK[+OPTION...]",
                     help="net, collectives: every rank a host of its own, joined by a simulated LINK (a link preset "
                          "such as eth1g, or alpha=50us,beta=1Gbit/s; options +noise=F, +seed=N); the bytes really "
                          "move over MPI and are checked, the times are priced by the link and say simulated")
    mpi.add_argument("--ops", type=names, metavar="LIST",
                     help="collectives: all-reduce,all-gather,reduce-scatter,broadcast,send-recv (default all)")
    mpi.add_argument("--hidden", type=int_in(1, MODEL_MAXIMA["hidden"]), metavar="H",
                     help="collectives: hidden size of the decode range B*h*2 bytes, B = 1..1024 (default 8192)")
    mpi.add_argument("--graphs", action="store_true", help="collectives: also time each op captured in a CUDA graph")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(run=run)


def run(args) -> int:
    probes = all_probes()
    if args.name is not None and not args.name.strip():
        raise InputError("NAME: the probe's name is empty (gpucal probe --list lists them)")
    if args.list or args.name is None:
        listing = {name: p.description for name, p in probes.items()} | MPI_PROBES
        if args.json:
            render.print_json(listing)
        else:
            render.print_table(("probe", "what it measures"), list(listing.items()))
        return 0
    if args.name == "net":
        return net.run(args)
    if args.name == "collectives":
        return collectives.run(args)
    if args.name == "decode":
        return decode.run(args)
    decode_only = [f for f in ("model", "tp", "graph") if getattr(args, f) not in (None, False)]
    if decode_only:
        raise InputError(f"--{decode_only[0]}: only the decode probe takes it")
    mpi_flags = [f for f in MPI_FLAGS if getattr(args, f) not in (None, False)
                 and not (args.name == "allreduce" and f in ("hidden", "graphs"))]
    if mpi_flags:
        raise InputError(f"--{mpi_flags[0].replace('_', '-')}: only the net and collectives probes take it")
    if args.name not in probes:
        raise InputError(f"NAME: unknown probe {args.name!r} (choose from {', '.join([*probes, *MPI_PROBES])})")
    return run_single(args, probes)
