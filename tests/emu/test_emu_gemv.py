"""Every GEMV instance of ``cuda_src.SOURCE`` (each dtype and batch bound, and the benchmark variants) on the CPU
emulator (``emu.h``), on poisoned outputs inside guard bands, against ``reference.py``'s check; odd shapes (a
partial warp tile of W, a partial k tile, one k tile and several), runtime batches at and below the bound, the four
scheduling orders of emu.h; and the check refuses the result of a kernel mutated in the test.

What this proves: the kernels' indexing, fragment layouts, tiling, double buffering and barriers compute X·Wᵀ;
not their speed, nor the PTX of the helpers emu.h replaces (tests/compile compiles that with NVRTC)."""

from __future__ import annotations

import numpy as np
import pytest

from emu_fixtures import decode_lib, emu_dir, emulated_cupy, kernels_lib, libraries, memory, toolchain  # noqa: F401 - the emulator's fixtures

import emu_build as eb
from gpucal.kernels import cuda_src as cs
from gpucal.kernels.dtypes import DTYPES, POISON, to_float64, to_storage
from gpucal.kernels.reference import GEMM_MODES, check_close, gemm_tolerance, gemv_reference

INSTANCES = ([(cs.gemv_kernel_name(d, b), d, b, *cs.GEMV_SHAPES[d]) for d in cs.GEMV_DTYPES for b in cs.GEMV_BATCHES]
             + [(cs.gemv_variant_name(*v), *v) for v in cs.GEMV_VARIANTS])


def _tile_vectors(engine: str, unroll: int) -> int:
    """16-byte vectors of a k tile (cuda_src: 4·U for mma, 32·U for fma)."""
    return 4 * unroll if engine == "mma" else 32 * unroll


def _shapes(batch_bound: int, engine: str, rows: int, unroll: int):
    """(m, k vectors, runtime batch, scheduling order): half a block of rows and three k tiles, the last partial;
    more rows than a block and one partial tile; 7 short rows; a block less one row and two tiles. Batch at the
    bound, below it (where a smaller batch still selects this instance), 1 and half the bound; each of the four
    scheduling orders."""
    per_block, tile = cs.gemv_rows_per_block(engine, rows), _tile_vectors(engine, unroll)
    below = batch_bound - 1 if batch_bound > 2 else batch_bound
    return ((per_block // 2 + 3, 2 * tile + 5, batch_bound, 0),
            (per_block + 5, tile - 3, below, 1),
            (7, 3, 1, 2),
            (per_block - 1, tile + 1, max(1, batch_bound // 2), 3))


def run_gemv(lib, memory, name, dtype, m, kv, batch, rows_per_block, rng):
    """One launch on fresh inputs and a poisoned Y; returns (Y, W, X)."""
    per_vec = 16 // DTYPES[dtype].itemsize_bytes
    k = kv * per_vec
    w = memory.like(to_storage(rng.random((m, k), dtype=np.float32) * 2 - 1, dtype))
    x = memory.like(to_storage(rng.random((batch, k), dtype=np.float32) * 2 - 1, dtype))
    y = memory.array((batch, m), DTYPES[dtype].storage, POISON[dtype])
    lib.launch(name, (-(-m // rows_per_block),), (cs.GEMV_THREADS,), (w, x, y, np.int32(m), np.int32(kv),
                                                                       np.int32(batch)))
    return y, w, x


def check_gemv(y, w, x, dtype):
    mode = GEMM_MODES["fp32" if dtype == "fp32" else f"{dtype}_fp32acc"]
    ref, abs_product = gemv_reference(w, x, dtype)
    return check_close(to_float64(y, dtype), ref, gemm_tolerance(mode, w.shape[1], abs_product, ref),
                       "float64 reference; GEMV tolerance")


@pytest.mark.parametrize("name,dtype,batch_bound,engine,rows,unroll", INSTANCES, ids=[i[0] for i in INSTANCES])
def test_every_gemv_instance_matches_the_reference(kernels_lib, memory, name, dtype, batch_bound, engine, rows,
                                                   unroll):
    rng = np.random.default_rng(batch_bound * 31 + rows)
    try:
        for m, kv, batch, order in _shapes(batch_bound, engine, rows, unroll):
            kernels_lib.set_order(order)
            y, w, x = run_gemv(kernels_lib, memory, name, dtype, m, kv, batch, cs.gemv_rows_per_block(engine, rows),
                               rng)
            c = check_gemv(y, w, x, dtype)
            assert c.ok, (name, m, kv, batch, order, c)
    finally:
        kernels_lib.set_order(0)


def test_the_instances_cover_every_kernel_the_backend_launches():
    launched = {i[0] for i in INSTANCES}
    assert launched == {n for n in cs.KERNEL_NAMES if n.startswith("gemv_")}
    assert {i[1] for i in INSTANCES} == set(cs.GEMV_DTYPES)


# --- the harness catches a wrong kernel --------------------------------------------------------------

# Each: a one-line change of the real source (it must occur exactly once) and the instance it breaks.
MUTATIONS = {
    "mma B fragment halves swapped": ("T::mma(acc[r][1], xa.z, xb.z, xa.w, xb.w, wc[u][r].z, wc[u][r].w)",
                                      "T::mma(acc[r][1], xa.z, xb.z, xa.w, xb.w, wc[u][r].w, wc[u][r].z)",
                                      "gemv_fp16_b4"),
    "fma shuffle reduction one step short": ("for (int off = 16; off > 0; off >>= 1) acc[r][b] +=",
                                             "for (int off = 16; off > 1; off >>= 1) acc[r][b] +=", "gemv_fp32_b2"),
}


@pytest.fixture(scope="module")
def mutated(toolchain, emu_dir):
    """The GEMV instances of SOURCE, each mutation applied alone, built once for this module."""
    units = {}
    for i, (label, (old, new, name)) in enumerate(MUTATIONS.items()):
        assert cs.SOURCE.count(old) == 1, f"{label}: the line to mutate is no longer once in cuda_src.SOURCE"
        units[f"gemv-mutant-{i}"] = (cs.SOURCE.replace(old, new), [name])
    built = eb.build_many(units, emu_dir)
    return {label: built[f"gemv-mutant-{i}"] for i, label in enumerate(MUTATIONS)}


@pytest.mark.parametrize("label", list(MUTATIONS))
def test_a_mutated_gemv_fails_its_check(mutated, memory, label):
    name = MUTATIONS[label][2]
    dtype, bound = name.split("_")[1], int(name.split("_b")[1])
    engine, rows, unroll = cs.GEMV_SHAPES[dtype]
    rng = np.random.default_rng(5)
    m, kv, batch, _ = _shapes(bound, engine, rows, unroll)[0]  # several k tiles: the last one counts
    y, w, x = run_gemv(mutated[label], memory, name, dtype, m, kv, batch, cs.gemv_rows_per_block(engine, rows), rng)
    c = check_gemv(y, w, x, dtype)
    assert not c.ok and c.index is not None, c
