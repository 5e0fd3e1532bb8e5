"""CUDA C++ sources of the CuPy backend's decode kernels (``DECODE_SOURCE``, one NVRTC module): exactly the
semantics of ``decode_ref.py`` (its layouts, rounding and fp32 arithmetic), in fp16 and bf16. Same style as
``cuda_src.py``, whose ``PRELUDE`` (16-bit storage types, conversions, streaming load, mma) it starts with.
Launch shapes live in ``cupy_backend.py``.

- ``decode_attention_<dtype>_d<D>_g<G>`` (flash decoding): one block of ``ATTENTION_THREADS`` per (context
  split, KV head, sequence), serving all H_q/H_kv ≤ G query heads of its KV head, so K and V are read once
  for them; D ∈ {64, 128}; context and split length are runtime values. The split is walked in chunks of
  ``ATTENTION_CHUNK`` positions whose scores sit in shared memory; the max and sum of the softmax run over
  the chunks (the accumulated outputs rescaled by exp(m_old − m_new)), so any split length fits.

  - q·K: on the tensor cores (``mma.sync m16n8k16``, fp32 accumulators: the products of two 16-bit values
    are exact): A = the group's q (16 rows, zero beyond G), B = 8 positions of K. As in the GEMV, the order
    of the head dimension inside an mma is free when A and B agree, so lane (g, t) loads 16 bytes of K row
    g and of q heads g, g+8 at the same dims; scores ×1/sqrt(D) into shared memory.
  - softmax: per head, block reductions of max and sum over the chunk; p = exp(s − m) (``expf``, the
    accurate one) replaces the score.
  - p·V: CUDA cores in fp32 (p stays fp32: a 16-bit p would not meet the check); D/8 lanes a row of V,
    16-byte loads, each lane holds 8 dims × G heads; then a shuffle sum over the rows a warp holds and a
    pairwise sum of the warps in shared memory.

  One split: the block writes out = o/l in the dtype. Several: it writes o (unnormalised), m and l to the fp32
  workspace (B, H_q, splits, D) and (B, H_q, splits), and ``decode_attention_combine_<dtype>`` (one block
  per (sequence, query head), a thread per dim) writes out = Σ e^(m_s−M) o_s / Σ e^(m_s−M) l_s.
- ``add_rmsnorm_<dtype>``: one block per row; residual_out = round(x + residual), the fp32 sum of squares of
  the stored values reduced over the block, out = round(r · 1/sqrt(mean + eps) · weight).
- ``rotary_<dtype>``: one block per (head of qkv, sequence); rotate-half of q and k with the host's fp32
  cos/sin table, q to (B, H_q, D), k and v (bit for bit) into the caches at ``position``.
- ``silu_mul_<dtype>``: grid-stride, 8 values a thread where F % 8 == 0.
- ``tick``: one thread, ``counter[0] += 1``.
"""

from __future__ import annotations

from gpucal.kernels.cuda_src import PRELUDE

__all__ = ["DECODE_SOURCE", "DECODE_KERNEL_NAMES", "DECODE_KERNEL_DTYPES", "ATTENTION_THREADS", "ATTENTION_CHUNK",
           "ATTENTION_GROUPS", "ATTENTION_HEAD_DIMS", "attention_kernel_name", "attention_combine_name",
           "attention_group_bound", "decode_kernel_name", "decode_module_source"]

DECODE_KERNEL_DTYPES = ("fp16", "bf16")
ATTENTION_THREADS = 128  # 4 warps a block
ATTENTION_CHUNK = 512  # positions whose scores a block holds at once (shared memory: 4·CHUNK·G bytes)
ATTENTION_GROUPS = (1, 2, 4, 8, 16)  # compile-time bounds of G = H_q/H_kv; an instance runs any G up to its bound
ATTENTION_HEAD_DIMS = (64, 128)

