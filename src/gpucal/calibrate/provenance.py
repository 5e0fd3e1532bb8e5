"""Where a profile's numbers come from: the host, its CPU and OS, the driver, the CUDA runtime, the
libraries, the devices, the clocks and throttle reasons seen, the command line, start and end."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import socket
from importlib import metadata

from gpucal import limits

__all__ = ["provenance", "command_text", "iso", "LIBRARIES"]

LIBRARIES = ("gpucal", "numpy", "numba", "numba-cuda", "cupy-cuda13x", "cupy-cuda12x", "nvidia-ml-py", "mpi4py")


def iso(unix_s: float) -> str:
    """A Unix time as ISO 8601 UTC, to the second: ``2026-11-28T04:00:00Z``."""
    return _dt.datetime.fromtimestamp(unix_s, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu() -> dict:
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"model": model or platform.processor() or None, "logical_cpus": os.cpu_count(),
            "machine": platform.machine()}


def _libraries() -> dict:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _driver(backend) -> str | None:
    nv = backend.nvml()
    if nv is None:
        return None
    try:
        version = nv.nvmlSystemGetDriverVersion()
    except Exception:  # a fake NVML without it, or an NVML error: the driver stays unknown
        return None
    return version.decode() if isinstance(version, bytes) else version


def _clocks(results) -> list[dict]:
    """Per device: the SM and memory clocks seen (min, max) and every throttle reason, over all cases."""
    seen: dict = {}
    for r in results:
        p = r.params or {}
        d = p.get("device_index", p.get("src"))
        for c in (r.clocks_before, r.clocks_after):
            if c is None:
                continue
            s = seen.setdefault(d, {"device": d, "sm_clock_hz": [], "memory_clock_hz": [], "reasons": set()})
            for key in ("sm_clock_hz", "memory_clock_hz"):
                if getattr(c, key):
                    s[key].append(getattr(c, key))
            s["reasons"].update(c.reasons)
    out = []
    for d, s in sorted(seen.items(), key=lambda kv: (kv[0] is None, kv[0])):
        item = {"device": d, "throttle_reasons": sorted(s["reasons"])}
        for key in ("sm_clock_hz", "memory_clock_hz"):
            item[key.replace("_hz", "_min_hz")] = min(s[key]) if s[key] else None
            item[key.replace("_hz", "_max_hz")] = max(s[key]) if s[key] else None
        out.append(item)
    return out


def _topology(topology) -> dict | None:
    """The topology as read at the start, links idle: PCIe readings then say nothing of training (idle links
    drop to Gen1), so they are labelled as idle and no downtraining is judged from them."""
    if topology is None:
        return None
    out = topology.to_dict()
    for d in out["devices"]:
        d.pop("pcie_downtrained", None)
        d["pcie_generation_idle"] = d.pop("pcie_generation", None)
        d["pcie_width_idle"] = d.pop("pcie_width", None)
    return out



_UNPRINTABLE = re.compile("[" + limits.CONTROL_CHARACTERS + "]")


def _printable(text: str) -> str:
    """``text`` with the characters a profile's text may not hold written as escapes (``\\x1b``): a command
    line may quote anything."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", text)


def command_text(argv: list[str]) -> str:
    """The command line ``gpucal ARGV`` as a profile records it (shell-quoted, control characters escaped)."""
    return _printable(shlex.join(["gpucal", *argv]))


def provenance(cal, argv: list[str] | None) -> dict:
    """The ``host`` object of a profile written from calibration ``cal``."""
    backend = cal.backend
    devices = backend.devices()
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu(),
        "backend": backend.name,
        "simulated": bool(backend.simulated),
        "mode": cal.config.mode,
        "command": _printable(shlex.join(["gpucal", *argv])) if argv is not None else None,
        "started": iso(cal.started),
        "finished": iso(cal.finished or cal.started),
        "duration_s": (cal.finished or cal.started) - cal.started,
        "driver_version": _driver(backend),
        "runtime": backend.versions(),
        "libraries": _libraries(),
        "devices": [{"index": d.index, "name": d.name, "uuid": d.uuid, "pci_bus_id": d.pci_bus_id} for d in devices],
        "clocks": _clocks(cal.all_results()),
        "topology": _topology(cal.topology),
        "simulator_check": cal.simulator_check,
    }
