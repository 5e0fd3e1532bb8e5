"""aiconfigurator's per-operation performance tables from a calibrated profile's own measurements, so that
``aiconfigurator cli estimate --database-mode SILICON`` prices a model on the machine as measured.

aiconfigurator 0.12.0 reads ``<systems dir>/<data_dir>/<family>/<backend>/<version>/<table>.parquet`` beside a
``collection_meta.yaml`` per folder; latencies in milliseconds, integers int64, floats float64. From a profile:

| table | from | rows |
|---|---|---|
| ``gemm/trtllm/<v>/gemm_perf`` | ``devices[].decode.gemm`` | per m measured: each measured point (gemm_dtype, m, n, k) at its median time, and the decode-GEMM curve at the other sites of n, k = 128 .. 65536 |
| ``attention/trtllm/<v>/generation_attention_perf`` | ``devices[].decode.attention`` | the fit t = alpha + KV/beta over batch 1-1024, KV length 16-131072, KV heads 1-16 per GPU (GQA groups 2-16, and plain multi-head), head size 64, 128 and the one measured |
| ``comm/trtllm/<v>/custom_allreduce_perf`` | ``collectives[]``, the one-host all-reduce | its fit per TP size (the graph one where measured), per regime, over 128 - 2^29 elements of bf16 |

Not written, because gpucal measures none of them: context (prefill) attention, fp8 GEMMs (unless measured),
fp8 KV caches, MoE and MLA tables, and the quantization tables; so ``--estimate-mode static_gen`` (decode alone)
is what runs. aiconfigurator raises a table's latency that falls below the speed of light its system file gives
(``gpu.mem_bw``, ``gpu.bfloat16_tc_flops``) to it: measured figures stay above it as long as the file's peaks are
the datasheet's. Launch costs have no table: the GEMM and attention times are timed as graph nodes
(``timed_as``), so a node's cost is inside them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import yaml

from gpucal import profiles
from gpucal.errors import GpucalError
from gpucal.profiles.decode_queries import decode_terms
from gpucal.profiles.model import Device, Profile

__all__ = ["AIC_BACKEND", "AIC_VERSION", "Table", "tables", "table_bytes", "meta_text"]

AIC_BACKEND = "trtllm"
# The trtllm version folder aiconfigurator 0.12.0 queries by default (its query_versions.yaml): the tables are
# found with or without --backend-version and beside its own systems.
AIC_VERSION = "1.3.0rc20"
AIC_DTYPES = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8"}  # gpucal's dtype -> aiconfigurator's name
ATT_BATCHES = tuple(2**i for i in range(11))  # 1 .. 1024
ATT_KV_LENGTHS = tuple(2**i for i in range(4, 18))  # 16 .. 131072 tokens
ATT_KV_HEADS = (1, 2, 4, 8, 16)
ATT_GROUPS = (2, 4, 8, 16)  # query heads per KV head (GQA); plain multi-head as well
ATT_MHA_HEADS = tuple(2**i for i in range(8))  # 1 .. 128
# head sizes written besides the one measured: the fit is in KV bytes read, which price any head size
ATT_HEAD_DIMS = (64, 128)
GEMM_SITES = tuple(2**i for i in range(7, 17))  # n and k: 128 .. 65536
AR_ELEMENTS = tuple(2**i for i in range(7, 30))  # 128 .. 2^29 elements (bf16)
AR_ITEM_BYTES = 2


@dataclass(frozen=True)
class Table:
    """One table: where it goes under ``data_dir`` (``family/backend/version/stem.parquet``), its columns, what
    it came from (for ``collection_meta.yaml`` and the export's sources)."""

    family: str
    backend: str
    version: str
    stem: str
    columns: dict[str, list]
    source: str

    @property
    def folder(self) -> str:
        return f"{self.family}/{self.backend}/{self.version}"

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()), []))


def _decode_device(profile: Profile) -> Device | None:
    return next((d for d in profile.devices if d.decode is not None), None)


