"""A hardware profile in other planners' formats: llm-analysis's GPU config and aiconfigurator's system file.

Pure functions from a validated profile (``gpucal.profiles.Document``) to the other tool's structure,
plus the text of that structure and an atomic writer; nothing here prints. docs/exports.md gives the
mapping field by field and the upstream files it was checked against.

What every export takes from the profile:

- the card: ``devices[0]`` (memory, memory bandwidth, the dense FLOP/s table);
- FLOP/s: fp16 is ``dense_flops.fp16_fp32acc``, the planner's default for fp16 (``DEFAULT_FLOPS_MODE``);
  a missing or null entry that a format needs is refused with an ``InputError`` naming the field;
- the link between cards: ``gpucal.profiles.queries.planner_link`` (the measured link of a calibrated profile, the
  slowest of ``links[]``, else the ``plan_defaults.link`` preset), per direction; ``link`` overrides it;
- the link between hosts: ``net`` if given, else the slowest usable entry of ``network[]``, else the
  ``ib200g`` preset (InfiniBand HDR, 25e9 B/s per direction), labelled a default.

Neither format has an int8 or int4 rate in our profiles; ``int8_tensor_ops`` and ``int4_tensor_ops``
derive them (and say how) from the dense table and the compute capability.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpucal import __version__, profiles
from gpucal.errors import GpucalError, InputError, ProfileExistsError
from gpucal.files import make_folder, write_all_atomic
from gpucal.profiles import aic_tables
from gpucal.profiles.model import Device, Profile, Quantity
from gpucal.profiles.names import profile_reference
from gpucal.profiles.queries import (
    DEFAULT_FLOPS_MODE,
    LinkChoice,
    plan_flops_mode,
    planner_link,
    profile_link,
    profile_network,
    resolve_link,
)
from gpucal.standards import PCIE_GT_S, pcie_Bps

__all__ = ["FORMATS", "LLM_ANALYSIS_KEYS", "DEFAULT_NET", "MEM_CONSTANT_LATENCY_S", "Export", "export",
           "to_llm_analysis", "to_aiconfigurator", "dumps", "int8_tensor_ops", "int4_tensor_ops", "write"]

# Export format -> file suffix.
FORMATS = {"llm-analysis": "json", "aiconfigurator": "yaml"}
# llm-analysis's GPUConfig fields, in its files' order; any other key breaks loading of its whole folder.
LLM_ANALYSIS_KEYS = ("name", "mem_per_GPU_in_GB", "hbm_bandwidth_in_GB_per_sec", "intra_node_bandwidth_in_GB_per_sec",
                     "intra_node_min_message_latency", "peak_fp16_TFLOPS", "peak_i8_TFLOPS", "peak_i4_TFLOPS",
                     "inter_node_bandwidth_in_GB_per_sec")
DEFAULT_NET = "ib200g"  # the link preset used between hosts when neither --net nor network[] gives one
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
_DIGITS = 12
_FP8_MODE = DEFAULT_FLOPS_MODE["fp8"]


def _round(value: float) -> float:
    """``value`` to 12 significant digits, so that 989.4e12 / 1e12 prints as 989.4."""
    return float(f"{value:.{_DIGITS}g}")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InputError(f"--format: unknown format {fmt!r}; gpucal exports {', '.join(FORMATS)}")


def _value(quantity: Quantity | None) -> float | None:
    """A quantity's value, or None where it is missing or null."""
    if quantity is not None and quantity.known:
        return float(quantity.value)
    return None


def int8_tensor_ops(dense: dict[str, Quantity], compute_capability: tuple[int, int] | None) -> tuple[float, str]:
    """The dense int8 tensor rate (op/s) derived from a dense FLOP/s table, and how it was derived.

    NVIDIA's datasheets give int8 the fp8 tensor rate where a card has fp8 (Ada, Hopper, Blackwell:
    RTX 4090 660.6e12, L40S 733e12, H100 SXM 1979e12) and twice the fp16 tensor rate before that
    (Turing, Ampere: A100 624e12, RTX 3090 284e12). So: the fastest dense fp8 rate where the table has
    one, else 2 x the fastest dense fp16 rate (fp16 accumulate where listed: GeForce cards halve fp32
    accumulate). Before compute capability 7.5 (Volta and older) there are no int8 tensor cores: 0.
    """
    if compute_capability is not None and compute_capability < (7, 5):
        return 0.0, f"0: no int8 tensor cores before compute capability 7.5 (this card: {_cc_text(compute_capability)})"
    for modes, factor, why in ((("fp8_fp16acc", "fp8_fp32acc"), 1.0, "int8 runs at the fp8 tensor rate"),
                               (("fp16_fp16acc", "fp16_fp32acc"), 2.0, "int8 runs at twice the fp16 tensor rate")):
        rates = [(_value(dense.get(mode)), mode) for mode in modes if _value(dense.get(mode))]
        if rates:
            rate, mode = max(rates)
            times = "" if factor == 1.0 else f"{factor:g} x "
            return factor * rate, f"derived: {times}devices[0].dense_flops.{mode} ({why})"
    raise InputError("devices[0].dense_flops: no fp8 or fp16 rate to derive an int8 rate from")


