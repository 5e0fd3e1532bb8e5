"""Is this machine healthy? Each figure of a calibrated profile against its theoretical peak, and the
anomalies a calibration found.

Peaks: the datasheet profile of the device (``gpucal.profiles.datasheet_for``) for memory bandwidth and
dense FLOP/s; memory clock × bus width × 2 where the device reports them; the PCIe rate of the link's
maximum generation and width for the host links (and for P2P or staging over PCIe); the datasheet's
NVLink bandwidth for NVLink.

Anomalies (``kind``): ``failed`` (a check failed: the bytes or the result were wrong), ``error`` (a device
error in a case), ``throttled`` (clocks slowed by a throttle reason while timing), ``noisy`` (a case behind
one of the profile's figures stopped sampling with its CV above target), ``downtrained`` (a PCIe link under load below its maximum), ``p2p-slower-than-staged``,
``p2p-corrupt``, ``p2p-unmeasured`` (peer access offered, no P2P copy measured), ``numa-remote`` (pinned
memory known to sit off the device's NUMA node: the buffer's node as the kernel reports its pages, or the
virtual machine's placement, against the device's CPU-side node from sysfs, or NVML where sysfs cannot
say; an unknown node on either side is no evidence), ``link-missing``
(a pair without a measured link), ``fit-failed`` (a series behind the profile without an α/β fit),
``poor-fit`` (a series behind the profile with a point more than ``POOR_FIT_RESIDUAL_FRAC`` off its fit),
``kernel-check-failed`` (a kernel wrong on the Numba simulator), ``membw-low`` (memory bandwidth under
``MEMBW_LOW_FRAC`` of the datasheet), ``flops-low`` (dense FLOP/s under ``FLOPS_LOW_FRAC``). Failed cases
are grouped per series (or kernel), with their count and the first reason.
"""

from __future__ import annotations

import statistics

from gpucal.calibrate.verdict import pcie_load_of
from gpucal.profiles import datasheet_for
from gpucal.profiles.model import Device, HostLink, Profile, Quantity
from gpucal.profiles.decode_queries import decode_terms
from gpucal.standards import PCIE_GT_S, pcie_Bps
from gpucal.units import size_label

__all__ = ["anomalies", "summary_rows", "DECODE", "MEMBW_LOW_FRAC", "FLOPS_LOW_FRAC", "condensed_rows"]

MEMBW_LOW_FRAC = 0.7  # healthy HBM/GDDR reaches 80-95 % of the datasheet in a read kernel
FLOPS_LOW_FRAC = 0.5  # cuBLAS at the plateau reaches 60-90 % of the dense datasheet rate
NOISY_LISTED = 5


def _value(q: Quantity | None):
    """The value of a quantity; ``None`` when it is absent or unknown."""
    return None if q is None else q.value


def _index(device: Device) -> int:
    """The device's index in the runtime's order (0 where the profile does not list it)."""
    return 0 if device.index is None else device.index


def _pcie_max(host: HostLink | None) -> tuple:
    """(generation, width) at most of a host link, each ``None`` where unknown."""
    if host is None:
        return None, None
    return _value(host.pcie_generation_max), _value(host.pcie_width_max)


def _where(r) -> str:
    p = r.params or {}
    if "device_index" in p:
        return f"dev{p['device_index']}"
    if p.get("src") is not None and p.get("src") != p.get("dst"):
        return f"dev{p['src']}->dev{p['dst']}"
    return f"dev{p.get('src', 0)}"


def _group(results) -> dict:
    """Results by what they measure: the copy series, or the probe and kernel (``read``, ``gemm-fp16_fp32acc``)."""
    groups: dict = {}
    for r in results:
        p = r.params or {}
        key = p.get("series") or f"{r.probe} {r.case.rsplit('-', 1)[0] if r.probe == 'flops' else r.case}"
        groups.setdefault((_where(r), key), []).append(r)
    return groups


def _feeds_profile(r, used_series: set) -> bool:
    """Whether ``r`` is a case whose time went into a figure of the profile."""
    p = r.params or {}
    if r.probe in ("membw", "flops"):
        return True
    return p.get("series") in used_series and p.get("latency") in (None, "oneshot")


