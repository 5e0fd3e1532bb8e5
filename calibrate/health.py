"""Is this machine healthy? Each figure of a calibrated profile against its theoretical peak, and the
anomalies a calibration found.

Peaks: the datasheet profile of the device (``gpucal.profile.datasheet_for``) for memory bandwidth and
dense FLOP/s; memory clock × bus width × 2 where the device reports them; the PCIe rate of the link's
maximum generation and width for the host links (and for P2P or staging over PCIe); the datasheet's
NVLink bandwidth for NVLink.

Anomalies (``kind``): ``failed`` (a check failed: the bytes or the result were wrong), ``error`` (a device
error in a case), ``throttled`` (clocks slowed by a throttle reason while timing), ``noisy`` (the CV stayed
above target), ``downtrained`` (a PCIe link under load below its maximum), ``p2p-slower-than-staged``,
``p2p-corrupt``, ``numa-remote`` (pinned memory not on the device's NUMA node), ``membw-low`` (memory
bandwidth under ``MEMBW_LOW_FRAC`` of the datasheet), ``flops-low`` (dense FLOP/s under ``FLOPS_LOW_FRAC``).
"""

from __future__ import annotations

from gpucal.calibrate.verdict import pcie_load_of

__all__ = ["anomalies", "summary_rows", "MEMBW_LOW_FRAC", "FLOPS_LOW_FRAC"]

MEMBW_LOW_FRAC = 0.7  # healthy HBM/GDDR reaches 80-95 % of the datasheet in a read kernel
FLOPS_LOW_FRAC = 0.5  # cuBLAS at the plateau reaches 60-90 % of the dense datasheet rate
NOISY_LISTED = 5


def _value(q):
    return q.get("value") if isinstance(q, dict) else None


def _where(r) -> str:
    p = r.params or {}
    if "device_index" in p:
        return f"dev{p['device_index']}"
    if p.get("src") is not None and p.get("src") != p.get("dst"):
        return f"dev{p['src']}->dev{p['dst']}"
    return f"dev{p.get('src', 0)}"


def anomalies(cal, profile: dict) -> list[dict]:
    """Everything a user should look at, each ``{kind, text}`` (and where: ``device`` or ``src``/``dst``)."""
    out: list[dict] = []
    results = cal.all_results()
    for status in ("failed", "error"):
        for r in (r for r in results if r.status == status):
            out.append({"kind": status, "text": f"{_where(r)}: {r.probe} {r.case}: {r.reason}"[:500]})
    throttled: dict[str, set] = {}
    for r in results:
        if r.throttled:
            reasons = {x for c in (r.clocks_before, r.clocks_after) if c is not None for x in c.reasons}
            throttled.setdefault(_where(r), set()).update(reasons)
    for where, reasons in sorted(throttled.items()):
        out.append({"kind": "throttled", "text": f"{where}: clocks throttled while timing ({', '.join(sorted(reasons))})"})
    noisy = [r for r in results if r.status == "passed" and r.noisy]
    if noisy:
        listed = ", ".join(f"{_where(r)} {r.case} (CV {100 * r.timing.cv:.1f} %)" for r in noisy[:NOISY_LISTED])
        more = f" and {len(noisy) - NOISY_LISTED} more" if len(noisy) > NOISY_LISTED else ""
        out.append({"kind": "noisy", "text": f"{len(noisy)} case(s) noisy (CV above target when sampling stopped): "
                                             f"{listed}{more}"})
    topology = cal.topology
    if topology is not None and topology.available:
        for d, (gen, width) in sorted(pcie_load_of(cal.results.get("host-link", [])).items()):
            topo = topology.device(d)
            if topo and gen and width and topo.pcie_generation_max and topo.pcie_width_max and (
                    gen < topo.pcie_generation_max or width < topo.pcie_width_max):
                out.append({"kind": "downtrained", "device": d,
                            "text": f"dev{d}: PCIe Gen{gen} x{width} under load, below its maximum "
                                    f"Gen{topo.pcie_generation_max} x{topo.pcie_width_max}"})
        remote = set()
        for r in cal.results.get("host-link", []):
            p = r.params or {}
            topo = topology.device(p.get("src") if p.get("path") == "d2h" else p.get("dst"))
            if p.get("memory") == "pinned" and topo and topo.numa_node is not None \
                    and p.get("host_numa_node") != topo.numa_node:
                remote.add((topo.index, topo.numa_node, p.get("host_numa_node")))
        for d, want, got in sorted(remote, key=str):
            out.append({"kind": "numa-remote", "device": d,
                        "text": f"dev{d}: pinned host memory on NUMA node {got if got is not None else 'unknown'}, "
                                f"not the device's node {want}: host-link figures may be low"})
    for v in cal.verdicts:
        if v.verdict in ("p2p-slower-than-staged", "p2p-corrupt"):
            what = ("P2P copies corrupt data: disable P2P (NCCL_P2P_DISABLE=1) and check the platform (IOMMU, ACS)"
                    if v.verdict == "p2p-corrupt" else
                    "P2P is slower than staging through the host (resizable BAR, ACS or the switch): staging is used")
            out.append({"kind": v.verdict, "src": v.src, "dst": v.dst, "text": f"dev{v.src}->dev{v.dst}: {what}"})
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