def int4_tensor_ops(int8_ops: float, compute_capability: tuple[int, int] | None) -> tuple[float, str]:
    """The dense int4 tensor rate (op/s): 2 x int8 where the architecture has int4 tensor cores
    (compute capability 7.5 to 8.9: Turing, Ampere, Ada; A100 1248e12, RTX 4090 1321.2e12), else 0
    (Volta and older; Hopper and Blackwell dropped them), and 0 where the compute capability is unknown."""
    if compute_capability is None:
        return 0.0, "0: compute capability unknown, so no int4 rate is claimed"
    if (7, 5) <= compute_capability < (9, 0):
        return 2.0 * int8_ops, "derived: 2 x the int8 rate (int4 tensor cores on Turing, Ampere and Ada)"
    return 0.0, f"0: no int4 tensor cores on compute capability {_cc_text(compute_capability)}"


def _cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


@dataclass
class _Reader:
    """Reads one profile's values for one format; every refusal names the file, the field and the format."""

    doc: profiles.Document
    fmt: str
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def profile(self) -> Profile:
        return self.doc.profile

    @property
    def device(self) -> Device:
        return self.profile.devices[0]

    def refuse(self, where: str, why: str, key: str) -> InputError:
        return InputError(f"{self.doc.origin}: {where}: {why}; needed by {self.fmt} ({key})")

    def quantity(self, where: str, quantity: Quantity | None, key: str) -> float:
        """The value at ``where`` (for the message), recorded as the source of exported ``key``."""
        if quantity is None:
            raise self.refuse(where, "missing", key)
        if not quantity.known:
            raise self.refuse(where, f"unknown ({quantity.reason or 'no reason given'})", key)
        self.sources[key] = f"{where}: {quantity.cited}"
        return float(quantity.value)

    def flops(self, mode: str, key: str) -> float:
        return self.quantity(f"devices[0].dense_flops.{mode}", self.device.dense_flops.get(mode), key)

    def flops_entry(self, mode: str, key: str) -> float:
        """The FLOP/s entry ``mode`` (``sparse:`` names a 2:4-sparse one), as ``flops``."""
        where = f"devices[0].{'sparse' if mode.startswith('sparse:') else 'dense'}_flops.{mode.removeprefix('sparse:')}"
        return self.quantity(where, self.device.flops(mode), key)

    def compute_capability(self) -> tuple[tuple[int, int] | None, str]:
        """The card's compute capability, from the profile or else the datasheet profile of its name."""
        device, where = self.device, "devices[0].compute_capability"
        if device.compute_capability is None:
            sheet = profiles.datasheet_for(device.name)
            if sheet is not None:
                device, where = sheet.profile.devices[0], f"datasheet profile {sheet.name}"
        if device.cc is None:
            return None, "unknown"
        return device.cc, f"{device.compute_capability} ({where})"

    def int_rates(self, int8_key: str, int4_key: str | None) -> tuple[float, float]:
        cc, cc_source = self.compute_capability()
        int8, how8 = int8_tensor_ops(self.device.dense_flops, cc)
        int4, how4 = int4_tensor_ops(int8, cc)
        self.sources[int8_key] = f"{how8}; compute capability {cc_source}"
        if int4_key:
            self.sources[int4_key] = f"{how4}; compute capability {cc_source}"
        return int8, int4

    def link(self, given: LinkChoice | None, keys: tuple[str, str]) -> LinkChoice:
        """The link between cards (``keys``: the exported bandwidth and latency keys)."""
        if given is not None:
            chosen, how = given, f"--link {given.spec.name}"
        elif (measured := profile_link(self.doc)) is not None:
            chosen, how = measured, f"links[]: {measured.spec.name}"
        else:
            chosen = planner_link(self.doc, flag="NAME")
            preset = self.profile.default_link
            if chosen is None:
                raise self.refuse("links", "no measured link between cards and no plan_defaults.link (give --link)",
                                  keys[0])
            kind = profile_reference(self.doc, "plan_defaults.link", "NAME", "link").model.kind
            peer = self.device.peer_link.kind if self.device.peer_link else "unknown"
            if kind == "nvlink" and peer != "nvlink":
                raise self.refuse("plan_defaults.link", f"{preset} is an NVLink preset but devices[0].peer_link.kind "
                                  f"is {peer} (give --link)", keys[0])
            how = f"plan_defaults.link: preset {preset}"
        self.sources[keys[0]] = f"{how}: beta, per direction ({chosen.source})"
        self.sources[keys[1]] = f"{how}: alpha ({chosen.source})"
        return chosen

    def network_Bps(self, given: LinkChoice | None, key: str) -> float:
        """Bandwidth between hosts, per direction."""
        if given is not None:
            self.sources[key] = f"--net {given.spec.name}: beta ({given.source})"
            return given.spec.beta_Bps
        measured = profile_network(self.doc)  # the slowest pair of hosts; ranks sharing a host are left out
        if measured is not None:
            self.sources[key] = f"network: {measured.spec.name} ({measured.source}): beta, per direction"
            return measured.spec.beta_Bps
        preset = resolve_link(DEFAULT_NET, "--net")
        self.sources[key] = (f"default: link preset {DEFAULT_NET} ({preset.source}); the profile has no network "
                             "entry (give --net)")
        return preset.spec.beta_Bps


