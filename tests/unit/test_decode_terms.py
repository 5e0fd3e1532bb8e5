"""The decode step's pricing (gpucal.plan.decode) and the fits that make its terms from probe results
(gpucal.calibrate.decode), on synthetic results whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpucal.calibrate.decode import (attention_terms, fit_row, gemm_curves, holdout_errors, host_allreduce_entries,
                                     launch_costs)
from gpucal.plan.decode import (AttentionFit, GemmCurve, GemmRow, LaunchCosts, attention_kv_bytes, kernel_time_s,
                                repeated_time_s, step_time_s)
from gpucal.probes.base import Result
from gpucal.probes.timing import Timing
from gpucal.profiles.model import CollectiveEntry, DecodeTerms


def _timing(t: float, n: int = 12) -> Timing:
    return Timing(tuple([t] * n), 1, 3, "virtual", False, 0.01)


def _result(probe, params, t, case="c", metrics=None) -> Result:
    return Result(probe, case, "passed", "virtual:test", "simulated", "dev", params=params, timing=_timing(t),
                  metrics=metrics or {}, library="lib")


# --- pricing ------------------------------------------------------------------------------------------

ROWS = (GemmRow(1, 5e-6, 3.0e12), GemmRow(4, 6e-6, 2.9e12), GemmRow(64, 8e-6, 2.0e12))


def test_curve_at_a_measured_m_is_its_row():
    curve = GemmCurve("bf16", ROWS)
    w = 64e6
    assert curve.time_s(4, w) == pytest.approx(6e-6 + w / 2.9e12)


def test_curve_interpolates_log_t_in_log_m():
    curve = GemmCurve("bf16", ROWS)
    w = 64e6
    ta, tb = ROWS[1].time_s(w), ROWS[2].time_s(w)
    f = (math.log(16) - math.log(4)) / (math.log(64) - math.log(4))
    assert curve.time_s(16, w) == pytest.approx(math.exp(math.log(ta) + f * (math.log(tb) - math.log(ta))))
    assert ta < curve.time_s(16, w) < tb


def test_curve_outside_the_grid():
    curve = GemmCurve("bf16", (GemmRow(2, 5e-6, 3e12), GemmRow(8, 6e-6, 2e12)))
    assert curve.time_s(1, 1e6) == curve.rows[0].time_s(1e6)
    assert curve.time_s(32, 1e6) == pytest.approx(curve.rows[-1].time_s(1e6) * 4)
    with pytest.raises(ValueError):
        curve.time_s(0, 1e6)


def test_curve_refuses_unsorted_rows():
    with pytest.raises(ValueError, match="increasing"):
        GemmCurve("bf16", (ROWS[1], ROWS[0]))


def test_attention_and_launch_pricing():
    kv = attention_kv_bytes(8, 2048, 8, 128, 2)
    assert kv == 2 * 8 * 2048 * 8 * 128 * 2
    assert AttentionFit(4e-6, 2.5e12).time_s(kv) == pytest.approx(4e-6 + kv / 2.5e12)
    costs = LaunchCosts(4e-6, 1.5e-6, 12e-6)
    assert kernel_time_s(1e-6, costs, graph=False) == 4e-6
    assert kernel_time_s(1e-6, costs, graph=True) == 1e-6
    # from an idle GPU: kernel 1 issued at 4 µs ends at 5; kernel 2 issued at 8 ends at 18
    assert step_time_s([1e-6, 10e-6], costs, graph=False) == pytest.approx(18e-6)
    # a long kernel first hides the next launches: 4 + 10, then the short one at max(14, 8) + 1
    assert step_time_s([10e-6, 1e-6], costs, graph=False) == pytest.approx(15e-6)
    assert step_time_s([1e-6, 10e-6], costs, graph=True) == pytest.approx(11e-6)
    assert repeated_time_s([1e-6, 10e-6], costs, graph=False) == pytest.approx(11e-6)  # GPU-bound
    assert repeated_time_s([1e-6, 1e-6, 1e-6], costs, graph=False) == pytest.approx(12e-6)  # host-bound
    assert repeated_time_s([1e-6, 10e-6], costs, graph=True) == pytest.approx(11e-6)


# --- fits ---------------------------------------------------------------------------------------------

TRUE = {1: (5e-6, 3.0e12), 4: (5.5e-6, 2.9e12), 16: (6e-6, 2.6e12), 64: (8e-6, 1.8e12)}
SHAPES = ((512, 512), (1024, 1024), (2048, 2048), (4096, 2048))


def _gemm_results(truth=TRUE, itemsize=2, dtype="bf16"):
    out = []
    for m, (a, b) in truth.items():
        for n, k in SHAPES:
            w = n * k * itemsize
            out.append(_result("decode-gemm", {"dtype": dtype, "m": m, "n": n, "k": k, "weight_bytes": w},
                               a + w / b, case=f"gemm-{dtype}-m{m}-{n}x{k}"))
    return out


def test_gemm_curve_recovers_each_row():
    curve = gemm_curves(_gemm_results(), "simulated")["bf16"]
    for row in curve["rows"]:
        a, b = TRUE[row["m"]]
        assert row["alpha_s"] == pytest.approx(a, rel=1e-6)
        assert row["beta_Bps"] == pytest.approx(b, rel=1e-6)
        assert len(row["points"]) == len(SHAPES)
    assert curve["shapes"] == [list(s) for s in sorted(SHAPES)]
    # exact affine rows: a shape held out is predicted exactly; an m held out only by interpolation
    assert curve["holdout_max_error_frac"] is not None


def test_gemm_curve_validates_in_the_model():
    terms = DecodeTerms.model_validate({"gemm": gemm_curves(_gemm_results(), "simulated")})
    assert [r.m for r in terms.gemm["bf16"].rows] == sorted(TRUE)


def test_holdout_error_finds_a_point_off_the_curve():
    results = _gemm_results()
    bad = results[5]  # m=4, one shape: 30 % slow
    results[5] = _result("decode-gemm", bad.params, bad.timing.median_s * 1.3, case=bad.case)
    curve = gemm_curves(results, "simulated")["bf16"]
    assert curve["holdout_max_error_frac"] > 0.2
    good = gemm_curves(_gemm_results(), "simulated")["bf16"]
    assert good["holdout_max_error_frac"] < curve["holdout_max_error_frac"]


def test_holdout_errors_of_exact_rows_are_zero_for_shapes():
    by_m = {1: [(w, 5e-6 + w / 3e12) for w in (1e6, 4e6, 8e6)]}
    assert max(holdout_errors(by_m)) == pytest.approx(0.0, abs=1e-9)


def test_fit_row_with_two_shapes_is_the_line_through_them():
    row, r2 = fit_row(8, [(1e6, 2e-6), (3e6, 4e-6)])
    assert row.alpha_s == pytest.approx(1e-6) and row.beta_Bps == pytest.approx(1e12) and r2 is None
    assert fit_row(8, [(1e6, 2e-6)]) is None
    assert fit_row(8, [(1e6, 4e-6), (3e6, 2e-6)]) is None  # no positive beta


def test_a_doubled_weight_declaration_shows_in_beta():
    """The curve's beta comes from the declared weight bytes: a declaration twice too large doubles it."""
    results = [_result("decode-gemm", dict(r.params, weight_bytes=2 * r.params["weight_bytes"]), r.timing.median_s)
               for r in _gemm_results()]
    row = gemm_curves(results, "simulated")["bf16"]["rows"][0]
    assert row["beta_Bps"] == pytest.approx(2 * TRUE[1][1], rel=1e-6)