def _gemm(device: Device, origin: str) -> Table | None:
    """Per dtype and m of the curve: every measured point as it was timed, and at the other sites of the grid
    (n, k = 128 .. 65536) the decode-GEMM curve the planner prices from (aiconfigurator interpolates between
    sites and refuses a shape with none near it)."""
    cols: dict[str, list] = {"gemm_dtype": [], "m": [], "n": [], "k": [], "latency": []}
    used = []
    curves = (device.decode.gemm or {}) if device.decode else {}
    priced = decode_terms(device).gemm
    for dtype in ("bf16", "fp16", "fp8"):
        curve = curves.get(dtype)
        if curve is None or dtype not in priced or (dtype == "fp16" and "bf16" in curves):
            continue
        name, item = AIC_DTYPES[dtype], (1 if dtype == "fp8" else 2)
        by_bytes = {n * k * item: (n, k) for n, k in curve.shapes}
        for row in curve.rows:
            sites = {(n, k): priced[dtype].time_s(row.m, n * k * item) for n in GEMM_SITES for k in GEMM_SITES}
            for weight_bytes, seconds in row.points:
                shape = by_bytes.get(int(weight_bytes))
                if shape is not None and seconds > 0:
                    sites[shape] = seconds
            for (n, k), seconds in sorted(sites.items()):
                for key, value in (("gemm_dtype", name), ("m", row.m), ("n", n), ("k", k),
                                   ("latency", seconds * 1e3)):
                    cols[key].append(value)
        held = (f", holdout {100 * curve.holdout_max_error_frac:.1f} %"
                if curve.holdout_max_error_frac is not None else "")
        used.append((f"{dtype} as {name}" if name != dtype else dtype) + held)
    if not cols["m"]:
        return None
    return Table("gemm", AIC_BACKEND, AIC_VERSION, "gemm_perf", cols,
                 f"{origin}: devices[].decode.gemm ({', '.join(used)}): each measured point (median time) at the "
                 "shapes measured, the decode-GEMM curve t = alpha_m + W/beta_m at the other sites of n, k = "
                 "128 .. 65536, at the m measured")


def _attention(device: Device, origin: str) -> Table | None:
    fits = (device.decode.attention or {}) if device.decode else {}
    cols: dict[str, list] = {k: [] for k in ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim",
                                             "window_size", "beam_width", "attn_dtype", "kv_cache_dtype", "step",
                                             "latency")}
    used = []
    for dtype in ("bf16", "fp16", "fp8"):
        fit = fits.get(dtype)
        if fit is None or (dtype == "fp16" and "bf16" in fits) or not (fit.alpha_s.known and fit.beta_Bps.known):
            continue
        alpha, beta = max(0.0, fit.alpha_s.value), fit.beta_Bps.value
        item = 1 if dtype == "fp8" else 2
        heads = [(kv * g, kv) for kv in ATT_KV_HEADS for g in ATT_GROUPS] + [(h, 0) for h in ATT_MHA_HEADS]
        for head_dim, num_heads, kv_key in ((d, h, kv) for d in sorted({fit.head_dim, *ATT_HEAD_DIMS})
                                            for h, kv in heads):
            kv_heads = kv_key or num_heads  # aiconfigurator keys plain multi-head attention as 0 KV heads
            for batch in ATT_BATCHES:
                for length in ATT_KV_LENGTHS:
                    kv_bytes = 2 * batch * length * kv_heads * head_dim * item
                    for key, value in (("batch_size", batch), ("isl", 1), ("num_heads", num_heads),
                                       ("num_key_value_heads", kv_key), ("head_dim", head_dim),
                                       ("window_size", 0), ("beam_width", 1), ("attn_dtype", "bfloat16"),
                                       ("kv_cache_dtype", AIC_DTYPES[dtype]), ("step", length - 1),
                                       ("latency", (alpha + kv_bytes / beta) * 1e3)):
                        cols[key].append(value)
        used.append(f"{dtype} (head_dim {fit.head_dim})")
    if not cols["latency"]:
        return None
    return Table("attention", AIC_BACKEND, AIC_VERSION, "generation_attention_perf", cols,
                 f"{origin}: devices[].decode.attention ({', '.join(used)}): the fit t = alpha + KV/beta, "
                 "KV = 2·batch·length·KV heads·head_dim·itemsize, evaluated over the grid (head sizes 64 and 128 "
                 "beside the one measured, by their KV bytes)")


