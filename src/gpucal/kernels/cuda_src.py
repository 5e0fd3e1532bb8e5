"""CUDA C++ sources of the CuPy backend's RawKernels (compiled with NVRTC by CuPy at first use).

No header is included: fp16 and bf16 are held as ``unsigned short`` and converted with PTX ``cvt``
(fp16) or a shift (bf16), so the same source compiles under any NVRTC, the test suite's included.
``PRELUDE`` (those types and conversions, the streaming load, the tensor-core ``mma`` of each 16-bit type)
is shared with ``decode_src.py``. Every kernel's work and reference live in ``reference.py``; launch
shapes in ``cupy_backend.py``.

- ``gemv_<dtype>_b<B>``: Y (batch×m) = X (batch×k)·Wᵀ, W row-major m×k, fp32 accumulation. B is the largest
  batch of the instance (1, 2, 4, 8, 16); the runtime batch may be smaller; k·itemsize % 16 == 0. Blocks of
  256 threads (8 warps) walk k in tiles: the block stages the tile of X (all its batch rows) in shared memory
  once, every warp uses it, so X comes from L2 once per block rather than once per warp; the next tile of W
  (16-byte streaming loads, ``ld.global.cs``, evict-first so that X stays in L2) is in flight while the
  current one is used. Two engines (``GEMV_SHAPES`` names each dtype's):

  - ``mma`` (fp16, bf16): tensor cores, ``mma.sync.m16n8k16`` with fp32 accumulators, A = the tile of X
    (16 rows: the batch rows, zero beyond), B = 8 rows of W per warp-tile. The order of k inside an mma is
    free as long as A and B agree, so lane (g = lane/4, t = lane%4) loads 16 bytes of W row g and of X rows
    g, g+8 at the same k, halves 0-3 feed one mma and 4-7 the next: W is never shuffled nor converted, and
    the sum over k is the mma's (no shuffle reduction). At batch 8-16, converting and multiplying on the
    CUDA cores would need about as many instructions per second as the SMs issue in all.
  - ``fma`` (fp32; fp16 and bf16 as benchmark variants): CUDA cores, X converted to fp32 once per block in
    shared memory, R rows of W per warp with lanes along k, warp-shuffle reduction at the end.

  ``GEMV_VARIANTS`` (other engines, rows per warp and tile lengths) serve ``bench/gemv_variants.py``.
- ``copy_<load>_<store>_u<U>``, ``stream_read|write|triad``: grid-stride loops over 16-byte vectors;
  the copy comes in variants of cache hints and vectors in flight (``CupyBackend.copy_kernel`` names
  the one used, ``bench/copy_variants.py`` compares them). ``read`` XORs every 32-bit
  word (exact and order-free, so it can be verified) and writes one word per block; ``write`` stores
  ``i·2654435761 ^ seed`` at word i (no constant, no zeros); ``triad`` is a = b + s·c in fp32.
- ``copy_bytes``: the kernel engine of the copy probes (any size; device, peer or mapped host memory).
- ``spin_wait``: the blocked-start gate. One thread polls a flag in mapped pinned host memory until the
  host sets it, or until ``timeout_ns`` of ``%globaltimer`` pass (status 2, reported as a failure).
"""

from __future__ import annotations

__all__ = ["SOURCE", "PRELUDE", "COPY_VARIANTS", "GEMV_VARIANTS", "GEMV_BATCHES", "GEMV_DTYPES", "GEMV_SHAPES",
           "GEMV_THREADS", "KERNEL_NAMES", "gemv_kernel_name", "gemv_variant_name", "gemv_rows_per_block"]

GEMV_BATCHES = (1, 2, 4, 8, 16)
GEMV_DTYPES = ("fp16", "bf16", "fp32")
GEMV_THREADS = 256  # 8 warps a block, every GEMV kernel
# Each dtype's GEMV: (engine, rows of W per warp, unroll). mma: rows a multiple of 8 (8-row tiles of the mma's
# B), unroll = 4-vector steps per k tile (a tile of 32 vectors of 16 bytes per row); fma: unroll = 32-vector
# steps per tile.
GEMV_SHAPES = {"fp16": ("mma", 8, 8), "bf16": ("mma", 8, 8), "fp32": ("fma", 4, 2)}
# Other shapes, for bench/gemv_variants.py: (dtype, batch, engine, rows per warp, unroll).
GEMV_VARIANTS = tuple(("fp16", b, *shape) for b in (1, 16)
                      for shape in (("mma", 8, 4), ("mma", 16, 4), ("fma", 2, 1), ("fma", 4, 1)))

