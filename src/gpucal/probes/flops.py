"""``flops``: matrix multiply FLOP/s per dtype and accumulate mode, at a plateau size and at decode shapes.

C (m×n) = A (m×k)·B (k×n), 2·m·n·k FLOP. The plateau is a square size large enough to saturate the
device (8192³ on a GPU); the decode shapes are m = batch (1…16) against n = k = 8192, where the GEMM is
memory-bound, so their results also carry ``dram_Bps`` (bytes of A + B + C over t).
``efficiency_frac`` compares with the dense datasheet rate of the mode in the built-in datasheet profile
whose device name matches (fp64 against the fp64 tensor-core rate where the profile has one, since
cuBLAS runs DGEMM there); sparse rates are never used. Which library and mode ran is in ``library``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gpucal.kernels.base import Backend
from gpucal.kernels.dtypes import DTYPES, POISON, to_float64
from gpucal.kernels.reference import (GEMM_MODES, Check, check_close, gemm_footprint, gemm_reference, gemm_tolerance,
                                      gemm_work)
from gpucal.probes.base import Peak, Probe, Result, policy_for, timed_case, waived
from gpucal.probes.memory import Need
from gpucal.profiles import datasheet_for

__all__ = ["FlopsConfig", "run", "applicable", "needs", "datasheet_peak", "default_sizes"]

SIM_SIZES = (19, 32)
SIM_DECODE_K = 24
PEAK_KEYS = {"fp64": ("fp64_tensor", "fp64")}


@dataclass(frozen=True)
class FlopsConfig:
    modes: tuple[str, ...] | None = None  # default: every mode the backend runs
    sizes: tuple[int, ...] | None = None  # square sizes; default_sizes(): 8192 on a GPU
    decode_batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    decode_k: int | None = None  # n = k of the decode shapes; default 8192 on a GPU
    budget_s: float | None = None
    seed: int = 0


def applicable(backend: Backend) -> str | None:
    return None


def datasheet_peak(device_name: str, mode: str) -> Peak | None:
    """The dense FLOP/s of ``mode`` in the matching datasheet profile, if any."""
    doc = datasheet_for(device_name)
    if doc is None:
        return None
    dense = doc.profile.devices[0].dense_flops
    for key in PEAK_KEYS.get(mode, (mode,)):
        q = dense.get(key)
        if q is not None and q.value:
            return Peak("flops", float(q.value), f"{doc.name}: dense_flops.{key}")
    return None


def _case(backend: Backend, mode: str, m: int, n: int, k: int, library: str, config: FlopsConfig) -> Result:
    xp = backend.xp
    gm = GEMM_MODES[mode]
    out_dtype = backend.gemm_output_dtype(mode)
    seed = config.seed + 7 * m + 13 * n + k
    a = backend.random_uniform((m, k), gm.dtype_in, seed)
    b = backend.random_uniform((k, n), gm.dtype_in, seed + 1)
    c = backend.full((m, n), DTYPES[out_dtype].storage, POISON[out_dtype])
    work = gemm_work(m, n, k, mode, out_dtype)  # out_dtype: the Numba kernel writes fp32
    launch = backend.gemm_launcher(a, b, c, mode)
    check_mode = replace(gm, dtype_out=out_dtype)

    def verify() -> Check:
        ref, abs_product = gemm_reference(backend.to_xp(a), backend.to_xp(b), gm.dtype_in, xp)
        tol = gemm_tolerance(check_mode, k, abs_product, ref, xp)
        return check_close(to_float64(backend.to_xp(c), out_dtype, xp), ref, tol,
                           "float64 reference, (eps_product + 8·eps_acc·sqrt(k))·|A||B| + eps_out·|C|", xp)

    return timed_case(backend, "flops", f"gemm-{mode}-{m}x{n}x{k}", {"mode": mode, "m": m, "n": n, "k": k},
                      work, launch, verify, "flops = 2mnk/t; dram_Bps = (bytes of A + B + C)/t",
                      policy_for(backend, config.budget_s), library=library,
                      peak=datasheet_peak(backend.device().name, mode))


def default_sizes(backend: Backend, modes) -> tuple[int, ...]:
    """8192 on a GPU (the plateau on H100); tiny sizes on the simulator; on a virtual machine the smallest
    size at which its FLOP/s, not its memory, bounds every mode."""
    if backend.clock == "virtual":
        return (backend.plateau_size(modes),)
    return SIM_SIZES if backend.simulated else (8192,)


def needs(backend: Backend, config: FlopsConfig = FlopsConfig()) -> list[Need]:
    """What each case of ``config`` holds at its peak (``probes/memory.py`` checks it before ``run``)."""
    offered = backend.gemm_modes()
    modes = [m for m in config.modes or tuple(offered) if m in offered]
    sizes = config.sizes or default_sizes(backend, modes)
    decode_k = config.decode_k or (SIM_DECODE_K if backend.simulated else 8192)
    out = []
    for mode in modes:
        size_in = DTYPES[GEMM_MODES[mode].dtype_in].itemsize_bytes
        size_out = DTYPES[backend.gemm_output_dtype(mode)].itemsize_bytes
        for size in sizes:
            out.append(Need(f"the flops {mode} case {size}x{size}x{size}", ("sizes",),
                            gemm_footprint(size, size, size, size_in, size_out)))
        for batch in config.decode_batches:
            out.append(Need(f"the flops {mode} decode case {batch}x{decode_k}x{decode_k}", ("decode_batches",),
                            gemm_footprint(batch, decode_k, decode_k, size_in, size_out)))
    return out


def run(backend: Backend, config: FlopsConfig = FlopsConfig()) -> list[Result]:
    offered = backend.gemm_modes()
    results = []
    sizes = config.sizes or default_sizes(backend, [m for m in config.modes or offered if m in offered])
    decode_k = config.decode_k or (SIM_DECODE_K if backend.simulated else 8192)
    for mode in config.modes or tuple(offered):
        if mode not in offered:
            results.append(waived(backend, "flops", f"gemm-{mode}", f"the {backend.name} backend does not run "
                                  f"{mode} (it runs {', '.join(offered)})"))
            continue
        for size in sizes:
            results.append(_case(backend, mode, size, size, size, offered[mode], config))
        for batch in config.decode_batches:
            results.append(_case(backend, mode, batch, decode_k, decode_k, offered[mode], config))
    return results


PROBE = Probe("flops", "matrix multiply FLOP/s per dtype and accumulate mode (plateau and decode shapes)",
              FlopsConfig, applicable, run, needs)
