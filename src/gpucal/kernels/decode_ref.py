"""The decode step's kernels beside the GEMMs: what each computes (its NumPy reference, in float64 from the
stored inputs), its declared work and its check. Every backend's kernel computes exactly this; the probes
(``probes/attention.py``, ``probes/launch.py``, ``probes/decode_layer.py``) verify against it.

Layouts (row-major, one decode token per sequence; B sequences, h hidden, H_q query heads and H_kv KV heads
of the card, D per head, T positions of context, T_max positions the cache holds, F the card's FFN):

- ``add_rmsnorm(x, residual, weight) -> (out, residual_out)``: r = round(x + residual) (the sum of the
  stored values in fp32, stored in the dtype) is ``residual_out``; ``out = round(r / sqrt(mean(r²) + eps)
  · weight)``, the mean in fp32. x, residual, out, residual_out (B, h); weight (h,). Out of place, so that
  repeating it (timing) gives the same outputs.
- ``rotary(qkv, cos_sin, position) -> q, K[:, :, position], V[:, :, position]``: qkv (B, (H_q + 2·H_kv)·D)
  holds the q heads, then the k heads, then the v heads (each D values). q and k are rotated (rotate-half,
  as GPT-NeoX and Llama: for i < D/2, x'ᵢ = xᵢ·cᵢ − x_{i+D/2}·sᵢ and x'_{i+D/2} = x_{i+D/2}·cᵢ + xᵢ·sᵢ),
  with ``cos_sin`` (D,) float32 = [cos θ₀ … cos θ_{D/2−1}, sin θ₀ … sin θ_{D/2−1}], θᵢ = position ·
  base^(−2i/D), computed on the host (``cos_sin_table``) as servers keep a cos/sin cache; q (B, H_q, D) is
  written, k and v go into the caches K, V (B, H_kv, T_max, D) at ``position``. fp32 arithmetic.
- ``attention(q, K, V, context) -> out``: for each sequence and query head g (KV head g // (H_q/H_kv): GQA),
  softmax over the positions t < ``context`` of q·K[t]/sqrt(D), times V. q, out (B, H_q, D). fp32 arithmetic,
  exp accurate (not the fast intrinsic); a backend may split the context into pieces and combine them.
- ``silu_mul(gate_up) -> out``: gate_up (B, 2F) = [g | u]; out (B, F) = round(g / (1 + exp(−g)) · u), fp32.
- ``tick(counter)``: one thread adds 1 to ``counter[0]`` (uint32): the smallest kernel that does verifiable
  work, for the launch probe.
"""

from __future__ import annotations

import math

import numpy as np

from gpucal.kernels.dtypes import DTYPES, to_float64
from gpucal.kernels.reference import TOLERANCE_C, Check, Work, check_close, check_exact

__all__ = ["DECODE_DTYPES", "RMS_EPS", "ROPE_BASE", "TICK_POISON", "qkv_width", "cos_sin_table",
           "attention_work", "add_rmsnorm_work", "rotary_work", "silu_mul_work", "tick_work",
           "attention_reference", "add_rmsnorm_reference", "rotary_reference", "silu_mul_reference",
           "check_attention", "check_add_rmsnorm", "check_rotary", "check_silu_mul", "check_tick",
           "attention_convention"]

DECODE_DTYPES = ("fp16", "bf16", "fp32")
RMS_EPS = 1e-5
ROPE_BASE = 500000.0  # Llama 3's rope_theta
TICK_POISON = 0xDEADBEEF  # the counter's value before the first tick
_EPS32 = DTYPES["fp32"].eps


def qkv_width(heads: int, kv_heads: int, head_dim: int) -> int:
    """Columns of the QKV projection's output: (H_q + 2·H_kv)·D."""
    return (heads + 2 * kv_heads) * head_dim


