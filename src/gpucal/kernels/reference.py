"""Each kernel's reference (NumPy, or CuPy through ``xp``), its declared work, and the checks.

Work is declared once here, beside the reference, for a shape and dtype: bytes read, bytes written and
FLOP. The timing harness divides by time; nothing else counts bytes. References compute in float64 from
the exact stored inputs, so the tolerance only has to cover the kernel's own rounding:

    |got - ref| <= (eps_product + c * eps_acc * sqrt(k)) * (|A|·|B|)  +  eps_out * |ref|

(``eps_acc`` of the accumulator, ``eps_product`` for inputs rounded inside the unit (tf32), ``eps_out``
for the stored result, ``c`` = ``TOLERANCE_C``). Copies compare bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpucal.kernels.dtypes import DTYPES, to_float64

__all__ = ["Work", "Check", "GemmMode", "GEMM_MODES", "TOLERANCE_C", "stream_work", "gemv_work", "gemm_work",
           "Footprint", "stream_footprint", "gemm_footprint",
           "gemv_reference", "gemm_reference", "check_exact", "check_close", "gemm_tolerance", "write_pattern"]

TOLERANCE_C = 8.0


@dataclass(frozen=True)
class Work:
    """What one call of a kernel must move and compute, at the least."""

    bytes_read: int
    bytes_written: int
    flop: int

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written


@dataclass(frozen=True)
class Check:
    """A verification: ``ok``, and at the worst element its index, value, expected value and tolerance."""

    ok: bool
    method: str
    checked: int  # elements compared
    max_abs_err: float | None = None
    index: tuple[int, ...] | None = None
    got: float | None = None
    expected: float | None = None
    tolerance: float | None = None


@dataclass(frozen=True)
class GemmMode:
    """A GEMM's input/output storage and accumulation: the profile's FLOP/s key names it."""

    name: str
    dtype_in: str
    dtype_out: str
    acc: str  # accumulator dtype
    eps_product: float = 0.0  # rounding of inputs inside the unit (tf32 keeps 10 mantissa bits)


GEMM_MODES = {m.name: m for m in (
    GemmMode("fp64", "fp64", "fp64", "fp64"),
    GemmMode("fp32", "fp32", "fp32", "fp32"),
    GemmMode("tf32", "fp32", "fp32", "fp32", eps_product=2.0 * 2.0 ** -11),
    GemmMode("fp16_fp32acc", "fp16", "fp16", "fp32"),
    GemmMode("bf16_fp32acc", "bf16", "bf16", "fp32"),
    GemmMode("fp16_fp16acc", "fp16", "fp16", "fp16"),
)}

STREAM_KINDS = ("copy", "read", "write", "triad")


def stream_work(kind: str, n_bytes: int, partials_bytes: int = 0) -> Work:
    """copy: read n, write n; read: read n, write its partial results (4 B a block); write: write n;
    triad a = b + s·c over n bytes per array: read 2n, write n, 2 FLOP per element (fp32)."""
    if kind == "copy":
        return Work(n_bytes, n_bytes, 0)
    if kind == "read":
        return Work(n_bytes, partials_bytes, 0)
    if kind == "write":
        return Work(0, n_bytes, 0)
    if kind == "triad":
        return Work(2 * n_bytes, n_bytes, 2 * (n_bytes // 4))
    raise ValueError(f"unknown stream kernel {kind!r}")


WRITE_HASH = 2654435761


def write_pattern(n_words: int, seed: int, xp=np):
    """The words the ``write`` kernel stores: word i = (i·2654435761 mod 2³²) xor seed."""
    i = xp.arange(n_words, dtype=xp.uint64)
    return (((i * WRITE_HASH) & 0xFFFFFFFF) ^ seed).astype(xp.uint32)


def gemv_work(m: int, k: int, batch: int, dtype: str) -> Work:
    """Y (batch×m) = X (batch×k) · Wᵀ, W m×k: W, X read once, Y written once; 2·m·k FLOP per row of X."""
    size = DTYPES[dtype].itemsize_bytes
    return Work((m * k + batch * k) * size, batch * m * size, 2 * m * k * batch)


def gemm_work(m: int, n: int, k: int, mode: str, dtype_out: str | None = None) -> Work:
    """C (m×n) = A (m×k) · B (k×n): A, B read once, C written once (in ``dtype_out``, default the
    mode's); 2·m·n·k FLOP."""
    gm = GEMM_MODES[mode]
    size_in, size_out = DTYPES[gm.dtype_in].itemsize_bytes, DTYPES[dtype_out or gm.dtype_out].itemsize_bytes
    return Work((m * k + k * n) * size_in, m * n * size_out, 2 * m * n * k)


@dataclass(frozen=True)
class Footprint:
    """The memory one case holds at its peak: its arrays and its check's copies, on the device and on the
    host (where its inputs are drawn before they are copied over). An estimate for refusing what cannot fit
    before anything is allocated, not an accounting of the allocator."""

    device_bytes: int
    host_bytes: int


# Device bytes a stream case holds per byte of its buffer (measured with tracemalloc on the virtual backend,
# tests/unit/test_input_bounds.py): copy src + dst (+ the compare's mask); read src; write dst + the expected
# pattern (drawn in uint64); triad a, b, c, then the check's float64 b, c, reference, tolerance and a with their
# temporaries. The host draws the random source (uint64, then uint32): 3 bytes per byte.
_STREAM_DEVICE_PER_BYTE = {"copy": 2.25, "read": 1.0, "write": 7.25, "triad": 18.0}
_HOST_PER_BYTE = 3


def stream_footprint(kind: str, n_bytes: int) -> Footprint:
    """The peak memory of the ``kind`` stream case over ``n_bytes`` per buffer."""
    return Footprint(math.ceil(_STREAM_DEVICE_PER_BYTE[kind] * n_bytes), _HOST_PER_BYTE * n_bytes)


def gemm_footprint(m: int, n: int, k: int, size_in: int, size_out: int) -> Footprint:
    """The peak memory of C (m×n) = A (m×k)·B (k×n) and its check: the operands, then the float64 reference
    (A, B and their absolute values, C and |A|·|B|) or the tolerance's and the compare's float64 arrays of
    C's shape, whichever is larger. The host draws each input in float32 before rounding it."""
    operands = (m * k + k * n) * size_in + m * n * size_out
    check = max(16 * (m * k + k * n) + 16 * m * n, 48 * m * n)
    return Footprint(operands + check, (m * k + k * n) * (8 + size_in))


def gemv_reference(w, x, dtype: str, xp=np):
    """(Y = X·Wᵀ, |X|·|W|ᵀ) in float64 from the stored W (m×k) and X (batch×k)."""
    return gemm_reference(x, w.T, dtype, xp)


def gemm_reference(a, b, dtype_in: str, xp=np):
    """(C, |A|·|B|) in float64 from the stored A (m×k) and B (k×n)."""
    a64, b64 = to_float64(a, dtype_in, xp), to_float64(b, dtype_in, xp)
    return a64 @ b64, xp.abs(a64) @ xp.abs(b64)


def gemm_tolerance(mode: GemmMode, k: int, abs_product, ref, xp=np):
    """The elementwise bound of the module docstring (a GEMV is a GEMM with the mode's dtypes)."""
    eps_acc, eps_out = DTYPES[mode.acc].eps, DTYPES[mode.dtype_out].eps
    return (mode.eps_product + TOLERANCE_C * eps_acc * math.sqrt(k)) * abs_product + eps_out * xp.abs(ref) \
        + np.finfo(np.float64).tiny


def _worst(err, xp):
    flat = int(xp.argmax(err))
    return tuple(int(i) for i in np.unravel_index(flat, err.shape))


def check_exact(got, expected, method: str, xp=np) -> Check:
    """Bit-for-bit: every element equal (as stored)."""
    got, expected = xp.asarray(got), xp.asarray(expected)
    if got.shape != expected.shape:
        return Check(False, method, 0, index=None, got=None, expected=None)
    bad = got != expected
    n_bad = int(bad.sum())
    if n_bad == 0:
        return Check(True, method, int(got.size), max_abs_err=0.0, tolerance=0.0)
    idx = _worst(bad.astype(xp.int8), xp)
    return Check(False, method, int(got.size), index=idx, got=float(got[idx]), expected=float(expected[idx]),
                 tolerance=0.0, max_abs_err=None)


def check_close(got64, ref, tol, method: str, xp=np) -> Check:
    """Every |got - ref| <= tol (arrays of one shape, float64); NaN never passes."""
    err = xp.abs(got64 - ref)
    err = xp.where(xp.isnan(err), xp.inf, err)
    excess = err / tol
    idx = _worst(excess, xp)
    ok = bool(excess[idx] <= 1.0)
    return Check(ok, method, int(err.size), max_abs_err=float(err.max()), index=None if ok else idx,
                 got=None if ok else float(got64[idx]), expected=None if ok else float(ref[idx]),
                 tolerance=None if ok else float(tol[idx]))