def test_attention_fit():
    results = []
    for b in (1, 4, 8):
        for t in (256, 1024, 4096):
            kv = attention_kv_bytes(b, t, 2, 64, 2)
            results.append(_result("attention", {"dtype": "fp16", "kv_bytes": kv, "head_dim": 64}, 3e-6 + kv / 2e12,
                                   case=f"attn-b{b}-t{t}"))
    terms = attention_terms(results, "simulated")["fp16"]
    assert terms["alpha_s"]["value"] == pytest.approx(3e-6, rel=1e-6)
    assert terms["beta_Bps"]["value"] == pytest.approx(2e12, rel=1e-6)
    assert terms["alpha_s"]["source"] == "simulated" and terms["alpha_s"]["statistic"] == "fit"
    DecodeTerms.model_validate({"attention": {"fp16": terms}})


def test_launch_costs_and_a_missing_kind():
    results = [_result("launch", {"kind": "eager"}, 4e-6), _result("launch", {"kind": "graph"}, 1.5e-6)]
    costs = launch_costs(results, "simulated")
    assert costs["eager_s"]["value"] == 4e-6 and costs["graph_node_s"]["value"] == 1.5e-6
    assert costs["sync_s"]["value"] is None and costs["sync_s"]["reason"]
    DecodeTerms.model_validate({"launch": costs})
    assert launch_costs([], "simulated") is None


