"""The measured step predicts what the machine runs: on a virtual machine of 8 cards whose decode kernels are
priced by a known truth (a decode-GEMM curve that loses bandwidth as m grows, attention and launch costs, a
one-host all-reduce per TP size, eager and in graphs), ``gpucal calibrate`` measures the profile, ``gpucal plan
--step measured`` plans from it, and ``gpucal probe decode`` runs a whole decoder layer there. The plan equals
the layer × the layers + the rest of the step (embedding, final norm, LM head, their all-reduce, the host's
round trip: priced by the same machine's kernels, not by the planner), within 3 %, at TP 1, 2, 4, 8 and batch
1 … 256, as graphs and eagerly.

The planner never sees the truth: it reads the calibrated profile, whose figures the probes measured on the
machine. A term the planner leaves out or counts twice (a GEMM, an all-reduce, a launch) moves the plan off the
layer by more than 3 % somewhere on this grid, and each of the plan's terms (the matrix products, attention, the
norms and activations, the all-reduces) equals the same kernels of the layer probe's parts × the layers + the
rest within 3 % too, so that a byte count off in a small term shows as well."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_gpucal

from gpucal.kernels.virtual import VirtualBackend
from gpucal.kernels.virtual_machine import Faults, VirtualMachine
from gpucal.plan.measured import shard_of
from gpucal.plan.models import ModelSpec
from gpucal.profiles import load_builtin
from gpucal.profiles.model import Profile

ROWS = [(1, 5.0e-6, 0.90e12), (4, 5.3e-6, 0.88e12), (16, 6.0e-6, 0.80e12), (64, 8.0e-6, 0.55e12)]
ATTN = (4.0e-6, 0.75e12)
LAUNCH = (5.0e-6, 1.8e-6, 15e-6)
AR = {2: ((20e-6, 120e9), (8e-6, 140e9)), 4: ((26e-6, 100e9), (11e-6, 110e9)), 8: ((34e-6, 80e9), (15e-6, 90e9))}
MODEL = {"schema": "gpucal.model/1", "name": "tiny-llama", "params": 3.9e6, "layers": 6, "hidden": 256, "heads": 8,
         "kv_heads": 8, "head_dim": 32, "vocab": 4096, "ffn": 704}
BATCHES = (1, 8, 64, 256)
CONTEXT = 256
TOLERANCE = 0.03
NOISE = "+noise=0.005+seed=7"  # each virtual timing off by up to 0.5 %
PARTS = {"gemm_time_s": ("qkv", "o_proj", "gate_up", "down"), "attention_time_s": ("attention",),
         "elementwise_time_s": ("add_rmsnorm", "rotary", "add_rmsnorm_mlp", "silu_mul"),
         "tp_comm_time_s": ("allreduce_attn", "allreduce_mlp")}


def _q(value):
    return {"value": value, "source": "simulated", "method": "given", "statistic": "median", "n": 10}


def _truth() -> dict:
    data = load_builtin("profile", "h200-sxm").profile.model_dump(mode="json", by_alias=True, exclude_unset=True)
    rows = [{"m": m, "alpha_s": a, "beta_Bps": b, "points": [[1e6, a + 1e6 / b]]} for m, a, b in ROWS]
    curve = {"source": "simulated", "method": "given", "byte_convention": "W/t", "shapes": [[512, 512]], "rows": rows}
    attention = {"alpha_s": _q(ATTN[0]), "beta_Bps": _q(ATTN[1]), "head_dim": 32, "points": []}
    data["devices"][0]["decode"] = {
        "gemm": {"fp16": curve, "bf16": curve}, "attention": {"fp16": attention, "bf16": attention},
        "launch": {"eager_s": _q(LAUNCH[0]), "graph_node_s": _q(LAUNCH[1]), "sync_s": _q(LAUNCH[2])}}
    data["collectives"] = [
        {"op": "all-reduce", "nranks": n, "hosts": 1, "graphs": graphs, "single_process": True,
         "devices": list(range(n)), "alpha_s": dict(_q(a), statistic="fit"), "beta_Bps": dict(_q(b), statistic="fit")}
        for n, fits in AR.items() for graphs, (a, b) in zip((False, True), fits)]
    data["name"] = "decode-truth"
    return data


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """The truth's file, the model's, and the profile ``gpucal calibrate --quick`` measured on the machine."""
    folder = tmp_path_factory.mktemp("measured-vm")
    truth = folder / "truth.json"
    truth.write_text(json.dumps(_truth()))
    model = folder / "tiny.json"
    model.write_text(json.dumps(MODEL))
    profile = folder / "calibrated.json"
    done = run_gpucal("calibrate", "--simulate", f"{truth}:8{NOISE}", "--quick", "--no-kernel-check", "-o", str(profile))
    assert done.returncode == 0, done.stderr
    return truth, model, profile


def _plan(profile, model, tp: int, batch: int, graphs: bool) -> dict:
    done = run_gpucal("plan", "--gpu", str(profile), "--model", str(model), "--cards", str(tp), "--strategy", "tp",
                      "--batch", str(batch), "--context", str(CONTEXT), "--dtype", "bf16", "--step", "measured",
                      "--graphs" if graphs else "--no-graphs", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _layers(truth, model, tp: int) -> dict:
    """The decode-layer probe's cases per (batch, mode) on the machine."""
    done = run_gpucal("probe", "decode", "--backend", f"virtual:{truth}:8{NOISE}", "--model", str(model), "--tp", str(tp),
                      "--batch", ",".join(map(str, BATCHES)), "--context", str(CONTEXT), "--dtype", "bf16", "--graph",
                      "--json")
    assert done.returncode == 0, done.stderr
    cases = json.loads(done.stdout)["cases"]
    assert all("not measured" not in str(c.get("allreduce", "")) for c in cases), cases
    return {(c["batch"], c["mode"]): c for c in cases}


