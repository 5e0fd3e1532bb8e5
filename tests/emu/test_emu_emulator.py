"""The emulator itself (``emu.h``, ``emu_build.py``): what it replaces in the sources, and that it refuses or shows
what the hardware would not forgive: a shuffle that not every lane reaches (deadlock), an argument of the wrong
size (a Python int for an ``int``), a misaligned vector pointer, a write past an array, a read of shared memory
that no barrier orders after its write; and that its mma follows the PTX ISA's fragment tables (stated here
again, independently, in NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from emu_fixtures import decode_lib, emu_dir, emulated_cupy, kernels_lib, libraries, memory, toolchain  # noqa: F401 - the emulator's fixtures

import emu_build as eb
from gpucal.kernels import cuda_src as cs
from gpucal.kernels import decode_src as ds
from gpucal.kernels.dtypes import to_storage

SOURCE = r"""
extern "C" __global__ void shuffle(int* y) { y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 5); }
extern "C" __global__ void divergent_shuffle(float* y) {
    if (threadIdx.x < 16) y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
extern "C" __global__ void exit_then_sync(int* y) {
    if (threadIdx.x % 2) return;
    __syncthreads();  /* threads that returned no longer count */
    y[threadIdx.x] = 1;
}
extern "C" __global__ void takes_int(int* y, int n) { if (threadIdx.x == 0) y[0] = n; }
extern "C" __global__ void vector_copy(const uint4* x, uint4* y) { y[threadIdx.x] = ld_stream(x + threadIdx.x); }
extern "C" __global__ void past_end(float* y, int n) { y[threadIdx.x + (threadIdx.x == 0 ? n : 0)] = 1.0f; }
template <bool SYNC>
__device__ __forceinline__ void rotate(float* y) {
    __shared__ float s[64];
    s[threadIdx.x] = (float)threadIdx.x;
    if (SYNC) __syncthreads();
    y[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
extern "C" __global__ void rotate_synced(float* y) { rotate<true>(y); }
extern "C" __global__ void rotate_unsynced(float* y) { rotate<false>(y); }
/* regs: 32 lanes x (a0..a3, b0, b1) as the test packs them; d: 32 lanes x c0..c3 */
extern "C" __global__ void one_mma(const u32* regs, float* d) {
    const u32* r = regs + 6 * threadIdx.x;
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_f16(c, r[0], r[1], r[2], r[3], r[4], r[5]);
    for (int i = 0; i < 4; ++i) d[4 * threadIdx.x + i] = c[i];
}
"""
NAMES = ("shuffle", "divergent_shuffle", "exit_then_sync", "takes_int", "vector_copy", "past_end", "rotate_synced",
         "rotate_unsynced", "one_mma")


@pytest.fixture(scope="module")
def lib(toolchain, emu_dir):
    return eb.build(SOURCE, NAMES, emu_dir, "self-test")


def test_the_ptx_helpers_removed_are_those_emu_h_replaces():
    _, removed = eb.strip_ptx(cs.SOURCE)
    assert removed == eb.REPLACED
    stripped, removed = eb.strip_ptx(ds.DECODE_SOURCE)
    assert removed <= eb.REPLACED and "mma_f16" in removed
    assert "b2f" in stripped and "struct F16" in stripped  # the conversions in C++ stay, the kernels' own


def test_inline_asm_the_emulator_does_not_know_is_refused():
    with pytest.raises(eb.BuildError, match="not emulate"):
        eb.emulated_source('__device__ __forceinline__ u32 lane_id() { u32 r; asm("mov.u32 %0, %%laneid;" : "=r"(r)); '
                           'return r; }\n', [])
    with pytest.raises(eb.BuildError, match="outside a __device__ helper"):
        eb.strip_ptx('extern "C" __global__ void k(int* y) { asm volatile("trap;"); }\n')


def test_a_shuffle_exchanges_across_the_warp(lib, memory):
    y = memory.array(64, np.int32, fill=-1)
    lib.launch("shuffle", (1,), (64,), (y,))
    assert np.array_equal(y, np.arange(64) ^ 5)


def test_a_shuffle_that_not_every_lane_reaches_is_a_deadlock(lib, memory):
    y = memory.array(32, np.float32, fill=0)
    with pytest.raises(eb.LaunchError, match="deadlock.*warp 0: 16 of 32 lanes"):
        lib.launch("divergent_shuffle", (1,), (32,), (y,))
    lib.launch("shuffle", (1,), (32,), (memory.array(32, np.int32),))  # the emulator is usable again


def test_threads_that_returned_leave_the_barrier(lib, memory):
    y = memory.array(64, np.int32, fill=0)
    lib.launch("exit_then_sync", (2,), (64,), (y,))
    assert np.array_equal(y, (np.arange(64) % 2 == 0).astype(np.int32))


def test_arguments_are_checked_as_the_kernel_declares_them(lib, memory):
    y = memory.array(1, np.int32, fill=0)
    with pytest.raises(eb.LaunchError, match="argument 1: 8 bytes given, the kernel's parameter has 4"):
        lib.launch("takes_int", (1,), (1,), (y, 7))  # CuPy passes a Python int as 8 bytes
    with pytest.raises(eb.LaunchError, match="takes 2 arguments, 1 given"):
        lib.launch("takes_int", (1,), (1,), (y,))
    lib.launch("takes_int", (1,), (1,), (y, np.int32(7)))
    assert y[0] == 7
    with pytest.raises(eb.LaunchError, match="1 to 1024 threads"):
        lib.launch("takes_int", (1,), (1025,), (y, np.int32(7)))


def test_a_misaligned_vector_pointer_is_refused(lib, memory):
    x = memory.array(80, np.uint32, fill=1)
    y = memory.array(64, np.uint32, fill=0)
    lib.launch("vector_copy", (1,), (16,), (x, y))
    assert (y == 1).all()
    with pytest.raises(eb.LaunchError, match="argument 0: a pointer not aligned"):
        lib.launch("vector_copy", (1,), (16,), (x[1:], y))


def test_a_kernel_writing_past_its_output_or_into_an_input_is_seen(lib):
    mem = eb.Memory()
    y = mem.array(32, np.float32, fill=0)
    lib.launch("past_end", (1,), (32,), (y, np.int32(31)))  # y[31]: inside
    assert mem.intact() is None
    lib.launch("past_end", (1,), (32,), (y, np.int32(32)))  # y[32]: one past the end
    assert "outside a float32 array of shape (32,)" in mem.intact()
    mem = eb.Memory()
    x = mem.like(np.zeros(32, np.float32))  # read-only
    lib.launch("past_end", (1,), (32,), (x, np.int32(0)))
    assert "into a read-only float32 input" in mem.intact()


def test_a_missing_barrier_shows_in_some_scheduling_order(lib, memory):
    want = (np.arange(64) + 1) % 64
    results = []
    try:
        for order in range(4):
            lib.set_order(order)
            for name in ("rotate_synced", "rotate_unsynced"):
                y = memory.array(64, np.float32, fill=-1)
                lib.launch(name, (1,), (64,), (y,))
                results.append((name, order, bool(np.array_equal(y, want))))
    finally:
        lib.set_order(0)
    assert all(ok for name, _, ok in results if name == "rotate_synced")
    assert not all(ok for name, _, ok in results if name == "rotate_unsynced")


def test_the_mma_follows_the_ptx_fragment_tables(lib, memory):
    """m16n8k16, f16 in, f32 out. PTX ISA (warp-level matrix fragments for mma.m16n8k16), g = lane // 4,
    t = lane % 4: A register r holds A[g + 8·(r % 2), 2t + 8·(r // 2) + {0, 1}]; B register r holds
    B[2t + 8r + {0, 1}, g]; C element i sits at [g + 8·(i // 2), 2t + i % 2]; the lower index in the low half."""
    rng = np.random.default_rng(6)
    a = to_storage(rng.random((16, 16), dtype=np.float32) * 2 - 1, "fp16")
    b = to_storage(rng.random((16, 8), dtype=np.float32) * 2 - 1, "fp16")

    def pair(lo, hi):
        return np.uint32(lo.view(np.uint16)) | (np.uint32(hi.view(np.uint16)) << np.uint32(16))

    regs = np.zeros((32, 6), np.uint32)
    for lane in range(32):
        g, t = divmod(lane, 4)
        for r in range(4):
            row, col = g + 8 * (r % 2), 2 * t + 8 * (r // 2)
            regs[lane, r] = pair(a[row, col], a[row, col + 1])
        for r in range(2):
            k = 2 * t + 8 * r
            regs[lane, 4 + r] = pair(b[k, g], b[k + 1, g])
    d = memory.array((32, 4), np.float32, fill=np.nan)
    lib.launch("one_mma", (1,), (32,), (memory.like(regs), d))
    got = np.empty((16, 8))
    for lane in range(32):
        g, t = divmod(lane, 4)
        for i in range(4):
            got[g + 8 * (i // 2), 2 * t + i % 2] = d[lane, i]
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.allclose(got, want, rtol=1e-6, atol=1e-6)


def test_the_toolchain_probe_gives_a_reason(emu_dir, monkeypatch):
    monkeypatch.setattr(eb, "CXX", "no-such-compiler-g++")
    assert "no C++ compiler (no-such-compiler-g++)" in eb.toolchain_reason(emu_dir)
    monkeypatch.setattr(eb, "CXX", "false")  # a compiler that fails
    assert "lacks what the CPU emulator needs" in eb.toolchain_reason(emu_dir)
