"""aiconfigurator's system file (``systems/<name>.yaml``) from a profile: ``data_dir``, ``gpu``, ``node``, ``misc``
and gpucal's provenance under ``gpucal``; its performance tables come from ``gpucal.profiles.aic_tables``.
docs/exports.md gives the mapping field by field."""

from __future__ import annotations

import re
from typing import Any

from gpucal import __version__, profiles
from gpucal.profiles import aic_tables
from gpucal.profiles.export_reader import Reader, rounded, value_of
from gpucal.profiles.model import Profile
from gpucal.profiles.queries import DEFAULT_FLOPS_MODE, LinkChoice, plan_flops_mode
from gpucal.standards import PCIE_GT_S, pcie_Bps

__all__ = ["MEM_CONSTANT_LATENCY_S", "AIC_NCCL_MEM_BYTES", "AIC_OTHER_MEM_BYTES", "AIC_NCCL_VERSION",
           "DATASHEET_GPUS_PER_NODE", "system_file"]

# aiconfigurator's memory-op constant (its shipped files' 3 us); gpucal does not measure one.
MEM_CONSTANT_LATENCY_S = 3e-6
# aiconfigurator's memory model reads misc (a KeyError in every mode without it); gpucal measures none of these:
# the values of aiconfigurator 0.12.0's own files (systems/h200_sxm.yaml, l40s.yaml), marked estimates.
AIC_NCCL_MEM_BYTES = {1: 0, 2: 358612992, 4: 411041792, 8: 411041792}
AIC_OTHER_MEM_BYTES = 3758096384
AIC_NCCL_VERSION = "2.27.3"  # the version most of aiconfigurator 0.12.0's system files name
# GPUs per node of a datasheet profile (one card): the 8-card server every aiconfigurator 0.12.0 file describes
# (HGX boards and 8-card PCIe servers alike); --gpus-per-node overrides it.
DATASHEET_GPUS_PER_NODE = 8
_FP8_MODE = DEFAULT_FLOPS_MODE["fp8"]


def _pcie_Bps(r: Reader, key: str) -> float:
    """Host link per direction: the slower measured direction, else the PCIe line rate."""
    host = r.device.host_link
    directions = {d: getattr(host, d) for d in ("h2d", "d2h")} if host else {}
    measured = [(value_of(link.beta_Bps), d) for d, link in directions.items() if link is not None]
    measured = [(beta, d) for beta, d in measured if beta]
    if measured:
        beta, d = min(measured)
        r.sources[key] = (f"devices[0].host_link.{d}.beta_Bps: {directions[d].beta_Bps.cited} "
                          "(the slower of h2d and d2h)")
        return beta
    generation = value_of(host.pcie_generation) if host else None
    width = value_of(host.pcie_width) if host else None
    if generation is None or width is None or int(generation) not in PCIE_GT_S:
        raise r.refuse("devices[0].host_link", "no measured h2d/d2h beta and no known PCIe generation and width", key)
    r.sources[key] = (f"derived: PCIe Gen{int(generation)} x{int(width)} line rate per direction, from "
                      f"devices[0].host_link.pcie_generation and pcie_width: {host.pcie_generation.cited}")
    return pcie_Bps(int(generation), int(width))


def _tc_flops(r: Reader, dtype: str, flops_mode: str | None, key: str) -> float:
    """The tensor-core rate aiconfigurator uses for ``dtype`` weights: ``flops_mode`` (--flops-mode), else the
    profile's ``plan_flops_mode`` for the dtype, else gpucal's default mode; for bf16 on a card whose profile has
    no bf16 entry (the article's cards), its fp16 rate, said so."""
    mode = flops_mode or plan_flops_mode(r.device, dtype)
    entry = r.device.flops(mode)
    if entry is None and dtype == "bf16" and flops_mode is None:
        fp16 = plan_flops_mode(r.device, "fp16")
        if r.device.flops(fp16) is not None:
            value = r.flops_entry(fp16, key)
            r.sources[key] += " (the profile has no bf16 rate: its fp16 one)"
            return value
    return r.flops_entry(mode, key)


