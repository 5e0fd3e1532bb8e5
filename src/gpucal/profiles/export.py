"""A hardware profile in other planners' formats: llm-analysis's GPU config and aiconfigurator's system file.

Pure functions from a validated profile (``gpucal.profiles.Document``) to the other tool's structure,
plus the text of that structure and an atomic writer; nothing here prints. docs/exports.md gives the
mapping field by field and the upstream files it was checked against. What both formats read of a profile is
``gpucal.profiles.export_reader``; aiconfigurator's system file is ``export_aic``, its performance tables
``aic_tables``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpucal import __version__, profiles
from gpucal.errors import GpucalError, InputError, ProfileExistsError
from gpucal.files import check_output, check_output_folder, make_folder, write_all_atomic
from gpucal.profiles import aic_tables
from gpucal.profiles.export_aic import (
    AIC_NCCL_MEM_BYTES,
    AIC_NCCL_VERSION,
    AIC_OTHER_MEM_BYTES,
    DATASHEET_GPUS_PER_NODE,
    MEM_CONSTANT_LATENCY_S,
    system_file,
)
from gpucal.profiles.export_reader import DEFAULT_NET, Reader, int4_tensor_ops, int8_tensor_ops, rounded
from gpucal.profiles.queries import LinkChoice, plan_flops_mode

__all__ = ["FORMATS", "LLM_ANALYSIS_KEYS", "DEFAULT_NET", "MEM_CONSTANT_LATENCY_S", "AIC_NCCL_MEM_BYTES",
           "AIC_OTHER_MEM_BYTES", "AIC_NCCL_VERSION", "DATASHEET_GPUS_PER_NODE", "Export", "export", "files",
           "to_llm_analysis", "to_aiconfigurator", "dumps", "int8_tensor_ops", "int4_tensor_ops", "write"]

# Export format -> file suffix.
FORMATS = {"llm-analysis": "json", "aiconfigurator": "yaml"}
# llm-analysis's GPUConfig fields, in its files' order; any other key breaks loading of its whole folder.
LLM_ANALYSIS_KEYS = ("name", "mem_per_GPU_in_GB", "hbm_bandwidth_in_GB_per_sec", "intra_node_bandwidth_in_GB_per_sec",
                     "intra_node_min_message_latency", "peak_fp16_TFLOPS", "peak_i8_TFLOPS", "peak_i4_TFLOPS",
                     "inter_node_bandwidth_in_GB_per_sec")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InputError(f"--format: unknown format {fmt!r}; gpucal exports {', '.join(FORMATS)}")


def _llm_analysis(doc: profiles.Document, link: LinkChoice | None, net: LinkChoice | None,
                  flops_mode: str | None = None) -> tuple[dict, dict]:
    r = Reader(doc, "llm-analysis")
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
        "mem_per_GPU_in_GB": rounded(memory_bytes / 2**30),  # llm-analysis multiplies by 1024**3
        "hbm_bandwidth_in_GB_per_sec": rounded(memory_Bps / 1e9),
        "intra_node_bandwidth_in_GB_per_sec": rounded(chosen.spec.beta_Bps / 1e9),
        "intra_node_min_message_latency": rounded(chosen.spec.alpha_s),
        "peak_fp16_TFLOPS": rounded(fp16 / 1e12),
        "peak_i8_TFLOPS": rounded(int8 / 1e12),
        "peak_i4_TFLOPS": rounded(int4 / 1e12),
        "inter_node_bandwidth_in_GB_per_sec": rounded(net_Bps / 1e9),
    }
    return data, r.sources


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
        data, sources, tables = system_file(doc, link, net, gpus_per_node, flops_mode, nics_per_node)
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


def _stale_tables(result: Export, root: Path, items: list[tuple[Path, bytes]]) -> list[Path]:
    """Table files under the export's data_dir that this export does not write (left by an earlier export of a
    profile of the same name): aiconfigurator would read them beside the new ones."""
    folder = root / result.data_dir
    if result.format != "aiconfigurator" or not folder.is_dir():
        return []
    written = {p for p, _ in items}
    stale = [p for p in folder.rglob("*") if p.suffix in (".parquet", ".yaml") and p not in written]
    return sorted(stale, key=lambda p: (p.suffix != ".parquet", p))  # the tables first


def write(result: Export, folder: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Write every file of ``result`` (``files``) under ``folder``, all or none, each atomically (a temporary
    file in the same folder, then a link or rename); every destination is checked before a folder is made.
    Without ``force`` an existing file is never replaced (``ProfileExistsError``); only a regular file is ever
    replaced; a table an earlier export left under data_dir that this one does not write is refused by name (it
    would be read with the new ones), never removed. A bad path is an ``InputError`` naming ``-o``; a failure
    while writing (disk full) a ``GpucalError``, the old files intact."""
    items = files(result, folder)
    try:
        check_output_folder(folder, flag="-o")
        for path, _ in items:
            check_output(path, force=force, flag=None)
        stale = _stale_tables(result, Path(folder), items)
        if stale:
            raise InputError(f"-o: {stale[0]} is left from an earlier export and this profile has no such table: "
                             f"remove it ({len(stale)} such file{'s' if len(stale) > 1 else ''} under "
                             f"{Path(folder) / result.data_dir})")
        for folder_path in sorted({p.parent for p, _ in items}):
            make_folder(folder_path, flag="-o")
        return write_all_atomic(items, force=force)
    except ProfileExistsError:
        raise
    except InputError as exc:
        text = str(exc)
        raise InputError(text if text.startswith("-o") else f"-o: {text}") from None
    except GpucalError as exc:
        raise GpucalError(f"-o: {exc}") from None