def _llm_analysis(doc: profiles.Document, link: LinkChoice | None, net: LinkChoice | None,
                  flops_mode: str | None = None) -> tuple[dict, dict]:
    r = _Reader(doc, "llm-analysis")
    device = r.device
    memory_bytes = r.quantity("devices[0].memory_bytes", device.memory_bytes, "mem_per_GPU_in_GB")
    memory_Bps = r.quantity("devices[0].memory_bandwidth_Bps", device.memory_bandwidth_Bps,
                            "hbm_bandwidth_in_GB_per_sec")
    fp16 = r.flops_entry(flops_mode or plan_flops_mode(device, "fp16"), "peak_fp16_TFLOPS")
    chosen = r.link(link, ("intra_node_bandwidth_in_GB_per_sec", "intra_node_min_message_latency"))
    int8, int4 = r.int_rates("peak_i8_TFLOPS", "peak_i4_TFLOPS")
    net_Bps = r.network_Bps(net, "inter_node_bandwidth_in_GB_per_sec")
    data = {
        "name": doc.name,
        "mem_per_GPU_in_GB": _round(memory_bytes / 2**30),  # llm-analysis multiplies by 1024**3
        "hbm_bandwidth_in_GB_per_sec": _round(memory_Bps / 1e9),
        "intra_node_bandwidth_in_GB_per_sec": _round(chosen.spec.beta_Bps / 1e9),
        "intra_node_min_message_latency": _round(chosen.spec.alpha_s),
        "peak_fp16_TFLOPS": _round(fp16 / 1e12),
        "peak_i8_TFLOPS": _round(int8 / 1e12),
        "peak_i4_TFLOPS": _round(int4 / 1e12),
        "inter_node_bandwidth_in_GB_per_sec": _round(net_Bps / 1e9),
    }
    return data, r.sources


def _pcie_Bps(r: _Reader, key: str) -> float:
    """Host link per direction: the slower measured direction, else the PCIe line rate."""
    host = r.device.host_link
    directions = {d: getattr(host, d) for d in ("h2d", "d2h")} if host else {}
    measured = [(_value(link.beta_Bps), d) for d, link in directions.items() if link is not None]
    measured = [(beta, d) for beta, d in measured if beta]
    if measured:
        beta, d = min(measured)
        r.sources[key] = (f"devices[0].host_link.{d}.beta_Bps: {directions[d].beta_Bps.cited} "
                          "(the slower of h2d and d2h)")
        return beta
    generation = _value(host.pcie_generation) if host else None
    width = _value(host.pcie_width) if host else None
    if generation is None or width is None or int(generation) not in PCIE_GT_S:
        raise r.refuse("devices[0].host_link", "no measured h2d/d2h beta and no known PCIe generation and width", key)
    r.sources[key] = (f"derived: PCIe Gen{int(generation)} x{int(width)} line rate per direction, from "
                      f"devices[0].host_link.pcie_generation and pcie_width: {host.pcie_generation.cited}")
    return pcie_Bps(int(generation), int(width))


