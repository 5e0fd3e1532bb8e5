"""The decode probes close the loop on the virtual machine: calibrating a machine built from a profile P gives
back P's decode terms (the decode-GEMM curve, attention, launch costs, the one-host all-reduce per TP size)
within 2 % under noise; and the decode-layer probe there equals the sum of its priced parts within 2 %, eager and
as graphs, with and without the all-reduce. The virtual machine prices every kernel from its arrays' shapes and
P's terms, never from what a probe declares, so a wrong declaration shows as a wrong figure."""

from __future__ import annotations

import dataclasses

import pytest

from gpucal.calibrate.decode import attention_terms, gemm_curves, host_allreduce_entries, launch_costs
from gpucal.kernels.virtual import VirtualBackend
from gpucal.kernels.virtual_machine import Faults, VirtualMachine
from gpucal.plan.decode import GemmCurve, GemmRow
from gpucal.plan.models import ModelSpec
from gpucal.probes import allreduce, attention, decode_gemm, decode_layer, launch
from gpucal.profiles import load_builtin
from gpucal.profiles.model import Profile

M_GRID = (1, 4, 16, 64)
ROWS = [(1, 5.0e-6, 0.90e12), (4, 5.3e-6, 0.88e12), (16, 6.0e-6, 0.80e12), (64, 8.0e-6, 0.55e12)]
ATTN = (4.0e-6, 0.75e12)
LAUNCH = (5.0e-6, 1.8e-6, 15e-6)
AR = {(2, False): (22e-6, 30e9), (2, True): (9e-6, 30e9)}


def _q(value, what):
    return {"value": value, "source": "simulated", "method": what, "statistic": "median", "n": 10}


def _truth() -> dict:
    rows = [{"m": m, "alpha_s": a, "beta_Bps": b, "points": [[1e6, a + 1e6 / b]]} for m, a, b in ROWS]
    curve = {"source": "simulated", "method": "given", "byte_convention": "W/t", "shapes": [[512, 512]], "rows": rows}
    return {"gemm": {"fp16": curve, "bf16": curve},
            "attention": {d: {"alpha_s": _q(ATTN[0], "given"), "beta_Bps": _q(ATTN[1], "given"), "head_dim": 64,
                              "points": []} for d in ("fp16", "bf16")},
            "launch": {"eager_s": _q(LAUNCH[0], "given"), "graph_node_s": _q(LAUNCH[1], "given"),
                       "sync_s": _q(LAUNCH[2], "given")}}


def _collectives() -> list:
    out = []
    for (n, graphs), (a, b) in AR.items():
        out.append({"op": "all-reduce", "nranks": n, "hosts": 1, "graphs": graphs, "single_process": True,
                    "devices": [0, 1], "alpha_s": {"value": a, "source": "simulated", "method": "given",
                                                   "statistic": "fit", "n": 5},
                    "beta_Bps": {"value": b, "source": "simulated", "method": "given", "statistic": "fit", "n": 5}})
    return out


def _backend(noise: float = 0.01, seed: int = 3) -> VirtualBackend:
    data = load_builtin("profile", "rtx4090").profile.model_dump(mode="json", by_alias=True, exclude_unset=True)
    data["devices"][0]["decode"] = _truth()
    data["collectives"] = _collectives()
    profile = Profile.model_validate(data)
    return VirtualBackend(VirtualMachine(profile, "p", 2, Faults(noise_frac=noise, seed=seed)))


def _close(got, want, rel=0.02):
    assert got == pytest.approx(want, rel=rel), (got, want)


def test_calibrating_gives_back_the_decode_gemm_curve():
    backend = _backend()
    config = decode_gemm.DecodeGemmConfig(dtypes=("bf16",), batches=M_GRID)
    results = decode_gemm.run(backend, config)
    assert all(r.status == "passed" for r in results), [r.reason for r in results if r.status != "passed"]
    assert {r.params["timed_as"] for r in results} == {"graph"}  # each GEMM a node of a replayed graph
    curve = gemm_curves(results, "simulated")["bf16"]
    truth = GemmCurve("bf16", tuple(GemmRow(m, a, b) for m, a, b in ROWS))
    got = GemmCurve("bf16", tuple(GemmRow(r["m"], r["alpha_s"], r["beta_Bps"]) for r in curve["rows"]))
    assert [r.m for r in got.rows] == list(M_GRID)
    for n, k in decode_gemm.default_shapes(backend):
        w = n * k * 2
        for m in M_GRID:
            _close(got.time_s(m, w), truth.time_s(m, w))
    for (m, a, b), row in zip(ROWS, got.rows):
        _close(row.beta_Bps, b, 0.03)  # the slope, from three shapes under 1 % noise per sample


