"""CUDA C++ sources of the CuPy backend's RawKernels (compiled with NVRTC by CuPy at first use).

No header is included: fp16 and bf16 are held as ``unsigned short`` and converted with PTX ``cvt``
(fp16) or a shift (bf16), so the same source compiles under any NVRTC, the test suite's included.
Every kernel's work and reference live in ``reference.py``; launch shapes in ``cupy_backend.py``.

- ``gemv_<dtype>_b<B>``: Y (batch×m) = X (batch×k)·Wᵀ, W row-major m×k. One warp per 4 rows: each lane
  has 4 16-byte loads of W in flight, and each X vector it loads serves the 4 rows; W read with a
  streaming (evict-first) hint so that X stays cached; fp32 accumulation, warp shuffle reduction.
  (``gemv<T, B, U>``, one row per warp with U loads in flight, serves the benchmark's variants.) B is the largest batch of the instance (1, 2, 4,
  8, 16); the runtime batch may be smaller. k·itemsize % 16 == 0.
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

__all__ = ["SOURCE", "COPY_VARIANTS", "GEMV_VARIANTS", "GEMV_BATCHES", "GEMV_DTYPES", "GEMV_ROWS_PER_WARP",
           "KERNEL_NAMES", "gemv_kernel_name", "gemv_variant_name"]

GEMV_BATCHES = (1, 2, 4, 8, 16)
GEMV_DTYPES = ("fp16", "bf16", "fp32")
# Rows of W per warp, at every batch: fastest at batch 1 on an H200 (docs/measurements.md), and at larger
# batches each X vector loaded then serves 4 rows.
GEMV_ROWS_PER_WARP = 4

_PRELUDE = r"""
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ float h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float b2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 f2b(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);  /* NaN stays NaN */
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ u64 globaltimer() { u64 t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }

/* 16 bytes of a row as floats: 8 halves, 8 bf16 or 4 floats. */
struct F16 { enum { N = 8 }; static __device__ __forceinline__ void cvt(uint4 v, float* f) {
    u32 w[4] = {v.x, v.y, v.z, v.w};
    #pragma unroll
    for (int i = 0; i < 4; ++i) { f[2 * i] = h2f((u16)(w[i] & 0xffffu)); f[2 * i + 1] = h2f((u16)(w[i] >> 16)); }
} static __device__ __forceinline__ void store(void* y, size_t i, float f) { ((u16*)y)[i] = f2h(f); } };
struct BF16 { enum { N = 8 }; static __device__ __forceinline__ void cvt(uint4 v, float* f) {
    u32 w[4] = {v.x, v.y, v.z, v.w};
    #pragma unroll
    for (int i = 0; i < 4; ++i) { f[2 * i] = __uint_as_float(w[i] << 16); f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u); }
} static __device__ __forceinline__ void store(void* y, size_t i, float f) { ((u16*)y)[i] = f2b(f); } };
struct F32 { enum { N = 4 }; static __device__ __forceinline__ void cvt(uint4 v, float* f) {
    f[0] = __uint_as_float(v.x); f[1] = __uint_as_float(v.y); f[2] = __uint_as_float(v.z); f[3] = __uint_as_float(v.w);
} static __device__ __forceinline__ void store(void* y, size_t i, float f) { ((float*)y)[i] = f; } };

template <typename T, int B>
__device__ __forceinline__ void fma16(uint4 wv, const uint4* __restrict__ x, size_t kv, int batch, size_t i, float* acc) {
    float w[T::N];
    T::cvt(wv, w);
    #pragma unroll
    for (int b = 0; b < B; ++b) {
        if (b < batch) {
            float xf[T::N];
            T::cvt(__ldg(x + (size_t)b * kv + i), xf);
            #pragma unroll
            for (int e = 0; e < T::N; ++e) acc[b] = fmaf(w[e], xf[e], acc[b]);
        }
    }
}