# The inline PTX, all of it in these free functions: conversions, the streaming load, the clock, the mma.
_PTX = r"""
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ float h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ u64 globaltimer() { u64 t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }
/* D = A·B + C, mma.sync m16n8k16, fp32 C and D (in place in c[0..3]); A four and B two registers of two
   values each, in the PTX ISA's fragment layout. */
__device__ __forceinline__ void mma_f16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};" : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_bf16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};" : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
"""

_TYPES = r"""
__device__ __forceinline__ float b2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 f2b(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);  /* NaN stays NaN */
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* 16 bytes of a row as floats: 8 halves, 8 bf16 or 4 floats; one value to and from its storage; and for the
   16-bit types the tensor-core mma of that type. */
struct F16 { enum { N = 8 };
    static __device__ __forceinline__ void cvt(uint4 v, float* f) {
        u32 w[4] = {v.x, v.y, v.z, v.w};
        #pragma unroll
        for (int i = 0; i < 4; ++i) { f[2 * i] = h2f((u16)(w[i] & 0xffffu)); f[2 * i + 1] = h2f((u16)(w[i] >> 16)); }
    }
    static __device__ __forceinline__ float to_float(u16 h) { return h2f(h); }
    static __device__ __forceinline__ u16 from_float(float f) { return f2h(f); }
    static __device__ __forceinline__ void store(void* y, size_t i, float f) { ((u16*)y)[i] = f2h(f); }
    static __device__ __forceinline__ void mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
        mma_f16(c, a0, a1, a2, a3, b0, b1);
    }
};
struct BF16 { enum { N = 8 };
    static __device__ __forceinline__ void cvt(uint4 v, float* f) {
        u32 w[4] = {v.x, v.y, v.z, v.w};
        #pragma unroll
        for (int i = 0; i < 4; ++i) { f[2 * i] = __uint_as_float(w[i] << 16); f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u); }
    }
    static __device__ __forceinline__ float to_float(u16 b) { return b2f(b); }
    static __device__ __forceinline__ u16 from_float(float f) { return f2b(f); }
    static __device__ __forceinline__ void store(void* y, size_t i, float f) { ((u16*)y)[i] = f2b(f); }
    static __device__ __forceinline__ void mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
        mma_bf16(c, a0, a1, a2, a3, b0, b1);
    }
};
struct F32 { enum { N = 4 };
    static __device__ __forceinline__ void cvt(uint4 v, float* f) {
        f[0] = __uint_as_float(v.x); f[1] = __uint_as_float(v.y); f[2] = __uint_as_float(v.z); f[3] = __uint_as_float(v.w);
    }
    static __device__ __forceinline__ void store(void* y, size_t i, float f) { ((float*)y)[i] = f; }
};
"""

PRELUDE = _PTX + _TYPES