def test_calibrating_gives_back_attention_and_launch_costs():
    backend = _backend()
    results = attention.run(backend, attention.AttentionConfig(dtypes=("fp16",)))
    terms = attention_terms(results, "simulated")["fp16"]
    _close(terms["alpha_s"]["value"], ATTN[0])
    _close(terms["beta_Bps"]["value"], ATTN[1])
    costs = launch_costs(launch.run(backend, launch.LaunchConfig()), "simulated")
    for key, want in zip(("eager_s", "graph_node_s", "sync_s"), LAUNCH):
        _close(costs[key]["value"], want)


def test_calibrating_gives_back_the_host_allreduce():
    backend = _backend()
    results = allreduce.run(backend, allreduce.AllreduceConfig(batches=(1, 4, 16, 64, 256, 1024)))
    assert all(r.status == "passed" for r in results), [r.reason for r in results if r.status != "passed"]
    entries = {(e["nranks"], e["graphs"]): e for e in host_allreduce_entries(results, "simulated", "virtual")}
    assert set(entries) == set(AR)
    for key, (a, b) in AR.items():
        _close(entries[key]["alpha_s"]["value"], a)
        _close(entries[key]["beta_Bps"]["value"], b)


SMALL = ModelSpec("small", params=1e8, layers=4, hidden=256, heads=8, kv_heads=2, head_dim=32, vocab=1000, ffn=512)


@pytest.mark.parametrize("tp", [1, 2])
def test_decode_layer_equals_the_sum_of_its_parts(tp):
    backend = _backend(noise=0.005)
    config = decode_layer.DecodeLayerConfig(model=SMALL, tp=tp, batches=(1, 16), contexts=(128,), graph=True)
    results = decode_layer.run(backend, config)
    assert len(results) == 4
    for r in results:
        assert r.status == "passed", r.reason
        _close(r.metrics["layer_over_parts"], 1.0)
        names = [p["name"] for p in r.params["parts"]]
        assert ("allreduce_attn" in names and "allreduce_mlp" in names) == (tp == 2)
        if tp == 2:
            assert r.params["allreduce"].startswith("measured")
    eager, graph = (next(r for r in results if r.params["mode"] == mode and r.params["batch"] == 1)
                    for mode in ("eager", "graph"))
    # batch 1 on this card is launch-bound eagerly (tp 1): the graph saves what the launches cost; with the
    # all-reduces (tp 2) the GPU's work is the bound either way
    if tp == 1:
        assert graph.metrics["layer_s"] < 0.9 * eager.metrics["layer_s"]
        assert eager.metrics["layer_s"] == pytest.approx(9 * LAUNCH[0], rel=0.02)  # 9 launches, 5 µs apart


def test_a_wrong_declaration_shows_as_a_wrong_figure(monkeypatch):
    """The probe's weight bytes declared twice too large: the virtual machine still prices the arrays, so the
    calibrated beta comes out doubled instead of returning P's."""
    backend = _backend(noise=0.0)
    real = decode_gemm._case

    def doubled(backend_, dtype, m, ws, w64, config):
        r = real(backend_, dtype, m, ws, w64, config)
        return dataclasses.replace(r, params=dict(r.params, weight_bytes=2 * r.params["weight_bytes"]))

    monkeypatch.setattr(decode_gemm, "_case", doubled)
    results = decode_gemm.run(backend, decode_gemm.DecodeGemmConfig(dtypes=("bf16",), batches=(1, 4)))
    row = gemm_curves(results, "simulated")["bf16"]["rows"][0]
    assert row["beta_Bps"] == pytest.approx(2 * ROWS[0][2], rel=1e-6)
