"""The device layer: one ``Backend`` interface, one implementation per engine, and how one is chosen.

| backend     | where                                   | kernels                 | clock            |
|-------------|-----------------------------------------|-------------------------|------------------|
| cupy        | real GPU (preferred)                    | RawKernel + cuBLAS      | CUDA events      |
| numba       | real GPU through numba-cuda             | Numba kernels           | CUDA events      |
| simulator   | CPU: numba-cuda, NUMBA_ENABLE_CUDASIM=1 | Numba kernels           | host clock       |
| virtual     | CPU: N cards built from a profile       | NumPy                   | virtual clock    |

A backend (the interface: ``kernels/base.py``) owns arrays, launches kernels and times ``k`` launches; it
knows nothing of statistics.
CuPy and Numba are imported only when a backend is asked for (``import gpucal`` needs neither).
``select("auto")`` tries cupy, then numba; with no device it raises ``NoDeviceError`` whose one line
says what each backend reported and how to run on the simulator or a virtual machine
(``select("virtual:PROFILE[:N]")``, ``kernels/virtual.py``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from gpucal.errors import GpucalError, InputError
from gpucal.kernels.base import Backend, DeviceInfo, merge_nvml
from gpucal.kernels.virtual import VirtualBackend

__all__ = ["Backend", "BackendReport", "DeviceInfo", "NoDeviceError", "BACKENDS", "SIM_FLAG", "report",
           "select", "use_simulator", "merge_nvml"]

BACKENDS = ("cupy", "numba", "simulator")
SIM_FLAG = "NUMBA_ENABLE_CUDASIM"


class NoDeviceError(GpucalError):
    """No backend can run here (exit code 1: a device failure, not bad input)."""


@dataclass(frozen=True)
class BackendReport:
    name: str
    available: bool
    detail: str  # the version when available, else why not


def _cupy_report() -> tuple[BackendReport, object]:
    try:
        from gpucal.kernels.cupy_backend import CupyBackend, cupy_status
    except ImportError as exc:
        return BackendReport("cupy", False, f"not installed ({exc.name or exc}); pip install 'gpucal[cuda13]'"), None
    ok, detail = cupy_status()
    return BackendReport("cupy", ok, detail), (CupyBackend if ok else None)


def _numba_report(simulated: bool) -> tuple[BackendReport, object]:
    name = "simulator" if simulated else "numba"
    flag_set = os.environ.get(SIM_FLAG, "0") not in ("", "0")
    if "numba" in sys.modules:
        import numba

        flag_set = bool(numba.config.ENABLE_CUDASIM)
    if simulated and not flag_set:
        return BackendReport(name, False, f"{SIM_FLAG}=1 must be set before numba is imported"), None
    if not simulated and flag_set:
        return BackendReport(name, False, f"{SIM_FLAG}=1 is set (that is the simulator backend)"), None
    try:
        from gpucal.kernels.numba_backend import NumbaBackend, numba_status
    except ImportError as exc:
        return BackendReport(name, False, f"not installed ({exc})"), None
    ok, detail = numba_status(simulated)
    return BackendReport(name, ok, detail), (NumbaBackend if ok else None)


def report(names=BACKENDS) -> list[BackendReport]:
    """What each backend says here (imports CuPy and numba as needed)."""
    out = []
    for name in names:
        out.append(_cupy_report()[0] if name == "cupy" else _numba_report(name == "simulator")[0])
    return out


def use_simulator() -> None:
    """Set the simulator flag for this process; refuse when numba was already imported without it."""
    if "numba" in sys.modules:
        import numba

        if not numba.config.ENABLE_CUDASIM:
            raise InputError(f"--backend simulator: numba was imported without {SIM_FLAG}=1; "
                             f"run with {SIM_FLAG}=1 in the environment")
        return
    os.environ[SIM_FLAG] = "1"


def select(name: str = "auto", device: int = 0) -> Backend:
    """The backend called ``name`` (or the first that works, for ``auto``), on device ``device``."""
    if name == "virtual" or name.startswith("virtual:"):
        return VirtualBackend.from_spec(name, device)
    if name not in ("auto",) + BACKENDS:
        raise InputError(f"--backend: unknown backend {name!r} (choose from auto, {', '.join(BACKENDS)}, "
                         "virtual:PROFILE[:N])")
    if name == "simulator":
        use_simulator()
    candidates = ("cupy", "numba") if name == "auto" else (name,)
    reports = []
    for candidate in candidates:
        rep, cls = _cupy_report() if candidate == "cupy" else _numba_report(candidate == "simulator")
        reports.append(rep)
        if cls is not None:
            return cls(device=device) if candidate == "cupy" else cls(simulated=candidate == "simulator",
                                                                      device=device)
    said = "; ".join(f"{r.name}: {r.detail}" for r in reports)
    raise NoDeviceError(f"no GPU backend can run here ({said}); to check the kernels on the CPU, "
                        "use --backend simulator; to simulate a machine, --backend virtual:PROFILE[:N]")
