"""NVIDIA nvbandwidth's output, JSON (``-j``) or text, into a ``ToolRun``.

Each test case is a matrix of figures under a description such as ``memcpy CE CPU(row) -> GPU(column) bandwidth
(GB/s)``. What is taken:

| test case | into |
|---|---|
| ``device_to_device_memcpy_write_ce`` (else ``_read_ce``) | P2P one way, per ordered pair; N/A where peers cannot reach each other |
| ``device_to_device_bidirectional_memcpy_write_ce`` (else ``_read_ce``) | the two directions at once: its Total matrix (both summed), or before nvbandwidth 0.6 its one matrix per direction |
| ``host_to_device_memcpy_ce``, ``device_to_host_memcpy_ce`` | the host link per device |
| ``device_local_copy`` | memory bandwidth: nvbandwidth counts a local copy once (n/t); gpucal's DRAM traffic is 2n/t |
| ``host_device_latency_sm``, ``device_to_device_latency_sm`` | a note: a pointer chase's load latency (ns), not a copy's alpha |

Orientation, as nvbandwidth's testcases_ce.cpp copies: a write test's cell (row, column) copies from the row's
device to the column's, a read test's from the column's to the row's (whatever arrow the description prints);
a host test is one row, a figure per device. nvbandwidth waives the P2P tests where peer access is absent (status
``Waived``; in text, the test prints no matrix) and times no copy with P2P off. Its figures are the median of its
samples (``-i``, default 3) at 512 MiB buffers (``-b``) unless it was run otherwise: the output records neither
flag, so the method says so.
"""

from __future__ import annotations

import re

from gpucal import profiles
from gpucal.calibrate.imports.figures import Matrix, ToolRun, positive_number
from gpucal.errors import InputError

__all__ = ["parse", "looks_like"]

UNITS = {"GB/s": 1e9, "ns": 1e-9, "us": 1e-6}
METHOD = "{test}, the median of its samples (nvbandwidth's default -i 3, 512 MiB buffers; the output records neither)"
CONVENTION = "nvbandwidth: n/t for n bytes copied one way"
P2P_TESTS = ("device_to_device_memcpy_write_ce", "device_to_device_memcpy_read_ce")
BIDIR_TESTS = ("device_to_device_bidirectional_memcpy_write_ce", "device_to_device_bidirectional_memcpy_read_ce")


def looks_like(text: str) -> bool:
    return ('"nvbandwidth"' in text[:2000] or "nvbandwidth Version" in text[:2000]
            or re.search(r"^(Running \w+_(ce|sm)\.|memcpy (CE|SM) .*\((GB/s|ns)\))\s*$", text, re.M) is not None)


def _oriented(name: str, rows: list[list[float | None]]) -> dict[tuple[int, int], float | None]:
    """The matrix as {(src, dst): value}: one row is a figure per device (d, d); a read test's column is the
    source, any other test's row."""
    out = {}
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if len(rows) == 1:
                out[(j, j)] = value
            else:
                out[(j, i) if "_read_" in name else (i, j)] = value
    return out


class _Tests:
    """Test name -> (description, rows), and the tests nvbandwidth waived."""

    def __init__(self, origin: str):
        self.origin = origin
        self.cases: dict[str, tuple[str, list[list[float | None]]]] = {}
        self.waived: set[str] = set()

    def add(self, name: str, description: str, rows: list[list[float | None]]) -> None:
        width = {len(r) for r in rows}
        if not rows or len(width) != 1 or (len(rows) > 1 and width != {len(rows)}):
            raise InputError(f"{self.origin}: {name}: {len(rows)} rows of {sorted(width)} figures: neither one row "
                             "nor a square matrix")
        self.cases[name] = (description, rows)

    def matrix(self, names: tuple[str, ...], convention: str | None = CONVENTION, factor: float = 1.0,
               square: bool = False) -> tuple[str, Matrix] | None:
        for name in names:
            if name not in self.cases:
                continue
            description, rows = self.cases[name]
            unit = re.search(r"\(([^()]*)\)\s*$", description)
            scale = UNITS.get(unit[1]) if unit else None
            if scale is None:
                raise InputError(f"{self.origin}: {name}: unknown unit in {description[:80]!r}")
            if square and len(rows) == 1 and len(rows[0]) > 1:
                raise InputError(f"{self.origin}: {name}: one row, where a matrix of device pairs belongs")
            values = {k: (v * scale * factor if v is not None else None) for k, v in _oriented(name, rows).items()}
            return name, Matrix(values, METHOD.format(test=name), "median", 3, convention)
        return None


def _cells(row, origin: str, name: str) -> list[float | None]:
    if not isinstance(row, list):
        raise InputError(f"{origin}: {name}: bandwidth_matrix holds a {type(row).__name__} where a row belongs")
    return [positive_number(str(c)) for c in row]


