"""NVIDIA nvbandwidth's output, JSON (``-j``) or text, into a ``ToolRun``.

Each test case is a matrix of figures with a description such as ``memcpy CE CPU(row) -> GPU(column) bandwidth
(GB/s)``: the arrow says which of row and column is the source. What is taken:

| test case | into |
|---|---|
| ``device_to_device_memcpy_write_ce`` (else ``_read_ce``) | P2P one way, per ordered pair; N/A where peers cannot reach each other |
| ``device_to_device_bidirectional_memcpy_write_ce`` (else ``_read_ce``) | the two directions at once: its Total matrix (both summed) |
| ``host_to_device_memcpy_ce``, ``device_to_host_memcpy_ce`` | the host link per device |
| ``host_device_latency_sm``, ``device_to_device_latency_sm`` | a note: a pointer chase's load latency (ns), not a copy's alpha |
| ``device_local_copy`` | memory bandwidth: nvbandwidth counts a local copy once (n/t); gpucal's DRAM traffic is 2n/t |

nvbandwidth waives the P2P tests where peer access is absent, and times no copy with P2P off. Its figures are the
median of its samples (``-i``, default 3) at 512 MiB buffers (``-b``) unless it was run otherwise: the output
records neither flag, so the method says so.
"""

from __future__ import annotations

import json
import re

from gpucal.calibrate.imports.figures import Matrix, ToolRun, positive_number
from gpucal.errors import InputError

__all__ = ["parse", "looks_like"]

UNITS = {"GB/s": 1e9, "ns": 1e-9, "us": 1e-6}
METHOD = "{test}, the median of its samples (nvbandwidth's default -i 3, 512 MiB buffers; the output records neither)"
CONVENTION = "nvbandwidth: n/t for n bytes copied one way"


def looks_like(text: str) -> bool:
    return ('"nvbandwidth"' in text[:2000] or "nvbandwidth Version" in text[:2000]
            or re.search(r"^(Running \w+_(ce|sm)\.|memcpy (CE|SM) .*\((GB/s|ns)\))\s*$", text, re.M) is not None)



def _oriented(description: str, rows: list[list[float | None]]) -> dict[tuple[int, int], float | None]:
    """The matrix as {(src, dst): value}: ``A(row) -> B(column)`` (row the source) or ``A(row) <- B(column)``
    (the column the source); a single row of host copies or local ones gives (d, d)."""
    single = len(rows) == 1
    reverse = "<-" in description and "<->" not in description
    out = {}
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if single:
                out[(j, j)] = value
            else:
                out[(j, i) if reverse else (i, j)] = value
    return out


class _Tests:
    """Test name -> (description, rows); bidirectional tests keep their Total matrix."""

    def __init__(self, origin: str):
        self.origin = origin
        self.cases: dict[str, tuple[str, list[list[float | None]]]] = {}

    def add(self, name: str, description: str, rows: list[list[float | None]]) -> None:
        self.cases[name] = (description, rows)

    def matrix(self, names: tuple[str, ...], scale_to: str | None = None, convention: str | None = CONVENTION,
               factor: float = 1.0) -> Matrix | None:
        for name in names:
            if name not in self.cases:
                continue
            description, rows = self.cases[name]
            unit = re.search(r"\(([^()]*)\)\s*$", description)
            scale = UNITS.get(unit[1]) if unit else None
            if scale is None:
                raise InputError(f"{self.origin}: {name}: unknown unit in {description[:80]!r}")
            values = {k: (v * scale * factor if v is not None else None) for k, v in _oriented(description, rows).items()}
            return Matrix(values, METHOD.format(test=name), "median", 3, convention)
        return None


def _from_json(data: dict, origin: str) -> tuple[_Tests, str | None, list[str], list[str]]:
    root = data.get("nvbandwidth")
    if not isinstance(root, dict) or not isinstance(root.get("testcases"), list):
        raise InputError(f"{origin}: not nvbandwidth's JSON output (no nvbandwidth.testcases)")
    tests = _Tests(origin)
    notes = []
    for case in root["testcases"]:
        if not isinstance(case, dict) or case.get("status") != "Passed" or "bandwidth_matrix" not in case:
            continue
        name, description = str(case.get("name")), str(case.get("bandwidth_description", ""))
        rows = [[positive_number(str(c)) for c in row] for row in case["bandwidth_matrix"] if isinstance(row, list)]
        if "bidirectional" in name and rows and len(rows) > len(rows[0]):
            n = len(rows[0])
            if len(rows) % n:
                notes.append(f"{name}: {len(rows)} rows for {n} devices: left out")
                continue
            rows = rows[-n:]  # per direction, per direction, then their Total
            description = description.replace("<->", "<-> Total")
        tests.add(name, description, rows)
    names = [re.sub(r"^\d+:\s*", "", str(d)).split(" (")[0].strip() for d in root.get("GPU Device list", [])]
    version = root.get("version") or root.get("git_version") or None
    return tests, str(version) if version else None, names, notes


