"""Other tools' outputs into gpucal profiles (``gpucal profiles import``): nvbandwidth's JSON (``-j``) and text,
cuda-samples' p2pBandwidthLatencyTest text, nccl-tests' text. Each parser reads one file into a ``ToolRun``
(``figures.py``) in gpucal's units and byte conventions; ``build.build_profile`` makes the profile."""

from __future__ import annotations

import hashlib

from gpucal import limits, profiles
from gpucal.calibrate.imports import nccltests, nvbandwidth, p2plat
from gpucal.calibrate.imports.build import build_profile
from gpucal.calibrate.imports.figures import CellError, ToolRun
from gpucal.errors import InputError

__all__ = ["TOOLS", "read_run", "build_profile", "ToolRun"]

TOOLS = {"nvbandwidth": nvbandwidth, "p2pbandwidthlatencytest": p2plat, "nccl-tests": nccltests}


def read_run(path: str, tool: str, op: str | None = None) -> ToolRun:
    """The file at ``path`` (a regular file, within the input size limit) read as ``tool``'s output."""
    origin = profiles.shown_name(path)
    raw = profiles.read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{origin}: not UTF-8 text (byte {exc.start})") from None
    module = TOOLS[tool]
    if not module.looks_like(text):
        others = [name for name, m in TOOLS.items() if name != tool and m.looks_like(text)]
        hint = f" (it looks like {others[0]}'s: --from {others[0]})" if others else ""
        raise InputError(f"{origin}: not {tool}'s output{hint}")
    if op is not None and tool != "nccl-tests":
        raise InputError(f"--op: only with --from nccl-tests ({tool} times no collective)")
    try:
        run = module.parse(text, origin, op) if tool == "nccl-tests" else module.parse(text, origin)
    except CellError as exc:
        raise InputError(f"{origin}: {exc}") from None
    run.sha256 = hashlib.sha256(raw).hexdigest()
    _check(run, origin)
    return run


def _check(run: ToolRun, origin: str) -> None:
    """Every figure of ``run`` within the physical ranges (``gpucal.limits``), and no more devices than a profile
    holds: one line naming the file and the table where not."""
    count = run.device_count
    if count > limits.MAX_DEVICES:
        raise InputError(f"{origin}: {count} devices; a profile holds at most {limits.MAX_DEVICES}")
    for key, matrix in run.named_matrices().items():
        kind = "time" if key.endswith("_s") else "rate"
        lo, hi = limits.RANGES[kind]
        for (i, j), value in matrix.values.items():
            if value is not None and not lo <= value <= hi:
                raise InputError(f"{origin}: {matrix.method.split(',')[0]}: the figure for devices {i}, {j} is out "
                                 f"of range ({value:.3g} {'s' if kind == 'time' else 'B/s'})")
    for c in run.collectives:
        for size, seconds in zip(c.sizes_bytes, c.times_s):
            if not (1 <= size <= limits.RANGES["bytes"][1] and 0 < seconds <= limits.RANGES["time"][1]):
                raise InputError(f"{origin}: the size {size} B timed at {seconds:.3g} s is out of range")
        if c.nranks > limits.MAX_DEVICES * limits.MAX_DEVICES:
            raise InputError(f"{origin}: {c.nranks} ranks is out of range")