_GEMV = r"""
#define GEMV_THREADS 256
#define GEMV_WARPS (GEMV_THREADS / 32)

/* The tile of X (rows < batch, TV vectors from vector tile·TV; zeros past k) that this thread moves: global
   to registers (issued early, consumed after the tile's compute), then registers to shared memory. */
template <int B, int TV, int XPT>
__device__ __forceinline__ void gemv_x_load(const uint4* __restrict__ X, int kv, int batch, int tile, uint4 (&xn)[XPT]) {
    #pragma unroll
    for (int i = 0; i < XPT; ++i) {
        const int idx = (int)threadIdx.x + i * GEMV_THREADS, b = idx / TV, v = tile * TV + idx % TV;
        xn[i] = (idx < B * TV && b < batch && v < kv) ? __ldg(X + (size_t)b * kv + v) : make_uint4(0u, 0u, 0u, 0u);
    }
}

/* Tensor-core GEMV (module docstring): warp w of the block owns RW tiles of 8 rows of W; a k tile is 4·U
   vectors of 16 bytes, U steps of 4. Lane (g, t) holds, at step u of a tile, W row (tile row g) vector
   4u + t and X rows g, g+8 at the same vector; mma 0 takes halves 0-3, mma 1 halves 4-7 (their own
   accumulators, to halve the chain of dependent mmas). C (16 batch rows × 8 W rows): c0, c1 at batch g,
   rows 2t, 2t+1; c2, c3 at batch g+8. xs rows are padded to TVP vectors (TVP·16 ≡ 64 mod 128 bytes) so
   that the 8 lanes of a quarter-warp (rows g, g+1) read distinct banks. */
template <typename T, int B, int RW, int U>
__device__ __forceinline__ void gemv_mma(const uint4* __restrict__ W, const uint4* __restrict__ X, void* __restrict__ Y,
                                         int m, int kv, int batch) {
    constexpr int TV = 4 * U;
    constexpr int TVP = TV % 8 == 0 ? TV + 4 : TV;
    constexpr int XPT = (B * TV + GEMV_THREADS - 1) / GEMV_THREADS;
    __shared__ uint4 xs[2][B][TVP];
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int row0 = ((int)blockIdx.x * GEMV_WARPS + (int)(threadIdx.x >> 5)) * (8 * RW);
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    const uint4* wrow[RW];
    bool wok[RW];
    #pragma unroll
    for (int r = 0; r < RW; ++r) {
        const int row = row0 + 8 * r + g;
        wok[r] = row < m;
        wrow[r] = W + (size_t)(wok[r] ? row : 0) * kv;
    }
    float acc[RW][2][4];
    #pragma unroll
    for (int r = 0; r < RW; ++r)
        #pragma unroll
        for (int h = 0; h < 2; ++h)
            #pragma unroll
            for (int i = 0; i < 4; ++i) acc[r][h][i] = 0.0f;
    uint4 wa[U][RW], wb[U][RW], xn[XPT];
    auto load_w = [&](int tile, uint4 (&w)[U][RW]) {
        #pragma unroll
        for (int u = 0; u < U; ++u)
            #pragma unroll
            for (int r = 0; r < RW; ++r) {
                const int v = tile * TV + 4 * u + t;
                w[u][r] = (wok[r] && v < kv) ? ld_stream(wrow[r] + v) : zero;
            }
    };
    auto store_x = [&](int buf) {
        #pragma unroll
        for (int i = 0; i < XPT; ++i) {
            const int idx = (int)threadIdx.x + i * GEMV_THREADS;
            if (idx < B * TV) xs[buf][idx / TV][idx % TV] = xn[i];
        }
    };
    /* one tile: start the next tile's loads, use this one, stage the next X, wait for the block */
    auto step = [&](int tile, uint4 (&wc)[U][RW], uint4 (&wn)[U][RW]) {
        load_w(tile + 1, wn);
        gemv_x_load<B, TV, XPT>(X, kv, batch, tile + 1, xn);
        const int buf = tile & 1;
        #pragma unroll
        for (int u = 0; u < U; ++u) {
            const uint4 xa = g < batch ? xs[buf][g][4 * u + t] : zero;
            const uint4 xb = (B > 8 && g + 8 < batch) ? xs[buf][B > 8 ? g + 8 : 0][4 * u + t] : zero;
            #pragma unroll
            for (int r = 0; r < RW; ++r) {
                T::mma(acc[r][0], xa.x, xb.x, xa.y, xb.y, wc[u][r].x, wc[u][r].y);
                T::mma(acc[r][1], xa.z, xb.z, xa.w, xb.w, wc[u][r].z, wc[u][r].w);
            }
        }
        store_x(buf ^ 1);
        __syncthreads();
    };
    const int tiles = (kv + TV - 1) / TV;
    load_w(0, wa);
    gemv_x_load<B, TV, XPT>(X, kv, batch, 0, xn);
    store_x(0);
    __syncthreads();
    for (int tile = 0; tile < tiles; tile += 2) {  /* two tiles a turn: the register buffers swap roles */
        step(tile, wa, wb);
        if (tile + 1 < tiles) step(tile + 1, wb, wa);
    }
    #pragma unroll
    for (int r = 0; r < RW; ++r) {
        const int row = row0 + 8 * r + 2 * t;
        float c[4];
        #pragma unroll
        for (int i = 0; i < 4; ++i) c[i] = acc[r][0][i] + acc[r][1][i];
        if (g < batch) {
            if (row < m) T::store(Y, (size_t)g * m + row, c[0]);
            if (row + 1 < m) T::store(Y, (size_t)g * m + row + 1, c[1]);
        }
        if (B > 8 && g + 8 < batch) {
            if (row < m) T::store(Y, (size_t)(g + 8) * m + row, c[2]);
            if (row + 1 < m) T::store(Y, (size_t)(g + 8) * m + row + 1, c[3]);
        }
    }
}

/* CUDA-core GEMV: warp w owns R consecutive rows of W, lane l vector 32u + l of each (U steps of 32 vectors a
   tile); the tile of X is converted to fp32 once, into shared memory as NQ float4 planes (conflict-free reads
   for 16-bit types too); acc[r][b] in fp32, reduced over the warp with shuffles at the end. */
template <typename T, int B, int R, int U>
__device__ __forceinline__ void gemv_fma(const uint4* __restrict__ W, const uint4* __restrict__ X, void* __restrict__ Y,
                                         int m, int kv, int batch) {
    constexpr int TV = 32 * U;
    constexpr int NQ = T::N / 4;
    constexpr int XPT = (B * TV + GEMV_THREADS - 1) / GEMV_THREADS;
    __shared__ float4 xs[2][B][NQ][TV];
    const int lane = threadIdx.x & 31;
    const int row0 = ((int)blockIdx.x * GEMV_WARPS + (int)(threadIdx.x >> 5)) * R;
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    const uint4* wrow[R];
    bool wok[R];
    #pragma unroll
    for (int r = 0; r < R; ++r) {
        wok[r] = row0 + r < m;
        wrow[r] = W + (size_t)(wok[r] ? row0 + r : 0) * kv;
    }
    float acc[R][B];
    #pragma unroll
    for (int r = 0; r < R; ++r)
        #pragma unroll
        for (int b = 0; b < B; ++b) acc[r][b] = 0.0f;
    uint4 wa[U][R], wb[U][R], xn[XPT];
    auto load_w = [&](int tile, uint4 (&w)[U][R]) {
        #pragma unroll
        for (int u = 0; u < U; ++u)
            #pragma unroll
            for (int r = 0; r < R; ++r) {
                const int v = tile * TV + 32 * u + lane;
                w[u][r] = (wok[r] && v < kv) ? ld_stream(wrow[r] + v) : zero;
            }
    };
    auto store_x = [&](int buf) {
        #pragma unroll
        for (int i = 0; i < XPT; ++i) {
            const int idx = (int)threadIdx.x + i * GEMV_THREADS;
            if (idx < B * TV) {
                float f[T::N];
                T::cvt(xn[i], f);
                #pragma unroll
                for (int q = 0; q < NQ; ++q)
                    xs[buf][idx / TV][q][idx % TV] = make_float4(f[4 * q], f[4 * q + 1], f[4 * q + 2], f[4 * q + 3]);
            }
        }
    };
    auto step = [&](int tile, uint4 (&wc)[U][R], uint4 (&wn)[U][R]) {
        load_w(tile + 1, wn);
        gemv_x_load<B, TV, XPT>(X, kv, batch, tile + 1, xn);
        const int buf = tile & 1;
        #pragma unroll
        for (int u = 0; u < U; ++u) {
            float w[R][T::N];
            #pragma unroll
            for (int r = 0; r < R; ++r) T::cvt(wc[u][r], w[r]);
            #pragma unroll
            for (int b = 0; b < B; ++b) {
                if (b < batch) {
                    #pragma unroll
                    for (int q = 0; q < NQ; ++q) {
                        const float4 x = xs[buf][b][q][32 * u + lane];
                        #pragma unroll
                        for (int r = 0; r < R; ++r) {
                            acc[r][b] = fmaf(w[r][4 * q], x.x, acc[r][b]);
                            acc[r][b] = fmaf(w[r][4 * q + 1], x.y, acc[r][b]);
                            acc[r][b] = fmaf(w[r][4 * q + 2], x.z, acc[r][b]);
                            acc[r][b] = fmaf(w[r][4 * q + 3], x.w, acc[r][b]);
                        }
                    }
                }
            }
        }
        store_x(buf ^ 1);
        __syncthreads();
    };
    const int tiles = (kv + TV - 1) / TV;
    load_w(0, wa);
    gemv_x_load<B, TV, XPT>(X, kv, batch, 0, xn);
    store_x(0);
    __syncthreads();
    for (int tile = 0; tile < tiles; tile += 2) {
        step(tile, wa, wb);
        if (tile + 1 < tiles) step(tile + 1, wb, wa);
    }
    #pragma unroll
    for (int r = 0; r < R; ++r)
        #pragma unroll
        for (int b = 0; b < B; ++b)
            #pragma unroll
            for (int off = 16; off > 0; off >>= 1) acc[r][b] += __shfl_xor_sync(0xffffffffu, acc[r][b], off);
    #pragma unroll
    for (int r = 0; r < R; ++r)
        #pragma unroll
        for (int b = 0; b < B; ++b)
            if (((r * B + b) & 31) == lane && b < batch && row0 + r < m) T::store(Y, (size_t)b * m + row0 + r, acc[r][b]);
}
"""