def _fp8_flops(r: Reader, key: str) -> float | None:
    """fp8: the profile's; else, for a calibrated profile, its card's datasheet rate (said so); else none (the
    card has no fp8, as aiconfigurator reads a missing key)."""
    entry = r.device.dense_flops.get(_FP8_MODE)
    if entry is not None and entry.known:
        return r.flops(_FP8_MODE, key)
    sheet = profiles.datasheet_for(r.device.name)
    sheet_entry = sheet.profile.devices[0].dense_flops.get(_FP8_MODE) if sheet is not None else None
    if sheet_entry is not None and sheet_entry.known and sheet.name != r.doc.name:
        r.sources[key] = (f"datasheet profile {sheet.name}: devices[0].dense_flops.{_FP8_MODE} "
                          f"({sheet_entry.cited}); not measured here")
        return float(sheet_entry.value)
    r.sources[key] = "left out: the card has no fp8 rate (aiconfigurator reads a missing key as no fp8)"
    return None


def _nccl_version(profile: Profile) -> tuple[str, str]:
    for entry in profile.collectives or []:
        library = entry.library or ""
        found = re.search(r"NCCL\D*(\d+\.\d+(?:\.\d+)?)", library)
        if found:
            return found[1], f"collectives[]: {library}"
    return AIC_NCCL_VERSION, f"estimate: the version most of aiconfigurator 0.12.0's files name ({AIC_NCCL_VERSION})"


def _gpus_per_node(r: Reader, gpus_per_node: int | None) -> int:
    key = "node.num_gpus_per_node"
    if gpus_per_node is not None:
        r.sources[key] = "--gpus-per-node"
        return gpus_per_node
    if r.profile.cards_per_host is not None:
        r.sources[key] = "cluster profile: the smallest host's cards (cluster.hosts[].devices)"
        return r.profile.cards_per_host
    if r.profile.source in ("measured", "simulated"):
        entries = len(r.profile.devices)
        r.sources[key] = f"the sum of devices[].count over {entries} entr{'y' if entries == 1 else 'ies'}"
        return r.profile.device_count
    kind = r.device.peer_link.kind if r.device.peer_link is not None else "none"
    r.sources[key] = (f"default for a {r.profile.source} profile ({kind} between cards): a server of "
                      f"{DATASHEET_GPUS_PER_NODE}, as aiconfigurator's own files (give --gpus-per-node)")
    return DATASHEET_GPUS_PER_NODE


def _inter_node_Bps(r: Reader, net: LinkChoice | None, per_node: int, nics_per_node: int | None) -> float:
    """aiconfigurator's ``node.inter_node_bw``: bytes/s per GPU, from one NIC's beta (the link between hosts, per
    direction) times the NICs of a node, shared by its GPUs."""
    key = "node.inter_node_bw"
    nic_Bps = r.network_Bps(net, key)
    if nics_per_node is None:
        nics, how = per_node, "default: a NIC per GPU, as on an HGX node (give --nics-per-node)"
    else:
        nics, how = nics_per_node, "--nics-per-node"
    r.sources[key] += f"; per GPU: x {nics} NICs / {per_node} GPUs a node ({how})"
    return nic_Bps * nics / per_node