template <typename T, int B, int U>
__device__ __forceinline__ void gemv(const uint4* __restrict__ W, const uint4* __restrict__ X, void* __restrict__ Y,
                                     int m, int kv, int batch) {
    const int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= m) return;
    const uint4* w = W + (size_t)row * kv;
    float acc[B];
    #pragma unroll
    for (int b = 0; b < B; ++b) acc[b] = 0.0f;
    int i = lane;
    for (; i + 32 * (U - 1) < kv; i += 32 * U) {
        uint4 wv[U];
        #pragma unroll
        for (int u = 0; u < U; ++u) wv[u] = ld_stream(w + i + 32 * u);
        #pragma unroll
        for (int u = 0; u < U; ++u) fma16<T, B>(wv[u], X, kv, batch, i + 32 * u, acc);
    }
    for (; i < kv; i += 32) fma16<T, B>(ld_stream(w + i), X, kv, batch, i, acc);
    #pragma unroll
    for (int b = 0; b < B; ++b) {
        #pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], off);
    }
    #pragma unroll
    for (int b = 0; b < B; ++b) if (lane == b && b < batch) T::store(Y, (size_t)b * m + row, acc[b]);
}

/* R rows per warp (batch >= 4): each X vector loaded once serves R rows of W, so X's traffic from L2
   (B rows of X per row of W) falls R-fold. */
template <typename T, int B, int R>
__device__ __forceinline__ void gemv_rows(const uint4* __restrict__ W, const uint4* __restrict__ X, void* __restrict__ Y,
                                          int m, int kv, int batch) {
    const int row0 = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5) * R;
    const int lane = threadIdx.x & 31;
    if (row0 >= m) return;
    float acc[R][B];
    #pragma unroll
    for (int r = 0; r < R; ++r)
        #pragma unroll
        for (int b = 0; b < B; ++b) acc[r][b] = 0.0f;
    for (int i = lane; i < kv; i += 32) {
        float w[R][T::N];
        #pragma unroll
        for (int r = 0; r < R; ++r) {
            const uint4 v = (row0 + r < m) ? ld_stream(W + (size_t)(row0 + r) * kv + i) : make_uint4(0, 0, 0, 0);
            T::cvt(v, w[r]);
        }
        #pragma unroll
        for (int b = 0; b < B; ++b) {
            if (b < batch) {
                float xf[T::N];
                T::cvt(__ldg(X + (size_t)b * kv + i), xf);
                #pragma unroll
                for (int r = 0; r < R; ++r)
                    #pragma unroll
                    for (int e = 0; e < T::N; ++e) acc[r][b] = fmaf(w[r][e], xf[e], acc[r][b]);
            }
        }
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
            if (lane == b && b < batch && row0 + r < m) T::store(Y, (size_t)b * m + row0 + r, acc[r][b]);
}
"""

_GEMV_INSTANCE = r"""
extern "C" __global__ void __launch_bounds__(256) {kernel}(
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
# Other shapes of the batch-1 GEMV, for bench/gemv_variants.py: (dtype, batch, unroll, rows per warp).
GEMV_VARIANTS = (("fp16", 1, 4, 1), ("fp16", 1, 8, 1), ("fp16", 1, 1, 2), ("fp16", 1, 1, 8))
COPY_VARIANTS = tuple(f"copy_{ld}_{st}_u{u}" for ld in ("plain", "stream", "noalloc") for st in ("plain", "stream")
                      for u in (4, 8))


def gemv_kernel_name(dtype: str, max_batch: int) -> str:
    return f"gemv_{dtype}_b{max_batch}"


def gemv_variant_name(dtype: str, batch: int, unroll: int, rows: int) -> str:
    return f"gemv_{dtype}_b{batch}_u{unroll}_r{rows}"


def _gemv_call(dtype: str, batch: int, unroll: int, rows: int) -> str:
    if rows == 1:
        return f"gemv<{_STRUCTS[dtype]}, {batch}, {unroll}>(W, X, Y, m, kv, batch)"
    return f"gemv_rows<{_STRUCTS[dtype]}, {batch}, {rows}>(W, X, Y, m, kv, batch)"


def _source() -> str:
    parts = [_PRELUDE]
    for name in GEMV_DTYPES:
        for batch in GEMV_BATCHES:
            parts.append(_GEMV_INSTANCE.format(kernel=gemv_kernel_name(name, batch),
                                               call=_gemv_call(name, batch, 1, GEMV_ROWS_PER_WARP)))
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
