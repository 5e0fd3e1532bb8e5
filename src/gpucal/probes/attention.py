"""``attention``: decode attention (one query token per sequence, GQA: H_q/H_kv query heads share a KV head,
context T, split over the context where T is long) over batch × context × heads per card, verified against
the float64 NumPy reference (``kernels/decode_ref.py``), each call a node of a replayed CUDA graph where the
backend has graphs, over copies of the KV cache in turn so that it comes from DRAM (``probes/decode_common.py``).

Byte convention: ``kv_Bps = 2·B·T·H_kv·D·itemsize / t`` (K and V read once); ``dram_Bps = (KV + q + out)/t``;
``flops = 4·B·H_q·T·D/t``. The fit t = alpha + KV/beta over every case (``calibrate/decode.py``) gives the fixed
cost per call (alpha) and the rate at which attention reads the KV cache (beta).

Cases on a GPU: D = 128; (H_q, H_kv) per card (32, 8), (8, 2), (4, 1) (Llama-3 8B at TP 1, 4, 8); batch 1, 8,
32; context 512, 2048, 8192. On a virtual machine (NumPy computes each case) D = 64, smaller grids; on the
simulator a few positions.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucal.kernels.base import Backend
from gpucal.kernels.decode_ref import attention_work, check_attention
from gpucal.kernels.dtypes import DTYPES, POISON
from gpucal.kernels.reference import Footprint
from gpucal.probes.base import Probe, Result, policy_for, timed_case, waived
from gpucal.probes.decode_common import l2_copies, poison, timed_launch, timing_note
from gpucal.probes.memory import Need
from gpucal.units import size_label

__all__ = ["AttentionConfig", "run", "applicable", "needs", "CONVENTION", "default_grid"]

CONVENTION = "kv_Bps = 2·B·T·H_kv·D·itemsize/t (K and V read once); dram_Bps = (KV + q + out)/t"
GPU_GRID = dict(head_dim=128, heads=((32, 8), (8, 2), (4, 1)), batches=(1, 8, 32), contexts=(512, 2048, 8192))
VIRTUAL_GRID = dict(head_dim=64, heads=((8, 2), (4, 1)), batches=(1, 4), contexts=(256, 2048))
SIM_GRID = dict(head_dim=8, heads=((4, 2),), batches=(2,), contexts=(5, 37))


@dataclass(frozen=True)
class AttentionConfig:
    dtypes: tuple[str, ...] | None = None  # default: fp16, bf16 where the backend has them
    head_dim: int | None = None
    heads: tuple[tuple[int, int], ...] | None = None  # (H_q, H_kv) per card
    batches: tuple[int, ...] | None = None
    contexts: tuple[int, ...] | None = None
    graph: bool = True
    budget_s: float | None = None
    seed: int = 0


def applicable(backend: Backend) -> str | None:
    return backend.decode_reason()


def default_grid(backend: Backend) -> dict:
    if backend.clock == "virtual":
        return VIRTUAL_GRID
    return SIM_GRID if backend.simulated else GPU_GRID


def _grid(backend: Backend, config: AttentionConfig) -> dict:
    g = dict(default_grid(backend))
    for key in ("head_dim", "heads", "batches", "contexts"):
        if getattr(config, key) is not None:
            g[key] = getattr(config, key)
    return g


def _dtypes(backend: Backend, config: AttentionConfig) -> list[str]:
    return list(config.dtypes or [d for d in ("fp16", "bf16") if d in backend.decode_dtypes]
                or backend.decode_dtypes[:1])


def _case(backend: Backend, dtype: str, b: int, hq: int, hkv: int, d: int, t: int, config: AttentionConfig) -> Result:
    seed = config.seed + 17 * b + 5 * hq + t
    q = backend.random_uniform((b, hq, d), dtype, seed)
    k_cache = backend.random_uniform((b, hkv, t, d), dtype, seed + 1)
    v_cache = backend.random_uniform((b, hkv, t, d), dtype, seed + 2)
    out = backend.full((b, hq, d), DTYPES[dtype].storage, POISON[dtype])
    kv_bytes = 2 * b * t * hkv * d * DTYPES[dtype].itemsize_bytes
    caches = [(k_cache, v_cache)] + [(backend.copy_array(k_cache), backend.copy_array(v_cache))
                                     for _ in range(l2_copies(backend, kv_bytes) - 1)]
    # the caches last in turn are the checked ones: every copy holds the same values
    timed = timed_launch(backend, [backend.attention_launcher(q, kc, vc, out, dtype, t) for kc, vc in caches],
                         config.graph)
    poison(backend, out, dtype)
    params = {"dtype": dtype, "batch": b, "heads": hq, "kv_heads": hkv, "head_dim": d, "context": t,
              "kv_bytes": kv_bytes, "splits": backend.attention_splits(b, hkv, t), "timed_as": timed.how,
              "kv_copies": len(caches)}
    library = ("NumPy; timed on the virtual clock" if backend.clock == "virtual"
               else f"{backend.name}: decode attention kernel") + f"; {timing_note(timed)}"
    return timed_case(backend, "attention", f"attn-{dtype}-b{b}-h{hq}x{hkv}-d{d}-t{t}", params,
                      attention_work(b, hq, hkv, d, t, dtype), timed.launch,
                      lambda: check_attention(backend.to_xp(out), backend.to_xp(q), backend.to_xp(k_cache),
                                              backend.to_xp(v_cache), t, dtype, backend.xp),
                      CONVENTION, policy_for(backend, config.budget_s), library=library,
                      extra=lambda s: {"kv_Bps": kv_bytes / s}, ops_per_call=timed.ops_per_call)


def _cases(backend: Backend, config: AttentionConfig):
    g = _grid(backend, config)
    for hq, hkv in g["heads"]:
        for b in g["batches"]:
            for t in g["contexts"]:
                yield b, hq, hkv, g["head_dim"], t


def needs(backend: Backend, config: AttentionConfig = AttentionConfig()) -> list[Need]:
    out = []
    for dtype in _dtypes(backend, config):
        if dtype not in backend.decode_dtypes:
            continue
        s = DTYPES[dtype].itemsize_bytes
        for b, hq, hkv, d, t in _cases(backend, config):
            kv = 2 * b * hkv * t * d
            # the caches and their copies timed in turn, then the check's float64 copies of K, V and the scores
            dev = kv * s * l2_copies(backend, kv * s) + 2 * b * hq * d * s + 16 * kv + 24 * b * hq * t
            out.append(Need(f"the attention {dtype} case B={b}, heads {hq}/{hkv}, T={t} ({size_label(kv * s)} of KV)",
                            ("batches", "contexts"), Footprint(dev, kv * (8 + s))))
    return out


def run(backend: Backend, config: AttentionConfig = AttentionConfig()) -> list[Result]:
    reason = applicable(backend)
    if reason is not None:
        return [waived(backend, "attention", "attention", reason)]
    results = []
    for dtype in _dtypes(backend, config):
        if dtype not in backend.decode_dtypes:
            results.append(waived(backend, "attention", f"attn-{dtype}", f"the {backend.name} backend has no "
                                  f"{dtype} attention (it has {', '.join(backend.decode_dtypes)})", {"dtype": dtype}))
            continue
        for case in _cases(backend, config):
            results.append(_case(backend, dtype, *case, config))
        backend.release_memory()
    return results


PROBE = Probe("attention", "decode attention (GQA, split over the context): KV bytes/s and fixed cost over batch x "
              "context x heads per card", AttentionConfig, applicable, run, needs)