_DECODE = r"""
#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_CHUNK 512
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float neg_inf() { return __uint_as_float(0xff800000u); }

template <typename T>
__device__ __forceinline__ uint4 pack8(const float* f) {
    return make_uint4((u32)T::from_float(f[0]) | ((u32)T::from_float(f[1]) << 16),
                      (u32)T::from_float(f[2]) | ((u32)T::from_float(f[3]) << 16),
                      (u32)T::from_float(f[4]) | ((u32)T::from_float(f[5]) << 16),
                      (u32)T::from_float(f[6]) | ((u32)T::from_float(f[7]) << 16));
}

/* The GM probabilities of one position (contiguous in shared memory) into registers. */
template <int GM> struct Probs {
    static __device__ __forceinline__ void load(const float* s, float* p) {
        #pragma unroll
        for (int g = 0; g < GM; g += 4) {
            const float4 v = *reinterpret_cast<const float4*>(s + g);
            p[g] = v.x; p[g + 1] = v.y; p[g + 2] = v.z; p[g + 3] = v.w;
        }
    }
};
template <> struct Probs<1> { static __device__ __forceinline__ void load(const float* s, float* p) { p[0] = s[0]; } };
template <> struct Probs<2> {
    static __device__ __forceinline__ void load(const float* s, float* p) {
        const float2 v = *reinterpret_cast<const float2*>(s);
        p[0] = v.x; p[1] = v.y;
    }
};

/* Decode attention over positions [split·split_len, min(context, (split+1)·split_len)) of KV head blockIdx.y
   of sequence blockIdx.z, for its `group` (<= GM) query heads (module docstring). q, out (B, H_q, D) and the
   caches (B, H_kv, t_max, D) as 16-byte vectors. Scores: sh[r·GM + g] for position r of the chunk. */
template <typename T, int D, int GM>
__device__ __forceinline__ void decode_attention(
        const uint4* __restrict__ q, const uint4* __restrict__ kc, const uint4* __restrict__ vc,
        uint4* __restrict__ out, float* __restrict__ ws_o, float* __restrict__ ws_m, float* __restrict__ ws_l,
        int context, int t_max, int split_len, int group) {
    constexpr int S = D / 8;                        /* 16-byte vectors in a row of a cache */
    constexpr int KSTEPS = D / 32;                  /* q·K: a row is KSTEPS × (4 lanes × 16 bytes) */
    constexpr int KT = D == 64 ? 4 : 2;             /* q·K: 8-row tiles a warp loads at once (8 loads a lane) */
    constexpr int KPASS = ATT_WARPS * 8 * KT;       /* q·K: rows the block loads at once */
    constexpr int RPW = 32 / S;                     /* p·V: rows a warp reads at once, S lanes a row */
    constexpr int NL = GM >= 16 ? 4 : 8;            /* p·V: rows a lane loads at once */
    constexpr int VPASS = ATT_WARPS * RPW * NL;     /* p·V: rows the block loads at once */
    constexpr int RED = (ATT_WARPS / 2) * GM * D;   /* floats of the pairwise sum of the warps' outputs */
    constexpr int SH = ATT_CHUNK * GM > RED ? ATT_CHUNK * GM : RED;
    __shared__ float4 sh4[SH / 4];
    __shared__ float red_w[ATT_WARPS][GM];
    __shared__ float s_max[GM], s_sum[GM], s_alpha[GM];
    float* sh = reinterpret_cast<float*>(sh4);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z, hkv = gridDim.y, splits = gridDim.x;
    const int t0 = split * split_len;
    const int n = min(context - t0, split_len);     /* > 0: the host makes every split non-empty */
    const size_t row0 = ((size_t)b * hkv + h) * (size_t)t_max + (size_t)t0;
    const size_t head0 = (size_t)b * hkv * group + (size_t)h * group;  /* the group's first query head */
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    const float scale = 1.0f / sqrtf((float)D);

    /* q·K fragments: lane (qg, qt) holds dims 32s + 8qt .. +7 of heads qg and qg + 8 */
    const int qg = lane >> 2, qt = lane & 3;
    uint4 qa[KSTEPS], qb[KSTEPS];
    #pragma unroll
    for (int s = 0; s < KSTEPS; ++s) {
        qa[s] = qg < group ? q[(head0 + qg) * S + 4 * s + qt] : zero;
        qb[s] = (GM > 8 && qg + 8 < group) ? q[(head0 + qg + 8) * S + 4 * s + qt] : zero;
    }
    /* p·V: lane j of a row holds dims 8j .. 8j+7 of every head */
    const int j = lane % S, vrow = warp * RPW + lane / S;
    if (threadIdx.x < GM) { s_max[threadIdx.x] = neg_inf(); s_sum[threadIdx.x] = 0.0f; }
    float acc[GM][8];
    #pragma unroll
    for (int g = 0; g < GM; ++g)
        #pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;

    for (int c0 = 0; c0 < n; c0 += ATT_CHUNK) {
        const int nc = min(n - c0, ATT_CHUNK);
        const uint4* kp = kc + (row0 + (size_t)c0) * S;
        const uint4* vp = vc + (row0 + (size_t)c0) * S;
        /* scores of the chunk */
        for (int base = 0; base < nc; base += KPASS) {
            uint4 kv[KT][KSTEPS];
            #pragma unroll
            for (int i = 0; i < KT; ++i) {
                const int r = base + (warp * KT + i) * 8 + qg;
                #pragma unroll
                for (int s = 0; s < KSTEPS; ++s) kv[i][s] = r < nc ? ld_stream(kp + (size_t)r * S + 4 * s + qt) : zero;
            }
            #pragma unroll
            for (int i = 0; i < KT; ++i) {
                float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                #pragma unroll
                for (int s = 0; s < KSTEPS; ++s) {
                    T::mma(c, qa[s].x, qb[s].x, qa[s].y, qb[s].y, kv[i][s].x, kv[i][s].y);
                    T::mma(c, qa[s].z, qb[s].z, qa[s].w, qb[s].w, kv[i][s].z, kv[i][s].w);
                }
                /* c0, c1: head qg at rows 2qt, 2qt + 1 of the tile; c2, c3: head qg + 8 */
                const int r = base + (warp * KT + i) * 8 + 2 * qt;
                if (qg < GM) {
                    if (r < nc) sh[r * GM + qg] = c[0] * scale;
                    if (r + 1 < nc) sh[(r + 1) * GM + qg] = c[1] * scale;
                }
                if (GM > 8) {
                    if (r < nc) sh[r * GM + (GM > 8 ? qg + 8 : 0)] = c[2] * scale;
                    if (r + 1 < nc) sh[(r + 1) * GM + (GM > 8 ? qg + 8 : 0)] = c[3] * scale;
                }
            }
        }
        __syncthreads();
        /* softmax over the chunk, continuing the split's running max and sum; thread i meets head i % GM only */
        const int gi = threadIdx.x % GM;
        float mx = neg_inf();
        for (int e = threadIdx.x; e < nc * GM; e += ATT_THREADS) mx = fmaxf(mx, sh[e]);
        #pragma unroll
        for (int off = 16; off >= GM; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, off));
        if (lane < GM) red_w[warp][lane] = mx;
        __syncthreads();
        if (threadIdx.x < GM) {
            float cm = red_w[0][threadIdx.x];
            #pragma unroll
            for (int w = 1; w < ATT_WARPS; ++w) cm = fmaxf(cm, red_w[w][threadIdx.x]);
            const float before = s_max[threadIdx.x], now = fmaxf(before, cm);
            s_alpha[threadIdx.x] = expf(before - now);
            s_max[threadIdx.x] = now;
        }
        __syncthreads();
        const float mg = s_max[gi];
        float sum = 0.0f;
        for (int e = threadIdx.x; e < nc * GM; e += ATT_THREADS) {
            const float p = expf(sh[e] - mg);
            sh[e] = p;
            sum += p;
        }
        #pragma unroll
        for (int off = 16; off >= GM; off >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, off);
        if (lane < GM) red_w[warp][lane] = sum;
        __syncthreads();
        if (threadIdx.x < GM) {
            float cs = 0.0f;
            #pragma unroll
            for (int w = 0; w < ATT_WARPS; ++w) cs += red_w[w][threadIdx.x];
            s_sum[threadIdx.x] = s_sum[threadIdx.x] * s_alpha[threadIdx.x] + cs;
        }
        /* acc = alpha·acc + sum over the chunk of p·v */
        #pragma unroll
        for (int g = 0; g < GM; ++g) {
            const float a = s_alpha[g];
            #pragma unroll
            for (int e = 0; e < 8; ++e) acc[g][e] *= a;
        }
        for (int base = 0; base < nc; base += VPASS) {
            uint4 vv[NL];
            #pragma unroll
            for (int i = 0; i < NL; ++i) {
                const int r = base + i * (ATT_WARPS * RPW) + vrow;
                vv[i] = r < nc ? ld_stream(vp + (size_t)r * S + j) : zero;
            }
            #pragma unroll
            for (int i = 0; i < NL; ++i) {
                const int r = base + i * (ATT_WARPS * RPW) + vrow;
                if (r < nc) {
                    float p[GM], vf[8];
                    Probs<GM>::load(sh + r * GM, p);
                    T::cvt(vv[i], vf);
                    #pragma unroll
                    for (int g = 0; g < GM; ++g)
                        #pragma unroll
                        for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(p[g], vf[e], acc[g][e]);
                }
            }
        }
        __syncthreads();  /* the next chunk's scores overwrite sh */
    }

    /* sum over the rows: the lanes of a warp with the same dims, then the warps pairwise through sh */
    #pragma unroll
    for (int off = 16; off >= S; off >>= 1)
        #pragma unroll
        for (int g = 0; g < GM; ++g)
            #pragma unroll
            for (int e = 0; e < 8; ++e) acc[g][e] += __shfl_xor_sync(FULL_MASK, acc[g][e], off);
    #pragma unroll
    for (int half = ATT_WARPS / 2; half >= 1; half >>= 1) {
        if (warp >= half && warp < 2 * half && lane < S) {
            float4* dst = reinterpret_cast<float4*>(sh + (warp - half) * GM * D + 8 * j);
            #pragma unroll
            for (int g = 0; g < GM; ++g) {
                dst[g * (D / 4)] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
                dst[g * (D / 4) + 1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
            }
        }
        __syncthreads();
        if (warp < half && lane < S) {
            const float4* src = reinterpret_cast<const float4*>(sh + warp * GM * D + 8 * j);
            #pragma unroll
            for (int g = 0; g < GM; ++g) {
                const float4 lo = src[g * (D / 4)], hi = src[g * (D / 4) + 1];
                acc[g][0] += lo.x; acc[g][1] += lo.y; acc[g][2] += lo.z; acc[g][3] += lo.w;
                acc[g][4] += hi.x; acc[g][5] += hi.y; acc[g][6] += hi.z; acc[g][7] += hi.w;
            }
        }
        __syncthreads();
    }
    if (warp == 0 && lane < S) {
        #pragma unroll
        for (int g = 0; g < GM; ++g) {
            if (g < group) {
                const size_t head = head0 + g;
                if (splits == 1) {
                    const float l = s_sum[g];
                    float o[8];
                    #pragma unroll
                    for (int e = 0; e < 8; ++e) o[e] = acc[g][e] / l;
                    out[head * S + j] = pack8<T>(o);
                } else {
                    float4* dst = reinterpret_cast<float4*>(ws_o + (head * splits + split) * D + 8 * j);
                    dst[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
                    dst[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
                }
            }
        }
    }
    if (splits > 1 && (int)threadIdx.x < group) {
        ws_m[(head0 + threadIdx.x) * splits + split] = s_max[threadIdx.x];
        ws_l[(head0 + threadIdx.x) * splits + split] = s_sum[threadIdx.x];
    }
}

/* out[head] = sum_s e^(m_s - M)·o_s / sum_s e^(m_s - M)·l_s, M = max_s m_s; block (query head, sequence). */
template <typename T>
__device__ __forceinline__ void decode_attention_combine(const float* __restrict__ ws_o, const float* __restrict__ ws_m,
                                                         const float* __restrict__ ws_l, u16* __restrict__ out,
                                                         int splits, int d) {
    const size_t head = (size_t)blockIdx.y * gridDim.x + blockIdx.x;
    const float* m = ws_m + head * splits;
    const float* l = ws_l + head * splits;
    float mx = neg_inf();
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, m[s]);
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float num = 0.0f, den = 0.0f;
        for (int s = 0; s < splits; ++s) {
            const float w = expf(m[s] - mx);
            den = fmaf(w, l[s], den);
            num = fmaf(w, ws_o[(head * splits + s) * d + i], num);
        }
        out[head * d + i] = T::from_float(num / den);
    }
}

/* One block (a multiple of 32 threads, at most 1024) per row of h values. */
template <typename T>
__device__ __forceinline__ void add_rmsnorm(const u16* __restrict__ x, const u16* __restrict__ res,
                                            const u16* __restrict__ w, u16* __restrict__ out,
                                            u16* __restrict__ res_out, int h, float eps) {
    __shared__ float part[32];
    __shared__ float total;
    const size_t base = (size_t)blockIdx.x * h;
    const int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31;
    const bool vec = (h & 7) == 0;  /* rows start on 16 bytes */
    float ss = 0.0f;
    if (vec) {
        const uint4* xv = reinterpret_cast<const uint4*>(x + base);
        const uint4* rv = reinterpret_cast<const uint4*>(res + base);
        uint4* ov = reinterpret_cast<uint4*>(res_out + base);
        for (int i = tid; i < h / 8; i += nt) {
            float a[8], c[8], r[8];
            T::cvt(xv[i], a);
            T::cvt(rv[i], c);
            #pragma unroll
            for (int e = 0; e < 8; ++e) {
                r[e] = T::to_float(T::from_float(a[e] + c[e]));
                ss = fmaf(r[e], r[e], ss);
            }
            ov[i] = pack8<T>(r);
        }
    } else {
        for (int i = tid; i < h; i += nt) {
            const u16 r = T::from_float(T::to_float(x[base + i]) + T::to_float(res[base + i]));
            res_out[base + i] = r;
            const float rf = T::to_float(r);
            ss = fmaf(rf, rf, ss);
        }
    }
    #pragma unroll
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(FULL_MASK, ss, off);
    if (lane == 0) part[tid >> 5] = ss;
    __syncthreads();
    if (tid == 0) {
        float s = 0.0f;
        for (int i = 0; i < nt / 32; ++i) s += part[i];
        total = s;
    }
    __syncthreads();
    const float inv = 1.0f / sqrtf(total / (float)h + eps);
    if (vec) {
        const uint4* rv = reinterpret_cast<const uint4*>(res_out + base);  /* this thread's own stores */
        const uint4* wv = reinterpret_cast<const uint4*>(w);
        uint4* ov = reinterpret_cast<uint4*>(out + base);
        for (int i = tid; i < h / 8; i += nt) {
            float r[8], wf[8], o[8];
            T::cvt(rv[i], r);
            T::cvt(wv[i], wf);
            #pragma unroll
            for (int e = 0; e < 8; ++e) o[e] = r[e] * inv * wf[e];
            ov[i] = pack8<T>(o);
        }
    } else {
        for (int i = tid; i < h; i += nt)
            out[base + i] = T::from_float(T::to_float(res_out[base + i]) * inv * T::to_float(w[i]));
    }
}

/* Block (head hh of qkv's H_q + 2·H_kv, sequence b): q and k rotated (rotate-half) with cos_sin = [cos | sin]
   (d/2 each, fp32), v copied; q to (B, H_q, d), k and v to the caches (B, H_kv, t_max, d) at `position`. */
template <typename T>
__device__ __forceinline__ void rotary(const u16* __restrict__ qkv, const float* __restrict__ cs, u16* __restrict__ q,
                                       u16* __restrict__ kc, u16* __restrict__ vc, int position, int heads,
                                       int kv_heads, int d, int t_max) {
    const int hh = blockIdx.x, b = blockIdx.y, half = d / 2;
    const u16* src = qkv + (size_t)b * (size_t)(heads + 2 * kv_heads) * d + (size_t)hh * d;
    if (hh >= heads + kv_heads) {
        u16* dst = vc + (((size_t)b * kv_heads + (hh - heads - kv_heads)) * t_max + position) * d;
        for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = src[i];
        return;
    }
    u16* dst = hh < heads ? q + ((size_t)b * heads + hh) * d
                          : kc + (((size_t)b * kv_heads + (hh - heads)) * t_max + position) * d;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float x1 = T::to_float(src[i]), x2 = T::to_float(src[i + half]);
        const float c = cs[i], s = cs[i + half];
        dst[i] = T::from_float(fmaf(x1, c, -(x2 * s)));
        dst[i + half] = T::from_float(fmaf(x2, c, x1 * s));
    }
}

/* out (batch, f) = silu(g)·u of gate_up (batch, 2f) = [g | u]; grid-stride. */
template <typename T>
__device__ __forceinline__ void silu_mul(const u16* __restrict__ gu, u16* __restrict__ out, int batch, int f) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t i0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if ((f & 7) == 0) {
        const size_t fv = (size_t)f / 8, n = (size_t)batch * fv;
        const uint4* g4 = reinterpret_cast<const uint4*>(gu);
        uint4* o4 = reinterpret_cast<uint4*>(out);
        for (size_t i = i0; i < n; i += stride) {
            const size_t row = i / fv, c = i % fv;
            float g[8], u[8], o[8];
            T::cvt(g4[row * 2 * fv + c], g);
            T::cvt(g4[row * 2 * fv + fv + c], u);
            #pragma unroll
            for (int e = 0; e < 8; ++e) o[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
            o4[i] = pack8<T>(o);
        }
    } else {
        const size_t n = (size_t)batch * f;
        for (size_t i = i0; i < n; i += stride) {
            const size_t row = i / f, c = i % f;
            const float g = T::to_float(gu[row * 2 * f + c]), u = T::to_float(gu[row * 2 * f + f + c]);
            out[i] = T::from_float(g / (1.0f + expf(-g)) * u);
        }
    }
}

extern "C" __global__ void tick(u32* counter) { counter[0] += 1u; }
"""