def anomalies(cal, profile: Profile) -> list[dict]:
    """Everything a user should look at in the calibration ``cal`` and the profile built from it, each
    ``{kind, text}`` (and where: ``device`` or ``src``/``dst``)."""
    out: list[dict] = []
    results = cal.all_results()
    for status in ("failed", "error"):
        for (where, key), rs in _group(r for r in results if r.status == status).items():
            more = f" ({len(rs)} cases; the first:" if len(rs) > 1 else " ("
            out.append({"kind": status, "text": f"{where}: {key}{more} {rs[0].case}: {rs[0].reason})"[:500]})
    throttled: dict[str, set] = {}
    for r in results:
        if r.throttled:
            reasons = {x for c in (r.clocks_before, r.clocks_after) if c is not None for x in c.reasons}
            throttled.setdefault(_where(r), set()).update(reasons)
    for where, reasons in sorted(throttled.items()):
        out.append({"kind": "throttled", "text": f"{where}: clocks throttled while timing ({', '.join(sorted(reasons))})"})
    links = profile.links or []
    used = {link.series for link in links}
    used |= {f"{path}-ce-pinned-dev{_index(dev)}" for dev in profile.devices for path in ("h2d", "d2h")}
    noisy = [r for r in results if r.status == "passed" and r.noisy and _feeds_profile(r, used)]
    if noisy:
        listed = ", ".join(f"{_where(r)} {r.case} (CV {100 * r.timing.cv:.1f} %)" for r in noisy[:NOISY_LISTED])
        more = f" and {len(noisy) - NOISY_LISTED} more" if len(noisy) > NOISY_LISTED else ""
        out.append({"kind": "noisy", "text": f"{len(noisy)} case(s) behind the profile's figures stopped sampling "
                                             f"with the CV above target: {listed}{more}"})
    topology = cal.topology
    if topology is not None and topology.available:
        for d, (gen, width) in sorted(pcie_load_of(cal.results.get("host-link", [])).items()):
            topo = topology.device(d)
            if topo and gen and width and topo.pcie_generation_max and topo.pcie_width_max and (
                    gen < topo.pcie_generation_max or width < topo.pcie_width_max):
                out.append({"kind": "downtrained", "device": d,
                            "text": f"dev{d}: PCIe Gen{gen} x{width} under load, below its maximum "
                                    f"Gen{topo.pcie_generation_max} x{topo.pcie_width_max}"})
        out.extend(_numa_remote(cal.results.get("host-link", []), topology))
    for v in cal.verdicts:
        if v.verdict in ("p2p-slower-than-staged", "p2p-corrupt"):
            what = ("P2P copies corrupt data: disable P2P (NCCL_P2P_DISABLE=1) and check the platform (IOMMU, ACS); "
                    "the profile's link is the staged path" if v.verdict == "p2p-corrupt" else
                    "P2P is slower than staging through the host (resizable BAR, ACS or the switch): disable P2P "
                    "(NCCL_P2P_DISABLE=1) to get the staged rate; the profile's link assumes it is disabled")
            out.append({"kind": v.verdict, "src": v.src, "dst": v.dst, "text": f"dev{v.src}->dev{v.dst}: {what}"})
    for link in links:
        if link.verdict in ("nvlink", "p2p-pcie") and link.path == "host-staged":
            out.append({"kind": "p2p-unmeasured", "src": link.src, "dst": link.dst,
                        "text": f"dev{link.src}->dev{link.dst}: the runtime offers peer access ({link.verdict} "
                                "by its capabilities) but no P2P copy was measured; the profile's link is the staged "
                                "path"})
    have = {(link.src, link.dst) for link in links}
    for v in cal.verdicts:
        if (v.src, v.dst) not in have:
            out.append({"kind": "link-missing", "src": v.src, "dst": v.dst,
                        "text": f"dev{v.src}->dev{v.dst}: no path between them was measured with both alpha and beta; "
                                "the profile has no link for this pair"})
    for f in cal.fits:
        if f.fit is None and f.series in used and f.cases:
            out.append({"kind": "fit-failed", "text": f"{f.series}: no alpha/beta fit ({f.reason}); the profile uses "
                                                      "its best rate"})
        elif f.fit is not None and f.fit.poor and f.series in used:
            out.append({"kind": "poor-fit", "text": f"{f.series}: a measured point lies "
                                                    f"{100 * f.fit.max_abs_residual_frac:.0f} % from its fit t = alpha "
                                                    f"+ n/beta ({len(f.fit.pieces)} regime(s), R2 {f.fit.r2:.4f}): its "
                                                    "alpha and beta describe the sweep poorly"})
    check = cal.simulator_check
    if check and check.get("failed"):
        out.append({"kind": "kernel-check-failed",
                    "text": "kernels on the Numba simulator: " + "; ".join(check["failed"])[:450]})
    for row in summary_rows(profile):
        frac = row["efficiency_frac"]
        if frac is None or row["peak_ref"] != "datasheet":
            continue
        if row["figure"] == "memory bandwidth" and frac < MEMBW_LOW_FRAC:
            out.append({"kind": "membw-low", "device": row["device"],
                        "text": f"dev{row['device']}: memory bandwidth {100 * frac:.0f} % of the datasheet "
                                f"(under {100 * MEMBW_LOW_FRAC:.0f} %)"})
        if row["figure"].startswith("FLOP/s") and frac < FLOPS_LOW_FRAC:
            out.append({"kind": "flops-low", "device": row["device"],
                        "text": f"dev{row['device']}: {row['figure']} {100 * frac:.0f} % of the datasheet's dense "
                                f"rate (under {100 * FLOPS_LOW_FRAC:.0f} %)"})
    return out