_GEMV_INSTANCE = r"""
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) {kernel}(
        const uint4* __restrict__ W, const uint4* __restrict__ X, void* __restrict__ Y, int m, int kv, int batch) {{
    {call};
}}
"""

_COPY = r"""/* copy variants: LOAD and STORE are the cache hints, U the 16-byte vectors in flight per thread;
   grid-stride. bench/copy_variants.py times them against the driver's memcpy. */
__device__ __forceinline__ uint4 ld_plain(const uint4* p) { return *p; }
__device__ __forceinline__ uint4 ld_noalloc(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ void st_plain(uint4* p, uint4 v) { *p = v; }
__device__ __forceinline__ void st_stream(uint4* p, uint4 v) {
    asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};" :: "l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}
#define STREAM_COPY(NAME, LOAD, STORE, U)                                                                    \
extern "C" __global__ void NAME(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {          \
    const size_t stride = (size_t)gridDim.x * blockDim.x;                                                    \
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;                                                \
    for (; i + (U - 1) * stride < n; i += U * stride) {                                                      \
        uint4 v[U];                                                                                          \
        _Pragma("unroll") for (int u = 0; u < U; ++u) v[u] = LOAD(src + i + u * stride);                     \
        _Pragma("unroll") for (int u = 0; u < U; ++u) STORE(dst + i + u * stride, v[u]);                     \
    }                                                                                                        \
    for (; i < n; i += stride) STORE(dst + i, LOAD(src + i));                                                \
}
"""

