"""The decode step's Numba CUDA kernels beside the GEMMs: attention, add_rmsnorm, rotary, silu_mul and tick.
Each computes exactly what ``decode_ref.py`` describes (layouts, fp32 arithmetic, rounding on store).

Written for the simulator's limits, as ``numba_kernels.py``: no warp shuffles (reductions go through shared
memory, a tree of ``syncthreads``), shared arrays of compile-time sizes. Kernels with shared memory are built
by a factory for a block size; the ``*_sim`` variants use smaller blocks (the simulator runs each thread as a
Python thread). Storage dtypes float16 and float32 (Numba has no bf16); every value is read into fp32.
``SIGNATURES`` lists, per kernel, the signatures compiled to PTX in the test suite (sm_80/89/90).

Importing this module imports numba: do it only once a Numba backend has been chosen.
"""

from __future__ import annotations

import math

from numba import cuda, float32, int32, uint32  # noqa: TID253 - a backend module: imported only where that backend is selected

__all__ = ["attention", "attention_sim", "add_rmsnorm", "add_rmsnorm_sim", "rotary", "silu_mul", "tick",
           "ATTENTION_BLOCK", "ATTENTION_BLOCK_SIM", "NORM_THREADS", "NORM_THREADS_SIM", "FLAT_THREADS",
           "FLAT_THREADS_SIM", "SIGNATURES"]

# attention: (threads per block, positions per chunk, largest head dimension); threads a power of two
ATTENTION_BLOCK = (128, 512, 256)
ATTENTION_BLOCK_SIM = (4, 8, 32)  # a chunk of 8 positions: contexts above 8 take the chunked path
NORM_THREADS = 256  # add_rmsnorm: threads per row (a power of two)
NORM_THREADS_SIM = 8
FLAT_THREADS = 256  # rotary, silu_mul: threads per block of a grid-stride loop
FLAT_THREADS_SIM = 16
LOWEST32 = float32(-3.4028234663852886e38)  # the identity of a max over finite fp32 scores


def _make_attention(threads: int, chunk: int, d_max: int):
    """Decode attention for blocks of ``threads`` threads: one block per (sequence b, query head g), grid
    (B, H_q). q·K over a chunk of ``chunk`` positions (a thread per position) into shared memory, then an
    online softmax: the running max m and sum l are rescaled by exp(m_old − m_new) at each chunk, as is the
    output accumulator (a thread per head dimension). Any context; head dimension at most ``d_max``."""

    @cuda.jit
    def attention(q, k_cache, v_cache, out, context, scale):
        """out[b, g] = softmax_t(q[b, g]·K[b, h, t]·scale)·V[b, h, t] over t < context, h = g // (H_q/H_kv)."""
        b = cuda.blockIdx.x
        g = cuda.blockIdx.y
        tid = cuda.threadIdx.x
        d_len = q.shape[2]
        h = g // (q.shape[1] // k_cache.shape[1])
        qs = cuda.shared.array(d_max, float32)
        acc = cuda.shared.array(d_max, float32)
        scores = cuda.shared.array(chunk, float32)
        red = cuda.shared.array(threads, float32)
        for d in range(tid, d_len, threads):
            qs[d] = float32(q[b, g, d])
            acc[d] = float32(0.0)
        cuda.syncthreads()
        m = float32(0.0)
        total = float32(0.0)
        for c0 in range(0, context, chunk):
            n = min(chunk, context - c0)
            local = LOWEST32
            for t in range(tid, n, threads):
                s = float32(0.0)
                for d in range(d_len):
                    s += qs[d] * float32(k_cache[b, h, c0 + t, d])
                s *= scale
                scores[t] = s
                local = max(local, s)
            red[tid] = local
            cuda.syncthreads()
            step = threads // 2
            while step > 0:
                if tid < step:
                    red[tid] = max(red[tid], red[tid + step])
                cuda.syncthreads()
                step //= 2
            m_new = red[0] if c0 == 0 else max(m, red[0])
            corr = float32(0.0) if c0 == 0 else float32(math.exp(m - m_new))
            cuda.syncthreads()  # every thread has read red[0] before it is overwritten
            part = float32(0.0)
            for t in range(tid, n, threads):
                p = float32(math.exp(scores[t] - m_new))
                scores[t] = p
                part += p
            red[tid] = part
            cuda.syncthreads()
            step = threads // 2
            while step > 0:
                if tid < step:
                    red[tid] += red[tid + step]
                cuda.syncthreads()
                step //= 2
            total = total * corr + red[0]
            m = m_new
            for d in range(tid, d_len, threads):
                a = acc[d] * corr
                for t in range(n):
                    a += scores[t] * float32(v_cache[b, h, c0 + t, d])
                acc[d] = a
            cuda.syncthreads()  # scores and red are free for the next chunk
        for d in range(tid, d_len, threads):
            out[b, g, d] = acc[d] / total

    return attention


