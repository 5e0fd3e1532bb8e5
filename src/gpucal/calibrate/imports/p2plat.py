"""cuda-samples' p2pBandwidthLatencyTest text output into a ``ToolRun``.

Its matrices (GB/s; latency in us), rows the source, columns the destination:

| matrix | into |
|---|---|
| ``Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix`` | P2P one way, where the runtime can reach the peer |
| ``Unidirectional P2P=Disabled Bandwidth Matrix`` | one way with P2P off: the driver stages through host memory |
| ``Bidirectional P2P=Enabled`` / ``=Disabled Bandwidth Matrix`` | both ways at once: the sample prints their sum |
| ``P2P=Enabled Latency (P2P Writes) Matrix``, ``P2P=Disabled Latency Matrix``, GPU rows | the link's alpha |
| the diagonal of the unidirectional P2P=Disabled matrix | memory bandwidth: the sample counts a local copy twice (2n/t), as gpucal's DRAM traffic |

The sample times 5 copies of 160 MB (40,000,000 ints, ``cudaMemcpyPeerAsync``) in one window per pair for the
rates, and 100 copies of 16 B queued behind a spinning kernel for the latency (the mean per copy, copies back to
back): one timed window each (n = 1). Where a device CANNOT access a peer, the P2P=Enabled figures are staged
copies too and are not taken as P2P.
"""

from __future__ import annotations

import re

from gpucal.calibrate.imports.figures import Matrix, ToolRun, positive_number
from gpucal.errors import InputError

__all__ = ["parse", "looks_like"]

BANDWIDTH = "{what}: the mean rate of 5 copies of 160 MB (cudaMemcpyPeerAsync) in one timed window per pair"
LATENCY = "{what}: the mean per copy of 100 copies of 16 B queued back to back behind a spinning kernel, one window"
ONE_WAY = "p2pBandwidthLatencyTest: n/t for n bytes one way"
LOCAL = "dram_Bps = 2n/t: p2pBandwidthLatencyTest counts a local copy's read and write"


def looks_like(text: str) -> bool:
    return "P2P (Peer-to-Peer) GPU Bandwidth Latency Test" in text[:4000] or "P2P=Disabled" in text or \
        "P2P=Enabled" in text


def _tables(text: str) -> dict[str, list[list[float | None]]]:
    """Title line -> rows (each the values after the row label); latency matrices keep their GPU rows."""
    out: dict[str, list[list[float | None]]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        title = lines[i].strip()
        if re.search(r"Matrix \((GB/s|us)\)$", title) and i + 1 < len(lines):
            header = lines[i + 1].split()
            if header and header[0] in ("D\\D", "GPU"):
                rows, i = [], i + 2
                while i < len(lines) and re.match(r"^\s*\d+\s+", lines[i]):
                    cells = lines[i].split()[1:]
                    rows.append([positive_number(c) for c in cells])
                    i += 1
                out[title] = rows
                continue
        i += 1
    return out



def _find(tables: dict, *words: str) -> tuple[str, list] | None:
    for title, rows in tables.items():
        if all(w in title for w in words):
            return title, rows
    return None


def _matrix(found, scale: float, method: str, n: int, convention: str | None, off_diagonal=True,
            statistic: str = "mean") -> Matrix | None:
    if found is None:
        return None
    title, rows = found
    values = {(i, j): (v * scale if v is not None else None) for i, row in enumerate(rows) for j, v in enumerate(row)
              if (i != j) == off_diagonal}
    return Matrix(values, method.format(what=title), statistic, n, convention)


def parse(text: str, origin: str) -> ToolRun:
    """p2pBandwidthLatencyTest's output as a ``ToolRun``; ``InputError`` naming the file where it holds no matrix."""
    tables = _tables(text)
    if not tables:
        raise InputError(f"{origin}: no p2pBandwidthLatencyTest matrix (a title such as "
                         "'Unidirectional P2P=Disabled Bandwidth Matrix (GB/s)' and its rows)")
    names = [m[1].strip() for m in re.finditer(r"^Device: \d+, ([^,]+),", text, re.M)]
    can = {(int(m[1]), int(m[3])): m[2] == "CAN" for m in
           re.finditer(r"Device=(\d+) (CAN|CANNOT) Access Peer Device=(\d+)", text)}
    names_set = set(names)
    if len(names_set) > 1:
        raise InputError(f"{origin}: the devices are different cards ({', '.join(sorted(names_set))}): gpucal "
                         "imports one card model (CUDA_VISIBLE_DEVICES selects them)")
    for title, rows in tables.items():
        if any(len(row) != len(rows) for row in rows):
            raise InputError(f"{origin}: {title}: {len(rows)} rows of unequal or other lengths: not a square matrix")
    p2p = _matrix(_find(tables, "Unidirectional", "P2P=Enabled"), 1e9, BANDWIDTH, 1, ONE_WAY)
    staged = _matrix(_find(tables, "Unidirectional", "P2P=Disabled"), 1e9, BANDWIDTH, 1, ONE_WAY)
    if p2p is not None and can:  # a pair the runtime cannot reach was copied through the host: not P2P
        p2p = Matrix({k: (v if can.get(k, True) else None) for k, v in p2p.values.items()}, p2p.method,
                     p2p.statistic, p2p.n, p2p.byte_convention)
    bidir = {}
    for key, word in (("p2p", "P2P=Enabled"), ("staged", "P2P=Disabled")):
        m = _matrix(_find(tables, "Bidirectional", word), 1e9 / 2, BANDWIDTH, 1,
                    "p2pBandwidthLatencyTest: both directions' bytes over their union time; halved per direction")
        bidir[key] = m
    run = ToolRun("p2pBandwidthLatencyTest", None, origin, devices=names, can_access=can, p2p_Bps=p2p,
                  staged_Bps=staged, p2p_bidir_Bps=bidir["p2p"], staged_bidir_Bps=bidir["staged"],
                  p2p_latency_s=_matrix(_find(tables, "P2P=Enabled", "Latency"), 1e-6, LATENCY, 1, None),
                  staged_latency_s=_matrix(_find(tables, "P2P=Disabled", "Latency"), 1e-6, LATENCY, 1, None),
                  local_dram_Bps=_matrix(_find(tables, "Unidirectional", "P2P=Disabled"), 1e9, BANDWIDTH, 1, LOCAL,
                                         off_diagonal=False))
    if run.p2p_latency_s is not None and can:
        run.p2p_latency_s = Matrix({k: (v if can.get(k, True) else None) for k, v in run.p2p_latency_s.values.items()},
                                   run.p2p_latency_s.method, "mean", 1)
    run.notes.append("p2pBandwidthLatencyTest prints no version: cuda-samples' release is not known")
    if p2p is None and staged is None and (bidir["p2p"] or bidir["staged"]):
        run.notes.append("the file holds only bidirectional matrices: no one-way rate, so no link between devices "
                         "is imported")
        run.no_links = True
    return run
