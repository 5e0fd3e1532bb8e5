"""Element types the kernels take, how they are stored, and their rounding units.

NumPy has no bfloat16, so bf16 arrays are stored as ``uint16`` holding the upper half of a float32
(the bf16 bit pattern); ``to_bf16_bits`` rounds to nearest even, ``from_bf16_bits`` is exact.
Device code reads the same bits. Names here are the profile's names (``fp16``, ``bf16``, ``fp32``,
``fp64``); tf32 is a GEMM mode over fp32 storage, not a storage type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DType", "DTYPES", "POISON", "dtype", "to_bf16_bits", "from_bf16_bits", "to_storage", "to_float64"]


@dataclass(frozen=True)
class DType:
    name: str
    storage: np.dtype  # how the bits are held on the host and the device
    itemsize_bytes: int
    eps: float  # unit roundoff (half the distance from 1 to the next number)


DTYPES = {
    "fp16": DType("fp16", np.dtype(np.float16), 2, 2.0 ** -11),
    "bf16": DType("bf16", np.dtype(np.uint16), 2, 2.0 ** -8),
    "fp32": DType("fp32", np.dtype(np.float32), 4, 2.0 ** -24),
    "fp64": DType("fp64", np.dtype(np.float64), 8, 2.0 ** -53),
}


# What outputs are filled with before a kernel runs (NaN, as stored): an element never written fails its check.
POISON = {"fp16": np.float16(np.nan), "bf16": np.uint16(0x7FC0), "fp32": np.float32(np.nan), "fp64": np.float64(np.nan)}


def dtype(name: str) -> DType:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (known: {', '.join(DTYPES)})") from None


def to_bf16_bits(values) -> np.ndarray:
    """float32 values rounded to bf16 (nearest, ties to even), as their uint16 bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(bits) -> np.ndarray:
    """bf16 bit patterns (uint16) as exact float32 values."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def to_storage(values: np.ndarray, name: str) -> np.ndarray:
    """float values rounded to ``name`` and held in its storage type."""
    if name == "bf16":
        return to_bf16_bits(values)
    return np.ascontiguousarray(values, dtype=dtype(name).storage)


def to_float64(stored, name: str, xp=np):
    """Stored values (NumPy or CuPy, per ``xp``) as float64, exactly."""
    if name == "bf16":
        return (xp.asarray(stored).astype(xp.uint32) << 16).view(xp.float32).astype(xp.float64)
    return xp.asarray(stored).astype(xp.float64)
