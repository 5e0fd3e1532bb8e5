"""NVIDIA nccl-tests' output (``all_reduce_perf`` and its siblings), text or JSON (``-J FILE``, nccl-tests 2.17.3
and later), into a ``ToolRun`` of one collective.

The header gives the run (``# nThread 1 nGpus 8 minBytes 8 maxBytes 134217728 step: 2(factor) warmup iters: 5
iters: 20 agg iters: 1 validation: 1 graph: 0``), one ``#  Rank  r Group g Pid p on HOST device d [bus] NAME``
line per rank, then one row per size: ``size count type redop root`` and, out of place then in place, ``time
(us) algbw (GB/s) busbw (GB/s) #wrong``. Taken: the out-of-place columns (as gpucal's collectives probe times),
time per size for the fit, algbw and busbw as printed (nccl-tests' busbw = algbw x 2(n-1)/n for an all-reduce),
``#wrong`` (``N/A`` with ``-c 0``: not checked). The time is nccl-tests' mean over its ``iters`` (averaged over
the ranks, its default ``-a 1``). Ranks that share a process id are one process driving several GPUs (``-g N``).

The JSON file holds the same: ``args`` (the binary, hence the op), ``nccl_version`` (22809 for 2.28.9),
``config`` (``iterations``, ``graph``, and ``devices[]`` with each rank's ``pid``, ``hostname`` and
``device_info``), and ``results[]`` per size with ``out_of_place`` {``time`` us, ``alg_bw``, ``bus_bw`` GB/s,
``nwrong``}. Where ``-d all`` or ``-o all`` timed several types or reductions, the first is taken.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

from gpucal.calibrate.imports.figures import CollectiveRun, ToolRun
from gpucal.errors import InputError

__all__ = ["parse", "looks_like", "OPS"]

# nccl-tests' binaries -> gpucal's op names
OPS = {"all_reduce": "all-reduce", "all_gather": "all-gather", "reduce_scatter": "reduce-scatter",
       "broadcast": "broadcast", "sendrecv": "send-recv"}
_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(-?\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+(\d+|N/A)(?:\s|$)")
_RANK = re.compile(r"^#\s+Rank\s+(\d+)\s+Group\s+\d+\s+Pid\s+(\d+)\s+on\s+(\S+)\s+device\s+(\d+)\s+\[[^\]]*\]\s+(.+?)\s*$")


def looks_like(text: str) -> bool:
    if text.lstrip().startswith("{"):
        return '"results"' in text and '"config"' in text and ('"bus_bw"' in text or '"nccl_version"' in text)
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


def _version(code) -> str | None:
    """NCCL's version code (22809) as text (2.28.9)."""
    if not isinstance(code, int) or code <= 0:
        return None
    return f"{code // 10000}.{code % 10000 // 100}.{code % 100}"