def _row(figure, device, value, unit, peak, peak_ref, extra=None):
    return {"figure": figure, "device": device, "value": value, "unit": unit, "peak": peak, "peak_ref": peak_ref,
            "efficiency_frac": value / peak if value and peak else None, **(extra or {})}


def summary_rows(profile: dict) -> list[dict]:
    """Each measured figure with its peak and efficiency: memory bandwidth and dense FLOP/s against the
    datasheet, host links against PCIe, links between devices against PCIe or the datasheet's NVLink."""
    from gpucal.kernels.virtual_machine import pcie_Bps
    from gpucal.profile import datasheet_for

    rows = []
    for dev in profile["devices"]:
        d = dev.get("index", 0)
        sheet = datasheet_for(dev["name"])
        sd = sheet.data["devices"][0] if sheet else {}
        bw = _value(dev.get("memory_bandwidth_Bps"))
        rows.append(_row("memory bandwidth", d, bw, "B/s", _value(sd.get("memory_bandwidth_Bps")), "datasheet"))
        for dtype, q in sorted((dev.get("gemv_Bps") or {}).items()):
            rows.append(_row(f"GEMV {dtype} batch 1", d, _value(q), "B/s", bw, "read kernel"))
        for mode, q in sorted(dev.get("dense_flops", {}).items()):
            peak = _value((sd.get("dense_flops") or {}).get(mode))
            rows.append(_row(f"FLOP/s {mode}", d, _value(q), "FLOP/s", peak, "datasheet"))
        host = dev.get("host_link") or {}
        gen, width = _value(host.get("pcie_generation_max")), _value(host.get("pcie_width_max"))
        pcie = pcie_Bps(gen, width) if gen and width else None
        for path in ("h2d", "d2h"):
            if host.get(path):
                rows.append(_row(f"{path.upper()} beta", d, _value(host[path]["beta_Bps"]), "B/s", pcie,
                                 f"PCIe Gen{gen} x{width}" if pcie else None,
                                 {"alpha_s": _value(host[path]["alpha_s"])}))
    by_index = {dev.get("index", 0): dev for dev in profile["devices"]}
    for link in profile.get("links") or []:
        peak, ref = None, None
        if link["path"] == "nvlink":
            sheet = datasheet_for(by_index.get(link["src"], profile["devices"][0])["name"])
            peer = sheet.data["devices"][0].get("peer_link", {}) if sheet else {}
            peak, ref = _value(peer.get("bandwidth_Bps")), "datasheet NVLink" if peer.get("bandwidth_Bps") else None
        else:
            host = by_index.get(link["src"], {}).get("host_link") or {}
            gen, width = _value(host.get("pcie_generation_max")), _value(host.get("pcie_width_max"))
            if gen and width:
                peak, ref = pcie_Bps(gen, width), f"PCIe Gen{gen} x{width}"
        rows.append(_row(f"link dev{link['src']}->dev{link['dst']} ({link['path']})", link["src"],
                         _value(link["beta_Bps"]), "B/s", peak, ref,
                         {"alpha_s": _value(link["alpha_s"]), "verdict": link["verdict"]}))
    return rows
