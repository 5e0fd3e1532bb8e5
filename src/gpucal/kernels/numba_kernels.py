"""The Numba CUDA kernels: run on real GPUs (backend ``numba``) and on the CPU simulator (``simulator``).

Written for the simulator's limits: no warp shuffles (reductions go through shared memory), fixed-size
shared and local arrays. Each kernel's reference and declared work live in ``reference.py``; the same
arithmetic as the CuPy kernels (fp32 accumulation, the same ``write`` pattern and ``read`` XOR).
``SIGNATURES`` lists, per kernel, the signatures compiled to PTX in the test suite (sm_80/89/90).

Importing this module imports numba: do it only once a Numba backend has been chosen.
"""

from __future__ import annotations

from numba import cuda, float32, int32, uint32, uint64  # noqa: TID253 - a backend module: imported only where that backend is selected

__all__ = ["gemv", "gemv_sim", "gemm_tiled", "stream_copy", "stream_read", "stream_write", "stream_triad",
           "GEMV_BLOCK", "GEMV_BLOCK_SIM", "GEMV_MAX_BATCH", "GEMM_TILE", "STREAM_THREADS", "READ_THREADS", "SIGNATURES"]

GEMV_BLOCK = (32, 4)  # threads per row, rows per block, on a GPU
GEMV_BLOCK_SIM = (4, 8)  # on the simulator, whose cost is per block (its threads are Python threads)
GEMV_MAX_BATCH = 16
GEMM_TILE = 16
STREAM_THREADS = 256
HASH = uint64(2654435761)
MASK32 = uint64(0xFFFFFFFF)
READ_THREADS = 64  # threads per block of stream_read (a shared-memory reduction)


def _make_gemv(threads: int, rows: int):
    """The GEMV kernel for blocks of ``threads`` × ``rows``: ``threads`` threads per row of W, ``rows``
    rows per block (compile-time constants of the kernel)."""

    @cuda.jit
    def gemv(w, x, y, batch):
        """y[b, row] = sum_i w[row, i] * x[b, i]. Each thread's partial sums go to shared memory; after one
        barrier, threads add up one batch row each (one barrier per block: the simulator pays for each)."""
        tid = cuda.threadIdx.x
        r = cuda.threadIdx.y
        row = cuda.blockIdx.x * rows + r
        m, k = w.shape
        partial = cuda.shared.array((rows, GEMV_MAX_BATCH, threads), float32)
        for b in range(batch):
            partial[r, b, tid] = float32(0.0)
        if row < m:
            for i in range(tid, k, threads):
                wv = float32(w[row, i])
                for b in range(batch):
                    partial[r, b, tid] += wv * float32(x[b, i])
        cuda.syncthreads()
        if row < m:
            for b in range(tid, batch, threads):
                total = float32(0.0)
                for t in range(threads):
                    total += partial[r, b, t]
                y[b, row] = total

    return gemv


gemv = _make_gemv(*GEMV_BLOCK)
gemv_sim = _make_gemv(*GEMV_BLOCK_SIM)


@cuda.jit
def gemm_tiled(a, b, c):
    """c = a @ b with GEMM_TILE² shared-memory tiles, fp32 accumulation, stored in c's dtype (fp32, or fp16
    rounded to nearest for the decode GEMM); any shape (bounds checked)."""
    sa = cuda.shared.array((GEMM_TILE, GEMM_TILE), float32)
    sb = cuda.shared.array((GEMM_TILE, GEMM_TILE), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    col = cuda.blockIdx.x * GEMM_TILE + tx
    row = cuda.blockIdx.y * GEMM_TILE + ty
    m, k = a.shape
    n = b.shape[1]
    acc = float32(0.0)
    for t in range((k + GEMM_TILE - 1) // GEMM_TILE):
        ka = t * GEMM_TILE + tx
        kb = t * GEMM_TILE + ty
        sa[ty, tx] = float32(a[row, ka]) if row < m and ka < k else float32(0.0)
        sb[ty, tx] = float32(b[kb, col]) if kb < k and col < n else float32(0.0)
        cuda.syncthreads()
        for i in range(GEMM_TILE):
            acc += sa[ty, i] * sb[i, tx]
        cuda.syncthreads()
    if row < m and col < n:
        c[row, col] = acc


@cuda.jit
def stream_copy(src, dst):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, src.shape[0], stride):
        dst[i] = src[i]


@cuda.jit
def stream_read(src, partial):
    """XOR of every word; one word per block into ``partial`` (shared-memory reduction)."""
    words = cuda.shared.array(READ_THREADS, uint32)
    tid = cuda.threadIdx.x
    acc = uint32(0)
    for i in range(cuda.grid(1), src.shape[0], cuda.gridsize(1)):
        acc ^= src[i]
    words[tid] = acc
    cuda.syncthreads()
    step = READ_THREADS // 2
    while step > 0:
        if tid < step:
            words[tid] ^= words[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        partial[cuda.blockIdx.x] = words[0]


@cuda.jit
def stream_write(dst, seed):
    for i in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[i] = uint32(((uint64(i) * HASH) & MASK32) ^ uint64(seed))


@cuda.jit
def stream_triad(a, b, c, s):
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[i] = b[i] + s * c[i]


def _signatures():
    from numba.types import float16, float64

    sigs = {
        "gemv": [(t[:, ::1], t[:, ::1], t[:, ::1], int32) for t in (float16, float32)],
        "gemv_sim": [(t[:, ::1], t[:, ::1], t[:, ::1], int32) for t in (float16, float32)],
        "gemm_tiled": [(t[:, ::1], t[:, ::1], float32[:, ::1]) for t in (float16, float32)]
        + [(float64[:, ::1], float64[:, ::1], float32[:, ::1]), (float16[:, ::1], float16[:, ::1], float16[:, ::1])],
        "stream_copy": [(uint32[::1], uint32[::1])],
        "stream_read": [(uint32[::1], uint32[::1])],
        "stream_write": [(uint32[::1], uint32)],
        "stream_triad": [(float32[::1], float32[::1], float32[::1], float32)],
    }
    return sigs


SIGNATURES = _signatures()