def test_host_allreduce_entries_fit_per_tp_and_graph():
    results = []
    for tp in (2, 4):
        for graph in (False, True):
            a, b = (20e-6 if not graph else 8e-6) * tp / 2, 100e9 / tp
            for s in (16384, 131072, 1048576, 8388608):
                t = a + s / b
                results.append(_result("allreduce", {"tp": tp, "devices": list(range(tp)), "bytes": s, "graph": graph},
                                       t, metrics={"algbw_Bps": s / t, "busbw_Bps": s / t}))
    entries = host_allreduce_entries(results, "simulated", "NCCL 2.x")
    assert [(e["nranks"], e["graphs"]) for e in entries] == [(2, False), (2, True), (4, False), (4, True)]
    for e in entries:
        model = CollectiveEntry.model_validate(e)
        assert model.single_process and model.hosts == 1 and model.devices == list(range(model.nranks))
        a = (20e-6 if not model.graphs else 8e-6) * model.nranks / 2
        assert model.alpha_s.value == pytest.approx(a, rel=1e-3)
        assert model.beta_Bps.value == pytest.approx(100e9 / model.nranks, rel=1e-3)


def test_decode_rows_must_increase_in_the_model():
    curve = gemm_curves(_gemm_results(), "simulated")["bf16"]
    curve["rows"] = list(reversed(curve["rows"]))
    with pytest.raises(Exception, match="increasing"):
        DecodeTerms.model_validate({"gemm": {"bf16": curve}})


def test_kv_bytes_counts_k_and_v():
    assert attention_kv_bytes(1, 1, 1, 1, 2) == 4
    assert np.isclose(attention_kv_bytes(3, 5, 2, 8, 2), 2 * 3 * 5 * 2 * 8 * 2)


def test_a_fixed_cost_below_zero_is_refitted_through_the_origin():
    """Points whose free line crosses below zero (an L2-fast small shape, noise): alpha held at 0, so that no GEMM
    is priced at less than nothing."""
    pts = [(8e6, 1e-6), (48e6, 12e-6), (224e6, 60e-6)]
    row, _ = fit_row(1, pts)
    assert row.alpha_s == 0.0
    g = sum(w / t for w, t in pts) / sum(w * w / (t * t) for w, t in pts)
    assert row.beta_Bps == pytest.approx(1.0 / g)
    assert row.time_s(1e6) > 1e-7


def test_a_row_without_a_positive_beta_is_recorded_as_dropped():
    results = _gemm_results()
    for i, r in enumerate(results):
        if r.params["m"] == 16:  # times that fall as W grows
            results[i] = _result("decode-gemm", r.params, 1e-3 / r.params["weight_bytes"], case=r.case)
    curve = gemm_curves(results, "simulated")["bf16"]
    assert [row["m"] for row in curve["rows"]] == [1, 4, 64]
    assert curve["dropped"] and curve["dropped"][0].startswith("m=16")
    assert curve["timed_as"] == "eager"  # the synthetic results say nothing: launched back to back
    DecodeTerms.model_validate({"gemm": {"bf16": curve}})


def test_a_holdout_above_the_target_says_so():
    good = _gemm_results({1: TRUE[1]})  # one m: each shape held out in turn, predicted exactly
    assert gemm_curves(good, "simulated")["bf16"]["holdout_max_error_frac"] == pytest.approx(0, abs=1e-9)
    assert "above" not in gemm_curves(good, "simulated")["bf16"]["holdout"]
    bad = list(good)
    bad[1] = _result("decode-gemm", bad[1].params, bad[1].timing.median_s * 1.3, case=bad[1].case)
    curve = gemm_curves(bad, "simulated")["bf16"]
    assert curve["holdout_max_error_frac"] > 0.05 and "above the 5 % target" in curve["holdout"]
