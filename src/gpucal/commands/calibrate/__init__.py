"""``gpucal calibrate``: one command from a new machine to a profile that planners use.

Runs every probe (``gpucal.calibrate.run``), fits α/β per path, forms the P2P verdicts, and writes one
profile (default ``profiles/<host>-<gpu>.json`` in the current directory) with its provenance; then prints
each figure against its theoretical peak and every anomaly found. Nothing is written unless every step
ran; the file is written atomically and an existing one is kept unless ``--force`` is given. Exit code 1
when a case failed its check or a device errored (the profile is still written: it records them).

``local`` calibrates this machine, ``cluster`` every host of an MPI world (``--cluster``); both measure a
host through ``host`` and write and summarise through ``outputs``.
"""

from __future__ import annotations

from gpucal.commands.calibrate.cluster import run_cluster
from gpucal.commands.calibrate.local import run_local
from gpucal.commands.options import backend_arg, budget

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = ("Measure memory bandwidth and GEMV, FLOP/s per dtype, the host links, every pair of devices and the "
               "topology; fit alpha/beta per path, give the P2P verdicts, and write one profile that "
               "`gpucal plan --gpu FILE` uses.")


def add_arguments(p) -> None:
    """``gpucal calibrate``'s flags (those of a cluster in their own group)."""
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the profile (default: profiles/<host>-<gpu>.json in the current folder)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="what the planner and the P2P verdict need (the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="every probe in full: every dtype and mode, pageable memory, kernel engines, finer sizes")
    backend_arg(p)
    p.add_argument("--simulate", metavar="PROFILE[:N]",
                   help="calibrate a virtual machine of N cards of PROFILE (as --backend virtual:PROFILE[:N]; "
                        "options such as +noise=0.02 too) and check the kernels on the Numba simulator; the "
                        "profile says simulated")
    p.add_argument("--no-kernel-check", action="store_true",
                   help="with --simulate: skip checking the kernels on the Numba simulator (a few seconds)")
    p.add_argument("--name", metavar="NAME", help="the profile's name (default: the output file's stem, or "
                                                  "<host>-<gpu>)")
    p.add_argument("--budget", type=budget, metavar="S", help="seconds of sampling per case at most")
    p.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    p.add_argument("--plots", metavar="DIR", help="also write the plots (gpucal plot) into DIR")
    p.add_argument("--report", metavar="FILE.html", help="also write the report (gpucal report): one HTML page")
    p.add_argument("--json", action="store_true", help="print one JSON object (the summary) instead of tables")
    cluster = p.add_argument_group("cluster (mpiexec -n N gpucal calibrate --cluster -o FILE)")
    cluster.add_argument("--cluster", action="store_true",
                         help="under MPI, one rank per GPU: calibrate every host (on its first rank), measure the "
                              "network between hosts and the collectives over all ranks, and write one cluster "
                              "profile on rank 0")
    cluster.add_argument("--simulate-net", metavar="LINK[+OPTION...]",
                         help="with --cluster --simulate: every rank a simulated host of its own (+per-host=R: hosts "
                              "of R ranks), joined by a simulated LINK (a link preset such as eth1g, or "
                              "alpha=..,beta=..; +noise=F, +seed=N)")
    p.set_defaults(run=run, mode="quick")


def run(args) -> int:
    """``gpucal calibrate``: this machine, or (``--cluster``) every host of the MPI world."""
    return run_cluster(args) if args.cluster else run_local(args)