_NUMA_SOURCES = {"sysfs": "sysfs numa_node of its PCI device", "nvml": "NVML nvmlDeviceGetNumaNodeId"}


def _numa_remote(host_results, topology) -> list[dict]:
    """``numa-remote`` per device whose pinned host buffers sit on another node than the device's CPU side.

    The buffer's node is ``params["host_numa_node"]``: what the kernel (``move_pages``) reports for the
    buffer's pages (``kernels/numa.py``), or the virtual machine's placement; the device's is the topology's
    (sysfs, else NVML). Either unknown: no evidence, no anomaly."""
    remote: dict[tuple[int, int], tuple] = {}
    for r in host_results:
        p = r.params or {}
        topo = topology.device(p.get("src") if p.get("path") == "d2h" else p.get("dst"))
        got = p.get("host_numa_node")
        if p.get("memory") != "pinned" or topo is None or topo.numa_node is None or not isinstance(got, int):
            continue
        if got != topo.numa_node:
            buffer_from = p.get("host_numa_how") or ("the virtual machine's placement" if r.source == "simulated"
                                                     else "the kernel's move_pages on the buffer's pages")
            device_from = _NUMA_SOURCES.get(topo.numa_source, topo.numa_source or "the topology")
            if r.source == "simulated" and topo.numa_source == "nvml":
                device_from = "the virtual machine's NVML"
            remote.setdefault((topo.index, got), (topo.numa_node, buffer_from, device_from))
    return [{"kind": "numa-remote", "device": d,
             "text": f"dev{d}: pinned host memory on NUMA node {got} ({buffer_from}), not the device's node {want} "
                     f"({device_from}): host-link figures may be low"}
            for (d, got), (want, buffer_from, device_from) in sorted(remote.items())]


def _row(figure, device, value, unit, peak, peak_ref, extra=None):
    return {"figure": figure, "device": device, "value": value, "unit": unit, "peak": peak, "peak_ref": peak_ref,
            "efficiency_frac": value / peak if value and peak else None, **(extra or {})}


DECODE = {"group": "decode"}  # the rows of the decode step's terms (``gpucal calibrate`` prints them apart)


def _decode_rows(dev: Device, d: int, bw: float | None) -> list[dict]:
    """The decode terms of a device: the decode GEMM's weight bytes/s at m = 1 and 64 over its largest measured
    shape, attention's KV bytes/s (and alpha), the launch costs."""
    try:
        terms = decode_terms(dev)
    except ValueError:
        return []
    rows = []
    for dtype, curve in sorted(terms.gemm.items()):
        shapes = dev.decode.gemm[dtype].shapes
        n, k = max(shapes, key=lambda s: s[0] * s[1])
        w = n * k * (1 if dtype == "fp8" else 4 if dtype == "fp32" else 2)
        for m in (1, 64):
            rows.append(_row(f"GEMM {dtype} m={m}, W {size_label(w)}", d, curve.weight_Bps(m, w), "B/s", bw,
                             "read kernel", DECODE))
    for dtype, fit in sorted(terms.attention.items()):
        rows.append(_row(f"attention {dtype} KV", d, fit.beta_Bps, "B/s", bw, "read kernel",
                         {"alpha_s": fit.alpha_s, **DECODE}))
    if terms.launch is not None:
        for what, value in (("eager", terms.launch.eager_s), ("graph node", terms.launch.graph_node_s),
                            ("+ sync", terms.launch.sync_s)):
            rows.append(_row(f"launch {what}", d, value, "s", None, None, DECODE))
    return rows


def _devices_label(devices: list[int] | None) -> str | None:
    if not devices:
        return None
    return f"dev{devices[0]}-{devices[-1]}" if devices == list(range(devices[0], devices[-1] + 1)) else \
        ",".join(f"dev{d}" for d in devices)


