"""``membw``: device memory bandwidth — copy, read, write, triad — and the decode step's GEMV.

Byte conventions (each result names its own):
- copy of n bytes: ``copy_Bps = n/t`` and ``dram_Bps = 2n/t`` (read + written);
- read of n bytes: ``dram_Bps = (n + partials)/t`` (4 B of result per block); write: ``dram_Bps = n/t``;
- triad a = b + s·c over n bytes per array: ``dram_Bps = 3n/t`` (two read, one written);
- GEMV: ``dram_Bps = (bytes of W + X + Y)/t`` (W dominates).
``efficiency_frac`` is ``dram_Bps`` over the theoretical peak (memory clock × bus width × 2), where the
device reports them. Working sets are at least 4× the L2 (defaults: 512 MiB per stream buffer and a
GEMV weight of 256 MiB in fp16, grown for larger caches), so the figures are DRAM's, not the cache's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpucal.kernels.base import Backend
from gpucal.kernels.dtypes import DTYPES, POISON, to_float64
from gpucal.kernels.reference import (GEMM_MODES, Check, check_close, check_exact, gemm_footprint, gemm_tolerance,
                                      gemv_reference, gemv_work, stream_footprint, stream_work, write_pattern)
from gpucal.probes.base import Peak, Probe, Result, policy_for, timed_case, waived
from gpucal.probes.memory import Need
from gpucal.units import size_label

__all__ = ["MembwConfig", "run", "applicable", "needs", "STREAM_KERNELS", "default_stream_bytes", "default_gemv_shape",
           "write_pattern"]

STREAM_KERNELS = ("copy", "read", "write", "triad")
KERNELS = STREAM_KERNELS + ("gemv",)
SIM_STREAM_BYTES = 16 * 1024
SIM_GEMV_SHAPE = (37, 72)  # rows, columns: odd on purpose


@dataclass(frozen=True)
class MembwConfig:
    kernels: tuple[str, ...] = KERNELS
    dtypes: tuple[str, ...] | None = None  # GEMV dtypes; default: every one the backend has
    batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    stream_sizes: tuple[int, ...] | None = None  # bytes per buffer; default from the L2 (default_stream_bytes)
    gemv_shape: tuple[int, int] | None = None  # (m, k) of W; default from the L2
    budget_s: float | None = None  # per case
    seed: int = 0


def applicable(backend: Backend) -> str | None:
    return None


def default_stream_bytes(backend: Backend) -> int:
    if backend.simulated:
        return SIM_STREAM_BYTES
    l2 = backend.device().l2_bytes or 64 << 20
    return int(max(512 << 20, 4 * l2 + (16 << 20)) // 16 * 16)


def default_gemv_shape(backend: Backend, dtype: str) -> tuple[int, int]:
    if backend.simulated:
        return SIM_GEMV_SHAPE
    l2 = backend.device().l2_bytes or 64 << 20
    k = 8192
    rows = max(16384, -(-4 * l2 // (k * DTYPES["fp16"].itemsize_bytes)))
    return (-(-rows // 1024) * 1024, k)


def memory_peak(backend: Backend) -> Peak | None:
    peak = backend.device().theoretical_memory_Bps
    return Peak("dram_Bps", peak, "memory clock x bus width x 2") if peak else None


def _complement(backend: Backend, words):
    """Every bit of ``words`` (an ``xp`` array) flipped, on the device: a poison no correct output equals."""
    flipped = ~words
    return flipped if backend.xp is not np else backend.to_device(flipped)


def _stream_case(backend: Backend, kind: str, n_bytes: int, config: MembwConfig) -> Result:
    xp, n_words = backend.xp, n_bytes // 4
    seed = config.seed + 1
    arrays: dict = {}
    if kind in ("copy", "read"):
        arrays["src"] = backend.random_words(n_words, seed)
    if kind == "copy":
        arrays["dst"] = _complement(backend, backend.to_xp(arrays["src"]))  # every word differs from src
    if kind == "read":
        arrays["partial"] = backend.full(backend.stream_partials(n_words), np.uint32, 0)
    if kind == "write":
        arrays["seed"] = 0x5EED0000 + seed
        arrays["dst"] = _complement(backend, write_pattern(n_words, arrays["seed"], xp))
    if kind == "triad":
        arrays["b"] = backend.random_uniform(n_words, "fp32", seed)
        arrays["c"] = backend.random_uniform(n_words, "fp32", seed + 1)
        arrays["a"], arrays["scalar"] = backend.full(n_words, np.float32, POISON["fp32"]), 0.4375
    partial_bytes = arrays["partial"].size * 4 if kind == "read" else 0
    work = stream_work(kind, n_words * 4, partial_bytes)
    launch = backend.stream_launcher(kind, arrays)

    def verify() -> Check:
        get = backend.to_xp
        if kind == "copy":
            return check_exact(get(arrays["dst"]), get(arrays["src"]), "bit-exact compare", xp)
        if kind == "read":
            got = np.bitwise_xor.reduce(backend.to_host(arrays["partial"]))
            want = np.bitwise_xor.reduce(backend.to_host(arrays["src"]))
            return check_exact(np.asarray([got]), np.asarray([want]), "XOR of every word")
        if kind == "write":
            return check_exact(get(arrays["dst"]), write_pattern(n_words, arrays["seed"], xp), "bit-exact compare", xp)
        b, c = get(arrays["b"]).astype(xp.float64), get(arrays["c"]).astype(xp.float64)
        ref = b + arrays["scalar"] * c
        tol = DTYPES["fp32"].eps * 2 * (xp.abs(b) + xp.abs(arrays["scalar"] * c)) + np.finfo(np.float64).tiny
        return check_close(get(arrays["a"]).astype(xp.float64), ref, tol, "float64 reference, 2 ulp", xp)

    convention = {"copy": "copy_Bps = n/t, dram_Bps = 2n/t (n bytes copied)",
                  "read": "dram_Bps = (n + partials)/t (n bytes read, 4 B written per block)",
                  "write": "dram_Bps = n/t (n bytes written)",
                  "triad": "dram_Bps = 3n/t (n bytes per array: two read, one written)"}[kind]
    copy_rate = (lambda t: {"copy_Bps": n_words * 4 / t}) if kind == "copy" else None
    return timed_case(backend, "membw", f"{kind}-{n_words * 4}B", {"bytes_per_buffer": n_words * 4}, work, launch,
                      verify, convention, policy_for(backend, config.budget_s), library=_library(backend),
                      peak=memory_peak(backend), extra=copy_rate)


def _library(backend: Backend) -> str:
    if backend.clock == "virtual":
        return "NumPy; timed on the virtual clock"
    return "CuPy RawKernel (cuda_src.py)" if backend.name == "cupy" else f"{backend.name}: numba_kernels.py"


def _gemv_case(backend: Backend, dtype: str, batch: int, m: int, k: int, config: MembwConfig) -> Result:
    xp = backend.xp
    seed = config.seed + 100 + batch
    w = backend.random_uniform((m, k), dtype, seed)
    x = backend.random_uniform((batch, k), dtype, seed + 1)
    y = backend.full((batch, m), DTYPES[dtype].storage, POISON[dtype])
    work = gemv_work(m, k, batch, dtype)
    launch = backend.gemv_launcher(w, x, y, batch, dtype)
    mode = GEMM_MODES[f"{dtype}_fp32acc" if dtype != "fp32" else "fp32"]

    def verify() -> Check:
        ref, abs_product = gemv_reference(backend.to_xp(w), backend.to_xp(x), dtype, xp)
        tol = gemm_tolerance(mode, k, abs_product, ref, xp)
        return check_close(to_float64(backend.to_xp(y), dtype, xp), ref, tol,
                           "float64 reference, (8·eps_acc·sqrt(k))·|X||W|ᵀ + eps_out·|Y|", xp)

    return timed_case(backend, "membw", f"gemv-{dtype}-b{batch}", {"dtype": dtype, "batch": batch, "m": m, "k": k},
                      work, launch, verify, "dram_Bps = (bytes of W + X + Y)/t", policy_for(backend, config.budget_s),
                      library=_library(backend), peak=memory_peak(backend))


def needs(backend: Backend, config: MembwConfig = MembwConfig()) -> list[Need]:
    """What each case of ``config`` holds at its peak (``probes/memory.py`` checks it before ``run``)."""
    out = []
    for n_bytes in config.stream_sizes or (default_stream_bytes(backend),):
        for kind in STREAM_KERNELS:
            if kind in config.kernels:
                out.append(Need(f"the membw {kind} case over {size_label(n_bytes)} per buffer", ("stream_sizes",),
                                stream_footprint(kind, n_bytes // 4 * 4)))
    if "gemv" in config.kernels:
        for dtype in config.dtypes or backend.gemv_dtypes:
            if dtype in backend.gemv_dtypes:
                m, k = config.gemv_shape or default_gemv_shape(backend, dtype)
                size = DTYPES[dtype].itemsize_bytes
                for batch in config.batches:
                    out.append(Need(f"the membw GEMV {dtype} case of W {m}x{k} at batch {batch}",
                                    ("gemv_shape", "batches"), gemm_footprint(batch, m, k, size, size)))
    return out


def run(backend: Backend, config: MembwConfig = MembwConfig()) -> list[Result]:
    results = []
    for n_bytes in config.stream_sizes or (default_stream_bytes(backend),):
        for kind in STREAM_KERNELS:
            if kind in config.kernels:
                results.append(_stream_case(backend, kind, n_bytes, config))
    if "gemv" in config.kernels:
        for dtype in config.dtypes or backend.gemv_dtypes:
            if dtype not in backend.gemv_dtypes:
                results.append(waived(backend, "membw", f"gemv-{dtype}", f"the {backend.name} backend has no {dtype} GEMV"))
                continue
            m, k = config.gemv_shape or default_gemv_shape(backend, dtype)
            for batch in config.batches:
                results.append(_gemv_case(backend, dtype, batch, m, k, config))
    return results


PROBE = Probe("membw", "device memory bandwidth: copy, read, write, triad, and GEMV (decode) per dtype "
              "and batch", MembwConfig, applicable, run, needs)