def _tc_flops(r: _Reader, dtype: str, flops_mode: str | None, key: str) -> float:
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


def _fp8_flops(r: _Reader, key: str) -> float | None:
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


def _gpus_per_node(r: _Reader, gpus_per_node: int | None) -> int:
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


def _inter_node_Bps(r: _Reader, net: LinkChoice | None, per_node: int, nics_per_node: int | None) -> float:
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


def _aiconfigurator(doc: profiles.Document, link: LinkChoice | None, net: LinkChoice | None,
                    gpus_per_node: int | None = None, flops_mode: str | None = None,
                    nics_per_node: int | None = None) -> tuple[dict, dict, list]:
    r = _Reader(doc, "aiconfigurator")
    device, source = r.device, r.profile.source
    memory_Bps = r.quantity("devices[0].memory_bandwidth_Bps", device.memory_bandwidth_Bps, "gpu.mem_bw")
    nominal_Bps, factor = memory_Bps, 1.0
    if source in ("measured", "simulated"):
        sheet = profiles.datasheet_for(device.name)
        sheet_Bps = _value(sheet.profile.devices[0].memory_bandwidth_Bps) if sheet else None
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
        "mem_bw": _round(nominal_Bps),
        "mem_bw_empirical_scaling_factor": _round(factor),
        "mem_empirical_constant_latency": MEM_CONSTANT_LATENCY_S,
        "mem_capacity": int(r.quantity("devices[0].memory_bytes", device.memory_bytes, "gpu.mem_capacity")),
        # aiconfigurator 0.12.0 reads bfloat16_tc_flops for fp16 and bf16 GEMMs alike (float16_tc_flops nowhere)
        "bfloat16_tc_flops": _round(_tc_flops(r, "bf16", flops_mode, "gpu.bfloat16_tc_flops")),
    }
    r.sources["gpu.mem_empirical_constant_latency"] = "estimate: aiconfigurator's own files' 3 us; gpucal does not measure it"
    int8, _ = r.int_rates("gpu.int8_tc_flops", None)
    gpu["int8_tc_flops"] = _round(int8)
    fp8 = _fp8_flops(r, "gpu.fp8_tc_flops")
    if fp8:
        gpu["fp8_tc_flops"] = _round(fp8)
    cc, cc_source = r.compute_capability()
    if cc is not None:
        gpu["sm_version"] = cc[0] * 10 + cc[1]
        r.sources["gpu.sm_version"] = f"compute capability {cc_source}"
    chosen = r.link(link, ("node.intra_node_bw", "node.p2p_latency"))
    per_node = _gpus_per_node(r, gpus_per_node)
    node = {
        "num_gpus_per_node": per_node,
        "inter_node_bw": _round(_inter_node_Bps(r, net, per_node, nics_per_node)),
        "intra_node_bw": _round(chosen.spec.beta_Bps),
        "pcie_bw": _round(_pcie_Bps(r, "node.pcie_bw")),
        "p2p_latency": _round(chosen.spec.alpha_s),
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


@dataclass(frozen=True)
class Export:
    """One profile in one format: the structure, its text, its file name, and where each value came from."""

    format: str
    profile: str
    data: dict[str, Any]
    sources: dict[str, str]
    tables: tuple = ()  # aiconfigurator: its performance tables (``aic_tables.Table``), written under data_dir

    @property
    def data_dir(self) -> str:
        """aiconfigurator's data_dir: where its performance tables go, relative to the system file's folder."""
        return f"data/{self.profile}"

    @property
    def filename(self) -> str:
        return f"{self.profile}.{FORMATS[self.format]}"

    @property
    def text(self) -> str:
        return dumps(self.format, self.data)


def export(doc: profiles.Document, fmt: str, *, link: LinkChoice | None = None,
           net: LinkChoice | None = None, gpus_per_node: int | None = None, flops_mode: str | None = None,
           nics_per_node: int | None = None) -> Export:
    """Profile ``doc`` in format ``fmt`` (a key of ``FORMATS``); ``link`` and ``net`` override the link
    between cards and between hosts (one NIC's), ``gpus_per_node`` and ``nics_per_node`` aiconfigurator's node,
    ``flops_mode`` the FLOP/s entry (as ``gpucal plan --flops-mode``). Raises ``InputError`` naming the field a
    format needs and lacks."""
    _check_format(fmt)
    if doc.kind != "profile":
        raise InputError(f"{doc.origin}: is a {doc.kind} document ({doc.model.schema_}), not a hardware profile")
    tables: list = []
    if fmt == "llm-analysis":
        data, sources = _llm_analysis(doc, link, net, flops_mode)
    else:
        data, sources, tables = _aiconfigurator(doc, link, net, gpus_per_node, flops_mode, nics_per_node)
    return Export(format=fmt, profile=doc.name, data=data, sources=dict(sorted(sources.items())),
                  tables=tuple(tables))


def to_llm_analysis(doc: profiles.Document, *, link: LinkChoice | None = None, net: LinkChoice | None = None) -> dict:
    """llm-analysis's GPU config (``llm_analysis/gpu_configs/<name>.json``): exactly ``LLM_ANALYSIS_KEYS``."""
    return export(doc, "llm-analysis", link=link, net=net).data


def to_aiconfigurator(doc: profiles.Document, *, link: LinkChoice | None = None,
                      net: LinkChoice | None = None, gpus_per_node: int | None = None,
                      flops_mode: str | None = None) -> dict:
    """aiconfigurator's system file (``systems/<name>.yaml``): ``data_dir``, ``gpu``, ``node``, ``misc``, and
    gpucal's provenance under ``gpucal`` (its loader ignores keys it does not read)."""
    return export(doc, "aiconfigurator", link=link, net=net, gpus_per_node=gpus_per_node, flops_mode=flops_mode).data


def dumps(fmt: str, data: dict[str, Any]) -> str:
    """The file text of ``data`` in format ``fmt``: JSON (4-space indent, as llm-analysis's own files) or YAML."""
    _check_format(fmt)
    if fmt == "llm-analysis":
        if tuple(data) != LLM_ANALYSIS_KEYS:
            raise ValueError(f"an llm-analysis GPU config has exactly the keys {', '.join(LLM_ANALYSIS_KEYS)}")
        return json.dumps(data, indent=4, allow_nan=False) + "\n"
    about = data.get("gpucal", {})
    header = (f"# aiconfigurator system file exported by {about.get('exported_by', 'gpucal')} from the "
              f"{about.get('source', '')} profile {about.get('profile', '')}.\n"
              "# Units: bytes, B/s per direction, FLOP/s, seconds. Where each value came from: the gpucal key.\n")
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


def files(result: Export, folder: str | os.PathLike) -> list[tuple[Path, bytes]]:
    """Every file of ``result`` under ``folder``: the planner's file, and for aiconfigurator its tables under
    ``data_dir`` (``<data_dir>/<family>/<backend>/<version>/<table>.parquet`` and a ``collection_meta.yaml`` per
    version folder)."""
    root = Path(folder)
    out = [(root / result.filename, result.text.encode("utf-8"))]
    by_folder: dict[str, list] = {}
    for table in result.tables:
        by_folder.setdefault(table.folder, []).append(table)
    exported_by = f"gpucal {__version__} from the profile {result.profile}"
    for sub, group in by_folder.items():
        where = root / result.data_dir / sub
        out.extend((where / f"{t.stem}.parquet", aic_tables.table_bytes(t)) for t in group)
        out.append((where / "collection_meta.yaml", aic_tables.meta_text(group, exported_by).encode("utf-8")))
    return out


def write(result: Export, folder: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Write every file of ``result`` (``files``) under ``folder``, all or none, each atomically (a temporary
    file in the same folder, then a link or rename), creating the folders. Without ``force`` an existing file is
    never replaced (``ProfileExistsError``); only a regular file is ever replaced. A bad path is an
    ``InputError`` naming ``-o``; a failure while writing (disk full) a ``GpucalError``, the old files intact."""
    items = files(result, folder)
    for folder_path in sorted({p.parent for p, _ in items}):
        make_folder(folder_path, flag="-o")
    try:
        return write_all_atomic(items, force=force)
    except ProfileExistsError:
        raise
    except InputError as exc:
        raise InputError(f"-o: {exc}") from None
    except GpucalError as exc:
        raise GpucalError(f"-o: {exc}") from None