_ATTENTION_INSTANCE = r"""
extern "C" __global__ void __launch_bounds__(ATT_THREADS) {name}(
        const uint4* __restrict__ q, const uint4* __restrict__ kc, const uint4* __restrict__ vc, uint4* __restrict__ out,
        float* __restrict__ ws_o, float* __restrict__ ws_m, float* __restrict__ ws_l, int context, int t_max,
        int split_len, int group) {{
    decode_attention<{t}, {d}, {g}>(q, kc, vc, out, ws_o, ws_m, ws_l, context, t_max, split_len, group);
}}
"""

_PER_DTYPE = r"""
extern "C" __global__ void decode_attention_combine_{dtype}(const float* __restrict__ ws_o, const float* __restrict__ ws_m,
        const float* __restrict__ ws_l, u16* __restrict__ out, int splits, int d) {{
    decode_attention_combine<{t}>(ws_o, ws_m, ws_l, out, splits, d);
}}
extern "C" __global__ void add_rmsnorm_{dtype}(const u16* __restrict__ x, const u16* __restrict__ res,
        const u16* __restrict__ w, u16* __restrict__ out, u16* __restrict__ res_out, int h, float eps) {{
    add_rmsnorm<{t}>(x, res, w, out, res_out, h, eps);
}}
extern "C" __global__ void rotary_{dtype}(const u16* __restrict__ qkv, const float* __restrict__ cs, u16* __restrict__ q,
        u16* __restrict__ kc, u16* __restrict__ vc, int position, int heads, int kv_heads, int d, int t_max) {{
    rotary<{t}>(qkv, cs, q, kc, vc, position, heads, kv_heads, d, t_max);
}}
extern "C" __global__ void silu_mul_{dtype}(const u16* __restrict__ gu, u16* __restrict__ out, int batch, int f) {{
    silu_mul<{t}>(gu, out, batch, f);
}}
"""