def cos_sin_table(position: int, head_dim: int, base: float = ROPE_BASE) -> np.ndarray:
    """[cos θᵢ…, sin θᵢ…] (D,) float32 for ``position``, θᵢ = position·base^(−2i/D), i < D/2 (in float64, then
    rounded)."""
    if head_dim % 2:
        raise ValueError(f"head_dim: rotary needs an even head dimension, got {head_dim}")
    i = np.arange(head_dim // 2, dtype=np.float64)
    theta = position * base ** (-2.0 * i / head_dim)
    return np.concatenate([np.cos(theta), np.sin(theta)]).astype(np.float32)


# --- declared work ---------------------------------------------------------------------------------

def _size(dtype: str) -> int:
    return DTYPES[dtype].itemsize_bytes


def attention_work(batch: int, heads: int, kv_heads: int, head_dim: int, context: int, dtype: str) -> Work:
    """q and K, V over ``context`` positions read, out written; 4·B·H_q·T·D FLOP (q·k and p·v)."""
    s = _size(dtype)
    kv = 2 * batch * kv_heads * context * head_dim * s
    return Work(kv + batch * heads * head_dim * s, batch * heads * head_dim * s, 4 * batch * heads * context * head_dim)


def attention_convention() -> str:
    return "kv_Bps = 2·B·H_kv·T·D·itemsize / t (K and V read once); dram_Bps = (KV + q + out)/t"


def add_rmsnorm_work(batch: int, hidden: int, dtype: str) -> Work:
    """x, residual and weight read; out and residual_out written; about 4 FLOP per element."""
    s = _size(dtype)
    return Work((2 * batch * hidden + hidden) * s, 2 * batch * hidden * s, 4 * batch * hidden)


def rotary_work(batch: int, heads: int, kv_heads: int, head_dim: int, dtype: str) -> Work:
    """qkv and the cos/sin table read; q and the cache rows of k and v written; 3 FLOP per rotated value."""
    s = _size(dtype)
    width = qkv_width(heads, kv_heads, head_dim)
    return Work(batch * width * s + head_dim * 4, batch * width * s, 3 * batch * (heads + kv_heads) * head_dim)


def silu_mul_work(batch: int, ffn: int, dtype: str) -> Work:
    """gate_up read, out written; about 5 FLOP per output (exp counted as one)."""
    s = _size(dtype)
    return Work(2 * batch * ffn * s, batch * ffn * s, 5 * batch * ffn)


def tick_work() -> Work:
    return Work(4, 4, 0)


# --- references (float64 from the stored values, through ``xp``) ---------------------------------------

def _round(values64, dtype: str, xp):
    """float64 values as the kernel stores them (rounded to ``dtype``), back in float64."""
    if dtype == "bf16":
        bits = values64.astype(xp.float32).view(xp.uint32)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return (bits.astype(xp.uint32) << 16).view(xp.float32).astype(xp.float64)
    return values64.astype(DTYPES[dtype].storage).astype(xp.float64)


def add_rmsnorm_reference(x, residual, weight, dtype: str, eps: float = RMS_EPS, xp=np):
    """(out, residual_out, |r|·|weight|/rms) in float64: r is rounded to the dtype as the kernel stores it."""
    r = _round(to_float64(x, dtype, xp) + to_float64(residual, dtype, xp), dtype, xp)
    w = to_float64(weight, dtype, xp)
    inv = 1.0 / xp.sqrt(xp.mean(r * r, axis=-1, keepdims=True) + eps)
    return r * inv * w, r, xp.abs(r) * inv * xp.abs(w)


def rotary_reference(qkv, cos_sin, heads: int, kv_heads: int, head_dim: int, dtype: str, xp=np):
    """(q, k, v) in float64: q (B, H_q, D) and k (B, H_kv, D) rotated, v (B, H_kv, D) as stored; and |q|, |k|
    bounds (|x|·|c| + |x'|·|s|) for the tolerance."""
    b = qkv.shape[0]
    t = to_float64(qkv, dtype, xp).reshape(b, heads + 2 * kv_heads, head_dim)
    cs = xp.asarray(cos_sin).astype(xp.float64)
    half = head_dim // 2
    c, s = cs[:half], cs[half:]

    def rotate(x):
        x1, x2 = x[..., :half], x[..., half:]
        out = xp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
        bound = xp.concatenate([xp.abs(x1 * c) + xp.abs(x2 * s), xp.abs(x2 * c) + xp.abs(x1 * s)], axis=-1)
        return out, bound

    q, qb = rotate(t[:, :heads])
    k, kb = rotate(t[:, heads:heads + kv_heads])
    return q, k, t[:, heads + kv_heads:], qb, kb


def attention_reference(q, k_cache, v_cache, context: int, dtype: str, xp=np):
    """(out, sum_t p_t·|v_t|, max |score|) in float64 over the positions < ``context``; GQA: query head g
    reads KV head g // (H_q/H_kv)."""
    qd = to_float64(q, dtype, xp)  # (B, Hq, D)
    kd = to_float64(k_cache[:, :, :context], dtype, xp)  # (B, Hkv, T, D)
    vd = to_float64(v_cache[:, :, :context], dtype, xp)
    b, hq, d = qd.shape
    hkv = kd.shape[1]
    g = hq // hkv
    qg = qd.reshape(b, hkv, g, d)
    scores = xp.einsum("bhgd,bhtd->bhgt", qg, kd) / math.sqrt(d)
    p = xp.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    out = xp.einsum("bhgt,bhtd->bhgd", p, vd).reshape(b, hq, d)
    abs_out = xp.einsum("bhgt,bhtd->bhgd", p, xp.abs(vd)).reshape(b, hq, d)
    return out, abs_out, float(xp.abs(scores).max())


def silu_mul_reference(gate_up, dtype: str, xp=np):
    """(out, |out|) in float64: silu(g)·u of the stored gate_up (B, 2F)."""
    t = to_float64(gate_up, dtype, xp)
    f = t.shape[-1] // 2
    g, u = t[..., :f], t[..., f:]
    out = g / (1.0 + xp.exp(-g)) * u
    return out, xp.abs(out)


# --- checks ---------------------------------------------------------------------------------------------

def _eps_out(dtype: str) -> float:
    return DTYPES[dtype].eps


_SUBNORMAL_HALF_ULP = {"fp16": 2.0 ** -25, "bf16": 2.0 ** -134, "fp32": 2.0 ** -150}


def _floor(dtype: str) -> float:
    """The rounding error of a stored value at the bottom of the dtype's range (half its smallest subnormal)."""
    return _SUBNORMAL_HALF_ULP[dtype]


def check_add_rmsnorm(out, residual_out, x, residual, weight, dtype: str, eps: float = RMS_EPS, xp=np) -> Check:
    """residual_out bit for bit (the stored sum); out within fp32 arithmetic and the output's rounding."""
    ref, r, bound = add_rmsnorm_reference(x, residual, weight, dtype, eps, xp)
    got_r = to_float64(residual_out, dtype, xp)
    first = check_close(got_r, r, _eps_out(dtype) * xp.abs(r) + _floor(dtype), "residual_out: round(x + residual)", xp)
    if not first.ok:
        return first
    hidden = ref.shape[-1]
    tol = _eps_out(dtype) * xp.abs(ref) + TOLERANCE_C * _EPS32 * math.sqrt(hidden) * bound + _floor(dtype)
    return check_close(to_float64(out, dtype, xp), ref, tol,
                       "float64 reference; tolerance eps_out·|out| + 8·eps32·sqrt(h)·|r||w|/rms", xp)


def check_rotary(q_out, k_cache, v_cache, position: int, qkv, cos_sin, heads: int, kv_heads: int, head_dim: int,
                 dtype: str, xp=np) -> Check:
    """q and the cache rows at ``position``: within fp32 arithmetic and the output's rounding; v bit for bit."""
    q, k, v, qb, kb = rotary_reference(qkv, cos_sin, heads, kv_heads, head_dim, dtype, xp)
    e = _eps_out(dtype)
    method = "float64 reference; tolerance eps_out·|x'| + 4·eps32·(|x c| + |x' s|)"
    checks = (
        check_close(to_float64(q_out, dtype, xp), q, e * xp.abs(q) + 4 * _EPS32 * qb + _floor(dtype), "q: " + method, xp),
        check_close(to_float64(k_cache[:, :, position], dtype, xp), k, e * xp.abs(k) + 4 * _EPS32 * kb + _floor(dtype),
                    "k: " + method, xp),
        check_exact(xp.asarray(v_cache[:, :, position]),
                    xp.asarray(qkv).reshape(qkv.shape[0], heads + 2 * kv_heads, head_dim)[:, heads + kv_heads:],
                    "v: bit-exact copy into the cache", xp),
    )
    bad = next((c for c in checks if not c.ok), None)
    if bad is not None:
        return bad
    return Check(True, "q, k: " + method + "; v: bit-exact", sum(c.checked for c in checks),
                 max_abs_err=max(c.max_abs_err or 0.0 for c in checks))


def check_attention(out, q, k_cache, v_cache, context: int, dtype: str, xp=np) -> Check:
    ref, abs_out, max_score = attention_reference(q, k_cache, v_cache, context, dtype, xp)
    d = ref.shape[-1]
    rel = TOLERANCE_C * _EPS32 * (math.sqrt(d) * max(max_score, 1.0) + math.sqrt(context))
    tol = _eps_out(dtype) * xp.abs(ref) + rel * abs_out + _floor(dtype)
    return check_close(to_float64(out, dtype, xp), ref, tol, "float64 reference; tolerance eps_out·|out| + "
                       "8·eps32·(sqrt(D)·max|s| + sqrt(T))·sum p|v|", xp)


def check_silu_mul(out, gate_up, dtype: str, xp=np) -> Check:
    ref, mag = silu_mul_reference(gate_up, dtype, xp)
    tol = _eps_out(dtype) * mag + 16 * _EPS32 * mag + _floor(dtype)
    return check_close(to_float64(out, dtype, xp), ref, tol, "float64 reference; tolerance (eps_out + 16·eps32)·|out|",
                       xp)


def check_tick(counter_host: np.ndarray, ticks: int) -> Check:
    """The counter after ``ticks`` ticks from ``TICK_POISON`` (mod 2³²)."""
    want = np.asarray([(TICK_POISON + ticks) % 2 ** 32], dtype=np.uint32)
    return check_exact(np.asarray(counter_host[:1], dtype=np.uint32), want, f"counter = poison + {ticks}")