def _make_add_rmsnorm(threads: int):
    """add_rmsnorm for blocks of ``threads`` threads: one block per row, the sum of squares reduced in
    shared memory."""

    @cuda.jit
    def add_rmsnorm(x, residual, weight, out, residual_out, eps):
        """residual_out = round(x + residual) (fp32 sum); out = round(r·(mean(r²) + eps)^(−1/2)·weight), r the
        stored residual_out (read back), the mean in fp32."""
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        hidden = x.shape[1]
        red = cuda.shared.array(threads, float32)
        sq = float32(0.0)
        for i in range(tid, hidden, threads):
            residual_out[row, i] = float32(x[row, i]) + float32(residual[row, i])
            r = float32(residual_out[row, i])
            sq += r * r
        red[tid] = sq
        cuda.syncthreads()
        step = threads // 2
        while step > 0:
            if tid < step:
                red[tid] += red[tid + step]
            cuda.syncthreads()
            step //= 2
        inv = float32(1.0) / math.sqrt(red[0] / float32(hidden) + eps)
        for i in range(tid, hidden, threads):
            out[row, i] = float32(residual_out[row, i]) * inv * float32(weight[i])

    return add_rmsnorm


attention = _make_attention(*ATTENTION_BLOCK)
attention_sim = _make_attention(*ATTENTION_BLOCK_SIM)
add_rmsnorm = _make_add_rmsnorm(NORM_THREADS)
add_rmsnorm_sim = _make_add_rmsnorm(NORM_THREADS_SIM)


@cuda.jit
def rotary(qkv, cos_sin, q, k_cache, v_cache, position):
    """Rotate-half of the q and k heads of qkv (B, (H_q + 2·H_kv)·D) with cos_sin (D,) = [cos… | sin…], fp32:
    q heads into q (B, H_q, D), k heads into k_cache[:, :, position]; v heads copied into v_cache[:, :,
    position]. A grid-stride loop: one item per rotated pair (i, i + D/2), then one per v value."""
    batch = qkv.shape[0]
    heads = q.shape[1]
    kv_heads = k_cache.shape[1]
    d_len = q.shape[2]
    half = d_len // 2
    rotated = heads + kv_heads
    n_rot = batch * rotated * half
    n_all = n_rot + batch * kv_heads * d_len
    for idx in range(cuda.grid(1), n_all, cuda.gridsize(1)):
        if idx < n_rot:
            i = idx % half
            rest = idx // half
            head = rest % rotated
            b = rest // rotated
            col = head * d_len + i
            x1 = float32(qkv[b, col])
            x2 = float32(qkv[b, col + half])
            c = cos_sin[i]
            s = cos_sin[half + i]
            y1 = x1 * c - x2 * s
            y2 = x2 * c + x1 * s
            if head < heads:
                q[b, head, i] = y1
                q[b, head, i + half] = y2
            else:
                k_cache[b, head - heads, position, i] = y1
                k_cache[b, head - heads, position, i + half] = y2
        else:
            j = idx - n_rot
            d = j % d_len
            rest = j // d_len
            h = rest % kv_heads
            b = rest // kv_heads
            v_cache[b, h, position, d] = qkv[b, (rotated + h) * d_len + d]


@cuda.jit
def silu_mul(gate_up, out):
    """out[b, j] = round(g / (1 + exp(−g)) · u), g = gate_up[b, j], u = gate_up[b, F + j], fp32; grid-stride."""
    batch, ffn = out.shape
    for idx in range(cuda.grid(1), batch * ffn, cuda.gridsize(1)):
        b = idx // ffn
        j = idx % ffn
        g = float32(gate_up[b, j])
        u = float32(gate_up[b, ffn + j])
        out[b, j] = g / (float32(1.0) + math.exp(-g)) * u


@cuda.jit
def tick(counter):
    """counter[0] += 1 (uint32, wrapping), by thread 0 of block 0 only."""
    if cuda.grid(1) == 0:
        counter[0] = counter[0] + uint32(1)


def _signatures():
    from numba.types import float16

    sigs = {}
    for name in ("attention", "attention_sim"):
        sigs[name] = [(t[:, :, ::1], t[:, :, :, ::1], t[:, :, :, ::1], t[:, :, ::1], int32, float32)
                      for t in (float16, float32)]
    for name in ("add_rmsnorm", "add_rmsnorm_sim"):
        sigs[name] = [(t[:, ::1], t[:, ::1], t[::1], t[:, ::1], t[:, ::1], float32) for t in (float16, float32)]
    sigs["rotary"] = [(t[:, ::1], float32[::1], t[:, :, ::1], t[:, :, :, ::1], t[:, :, :, ::1], int32)
                      for t in (float16, float32)]
    sigs["silu_mul"] = [(t[:, ::1], t[:, ::1]) for t in (float16, float32)]
    sigs["tick"] = [(uint32[::1],)]
    return sigs


SIGNATURES = _signatures()