def _from_json(data, origin: str) -> tuple[_Tests, str | None, list[str], list[str]]:
    root = data.get("nvbandwidth") if isinstance(data, dict) else None
    if not isinstance(root, dict) or not isinstance(root.get("testcases"), list):
        raise InputError(f"{origin}: not nvbandwidth's JSON output (no nvbandwidth.testcases)")
    tests = _Tests(origin)
    notes = []
    for case in root["testcases"]:
        if not isinstance(case, dict):
            continue
        name = str(case.get("name"))[:200]
        if case.get("status") == "Waived":
            tests.waived.add(name)
        if case.get("status") != "Passed" or "bandwidth_matrix" not in case:
            continue
        description, matrix = str(case.get("bandwidth_description", "")), case["bandwidth_matrix"]
        if not isinstance(matrix, list) or not matrix:
            raise InputError(f"{origin}: {name}: bandwidth_matrix is not a list of rows")
        rows = [_cells(row, origin, name) for row in matrix]
        if "bidirectional" in name and len(rows) > len(rows[0]):
            n = len(rows[0])
            if n == 0 or len(rows) != 3 * n:
                notes.append(f"{name}: {len(rows)} rows for {n} devices: left out")
                continue
            rows = rows[-n:]  # per direction, per direction, then their Total (the description's)
            description = f"{description} Total" if "Total" not in description else description
        tests.add(name, description, rows)
    listed = root.get("GPU Device list", [])
    listed = listed if isinstance(listed, list) else []
    names = [re.sub(r"^\d+:\s*", "", str(d)).split(" (")[0].strip() for d in listed]
    version = root.get("version") or root.get("git_version") or None
    return tests, str(version)[:100] if version else None, names, notes


def _from_text(text: str, origin: str) -> tuple[_Tests, str | None, list[str], list[str]]:
    tests = _Tests(origin)
    version = re.search(r"nvbandwidth Version:\s*(\S+)", text)
    names = [m[1].strip() for m in re.finditer(r"^Device \d+:\s*(.+?)(?:\s*\([0-9a-fA-F:.]+\))?\s*$", text, re.M)]
    ran, printed = [], set()
    current = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        run = re.match(r"Running (\S+)\.$", line)
        if run:
            current = run[1]
            ran.append(current)
        elif re.search(r"\((GB/s|ns|us)\)\s*$", line):
            description, rows = line, []
            i += 2  # the column header
            while i < len(lines) and re.match(r"^\s*\d+\s+", lines[i]):
                rows.append([positive_number(c) for c in lines[i].split()[1:]])
                i += 1
            after = next((m for m in (re.match(r"SUM (\S+)", x.strip()) for x in lines[i:i + 3]) if m), None)
            name = current or (after[1] if after else None)  # a run whose "Running" lines were cut
            if name:
                printed.add(name)
                earlier = tests.cases.get(name)
                # a bidirectional test prints each direction, then (0.6 and later) their Total: keep the Total,
                # else the first
                if earlier is None or ("Total" in description and "Total" not in earlier[0]):
                    tests.add(name, description, rows)
            continue
        i += 1
    tests.waived = {name for name in ran if name not in printed}  # a waived test prints nothing but its name
    return tests, version[1] if version else None, names, []


def parse(text: str, origin: str) -> ToolRun:
    """nvbandwidth's output (JSON or text) as a ``ToolRun``; ``InputError`` naming the file where it is neither."""
    if text.lstrip().startswith("{"):
        tests, version, names, notes = _from_json(profiles.parse(text, origin), origin)
    else:
        tests, version, names, notes = _from_text(text, origin)
    if not tests.cases:
        raise InputError(f"{origin}: no passed nvbandwidth test case with a matrix")
    p2p = tests.matrix(P2P_TESTS, square=True)
    bidir = tests.matrix(BIDIR_TESTS, convention="nvbandwidth: n/t each way, measured at once", square=True)
    local = tests.matrix(("device_local_copy",), factor=2.0,
                         convention="dram_Bps = 2n/t: nvbandwidth's copy rate n/t, the bytes read and written counted")
    run = ToolRun("nvbandwidth", version, origin, devices=names, p2p_Bps=p2p[1] if p2p else None,
                  h2d_Bps=(tests.matrix(("host_to_device_memcpy_ce",)) or (None, None))[1],
                  d2h_Bps=(tests.matrix(("device_to_host_memcpy_ce",)) or (None, None))[1],
                  local_dram_Bps=local[1] if local else None, notes=notes)
    if bidir is not None:
        name, m = bidir
        total = "Total" in tests.cases[name][0]  # both directions summed: each direction half
        run.p2p_bidir_Bps = Matrix({k: (v / 2 if v and total else v) for k, v in m.values.items()}, m.method,
                                   m.statistic, m.n, m.byte_convention + ("; the Total halved" if total else ""))
    count = max((max(p) + 1 for mat in run.matrices for p in mat.values), default=len(names))
    if p2p is not None:
        for (i, j), value in p2p[1].values.items():
            if i != j:
                run.can_access[(i, j)] = value is not None
    elif tests.waived & set(P2P_TESTS) and count > 1:
        run.can_access = {(i, j): False for i in range(count) for j in range(count) if i != j}
        run.notes.append("nvbandwidth waived its device-to-device tests: no peer access between the devices")
    elif count > 1:
        run.notes.append("nvbandwidth ran no device-to-device copy test: no link between devices is imported")
        run.no_links = True
    for test, what in (("device_to_device_latency_sm", "between devices"), ("host_device_latency_sm",
                                                                             "to host memory")):
        lat = tests.matrix((test,), convention=None)
        values = sorted(v for v in (lat[1].values.values() if lat else ()) if v)
        if values:
            run.notes.append(f"nvbandwidth {test}: a pointer chase's load latency {what}, median "
                             f"{values[len(values) // 2] * 1e6:.2f} us over {len(values)} entries; not a copy's alpha "
                             "(issued and waited for), so no alpha is taken from it")
    return run