def _allreduce(profile: Profile, origin: str) -> Table | None:
    cols: dict[str, list] = {"allreduce_dtype": [], "num_gpus": [], "message_size": [], "latency": [],
                             "implementation": []}
    used = []
    sizes = sorted({e.nranks for e in profile.collectives or [] if e.op == "all-reduce" and e.span_hosts == 1})
    for nranks in sizes:
        candidates = [e for e in profile.collectives or [] if e.op == "all-reduce" and e.nranks == nranks
                      and e.span_hosts == 1 and e.known and e.verified is not False]
        if not candidates:
            continue
        graphs = [e for e in candidates if e.graphs]  # a server replays its decode step, all-reduces inside
        entry = min(graphs or candidates, key=lambda e: (not e.single_process, e.beta_Bps.value))
        for elements in AR_ELEMENTS:
            size = elements * AR_ITEM_BYTES
            piece = entry.piece_for(size)
            alpha, beta = (piece.alpha_s, piece.beta_Bps) if piece else (entry.alpha_s.value, entry.beta_Bps.value)
            cols["allreduce_dtype"].append("bfloat16")
            cols["num_gpus"].append(nranks)
            cols["message_size"].append(elements)
            cols["latency"].append((max(0.0, alpha) + size / beta) * 1e3)
            cols["implementation"].append("gpucal-nccl" + ("-graph" if entry.graphs else ""))
        used.append(f"{nranks} GPUs ({'graph' if entry.graphs else 'eager'})")
    if not cols["latency"]:
        return None
    return Table("comm", AIC_BACKEND, AIC_VERSION, "custom_allreduce_perf", cols,
                 f"{origin}: collectives[], NCCL's all-reduce on one host ({', '.join(used)}): its fit per regime, "
                 "t = alpha + S/beta with S = elements x 2 B; NCCL's, not TensorRT-LLM's custom all-reduce kernel")


def tables(doc: profiles.Document) -> tuple[list[Table], list[str]]:
    """The tables the profile's measurements give, and what aiconfigurator would want that they do not."""
    profile, origin = doc.profile, doc.name
    device = _decode_device(profile)
    out = [t for t in ((_gemm(device, origin), _attention(device, origin)) if device else ()) if t is not None]
    allreduce = _allreduce(profile, origin)
    if allreduce is not None:
        out.append(allreduce)
    have = {t.stem for t in out}
    missing = ["context_attention_perf (prefill: not measured, so only --estimate-mode static_gen runs)"]
    if "gemm_perf" not in have:
        missing.insert(0, "gemm_perf (no decode-GEMM curve in the profile)")
    if "generation_attention_perf" not in have:
        missing.insert(0, "generation_attention_perf (no decode attention in the profile)")
    if "custom_allreduce_perf" not in have:
        missing.append("custom_allreduce_perf (no one-host all-reduce in the profile: TP 1 only)")
    missing.append("fp8 GEMMs and fp8 KV caches, MoE, MLA and quantization tables (not measured)")
    return out, missing


_TYPES = {"m": "int64", "n": "int64", "k": "int64", "latency": "float64", "batch_size": "int64", "isl": "int64",
          "num_heads": "int64", "num_key_value_heads": "int64", "head_dim": "int64", "window_size": "int64",
          "beam_width": "int64", "step": "int64", "num_gpus": "int64", "message_size": "int64"}


def table_bytes(table: Table) -> bytes:
    """The table as parquet (int64 integers and float64 latencies, as aiconfigurator's loader requires)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise GpucalError("aiconfigurator's performance tables are parquet files: install pyarrow "
                          "(pip install 'gpucal[aiconfigurator]'), or export without -o to print the system file") from None

    arrays = {name: pa.array(values, type=getattr(pa, _TYPES.get(name, "string"))())
              for name, values in table.columns.items()}
    sink = io.BytesIO()
    pq.write_table(pa.table(arrays), sink)
    return sink.getvalue()


def meta_text(folder_tables: list[Table], exported_by: str) -> str:
    """``collection_meta.yaml`` of one version folder: aiconfigurator's schema 1, and where each table came from."""
    data: dict[str, Any] = {
        "schema_version": 1, "provenance": "collected",
        "runtime": {"framework": folder_tables[0].backend, "version": folder_tables[0].version},
        "tables": {t.stem: {"status": "partial"} for t in folder_tables},
        "gpucal": {"exported_by": exported_by, "sources": {t.stem: t.source for t in folder_tables},
                   "note": ("measured by gpucal's own probes (cuBLAS GEMMs, gpucal's decode attention kernel, "
                            "NCCL), not by aiconfigurator's collector; the version folder is the one "
                            "aiconfigurator queries, not a TensorRT-LLM version the kernels came from")}}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