def _from_text(text: str, origin: str) -> tuple[_Tests, str | None, list[str], list[str]]:
    tests = _Tests(origin)
    version = re.search(r"nvbandwidth Version:\s*(\S+)", text)
    names = [m[1].strip() for m in re.finditer(r"^Device \d+:\s*(.+?)(?:\s*\([0-9a-fA-F:.]+\))?\s*$", text, re.M)]
    current = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        run = re.match(r"Running (\S+)\.$", line)
        if run:
            current = run[1]
        elif re.search(r"\((GB/s|ns|us)\)\s*$", line):
            description, rows = line, []
            i += 2  # the column header
            while i < len(lines) and re.match(r"^\s*\d+\s+", lines[i]):
                rows.append([positive_number(c) for c in lines[i].split()[1:]])
                i += 1
            after = next((m for m in (re.match(r"SUM (\S+)", x.strip()) for x in lines[i:i + 3]) if m), None)
            name = current or (after[1] if after else None)  # a run whose "Running" lines were cut
            if name and ("bidirectional" not in name or "Total" in description):
                tests.add(name, description, rows)
            continue
        i += 1
    return tests, version[1] if version else None, names, []


def parse(text: str, origin: str) -> ToolRun:
    """nvbandwidth's output (JSON or text) as a ``ToolRun``; ``InputError`` naming the file where it is neither."""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{origin}: not JSON ({exc.msg}, line {exc.lineno})") from None
        tests, version, names, notes = _from_json(data, origin)
    else:
        tests, version, names, notes = _from_text(text, origin)
    if not tests.cases:
        raise InputError(f"{origin}: no passed nvbandwidth test case with a matrix")
    bidir = tests.matrix(("device_to_device_bidirectional_memcpy_write_ce",
                          "device_to_device_bidirectional_memcpy_read_ce"),
                         convention="nvbandwidth: n/t each way, the two directions summed (Total)")
    run = ToolRun(
        "nvbandwidth", version, origin, devices=names,
        p2p_Bps=tests.matrix(("device_to_device_memcpy_write_ce", "device_to_device_memcpy_read_ce")),
        h2d_Bps=tests.matrix(("host_to_device_memcpy_ce",)),
        d2h_Bps=tests.matrix(("device_to_host_memcpy_ce",)),
        local_dram_Bps=tests.matrix(("device_local_copy",), factor=2.0,
                                    convention="dram_Bps = 2n/t: nvbandwidth's copy rate n/t, the bytes read and "
                                               "written counted"),
        notes=notes)
    if bidir is not None:  # the Total matrix is already both directions summed: give each direction half
        run.p2p_bidir_Bps = Matrix({k: (v / 2 if v else None) for k, v in bidir.values.items()}, bidir.method,
                                   bidir.statistic, bidir.n, bidir.byte_convention)
    count = max((max(p) + 1 for m in run.matrices for p in m.values), default=len(names))
    if run.p2p_Bps is None and count > 1:  # waived: no peer access between any pair
        run.can_access = {(i, j): False for i in range(count) for j in range(count) if i != j}
        run.notes.append("nvbandwidth waived its device-to-device tests: no peer access between the devices")
    else:
        for (i, j), value in (run.p2p_Bps.values.items() if run.p2p_Bps else ()):
            if i != j:
                run.can_access[(i, j)] = value is not None
    for test, what in (("device_to_device_latency_sm", "between devices"), ("host_device_latency_sm",
                                                                             "to host memory")):
        lat = tests.matrix((test,), convention=None)
        values = sorted(v for v in (lat.values.values() if lat else ()) if v)
        if values:
            run.notes.append(f"nvbandwidth {test}: a pointer chase's load latency {what}, median "
                             f"{values[len(values) // 2] * 1e6:.2f} us over {len(values)} entries; not a copy's alpha "
                             "(issued and waited for), so no alpha is taken from it")
    return run