_STRUCTS = {"fp16": "F16", "bf16": "BF16"}


def attention_kernel_name(dtype: str, head_dim: int, group_bound: int) -> str:
    return f"decode_attention_{dtype}_d{head_dim}_g{group_bound}"


def attention_combine_name(dtype: str) -> str:
    return f"decode_attention_combine_{dtype}"


def attention_group_bound(group: int) -> int | None:
    """The smallest compiled bound of G (``ATTENTION_GROUPS``) that serves ``group`` query heads per KV head."""
    return next((g for g in ATTENTION_GROUPS if g >= group), None) if group >= 1 else None


def decode_kernel_name(kind: str, dtype: str) -> str:
    """``add_rmsnorm``, ``rotary`` or ``silu_mul`` in ``dtype``."""
    return f"{kind}_{dtype}"


def _source() -> str:
    parts = [PRELUDE, _DECODE]
    for dtype in DECODE_KERNEL_DTYPES:
        for d in ATTENTION_HEAD_DIMS:
            for g in ATTENTION_GROUPS:
                parts.append(_ATTENTION_INSTANCE.format(name=attention_kernel_name(dtype, d, g), t=_STRUCTS[dtype],
                                                        d=d, g=g))
        parts.append(_PER_DTYPE.format(dtype=dtype, t=_STRUCTS[dtype]))
    return "".join(parts)


