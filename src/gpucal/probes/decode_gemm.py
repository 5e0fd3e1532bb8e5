"""``decode-gemm``: the matrix products of a decode step, C (m×n) = A (m×k)·W (k×n), at m = the batch (1, 2,
4, …, 512) against the weights W of model shards (n·k from 8 MiB to 512 MiB of fp16 on a GPU), in fp16 and bf16
(fp8 where the backend offers it), as a server runs them: cuBLAS (``cublasGemmEx``, fp32 accumulation) on a
GPU, each GEMM a node of a replayed CUDA graph where the backend has graphs, over copies of W in turn so that
W comes from DRAM as in a server's step, not from the L2 (``probes/decode_common.py``).

Byte convention: ``weight_Bps = n·k·itemsize / t`` (the weights, read once: what decode streams);
``dram_Bps = (A + W + C bytes)/t``; ``flops = 2·m·n·k/t``. Statistic: the median (``probes/timing.py``).
The curve fitted per dtype (t = alpha_m + W/beta_m per m, interpolated in log m: ``gpucal.plan.decode``) is
``calibrate/decode.py``'s.

Shapes: on a GPU (n, k) = (4096, 1024), (6144, 4096), (4096, 14336), (28672, 4096), (32768, 8192): 8, 48, 112,
224 and 512 MiB of fp16 (the o, qkv, down and gate/up projections of Llama shards, and one of 512 MiB). On a
virtual machine (NumPy really computes each product) 0.5, 2 and 8 MiB, enough for its priced time to resolve
the slope; on the simulator a few hundred elements.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucal.kernels.base import Backend, decode_gemm_mode
from gpucal.kernels.dtypes import DTYPES, POISON
from gpucal.kernels.reference import Footprint, gemm_footprint, gemm_work
from gpucal.probes.base import Probe, Result, policy_for, timed_case, waived
from gpucal.probes.decode_common import check_decode_gemm, l2_copies, poison, timed_launch, timing_note, weights64
from gpucal.probes.memory import Need
from gpucal.units import size_label

__all__ = ["DecodeGemmConfig", "run", "applicable", "needs", "default_shapes", "BATCHES", "DTYPES_WANTED",
           "CONVENTION"]

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DTYPES_WANTED = ("fp16", "bf16", "fp8")
GPU_SHAPES = ((4096, 1024), (6144, 4096), (4096, 14336), (28672, 4096), (32768, 8192))
VIRTUAL_SHAPES = ((512, 512), (1024, 1024), (2048, 2048))
VIRTUAL_BATCHES = (1, 4, 16, 64, 256)
SIM_SHAPES = ((24, 16), (40, 16), (24, 48))
SIM_BATCHES = (1, 2, 5)
CONVENTION = "weight_Bps = n·k·itemsize/t (W read once); dram_Bps = (A + W + C)/t; flops = 2mnk/t"


@dataclass(frozen=True)
class DecodeGemmConfig:
    dtypes: tuple[str, ...] | None = None  # default: fp16, bf16 and fp8 where offered
    batches: tuple[int, ...] | None = None  # m; default BATCHES (on a GPU)
    shapes: tuple[tuple[int, int], ...] | None = None  # (n, k); default by backend (default_shapes)
    graph: bool = True  # time each GEMM as a node of a replayed CUDA graph where the backend has graphs
    budget_s: float | None = None
    seed: int = 0


def applicable(backend: Backend) -> str | None:
    return None if backend.decode_gemm_dtypes() else f"the {backend.name} backend runs no decode GEMM"


def default_shapes(backend: Backend) -> tuple[tuple[int, int], ...]:
    if backend.clock == "virtual":
        return VIRTUAL_SHAPES
    return SIM_SHAPES if backend.simulated else GPU_SHAPES


def default_batches(backend: Backend) -> tuple[int, ...]:
    if backend.clock == "virtual":
        return VIRTUAL_BATCHES
    return SIM_BATCHES if backend.simulated else BATCHES


def _dtypes(backend: Backend, config: DecodeGemmConfig) -> list[str]:
    return list(config.dtypes or DTYPES_WANTED)


def _library(backend: Backend, dtype: str, timed) -> str:
    what = backend.gemm_modes().get(decode_gemm_mode(dtype), backend.name)
    return f"{what}; {timing_note(timed)}"


def _weights(backend: Backend, dtype: str, n: int, k: int, config: DecodeGemmConfig):
    """The copies of W (k×n) of one shape that a case is timed over in turn (``l2_copies``), and W and |W| in
    float64 for the checks: made once for every m."""
    w = backend.random_uniform((k, n), dtype, config.seed + 7 * n + k + 1, scale=1.0 / k ** 0.5)
    copies = l2_copies(backend, n * k * DTYPES[dtype].itemsize_bytes)
    return [w] + [backend.copy_array(w) for _ in range(copies - 1)], weights64(backend, w, dtype)


def _case(backend: Backend, dtype: str, m: int, ws, w64, config: DecodeGemmConfig) -> Result:
    k, n = ws[0].shape
    a = backend.random_uniform((m, k), dtype, config.seed + 31 * m + 7 * n + k)
    c = backend.full((m, n), DTYPES[dtype].storage, POISON[dtype])
    itemsize = DTYPES[dtype].itemsize_bytes
    weight_bytes = n * k * itemsize
    timed = timed_launch(backend, [backend.decode_gemm_launcher(a, w, c, dtype) for w in ws], config.graph)
    poison(backend, c, dtype)  # a graph's capture may have run the GEMM: the check sees only the timed launch
    params = {"dtype": dtype, "m": m, "n": n, "k": k, "weight_bytes": weight_bytes, "timed_as": timed.how,
              "weight_copies": len(ws)}
    return timed_case(backend, "decode-gemm", f"gemm-{dtype}-m{m}-{n}x{k}", params,
                      gemm_work(m, n, k, decode_gemm_mode(dtype)), timed.launch,
                      lambda: check_decode_gemm(backend, a, ws[-1], c, dtype, w64), CONVENTION,
                      policy_for(backend, config.budget_s), library=_library(backend, dtype, timed),
                      extra=lambda t: {"weight_Bps": weight_bytes / t}, ops_per_call=timed.ops_per_call)


def needs(backend: Backend, config: DecodeGemmConfig = DecodeGemmConfig()) -> list[Need]:
    out = []
    offered = backend.decode_gemm_dtypes()
    for dtype in _dtypes(backend, config):
        if dtype not in offered:
            continue
        size = DTYPES[dtype].itemsize_bytes
        for n, k in config.shapes or default_shapes(backend):
            m = max(config.batches or default_batches(backend))
            base = gemm_footprint(m, n, k, size, size)
            extra = (l2_copies(backend, n * k * size) - 1) * n * k * size  # the copies timed in turn
            out.append(Need(f"the decode-gemm {dtype} case m={m}, W {n}x{k} ({size_label(n * k * size)})",
                            ("shapes", "batches"), Footprint(base.device_bytes + extra, base.host_bytes)))
    return out


def run(backend: Backend, config: DecodeGemmConfig = DecodeGemmConfig()) -> list[Result]:
    offered = backend.decode_gemm_dtypes()
    results = []
    for dtype in _dtypes(backend, config):
        if dtype not in offered:
            results.append(waived(backend, "decode-gemm", f"gemm-{dtype}", f"the {backend.name} backend has no "
                                  f"{dtype} GEMM (it runs {', '.join(offered) or 'none'})", {"dtype": dtype}))
            continue
        for n, k in config.shapes or default_shapes(backend):
            ws, w64 = _weights(backend, dtype, n, k, config)
            for m in config.batches or default_batches(backend):
                results.append(_case(backend, dtype, m, ws, w64, config))
            del ws, w64
            backend.release_memory()
    return results


PROBE = Probe("decode-gemm", "decode-shape GEMMs (m = batch 1..512 against model-shard weights): time, weight "
              "bytes/s and FLOP/s per dtype", DecodeGemmConfig, applicable, run, needs)
