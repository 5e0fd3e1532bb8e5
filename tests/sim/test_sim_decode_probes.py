"""The decode probes on the CUDA simulator at tiny shapes: the decode layer (every part verified, the layer and
its parts timed), the launch probe and the decode-GEMM probe; and a launcher that writes the same kernel twice
with two configurations (the simulator keeps one configuration per kernel object) still computes both right."""

from __future__ import annotations

from gpucal.plan.models import ModelSpec
from gpucal.probes import decode_gemm, decode_layer, launch

TINY = ModelSpec("tiny", params=1e6, layers=2, hidden=16, heads=4, kv_heads=2, head_dim=4, vocab=100, ffn=40)


def test_decode_layer_on_the_simulator(simulator):
    results = decode_layer.run(simulator, decode_layer.DecodeLayerConfig(model=TINY, batches=(2,), contexts=(5,)))
    (r,) = results
    assert r.status == "passed", r.reason
    assert r.source == "simulated" and r.params["dtype"] == "fp16"
    names = [p["name"] for p in r.params["parts"]]
    assert names == ["add_rmsnorm", "qkv", "rotary", "attention", "o_proj", "add_rmsnorm_mlp", "gate_up", "silu_mul",
                     "down"]
    assert r.metrics["parts_s"] == sum(p["seconds"] for p in r.params["parts"])
    assert r.metrics["layer_over_parts"] == r.metrics["layer_s"] / r.metrics["parts_s"]
    assert r.params["allreduce"].startswith("not needed")


def test_decode_layer_tp2_without_devices_says_not_measured(simulator):
    shape = decode_layer.LayerShape.of(TINY, 2)
    assert (shape.heads, shape.kv_heads, shape.ffn) == (2, 1, 20)
    layer = decode_layer.build_layer(simulator, shape, 1, 3, "fp16", 0)
    assert layer.allreduce.startswith("not measured") and "1" in layer.allreduce
    assert "allreduce_attn" not in [p.name for p in layer.parts]


def test_launch_probe_on_the_simulator(simulator):
    results = {r.case: r for r in launch.run(simulator, launch.LaunchConfig())}
    assert results["eager"].status == "passed" and results["sync"].status == "passed"
    assert results["graph"].status == "waived" and "graph" in results["graph"].reason


def test_decode_gemm_probe_on_the_simulator(simulator):
    config = decode_gemm.DecodeGemmConfig(dtypes=("fp16", "bf16"), batches=(1, 3), shapes=((24, 16), (40, 16)))
    results = decode_gemm.run(simulator, config)
    passed = [r for r in results if r.status == "passed"]
    assert [(r.params["m"], r.params["n"]) for r in passed] == [(1, 24), (3, 24), (1, 40), (3, 40)]
    assert all(r.params["timed_as"] == "eager" for r in passed)
    r = passed[0]
    assert r.metrics["weight_Bps"] == r.params["weight_bytes"] / r.timing.median_s
    assert [r.status for r in results if r.params.get("dtype") == "bf16"] == ["waived"]
