"""References, declared work and checks (pure NumPy: no device, no simulator)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpucal.kernels.dtypes import from_bf16_bits, to_bf16_bits, to_float64, to_storage
from gpucal.kernels.reference import (GEMM_MODES, Work, check_close, check_exact, gemm_reference, gemm_tolerance,
                                      gemm_work, gemv_reference, gemv_work, stream_work)
from gpucal.probes.base import Peak, rates
from gpucal.probes.membw import write_pattern


def test_bf16_rounds_to_nearest_even_and_back_exactly():
    values = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, 3.0e38, 1e-40], dtype=np.float32)
    bits = to_bf16_bits(values)
    assert list(bits[:4]) == [0x3F80, 0x3F80, 0x3F82, 0xC020]  # ties go to the even mantissa
    back = from_bf16_bits(bits)
    assert back[0] == 1.0 and back[3] == -2.5
    assert np.all(np.abs(back[:5] - values[:5]) <= np.abs(values[:5]) * 2**-8)
    assert abs(back[5] - values[5]) <= 2.0**-134  # subnormal: half of bf16's smallest step


@given(st.floats(min_value=float(np.float32(-1e30)), max_value=float(np.float32(1e30)), allow_nan=False, width=32))
def test_bf16_round_trip_error_is_at_most_half_an_ulp(x):
    value = np.array([x], dtype=np.float32)
    back = from_bf16_bits(to_bf16_bits(value))[0]
    assert abs(float(back) - x) <= abs(x) * 2.0**-8 + 2.0**-134


def test_declared_work():
    assert gemv_work(m=16384, k=8192, batch=1, dtype="fp16").bytes_read == (16384 * 8192 + 8192) * 2
    assert gemv_work(4, 8, 3, "fp32").bytes_written == 3 * 4 * 4
    assert gemv_work(4, 8, 3, "fp32").flop == 2 * 4 * 8 * 3
    w = gemm_work(8192, 8192, 8192, "bf16_fp32acc")
    assert w.flop == 2 * 8192**3 and w.bytes_read == 2 * 8192**2 * 2 and w.bytes_written == 8192**2 * 2
    assert gemm_work(2, 3, 4, "fp64").bytes_moved == (2 * 4 + 4 * 3 + 2 * 3) * 8
    assert stream_work("copy", 1000).bytes_moved == 2000
    assert stream_work("triad", 400) == type(stream_work("triad", 400))(800, 400, 200)
    with pytest.raises(ValueError):
        stream_work("scale", 10)


def test_write_pattern_is_never_constant_and_wraps_at_32_bits():
    words = write_pattern(8, 0)
    assert words.dtype == np.uint32 and words[0] == 0 and len(set(words.tolist())) == 8
    assert all(int(words[i]) == i * int(words[1]) % 2**32 for i in range(8))  # i·h wraps at 32 bits from i = 2
    assert int(words[1]) * 2 >= 2**32  # so the wrap is exercised
    assert np.array_equal(write_pattern(8, 5), words ^ np.uint32(5))


def test_check_exact_names_the_first_difference():
    a = np.arange(10, dtype=np.uint32)
    b = a.copy()
    b[7] = 99
    c = check_exact(b, a, "bit-exact")
    assert not c.ok and c.index == (7,) and c.got == 99 and c.expected == 7
    assert check_exact(a, a.copy(), "bit-exact").ok


def test_check_close_fails_on_nan_and_on_an_error_above_tolerance():
    ref = np.ones((2, 3))
    tol = np.full((2, 3), 1e-3)
    got = ref.copy()
    got[1, 2] = np.nan
    c = check_close(got, ref, tol, "t")
    assert not c.ok and c.index == (1, 2)
    got[1, 2] = 1.002
    c = check_close(got, ref, tol, "t")
    assert not c.ok and c.tolerance == pytest.approx(1e-3) and c.expected == 1.0
    got[1, 2] = 1.0005
    assert check_close(got, ref, tol, "t").ok


@pytest.mark.parametrize("mode", ["fp32", "fp16_fp32acc", "bf16_fp32acc", "tf32", "fp16_fp16acc"])
def test_tolerance_accepts_the_rounded_result_and_rejects_a_real_error(mode):
    """A GEMM computed in float64 and rounded to the output type passes; one element off by 1 % fails."""
    gm = GEMM_MODES[mode]
    rng = np.random.default_rng(0)
    a = to_storage(rng.random((6, 64), dtype=np.float32) * 2 - 1, gm.dtype_in)
    b = to_storage(rng.random((64, 5), dtype=np.float32) * 2 - 1, gm.dtype_in)
    ref, absp = gemm_reference(a, b, gm.dtype_in)
    rounded = to_float64(to_storage(ref.astype(np.float32), gm.dtype_out), gm.dtype_out)
    tol = gemm_tolerance(gm, 64, absp, ref)
    assert check_close(rounded, ref, tol, "t").ok
    wrong = rounded.copy()
    wrong[3, 2] += 0.05 * absp[3, 2] + 0.05
    assert not check_close(wrong, ref, tol, "t").ok


def test_gemv_reference_is_x_times_w_transposed():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = np.array([[1, 0, 2]], dtype=np.float32)
    ref, abs_product = gemv_reference(w, x, "fp32")
    assert ref.tolist() == [[4.0, 13.0]] and abs_product.tolist() == [[4.0, 13.0]]
    ref, abs_product = gemv_reference(w, -x, "fp32")
    assert ref.tolist() == [[-4.0, -13.0]] and abs_product.tolist() == [[4.0, 13.0]]


def test_rates_come_from_the_declared_work_and_name_their_peak():
    r = rates(Work(3000, 1000, 0), 2e-6, Peak("dram_Bps", 4e9, "test peak"), {"copy_Bps": 5e8})
    assert r["dram_Bps"] == pytest.approx(2e9) and "flops" not in r and r["copy_Bps"] == 5e8
    assert r["efficiency_frac"] == pytest.approx(0.5) and r["peak_ref"] == "test peak"
    g = rates(gemm_work(2, 3, 4, "fp32"), 1e-9, None)
    assert g["flops"] == pytest.approx(48e9) and g["efficiency_frac"] is None and g["peak_value"] is None