_STREAMS = r"""
extern "C" __global__ void stream_read(const uint4* __restrict__ src, u32* __restrict__ partial, size_t n) {
    __shared__ u32 warp_xor[32];
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    u32 acc = 0;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = ld_stream(src + i), b = ld_stream(src + i + stride);
        uint4 c = ld_stream(src + i + 2 * stride), d = ld_stream(src + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n; i += stride) { uint4 a = ld_stream(src + i); acc ^= a.x ^ a.y ^ a.z ^ a.w; }
    #pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, off);
    if ((threadIdx.x & 31) == 0) warp_xor[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        u32 total = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total ^= warp_xor[w];
        partial[blockIdx.x] = total;
    }
}

extern "C" __global__ void stream_write(uint4* __restrict__ dst, size_t n, u32 seed) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        const u32 w = (u32)(4 * i);
        dst[i] = make_uint4((w * 2654435761u) ^ seed, ((w + 1) * 2654435761u) ^ seed,
                            ((w + 2) * 2654435761u) ^ seed, ((w + 3) * 2654435761u) ^ seed);
    }
}

extern "C" __global__ void stream_triad(float4* __restrict__ a, const float4* __restrict__ b,
                                        const float4* __restrict__ c, float s, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        const float4 x = b[i], y = c[i];
        a[i] = make_float4(fmaf(s, y.x, x.x), fmaf(s, y.y, x.y), fmaf(s, y.z, x.z), fmaf(s, y.w, x.w));
    }
}

/* The kernel (SM) engine of the copy probes: any size, any pointers the device can reach (its memory, a
   peer's, mapped pinned host memory); 16-byte vectors where both pointers allow them, bytes elsewhere. */
extern "C" __global__ void copy_bytes(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const size_t nv = ((((size_t)src) | ((size_t)dst)) & 15) == 0 ? n / 16 : 0;
    for (size_t j = i; j < nv; j += stride) ((uint4*)dst)[j] = ((const uint4*)src)[j];
    for (size_t j = nv * 16 + i; j < n; j += stride) dst[j] = src[j];
}

extern "C" __global__ void spin_wait(const volatile int* flag, int* status, u64 timeout_ns) {
    const u64 t0 = globaltimer();
    while (*flag == 0) {
        if (globaltimer() - t0 > timeout_ns) { *status = 2; return; }
    }
    *status = 1;
}
"""