def _allreduce_rows(profile: Profile) -> list[dict]:
    rows = []
    for e in profile.collectives or []:
        if e.op == "all-reduce" and e.single_process and e.known:
            rows.append(_row(f"all-reduce TP{e.nranks} {'graph' if e.graphs else 'eager'}",
                             (e.devices or [0])[0], _value(e.beta_Bps), "B/s", None, None,
                             {"alpha_s": _value(e.alpha_s), "where": _devices_label(e.devices), **DECODE}))
    return rows


def summary_rows(profile: Profile) -> list[dict]:
    """Each measured figure of ``profile`` with its peak and efficiency: memory bandwidth and dense FLOP/s
    against the datasheet, host links against PCIe, links between devices against PCIe or the datasheet's
    NVLink."""
    rows = []
    for dev in profile.devices:
        d = _index(dev)
        sheet = datasheet_for(dev.name)
        sd = sheet.profile.devices[0] if sheet else None
        bw = _value(dev.memory_bandwidth_Bps)
        rows.append(_row("memory bandwidth", d, bw, "B/s", _value(sd.memory_bandwidth_Bps) if sd else None,
                         "datasheet"))
        for dtype, q in sorted((dev.gemv_Bps or {}).items()):
            rows.append(_row(f"GEMV {dtype} batch 1", d, _value(q), "B/s", bw, "read kernel"))
        for mode, q in sorted(dev.dense_flops.items()):
            peak = _value(sd.dense_flops.get(mode)) if sd else None
            rows.append(_row(f"FLOP/s {mode}", d, _value(q), "FLOP/s", peak, "datasheet"))
        host = dev.host_link
        gen, width = _pcie_max(host)
        pcie = pcie_Bps(gen, width) if gen in PCIE_GT_S and width else None
        for path in ("h2d", "d2h"):
            ab = getattr(host, path) if host is not None else None
            if ab is not None:
                rows.append(_row(f"{path.upper()} beta", d, _value(ab.beta_Bps), "B/s", pcie,
                                 f"PCIe Gen{gen} x{width}" if pcie else None, {"alpha_s": _value(ab.alpha_s)}))
        rows += _decode_rows(dev, d, bw)
    by_index = {_index(dev): dev for dev in profile.devices}
    for link in profile.links or []:
        peak, ref = None, None
        if link.path == "nvlink":
            sheet = datasheet_for(by_index.get(link.src, profile.devices[0]).name)
            peer = sheet.profile.devices[0].peer_link if sheet else None
            rate = peer.bandwidth_Bps if peer is not None else None
            peak, ref = _value(rate), "datasheet NVLink" if rate is not None else None
        else:
            dev = by_index.get(link.src)
            gen, width = _pcie_max(dev.host_link if dev is not None else None)
            if gen in PCIE_GT_S and width:
                peak, ref = pcie_Bps(gen, width), f"PCIe Gen{gen} x{width}"
        rows.append(_row(f"link dev{link.src}->dev{link.dst} ({link.path})", link.src, _value(link.beta_Bps), "B/s",
                         peak, ref, {"alpha_s": _value(link.alpha_s), "verdict": link.verdict}))
    return rows + _allreduce_rows(profile)


def condensed_rows(rows: list[dict]) -> list[dict]:
    """One row per figure over every device (or every pair with the same path and verdict): the median
    value, the range where the devices differ by more than 1 %, the peak and the median's efficiency."""
    groups: dict = {}
    for r in rows:
        key = (f"link {r['verdict']}" if r.get("verdict") else r["figure"], r["unit"])
        groups.setdefault(key, []).append(r)
    out = []
    for (figure, unit), rs in groups.items():
        values = [r["value"] for r in rs if r["value"]]
        alphas = [r["alpha_s"] for r in rs if r.get("alpha_s") is not None]
        value = statistics.median(values) if values else None
        peak = rs[0]["peak"]
        where = rs[0].get("where") or (f"{len(rs)} pair(s)" if rs[0].get("verdict") else
                                       f"dev{rs[0]['device']}" if len(rs) == 1 else f"{len(rs)} devices")
        spread = (max(values) - min(values)) / value if values and value else 0.0
        out.append({"figure": figure, "where": where, "unit": unit, "value": value,
                    "low": min(values) if spread > 0.01 else None, "high": max(values) if spread > 0.01 else None,
                    "alpha_s": statistics.median(alphas) if alphas else None, "peak": peak,
                    "peak_ref": rs[0]["peak_ref"], "efficiency_frac": value / peak if value and peak else None})
    return out