def decode_module_source(name: str) -> str:
    """The part of ``DECODE_SOURCE`` that defines kernel ``name`` (with the kernels of its dtype that share its
    module): at first use NVRTC then instantiates one attention template, not all twenty."""
    if name not in DECODE_KERNEL_NAMES:
        raise KeyError(f"no decode kernel {name!r}")
    head = PRELUDE + _DECODE
    for dtype in DECODE_KERNEL_DTYPES:
        for d in ATTENTION_HEAD_DIMS:
            for g in ATTENTION_GROUPS:
                if name == attention_kernel_name(dtype, d, g):
                    return head + _ATTENTION_INSTANCE.format(name=name, t=_STRUCTS[dtype], d=d, g=g)
        if name.endswith(f"_{dtype}"):
            return head + _PER_DTYPE.format(dtype=dtype, t=_STRUCTS[dtype])
    return head  # tick


DECODE_SOURCE = _source()
DECODE_KERNEL_NAMES = tuple(
    [attention_kernel_name(t, d, g) for t in DECODE_KERNEL_DTYPES for d in ATTENTION_HEAD_DIMS for g in ATTENTION_GROUPS]
    + [f"{kind}_{t}" for t in DECODE_KERNEL_DTYPES
       for kind in ("decode_attention_combine", "add_rmsnorm", "rotary", "silu_mul")]
    + ["tick"])
