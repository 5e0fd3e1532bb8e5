"""Other tools' outputs into gpucal profiles (``gpucal profiles import``): nvbandwidth's JSON (``-j``) and text,
cuda-samples' p2pBandwidthLatencyTest text, nccl-tests' text. Each parser reads one file into a ``ToolRun``
(``figures.py``) in gpucal's units and byte conventions; ``build.build_profile`` makes the profile."""

from __future__ import annotations

from gpucal import profiles
from gpucal.calibrate.imports import nccltests, nvbandwidth, p2plat
from gpucal.calibrate.imports.build import build_profile
from gpucal.calibrate.imports.figures import ToolRun
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
    if tool == "nccl-tests":
        return module.parse(text, origin, op)
    if op is not None:
        raise InputError(f"--op: only with --from nccl-tests ({tool} times no collective)")
    return module.parse(text, origin)
