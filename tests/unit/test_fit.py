"""The alpha-beta fit: exact recovery, recovery under noise, residuals, r2, and every refusal."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpucal.calibrate.fit import AlphaBetaFit, FitError, _weighted_r2, fit_alpha_beta
from gpucal.errors import InputError

SMALLEST_BYTES = 4
LARGEST_BYTES = 1 << 28  # 256 MiB
POWERS_OF_2_BYTES = [float(1 << k) for k in range(2, 29)]  # 4 B .. 256 MiB

alphas_s = st.floats(-7.0, -3.0).map(lambda e: 10.0**e)  # 100 ns .. 1 ms, log-uniform
betas_Bps = st.floats(8.0, 12.0).map(lambda e: 10.0**e)  # 100 MB/s .. 1 TB/s, log-uniform
sweeps_bytes = st.lists(st.integers(SMALLEST_BYTES, LARGEST_BYTES), min_size=3, max_size=12, unique=True)


def model_s(alpha_s, beta_Bps, sizes_bytes):
    return [alpha_s + n / beta_Bps for n in sizes_bytes]


# --- exact data -----------------------------------------------------------------------------------------


def test_known_numbers_are_recovered_exactly():
    sizes = [4, 4096, 1 << 20, 1 << 28]
    fit = fit_alpha_beta(sizes, model_s(10e-6, 25e9, sizes))
    assert fit.alpha_s == pytest.approx(10e-6, rel=1e-12)
    assert fit.beta_Bps == pytest.approx(25e9, rel=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.n == 4 and fit.sizes_bytes == (4.0, 4096.0, 1048576.0, 268435456.0)
    assert max(abs(r) for r in fit.residuals_frac) < 1e-14
    assert fit.predict_s(1 << 30) == pytest.approx(10e-6 + (1 << 30) / 25e9, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(alpha_s=alphas_s, beta_Bps=betas_Bps, sizes=sweeps_bytes)
def test_exact_data_is_reproduced_at_every_size(alpha_s, beta_Bps, sizes):
    """Any sweep, however narrow: the fitted line goes through every exact point.

    alpha and beta themselves are only asked of sweeps that determine them (next test): three sizes
    packed near 256 MiB leave alpha below float rounding of the times, and no fit can recover it.
    """
    times = model_s(alpha_s, beta_Bps, sizes)
    fit = fit_alpha_beta(sizes, times)
    for n, t in zip(sizes, times):
        assert fit.predict_s(n) == pytest.approx(t, rel=1e-10)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(alpha_s=alphas_s, beta_Bps=betas_Bps,
       inner=st.lists(st.integers(SMALLEST_BYTES + 1, LARGEST_BYTES - 1), min_size=1, max_size=10,
                             unique=True))
def test_exact_data_over_the_full_range_recovers_alpha_and_beta(alpha_s, beta_Bps, inner):
    """A sweep from 4 B to 256 MiB (any sizes between): alpha is most of t(4 B) and n/beta a sizeable
    part of t(256 MiB) everywhere in the parameter box, so both are fixed to near float precision."""
    sizes = [SMALLEST_BYTES, *inner, LARGEST_BYTES]
    fit = fit_alpha_beta(sizes, model_s(alpha_s, beta_Bps, sizes))
    assert fit.alpha_s == pytest.approx(alpha_s, rel=1e-9)
    assert fit.beta_Bps == pytest.approx(beta_Bps, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_accepted_fit_is_monotone_with_r2_in_range(data):
    """Arbitrary positive times: the fit is refused for not growing, or it never predicts less for more."""
    sizes = data.draw(st.lists(st.integers(0, LARGEST_BYTES), min_size=3, max_size=12, unique=True))
    times = data.draw(st.lists(st.floats(1e-7, 1.0), min_size=len(sizes), max_size=len(sizes)))
    try:
        fit = fit_alpha_beta(sizes, times)
    except FitError as exc:
        assert "do not grow with size" in str(exc)
        return
    assert fit.beta_Bps > 0
    grid = sorted({0, *sizes, 2 * LARGEST_BYTES})
    predicted = [fit.predict_s(n) for n in grid]
    assert all(a <= b for a, b in zip(predicted, predicted[1:]))
    assert -1e-12 <= fit.r2 <= 1.0 + 1e-12


# --- noisy data -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha_s, beta_Bps", [(10e-6, 25e9), (2e-6, 300e9), (5e-6, 10e9)])
@pytest.mark.parametrize("seed", range(5))
def test_recovery_within_2_percent_under_5_percent_noise(alpha_s, beta_Bps, seed):
    """Each size timed 31 times with 5 % multiplicative Gaussian noise; the median goes to the fit."""
    rng = np.random.default_rng(seed)
    sizes = np.array(POWERS_OF_2_BYTES)
    clean_s = alpha_s + sizes / beta_Bps
    samples_s = clean_s[:, None] * (1.0 + 0.05 * rng.standard_normal((len(sizes), 31)))
    fit = fit_alpha_beta(sizes, np.median(samples_s, axis=1))
    assert fit.alpha_s == pytest.approx(alpha_s, rel=0.02)
    assert fit.beta_Bps == pytest.approx(beta_Bps, rel=0.02)
    assert 0.99 < fit.r2 < 1.0


# --- residuals and r2 -----------------------------------------------------------------------------------


def test_residuals_are_per_point_in_input_order_with_fit_minus_measured_sign():
    order = [5, 0, 26, 13, 2, 20, 9, 17, 1, 24]
    sizes = [POWERS_OF_2_BYTES[i] for i in order]
    times = model_s(10e-6, 25e9, sizes)
    times[3] *= 1.10  # measured slower than the line: the fit under-predicts it
    fit = fit_alpha_beta(sizes, times)
    assert len(fit.residuals_frac) == fit.n == len(sizes)
    assert fit.sizes_bytes == tuple(sizes) and fit.times_s == tuple(times)
    for r, n, t in zip(fit.residuals_frac, sizes, times):
        assert r == pytest.approx((fit.predict_s(n) - t) / t, rel=1e-9, abs=1e-15)
    assert fit.residuals_frac[3] < -0.05
    assert fit.to_dict()["max_abs_residual_frac"] == pytest.approx(abs(fit.residuals_frac[3]))


def test_r2_is_one_for_clean_data_and_falls_for_noise_and_garbage():
    sizes = np.array(POWERS_OF_2_BYTES)
    clean_s = np.array(model_s(10e-6, 25e9, sizes))
    noisy_s = clean_s * (1.0 + 0.05 * np.random.default_rng(7).standard_normal(len(sizes)))
    garbage_s = clean_s * np.where(np.arange(len(sizes)) % 2 == 0, 3.0, 1.0 / 3.0)
    r2_clean = fit_alpha_beta(sizes, clean_s).r2
    r2_noisy = fit_alpha_beta(sizes, noisy_s).r2
    r2_garbage = fit_alpha_beta(sizes, garbage_s).r2
    assert r2_clean == pytest.approx(1.0, abs=1e-12)
    assert 0.9 < r2_noisy < r2_clean
    assert r2_garbage < 0.5


def test_r2_when_all_times_are_equal():
    times = np.array([3e-6, 3e-6, 3e-6])
    assert _weighted_r2(np.zeros(3), times) == 1.0
    assert _weighted_r2(np.array([0.1, -0.1, 0.0]), times) == 0.0


def test_alpha_is_kept_raw_when_noise_makes_it_negative():
    sizes = [1 << 20, 1 << 24, 1 << 28]
    times = [(1 << 20) / 25e9 * 0.9, (1 << 24) / 25e9, (1 << 28) / 25e9]
    fit = fit_alpha_beta(sizes, times)
    assert fit.alpha_s < 0
    assert fit.to_dict()["alpha_s"] == fit.alpha_s


def test_to_dict_is_json_ready():
    sizes = [4, 4096, 1 << 20, 1 << 28]
    fit = fit_alpha_beta(sizes, model_s(10e-6, 25e9, sizes))
    d = json.loads(json.dumps(fit.to_dict()))
    assert set(d) == {"alpha_s", "beta_Bps", "r2", "n", "max_abs_residual_frac", "residuals_frac", "points",
                      "method"}
    assert d["points"] == [[float(n), t] for n, t in zip(fit.sizes_bytes, fit.times_s)]
    assert d["n"] == 4 and len(d["residuals_frac"]) == 4
    assert d["alpha_s"] == fit.alpha_s and d["beta_Bps"] == fit.beta_Bps and d["r2"] == fit.r2
    assert d["method"] == "least squares of t = alpha + n/beta, weighted by 1/t (relative error)"


def test_fit_is_frozen():
    fit = fit_alpha_beta([4, 4096, 1 << 20], model_s(10e-6, 25e9, [4, 4096, 1 << 20]))
    assert isinstance(fit, AlphaBetaFit)
    with pytest.raises(AttributeError):
        fit.alpha_s = 0.0


# --- refusals -------------------------------------------------------------------------------------------

GOOD_SIZES = [4, 4096, 1 << 20, 1 << 28]
GOOD_TIMES = model_s(10e-6, 25e9, GOOD_SIZES)


@pytest.mark.parametrize("sizes, times, message", [
    ([4, 4096], GOOD_TIMES[:2], "at least 3 points"),
    ([], [], "at least 3 points"),
    (GOOD_SIZES, GOOD_TIMES[:3], "sizes_bytes has 4 values but times_s has 3"),
    ([4, math.nan, 1 << 20, 1 << 28], GOOD_TIMES, r"sizes_bytes\[1\] = nan"),
    ([4, 4096, math.inf, 1 << 28], GOOD_TIMES, r"sizes_bytes\[2\] = inf"),
    ([-4, 4096, 1 << 20, 1 << 28], GOOD_TIMES, r"sizes_bytes\[0\] = -4"),
    (GOOD_SIZES, [1e-5, 0.0, 1e-4, 1e-2], r"times_s\[1\] = 0"),
    (GOOD_SIZES, [1e-5, 2e-5, -1e-4, 1e-2], r"times_s\[2\] = -0.0001"),
    (GOOD_SIZES, [1e-5, 2e-5, 1e-4, math.nan], r"times_s\[3\] = nan"),
    (GOOD_SIZES, [math.inf, 2e-5, 1e-4, 1e-2], r"times_s\[0\] = inf"),
    ([4, 4, 4096, 4096], GOOD_TIMES, "at least 3 distinct sizes, got 2"),
    ([4, 4, 4], GOOD_TIMES[:3], "at least 3 distinct sizes, got 1"),
    (GOOD_SIZES, GOOD_TIMES[::-1], "do not grow with size"),
    (GOOD_SIZES, [1e-5] * 4, "do not grow with size"),
    (["4", "x", 8, 16], GOOD_TIMES, "sizes_bytes: not a list of numbers"),
    (GOOD_SIZES, [[1e-5, 2e-5]] * 4, "times_s: expected a flat list"),
])
def test_refusals_name_the_problem_on_one_line(sizes, times, message):
    with pytest.raises(FitError, match=message) as info:
        fit_alpha_beta(sizes, times)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, InputError) and info.value.exit_code == 2


# --- regimes: t = alpha_i + n/beta_i per piece, breakpoints from the data ---------------------------------

from gpucal.calibrate.fit import (  # noqa: E402
    MIN_PIECE_SIZES,
    PiecewiseFit,
    fit_pieces,
    median_noise_frac,
)

NET_SWEEP = [float(1 << k) for k in range(3, 27)]  # 8 B .. 64 MiB, as the network probe sweeps


def regimes_s(sizes, pieces):
    """Times of a curve given as [(from_bytes, alpha_s, beta_Bps), ...] (first piece from 0)."""
    out = []
    for n in sizes:
        _, alpha_s, beta_Bps = [p for p in pieces if p[0] <= n][-1]
        out.append(alpha_s + n / beta_Bps)
    return out


def test_a_straight_line_keeps_one_piece():
    fit = fit_pieces(POWERS_OF_2_BYTES, model_s(10e-6, 25e9, POWERS_OF_2_BYTES))
    assert isinstance(fit, PiecewiseFit) and len(fit.pieces) == 1 and fit.breakpoints_bytes == ()
    assert fit.alpha_s == pytest.approx(10e-6, rel=1e-9) and fit.beta_Bps == pytest.approx(25e9, rel=1e-9)
    assert fit.pieces[0] == fit.line and not fit.poor


def test_an_mpi_protocol_switch_is_found_where_it_is():
    """Eager below 8 KiB (1.6 µs, 8 GB/s), rendezvous above (4 µs, 14 GB/s): one line misstates beta."""
    curve = [(0, 1.6e-6, 8e9), (8192, 4e-6, 14e9)]
    fit = fit_pieces(NET_SWEEP, regimes_s(NET_SWEEP, curve))
    assert len(fit.pieces) == 2 and fit.breakpoints_bytes == (8192.0,)
    for piece, (_, alpha_s, beta_Bps) in zip(fit.pieces, curve):
        assert piece.alpha_s == pytest.approx(alpha_s, rel=1e-6) and piece.beta_Bps == pytest.approx(beta_Bps, rel=1e-6)
        assert piece.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.alpha_s == pytest.approx(1.6e-6, rel=1e-6) and fit.beta_Bps == pytest.approx(14e9, rel=1e-6)
    assert abs(fit.line.beta_Bps / 14e9 - 1) > 0.05  # the one line is off: that is why there are pieces
    assert fit.r2 == pytest.approx(1.0, abs=1e-9) and fit.max_abs_residual_frac < 1e-6 and not fit.poor


def test_three_regimes():
    curve = [(0, 2e-6, 5e9), (4096, 6e-6, 12e9), (1 << 20, 40e-6, 20e9)]
    fit = fit_pieces(NET_SWEEP, regimes_s(NET_SWEEP, curve))
    assert fit.breakpoints_bytes == (4096.0, float(1 << 20))
    assert [p.beta_Bps for p in fit.pieces] == pytest.approx([5e9, 12e9, 20e9], rel=1e-6)


def test_a_size_takes_the_piece_it_falls_in():
    fit = fit_pieces(NET_SWEEP, regimes_s(NET_SWEEP, [(0, 1.6e-6, 8e9), (8192, 4e-6, 14e9)]))
    assert fit.piece_for(1) is fit.pieces[0] and fit.piece_for(8191) is fit.pieces[0]
    assert fit.piece_for(8192) is fit.pieces[1] and fit.piece_for(1 << 30) is fit.pieces[1]
    assert fit.predict_s(100_000) == pytest.approx(4e-6 + 100_000 / 14e9, rel=1e-6)
    assert fit.predict_s(64) == pytest.approx(1.6e-6 + 64 / 8e9, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_noise_at_the_harness_level_makes_no_regimes(seed):
    rng = np.random.default_rng(seed)
    times = np.array(model_s(10e-6, 25e9, POWERS_OF_2_BYTES)) * (1 + 0.01 * rng.standard_normal(len(POWERS_OF_2_BYTES)))
    assert len(fit_pieces(POWERS_OF_2_BYTES, times).pieces) == 1


def test_pieces_need_enough_sizes_each():
    sizes = POWERS_OF_2_BYTES[: 2 * MIN_PIECE_SIZES - 1]
    curve = [(0, 1e-6, 1e9), (sizes[MIN_PIECE_SIZES - 1], 50e-6, 20e9)]
    fit = fit_pieces(sizes, regimes_s(sizes, curve))
    assert len(fit.pieces) == 1 and fit.poor  # too few sizes for two pieces of MIN_PIECE_SIZES: the line, poor


def test_a_curve_no_piece_describes_is_flagged_poor():
    sizes = POWERS_OF_2_BYTES
    times = np.array(model_s(10e-6, 25e9, sizes))
    times[len(sizes) // 2] *= 1.6  # one point 60 % off
    fit = fit_pieces(sizes, times)
    assert fit.poor and fit.max_abs_residual_frac > 0.10


def test_the_dict_has_every_piece_and_is_json_ready():
    fit = fit_pieces(NET_SWEEP, regimes_s(NET_SWEEP, [(0, 1.6e-6, 8e9), (8192, 4e-6, 14e9)]))
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["breakpoints_bytes"] == [8192.0] and d["poor_fit"] is False
    assert [(p["lo_bytes"], p["hi_bytes"], p["n"]) for p in d["pieces"]] == [(8.0, 4096.0, 10), (8192.0, 1 << 26, 14)]
    assert d["alpha_s"] == fit.pieces[0].alpha_s and d["beta_Bps"] == fit.pieces[1].beta_Bps
    assert d["line"]["beta_Bps"] == fit.line.beta_Bps and len(d["points"]) == len(NET_SWEEP)


def test_pieces_refuse_what_the_line_refuses():
    with pytest.raises(FitError, match="at least 3 points"):
        fit_pieces([4, 8], [1e-6, 2e-6])


@pytest.mark.parametrize("seed", [1, 29, 38, 50, 53])
def test_a_wobble_of_noise_is_no_regime(seed):
    """A straight line with 3 % noise per point, seeds where the best split beats one line on BIC at the 2 %
    floor: its pieces differ by under 15 % in beta and at the breakpoint, so they are not regimes."""
    rng = np.random.default_rng(seed)
    times = np.array(model_s(1e-5, 25e9, POWERS_OF_2_BYTES)) * (1 + 0.03 * rng.standard_normal(len(POWERS_OF_2_BYTES)))
    fit = fit_pieces(POWERS_OF_2_BYTES, times)
    assert len(fit.pieces) == 1 and fit.beta_Bps == pytest.approx(25e9, rel=0.05)


def test_the_points_noise_raises_the_floor():
    rng = np.random.default_rng(3)
    curve = [(0, 5e-6, 10e9), (65536, 5e-6, 14e9)]
    times = np.array(regimes_s(POWERS_OF_2_BYTES, curve)) * (1 + 0.03 * rng.standard_normal(len(POWERS_OF_2_BYTES)))
    assert len(fit_pieces(POWERS_OF_2_BYTES, times).pieces) == 2  # read as 2 regimes at the 2 % floor
    assert len(fit_pieces(POWERS_OF_2_BYTES, times, noise_frac=0.10).pieces) == 1  # within 10 % noise: one line


def test_median_noise_frac_is_the_rms_standard_error_of_the_medians():
    # sqrt(pi/2)·CV/sqrt(n): 0.04/sqrt(4) and 0.06/sqrt(9) are both 0.02; a point of one sample has no CV
    assert median_noise_frac([0.04, 0.06], [4, 9]) == pytest.approx(math.sqrt(math.pi / 2) * 0.02, rel=1e-12)
    assert median_noise_frac([float("inf"), 0.03], [1, 9]) == pytest.approx(math.sqrt(math.pi / 2) * 0.01)
    assert median_noise_frac([float("inf")], [1]) is None


def test_points_in_any_order_give_the_same_pieces_with_aligned_residuals():
    curve = [(0, 1.6e-6, 8e9), (8192, 4e-6, 14e9)]
    times = regimes_s(NET_SWEEP, curve)
    order = np.random.default_rng(0).permutation(len(NET_SWEEP))
    shuffled = fit_pieces(np.asarray(NET_SWEEP)[order], np.asarray(times)[order])
    straight = fit_pieces(NET_SWEEP, times)
    assert shuffled.breakpoints_bytes == straight.breakpoints_bytes
    d = shuffled.to_dict()
    assert [p[0] for p in d["points"]] == sorted(NET_SWEEP)
    assert d["residuals_frac"] == pytest.approx(straight.to_dict()["residuals_frac"], abs=1e-12)