def _rest(truth, tp: int, batch: int, graphs: bool) -> dict:
    """The step beyond its layers, priced by the machine's own kernels (their cost as graph nodes, and launched
    eagerly): the embedding lookup and its all-reduce, the final add+RMSNorm, the LM head, a graph launch or the
    first kernel's issue, and the host's round trip for the token; in total (``step_s``) and per term."""
    profile = Profile.model_validate(json.loads(truth.read_text()))
    backend = VirtualBackend(VirtualMachine(profile, "truth", 8, Faults()))
    spec = ModelSpec(**{k: v for k, v in MODEL.items() if k != "schema"}, source="test")
    shard = shard_of(spec, tp)
    h = spec.hidden
    x = backend.random_uniform((batch, h), "bf16", 1)
    w = backend.random_uniform((h, shard.vocab), "bf16", 2)
    logits = backend.full((batch, shard.vocab), np.uint16, 0)
    out, res = backend.full((batch, h), np.uint16, 0), backend.full((batch, h), np.uint16, 0)
    norm_w = backend.random_uniform((h,), "bf16", 3)
    kernels = [backend.add_rmsnorm_launcher(x, x, norm_w, out, res, "bf16", 1e-5),  # the final norm
               backend.decode_gemm_launcher(out, w, logits, "bf16")]  # the LM head over the card's vocabulary
    device = backend.machine.devices[0]
    launch = device.launch
    lookup_s = launch.graph_node_s + 2 * batch * h * 2 / device.memory_Bps  # the embedding: B rows read, written
    times = [k.seconds for k in kernels] + [lookup_s]
    terms = {"gemm_time_s": 0.0, "attention_time_s": 0.0, "elementwise_time_s": times[0] + lookup_s,
             "lm_head_time_s": times[1], "tp_comm_time_s": 0.0}
    if tp > 1:
        alpha, beta = AR[tp][1 if graphs else 0]
        times.append(alpha + batch * h * 2 / beta)
        terms["tp_comm_time_s"] = times[-1]
    if graphs:
        terms["step_s"] = launch.eager_s + sum(times) + launch.sync_s
    else:
        terms["step_s"] = launch.eager_s + sum(max(launch.eager_s, t) for t in times) + launch.sync_s
    return terms


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_the_measured_plan_is_the_decode_layer_times_the_layers_and_the_rest(machine, tp):
    truth, model, profile = machine
    layers = _layers(truth, model, tp)
    misses = []
    for batch in BATCHES:
        for graphs in (True, False):
            mode = "graph" if graphs else "eager"
            plan = _plan(profile, model, tp, batch, graphs)
            assert plan["step"] == "measured" and plan["fallbacks"] == [], plan["fallbacks"]
            case, rest = layers[(batch, mode)], _rest(truth, tp, batch, graphs)
            want = {"token_latency_s": MODEL["layers"] * case["layer_s"] + rest["step_s"],
                    "lm_head_time_s": rest["lm_head_time_s"], "layer_time_s": case["layer_s"]}
            seconds = {p["name"]: p["seconds"] for p in case["parts"]}
            for term, names in PARTS.items():
                want[term] = MODEL["layers"] * sum(seconds.get(n, 0.0) for n in names) + rest[term]
            for term, value in want.items():
                got = plan["token_latency_s"] if term == "token_latency_s" else plan["terms"][term]
                if value == 0.0:
                    if got != 0.0:
                        misses.append((batch, mode, term, got, value))
                elif abs(got / value - 1) > TOLERANCE:
                    misses.append((batch, mode, term, got, value, got / value))
    assert not misses, misses


def test_the_device_checks_plan_check_compares_the_plans_layer_with_the_probes(machine, tmp_path):
    """bench/plan_check.py (a step of bench/device_check.sh) on the virtual machine: the plan's layer beside the
    probe's, per batch and mode, within its 5 % target."""
    truth, model, profile = machine
    out = tmp_path / "plan_check.json"
    done = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "bench" / "plan_check.py"), "--gpu",
                           str(profile), "--backend", f"virtual:{truth}:8{NOISE}", "--model", str(model),
                           "--batch", "1,64", "--context", "64", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "target: the plan's layer within 5% of the probe's: met" in done.stdout, done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch"], r["mode"]) for r in rows] == [(1, "eager"), (1, "graph"), (64, "eager"), (64, "graph")]
    assert all(abs(r["plan_over_layer"] - 1) < 0.05 for r in rows), rows