def system_file(doc: profiles.Document, link: LinkChoice | None, net: LinkChoice | None,
                    gpus_per_node: int | None = None, flops_mode: str | None = None,
                    nics_per_node: int | None = None) -> tuple[dict, dict, list]:
    r = Reader(doc, "aiconfigurator")
    device, source = r.device, r.profile.source
    memory_Bps = r.quantity("devices[0].memory_bandwidth_Bps", device.memory_bandwidth_Bps, "gpu.mem_bw")
    nominal_Bps, factor = memory_Bps, 1.0
    if source in ("measured", "simulated"):
        sheet = profiles.datasheet_for(device.name)
        sheet_Bps = value_of(sheet.profile.devices[0].memory_bandwidth_Bps) if sheet else None
        if sheet_Bps:
            nominal_Bps, factor = sheet_Bps, memory_Bps / sheet_Bps
            r.sources["gpu.mem_bw"] = f"datasheet profile {sheet.name}: devices[0].memory_bandwidth_Bps"
            r.sources["gpu.mem_bw_empirical_scaling_factor"] = (
                f"derived: devices[0].memory_bandwidth_Bps ({source}) / the datasheet's rate")
        else:
            r.sources["gpu.mem_bw_empirical_scaling_factor"] = (
                f"1.0: no datasheet profile for {device.name!r}, so gpu.mem_bw is the {source} rate")
    else:
        r.sources["gpu.mem_bw_empirical_scaling_factor"] = f"1.0: the profile is itself a {source} profile"
    gpu: dict[str, Any] = {
        "mem_bw": rounded(nominal_Bps),
        "mem_bw_empirical_scaling_factor": rounded(factor),
        "mem_empirical_constant_latency": MEM_CONSTANT_LATENCY_S,
        "mem_capacity": int(r.quantity("devices[0].memory_bytes", device.memory_bytes, "gpu.mem_capacity")),
        # aiconfigurator 0.12.0 reads bfloat16_tc_flops for fp16 and bf16 GEMMs alike (float16_tc_flops nowhere)
        "bfloat16_tc_flops": rounded(_tc_flops(r, "bf16", flops_mode, "gpu.bfloat16_tc_flops")),
    }
    r.sources["gpu.mem_empirical_constant_latency"] = "estimate: aiconfigurator's own files' 3 us; gpucal does not measure it"
    int8, _ = r.int_rates("gpu.int8_tc_flops", None)
    gpu["int8_tc_flops"] = rounded(int8)
    fp8 = _fp8_flops(r, "gpu.fp8_tc_flops")
    if fp8:
        gpu["fp8_tc_flops"] = rounded(fp8)
    cc, cc_source = r.compute_capability()
    if cc is not None:
        gpu["sm_version"] = cc[0] * 10 + cc[1]
        r.sources["gpu.sm_version"] = f"compute capability {cc_source}"
    chosen = r.link(link, ("node.intra_node_bw", "node.p2p_latency"))
    per_node = _gpus_per_node(r, gpus_per_node)
    node = {
        "num_gpus_per_node": per_node,
        "inter_node_bw": rounded(_inter_node_Bps(r, net, per_node, nics_per_node)),
        "intra_node_bw": rounded(chosen.spec.beta_Bps),
        "pcie_bw": rounded(_pcie_Bps(r, "node.pcie_bw")),
        "p2p_latency": rounded(chosen.spec.alpha_s),
    }
    provenance = {
        "profile": doc.name,
        "title": r.profile.title,
        "source": source,
        "created": r.profile.created,
        "origin": doc.origin,
        "exported_by": f"gpucal {__version__}",
        "units": "bytes, B/s (per direction), FLOP/s, seconds",
        "sources": dict(sorted(r.sources.items())),
    }
    version, version_source = _nccl_version(r.profile)
    misc = {"nccl_mem": dict(AIC_NCCL_MEM_BYTES), "other_mem": AIC_OTHER_MEM_BYTES, "nccl_version": version}
    r.sources["misc.nccl_mem"] = "estimate: aiconfigurator 0.12.0's own files' values (gpucal does not measure it)"
    r.sources["misc.other_mem"] = "estimate: aiconfigurator 0.12.0's own files' value (gpucal does not measure it)"
    r.sources["misc.nccl_version"] = version_source
    provenance["sources"] = dict(sorted(r.sources.items()))
    tables, missing = aic_tables.tables(doc)
    if tables:
        provenance["tables"] = {f"{t.folder}/{t.stem}.parquet": f"{t.rows} rows; {t.source}" for t in tables}
        provenance["not_measured"] = ("tables gpucal does not write: " + "; ".join(missing)
                                      + " (docs/exports.md)")
    else:
        provenance["not_measured"] = ("aiconfigurator's per-operation performance tables (its SILICON, EMPIRICAL "
                                      "and HYBRID modes): the profile holds no decode measurements (gpucal "
                                      "calibrate measures them), so SOL mode only (docs/exports.md)")
    data = {"data_dir": f"data/{doc.name}", "gpu": gpu, "node": node, "misc": misc, "gpucal": provenance}
    return data, r.sources, tables
