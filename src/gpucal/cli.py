"""The ``gpucal`` command: argument parsing, dispatch and exit codes.

Exit codes: 0 done; 1 a measurement or device failed; 2 bad input, reported as one line on stderr
that names the flag, file or field (never a traceback). Each command lives in ``gpucal.commands``;
this module only wires them together.
"""

from __future__ import annotations

import argparse
import os
import sys

from gpucal import __version__
from gpucal.errors import GpucalError

__all__ = ["ArgumentParser", "build_parser", "main"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad input as one line (``PROG: error: ...``) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> ArgumentParser:
    from gpucal.commands import calibrate, compare, info, p2p, plan, plot, probe, profiles

    parser = ArgumentParser(
        prog="gpucal",
        description="Measure what a GPU machine really delivers, and plan LLM inference from it.",
    )
    parser.add_argument("--version", action="version", version=f"gpucal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    info.add_parser(sub)
    probe.add_parser(sub)
    p2p.add_parser(sub)
    calibrate.add_parser(sub)
    plan.add_parser(sub)
    profiles.add_parser(sub)
    compare.add_parser(sub)
    plot.add_parser(sub)
    return parser


def _mpi_rank() -> int | None:
    comm = sys.modules.get("gpucal.kernels.comm")
    return comm.current_rank() if comm is not None else None


def main(argv: list[str] | None = None) -> int:
    """Run ``gpucal`` with ``argv`` (default: the process's arguments); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # the command line, for provenance
    try:
        return int(args.run(args) or 0)
    except GpucalError as exc:
        if _mpi_rank() in (None, 0):  # under mpiexec every rank fails alike: rank 0 says it once
            print(f"gpucal {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"gpucal {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away, e.g. `gpucal profiles list | head -1`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