def _from_json(text: str, origin: str, op: str | None) -> ToolRun:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{origin}: not JSON ({exc.msg}, line {exc.lineno})") from None
    config, results = data.get("config"), data.get("results")
    if not isinstance(config, dict) or not isinstance(results, list):
        raise InputError(f"{origin}: not nccl-tests' JSON output (no config and results)")
    args = data.get("args") if isinstance(data.get("args"), list) else []
    named = PurePosixPath(str(args[0])).name if args else ""
    the_op = _op(named, origin, op)
    devices = [d for d in config.get("devices") or [] if isinstance(d, dict)]
    if not devices:
        raise InputError(f"{origin}: config.devices lists no rank: the number of ranks is unknown")
    first = next((r for r in results if isinstance(r, dict) and isinstance(r.get("out_of_place"), dict)), None)
    if first is None:
        raise InputError(f"{origin}: results holds no out_of_place time")
    rows = [r for r in results if isinstance(r, dict) and isinstance(r.get("out_of_place"), dict)
            and (r.get("type"), r.get("redop")) == (first.get("type"), first.get("redop"))]
    try:
        timed = [(int(r["size"]), float(r["out_of_place"].get("time", r["out_of_place"].get("cpu_time"))),
                  float(r["out_of_place"]["alg_bw"]), float(r["out_of_place"]["bus_bw"]),
                  None if r["out_of_place"].get("nwrong") is None else int(float(r["out_of_place"]["nwrong"])))
                 for r in rows]
        iters, graphs = int(config.get("iterations", 20)), bool(int(config.get("graph", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{origin}: results: a size without a number where one belongs ({exc})") from None
    ranks = [(str(d.get("hostname")), str(d.get("pid")), str(d.get("device_info", "")).strip()) for d in devices]
    _one_run([d.get("rank") for d in devices], origin)
    library = _version(data.get("nccl_version"))
    return _tool_run(origin, the_op, ranks, timed, str(first.get("type")), iters, graphs,
                     f"NCCL {library}" if library else None, None,
                     ["nccl-tests' JSON: file version " + str(data.get("version"))])


def _one_run(ranks: list, origin: str) -> None:
    """A file of one run: each rank once (two runs in one log repeat rank 0)."""
    seen = set()
    for rank in ranks:
        if rank in seen:
            raise InputError(f"{origin}: rank {rank} is listed twice: the file holds more than one run (give each "
                             "run its own file)")
        seen.add(rank)


def _tool_run(origin, the_op, ranks, timed, dtype, iters, graphs, library, version, notes) -> ToolRun:
    """``ranks``: (host, process id, card) per rank; ``timed``: (bytes, time us, algbw GB/s, busbw GB/s, #wrong)."""
    hosts = sorted({h for h, _, _ in ranks})
    per_host = {h: sum(1 for r in ranks if r[0] == h) for h in hosts}
    pids = {(h, p) for h, p, _ in ranks}
    names = [n for _, _, n in ranks]
    if len(set(names)) > 1:
        raise InputError(f"{origin}: the ranks run on different cards ({', '.join(sorted(set(names)))}): gpucal "
                         "imports one card model")
    run = CollectiveRun(
        op=the_op, nranks=len(ranks), hosts=len(hosts), ranks_per_host=max(per_host.values()),
        single_process=len(pids) == len(hosts), graphs=graphs, library=library, dtype=dtype,
        sizes_bytes=tuple(t[0] for t in timed), times_s=tuple(t[1] * 1e-6 for t in timed),
        algbw_Bps=tuple(t[2] * 1e9 for t in timed), busbw_Bps=tuple(t[3] * 1e9 for t in timed),
        wrong=tuple(t[4] for t in timed),
        method=(f"{'_'.join(the_op.split('-'))}_perf, out of place, {dtype}, {len(ranks)} ranks on {len(hosts)} "
                f"host(s){', CUDA graphs' if graphs else ''}: the mean time over {iters} iterations per size "
                "(one timed loop)"))
    tool = ToolRun("nccl-tests", version, origin, devices=names[:max(per_host.values())], hostnames=hosts,
                   collectives=[run], notes=list(notes))
    if len(hosts) > 1:
        tool.notes.append(f"nccl-tests over {len(hosts)} hosts ({', '.join(hosts)}): the collective spans them; the "
                          "profile's devices are one host's")
    if not library:
        tool.notes.append("nccl-tests' output names no NCCL version (NCCL_DEBUG=VERSION prints it)")
    return tool


def parse(text: str, origin: str, op: str | None = None) -> ToolRun:
    """nccl-tests' output (text or JSON) as a ``ToolRun`` holding one ``CollectiveRun``; ``InputError`` naming the
    file where it holds no size row."""
    if text.lstrip().startswith("{"):
        return _from_json(text, origin, op)
    header = re.search(r"nThread\s+(\d+)\s+nGpus\s+(\d+).*?iters:\s*\d+\s+iters:\s*(\d+).*?graph:\s*(\d+)", text)
    ranks = [m for m in (_RANK.match(line) for line in text.splitlines()) if m]
    rows = [m for m in (_ROW.match(line) for line in text.splitlines()) if m]
    if not rows:
        raise InputError(f"{origin}: no nccl-tests size row (size count type redop root time algbw busbw #wrong)")
    if not ranks:
        raise InputError(f"{origin}: no '# Rank r Group g Pid p on HOST device d' lines: the number of ranks is unknown")
    the_op = _op(text, origin, op)
    iters = int(header[3]) if header else 20
    graphs = bool(int(header[4])) if header else False
    version = re.search(r"nccl-tests version (\S+)", text)
    library = re.search(r"NCCL version (\d+\.\d+\.\d+)", text)
    _one_run([int(m[1]) for m in ranks], origin)
    first = (rows[0][3], rows[0][4])  # with -d all or -o all, the first type and reduction
    timed = [(int(r[1]), float(r[6]), float(r[7]), float(r[8]), None if r[9] == "N/A" else int(r[9]))
             for r in rows if (r[3], r[4]) == first]
    return _tool_run(origin, the_op, [(m[3], m[2], m[5]) for m in ranks], timed, rows[0][3], iters, graphs,
                     f"NCCL {library[1]}" if library else None, version[1] if version else None, [])
