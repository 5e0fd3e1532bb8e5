"""NVIDIA nccl-tests' text output (``all_reduce_perf`` and its siblings) into a ``ToolRun`` of one collective.

The header gives the run (``# nThread 1 nGpus 8 minBytes 8 maxBytes 134217728 step: 2(factor) warmup iters: 5
iters: 20 agg iters: 1 validation: 1 graph: 0``), one ``#  Rank  r Group g Pid p on HOST device d [bus] NAME``
line per rank, then one row per size: ``size count type redop root`` and, out of place then in place, ``time
(us) algbw (GB/s) busbw (GB/s) #wrong``. Taken: the out-of-place columns (as gpucal's collectives probe times),
time per size for the fit, algbw and busbw as printed (nccl-tests' busbw = algbw x 2(n-1)/n for an all-reduce),
``#wrong`` (``N/A`` with ``-c 0``: not checked). The time is nccl-tests' mean over its ``iters`` (averaged over
the ranks, its default ``-a 1``). Ranks that share a process id are one process driving several GPUs (``-g N``).
"""

from __future__ import annotations

import re

from gpucal.calibrate.imports.figures import CollectiveRun, ToolRun
from gpucal.errors import InputError

__all__ = ["parse", "looks_like", "OPS"]

# nccl-tests' binaries -> gpucal's op names
OPS = {"all_reduce": "all-reduce", "all_gather": "all-gather", "reduce_scatter": "reduce-scatter",
       "broadcast": "broadcast", "sendrecv": "send-recv"}
_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(-?\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+(\S+)")
_RANK = re.compile(r"^#\s+Rank\s+(\d+)\s+Group\s+\d+\s+Pid\s+(\d+)\s+on\s+(\S+)\s+device\s+(\d+)\s+\[[^\]]*\]\s+(.+?)\s*$")


def looks_like(text: str) -> bool:
    return "nThread" in text[:4000] and "busbw" in text


def _op(text: str, origin: str, given: str | None) -> str:
    named = re.search(r"\b(all_reduce|all_gather|reduce_scatter|broadcast|sendrecv)_perf\b", text)
    if named:
        op = OPS[named[1]]
        if given and given != op:
            raise InputError(f"--op: {origin} times {op} ({named[0]}), not {given}")
        return op
    if given:
        return given
    raise InputError(f"{origin}: does not say which collective it timed (no *_perf name in it): give --op "
                     + "|".join(OPS.values()))


def parse(text: str, origin: str, op: str | None = None) -> ToolRun:
    """nccl-tests' output as a ``ToolRun`` holding one ``CollectiveRun``; ``InputError`` naming the file where it
    holds no size row."""
    header = re.search(r"nThread\s+(\d+)\s+nGpus\s+(\d+).*?iters:\s*\d+\s+iters:\s*(\d+).*?graph:\s*(\d+)", text)
    ranks = [m for m in (_RANK.match(line) for line in text.splitlines()) if m]
    rows = [m for m in (_ROW.match(line) for line in text.splitlines()) if m]
    if not rows:
        raise InputError(f"{origin}: no nccl-tests size row (size count type redop root time algbw busbw #wrong)")
    if not ranks:
        raise InputError(f"{origin}: no '# Rank r Group g Pid p on HOST device d' lines: the number of ranks is unknown")
    the_op = _op(text, origin, op)
    hosts = sorted({m[3] for m in ranks})
    per_host = {h: sum(1 for m in ranks if m[3] == h) for h in hosts}
    pids = {(m[3], m[2]) for m in ranks}
    iters = int(header[3]) if header else 20
    graphs = bool(int(header[4])) if header else False
    version = re.search(r"nccl-tests version (\S+)", text)
    library = re.search(r"NCCL version (\d+\.\d+\.\d+)", text)
    dtype = rows[0][3]
    wrong = tuple(None if r[9] == "N/A" else int(float(r[9])) for r in rows)
    run = CollectiveRun(
        op=the_op, nranks=len(ranks), hosts=len(hosts), ranks_per_host=max(per_host.values()),
        single_process=len(pids) == len(hosts), graphs=graphs,
        library=f"NCCL {library[1]}" if library else None, dtype=dtype,
        sizes_bytes=tuple(int(r[1]) for r in rows), times_s=tuple(float(r[6]) * 1e-6 for r in rows),
        algbw_Bps=tuple(float(r[7]) * 1e9 for r in rows), busbw_Bps=tuple(float(r[8]) * 1e9 for r in rows),
        wrong=wrong,
        method=(f"{'_'.join(the_op.split('-'))}_perf, out of place, {dtype}, {len(ranks)} ranks on {len(hosts)} "
                f"host(s){', CUDA graphs' if graphs else ''}: the mean time over {iters} iterations per size"),
        statistic="mean", n=iters)
    names = [m[5] for m in ranks]
    tool = ToolRun("nccl-tests", version[1] if version else None, origin,
                   devices=names[:max(per_host.values())] if len(hosts) == 1 else [], hostnames=hosts,
                   collectives=[run])
    if len(set(names)) > 1:
        raise InputError(f"{origin}: the ranks run on different cards ({', '.join(sorted(set(names)))}): gpucal "
                         "imports one card model")
    if len(hosts) > 1:
        tool.devices = names[:1]
        tool.notes.append(f"nccl-tests over {len(hosts)} hosts ({', '.join(hosts)}): the collective spans them; the "
                          "profile's devices are one host's")
    if not library:
        tool.notes.append("nccl-tests' output names no NCCL version (NCCL_DEBUG=VERSION prints it)")
    return tool