_STRUCTS = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}
COPY_VARIANTS = tuple(f"copy_{ld}_{st}_u{u}" for ld in ("plain", "stream", "noalloc") for st in ("plain", "stream")
                      for u in (4, 8))


def gemv_kernel_name(dtype: str, max_batch: int) -> str:
    return f"gemv_{dtype}_b{max_batch}"


def gemv_variant_name(dtype: str, batch: int, engine: str, rows: int, unroll: int) -> str:
    return f"gemv_{dtype}_b{batch}_{engine}_r{rows}_u{unroll}"


def gemv_rows_per_block(engine: str, rows: int) -> int:
    """Rows of W one block of ``GEMV_THREADS`` covers: 8 warps × ``rows`` (a multiple of 8 for ``mma``)."""
    if engine not in ("mma", "fma") or rows < 1 or (engine == "mma" and rows % 8):
        raise ValueError(f"no GEMV shape {engine} with {rows} rows per warp")
    return GEMV_THREADS // 32 * rows


def _gemv_call(dtype: str, batch: int, engine: str, rows: int, unroll: int) -> str:
    gemv_rows_per_block(engine, rows)
    if engine == "mma":
        if dtype == "fp32":
            raise ValueError("the mma GEMV takes 16-bit inputs only")
        return f"gemv_mma<{_STRUCTS[dtype]}, {batch}, {rows // 8}, {unroll}>(W, X, Y, m, kv, batch)"
    return f"gemv_fma<{_STRUCTS[dtype]}, {batch}, {rows}, {unroll}>(W, X, Y, m, kv, batch)"


def _source() -> str:
    parts = [PRELUDE, _GEMV]
    for name in GEMV_DTYPES:
        for batch in GEMV_BATCHES:
            parts.append(_GEMV_INSTANCE.format(kernel=gemv_kernel_name(name, batch),
                                               call=_gemv_call(name, batch, *GEMV_SHAPES[name])))
    for variant in GEMV_VARIANTS:
        parts.append(_GEMV_INSTANCE.format(kernel=gemv_variant_name(*variant), call=_gemv_call(*variant)))
    parts.append(_COPY)
    for name in COPY_VARIANTS:
        _, ld, st, u = name.split("_")
        parts.append(f"STREAM_COPY({name}, ld_{ld}, st_{st}, {u[1:]})\n")
    parts.append(_STREAMS)
    return "".join(parts)


SOURCE = _source()
KERNEL_NAMES = tuple([gemv_kernel_name(d, b) for d in GEMV_DTYPES for b in GEMV_BATCHES]
                     + [gemv_variant_name(*v) for v in GEMV_VARIANTS]
                     + list(COPY_VARIANTS) + ["stream_read", "stream_write", "stream_triad", "copy_bytes", "spin_wait"])
