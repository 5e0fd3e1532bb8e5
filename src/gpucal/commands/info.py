"""``gpucal info``: the backends, the driver, and what each device is."""

from __future__ import annotations

import platform
from dataclasses import asdict

from gpucal import render
from gpucal.kernels import backend as backends
from gpucal.kernels.nvml import nvml_devices, nvml_status
from gpucal.probes.collective_nccl import nccl_unavailable
from gpucal.probes.topology import read_topology
from gpucal.units import format_bytes, format_rate

__all__ = ["DESCRIPTION", "add_arguments", "run", "collect", "topology_table"]

DESCRIPTION = ("What this machine has: each backend's status, the driver, and each device's facts (from NVML and the "
               "CUDA runtime). Runs without a GPU too.")


def add_arguments(p) -> None:
    """``gpucal info``'s flags."""
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def collect() -> dict:
    reports = backends.report(("cupy", "numba"))
    nvml_ok, nvml_detail, versions = nvml_status()
    out = {"host": platform.node(), "backends": [asdict(r) for r in reports],
           "nvml": {"available": nvml_ok, "detail": nvml_detail, **versions}, "devices": [], "runtime": {},
           "topology": {"available": False, "reason": nvml_detail if not nvml_ok else "no GPU backend can run here"}}
    out["mpi"] = mpi_status()

    why = nccl_unavailable()
    out["nccl"] = {"available": why is None, "detail": why or "NCCL through CuPy (gpucal probe collectives)"}
    live = next((r.name for r in reports if r.available), None)
    if live:
        be = backends.select(live)
        out["runtime"] = {"backend": live, **be.versions()}
        for d in be.devices():
            row = asdict(d)
            row["theoretical_memory_Bps"] = d.theoretical_memory_Bps
            out["devices"].append(row)

        out["topology"] = read_topology(be).to_dict()
    elif nvml_ok:  # a driver without a usable runtime backend: NVML still knows the devices
        out["devices"] = [asdict(d) for d in nvml_devices()]
    return out


def mpi_status() -> dict:
    """Whether mpi4py and an MPI library are here (for ``mpiexec -n N gpucal ...``), without starting MPI."""
    try:
        import mpi4py

        mpi4py.rc.initialize = False  # the library's version is readable before MPI_Init; start nothing
        mpi4py.rc.finalize = False
        from mpi4py import MPI
    except ImportError as exc:
        return {"available": False, "detail": f"mpi4py is not installed ({exc}): pip install 'gpucal[mpi]'"}
    except RuntimeError as exc:
        return {"available": False, "detail": f"mpi4py cannot load an MPI library ({exc})"}
    library = " ".join(MPI.Get_library_version().strip().splitlines()[0].split())
    return {"available": True, "detail": f"{library}, mpi4py {mpi4py.__version__}", "library": library,
            "mpi4py": mpi4py.__version__}


def _pcie(d: dict) -> str:
    if d.get("pcie_generation") is None:
        return "-"
    text = f"Gen{d['pcie_generation']} x{d.get('pcie_width')}"
    if d.get("pcie_generation_max") is not None:
        text += f" (max Gen{d['pcie_generation_max']} x{d.get('pcie_width_max')})"
    return text


def run(args) -> int:
    data = collect()
    if args.json:
        render.print_json(data)
        return 0
    out = render.console()
    render.line(f"host {data['host']}", out)
    nv = data["nvml"]
    render.line(f"NVML: {nv['detail']}" + (f"; driver {nv.get('driver_version')}, CUDA {nv.get('cuda_driver_version')}"
                                          if nv["available"] else ""), out)
    rows = [(b["name"], "yes" if b["available"] else "no", b["detail"]) for b in data["backends"]]
    rows += [(name, "yes" if data[name]["available"] else "no", data[name]["detail"]) for name in ("mpi", "nccl")]
    out.print(render.table(("backend", "available", "detail"), rows))
    if not data["devices"]:
        render.line("no GPU here: gpucal probe ... --backend simulator checks the kernels on the CPU; "
                    "--backend virtual:PROFILE[:N] simulates a machine (e.g. gpucal p2p --backend virtual:rtx4090:8)", out)
        return 0
    rows = []
    for d in data["devices"]:
        peak = d.get("theoretical_memory_Bps")
        rows.append((d["index"], d.get("name"), d.get("compute_capability") or "-", d.get("sm_count") or "-",
                     format_bytes(d["memory_bytes"]) if d.get("memory_bytes") else "-",
                     format_bytes(d["l2_bytes"]) if d.get("l2_bytes") else "-",
                     format_rate(peak) if peak else "-", _pcie(d), d.get("uuid") or "-"))
    out.print(render.table(("#", "device", "cc", "SMs", "memory", "L2", "memory peak", "PCIe", "UUID"), rows,
                           right=(0, 3, 4, 5, 6)))
    if data["topology"].get("pairs"):
        out.print(topology_table(data["topology"]))
    return 0


def topology_table(topo: dict):
    """The pairs of a topology (``Topology.to_dict()``): common ancestor, NVLinks, NVML's P2P word, NUMA nodes."""
    numa = {d["index"]: d["numa_node"] for d in topo["devices"]}
    rows = [(f"{p['src']} -> {p['dst']}", p["common_ancestor"] or "-",
             f"{p['nvlinks']} ({p['nvlink_via']})" if p["nvlinks"] else "-",
             ", ".join(f"{k} {v}" for k, v in p["p2p"].items() if v is not None) or "-",
             f"{numa.get(p['src'])} / {numa.get(p['dst'])}") for p in topo["pairs"]]
    return render.table(("pair", "common ancestor", "NVLinks", "NVML P2P", "NUMA nodes"), rows,
                        title="topology (NVML; NUMA nodes: sysfs, else NVML); gpucal p2p measures what each pair "
                              "really does")
