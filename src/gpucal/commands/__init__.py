"""The ``gpucal`` commands, one module or package each, loaded only when run.

``COMMANDS`` is the one registry: a command's name, the module that implements it and its one-line
summary (what ``gpucal --help`` lists without importing any command). A command module declares
``DESCRIPTION`` (its ``--help`` text), ``add_arguments(parser)`` (its flags; it sets ``run`` with
``parser.set_defaults``) and ``run(args)`` (the work, returning the exit code). Commands never import
each other: the flags and argument types they share live in ``gpucal.commands.options``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

__all__ = ["COMMANDS", "CommandInfo", "load", "registry"]


@dataclass(frozen=True)
class CommandInfo:
    """Where a command lives (``module``, imported when the command runs) and its one-line ``summary``."""

    module: str
    summary: str


def registry(entries: tuple[tuple[str, CommandInfo], ...]) -> dict[str, CommandInfo]:
    """The commands of ``entries`` by name, in their order; a name given twice is a ``ValueError``."""
    out: dict[str, CommandInfo] = {}
    for name, info in entries:
        if name in out:
            raise ValueError(f"gpucal command {name!r} is registered twice ({out[name].module}, {info.module})")
        out[name] = info
    return out


COMMANDS: dict[str, CommandInfo] = registry((
    ("info", CommandInfo("gpucal.commands.info", "devices, driver and the backends available here")),
    ("probe", CommandInfo("gpucal.commands.probe",
                          "run one probe: membw, flops, host-link, d2d, peer, latency (gpucal probe --list)")),
    ("p2p", CommandInfo("gpucal.commands.p2p",
                        "P2P verdict per GPU pair (nvlink, p2p-pcie, host-staged, ...) with the evidence")),
    ("calibrate", CommandInfo("gpucal.commands.calibrate",
                              "measure this machine and write its profile (memory, FLOP/s, every link)")),
    ("plan", CommandInfo("gpucal.commands.plan", "plan LLM inference (pipeline/tensor parallel) from a GPU profile")),
    ("profiles", CommandInfo("gpucal.commands.profiles",
                             "list, show, validate and export hardware profiles and link presets")),
    ("compare", CommandInfo("gpucal.commands.compare", "two profiles side by side, with the ratio B/A per field")),
    ("plot", CommandInfo("gpucal.commands.plot",
                         "draw a profile's figures as PNG: copy bandwidth, P2P verdicts, roofline, plan, network")),
    ("report", CommandInfo("gpucal.commands.report",
                           "one self-contained HTML page of a profile, to look at and share")),
))


def load(name: str) -> ModuleType:
    """The module of command ``name``, imported now (and only it)."""
    return importlib.import_module(COMMANDS[name].module)
