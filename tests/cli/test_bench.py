"""The benchmark scripts run (their speed targets are theirs to report, not a test's to time)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from gpucal.kernels.backend import select
from gpucal.plan.models import ModelSpec
from gpucal.probes.base import policy_for
from gpucal.probes.decode_layer import LayerShape
from gpucal.probes.timing import measure

ROOT = Path(__file__).resolve().parents[2]


def test_plan_sweep_benchmark_runs_100k_configurations():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "plan_sweep.py"), "--repeat", "1", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["configurations"] >= 100_000


# --- bench/device_check.sh: its control flow, dry (every step an echo), without a GPU or the wheels ---

DEVICE_CHECK = ROOT / "bench" / "device_check.sh"
DEVICE_STEPS = {"1": ["install", "imports", "info", "calibrate", "plan_check", "pytest", "gpu_check", "p2p"],
                "2": ["install", "imports", "pytest_mpi", "collectives", "net", "net_pingpong", "copy_variants",
                      "gemv_variants"]}


def _device_check(out, *args, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("DEVICE_CHECK_")}
    full.update(DEVICE_CHECK_DRY_RUN="1", OUT=str(out), PYTHON=sys.executable, **env)
    return subprocess.run(["bash", str(DEVICE_CHECK), *args], capture_output=True, text=True, env=full, timeout=120)


def _step_lines(summary):
    return {m["name"]: m for m in re.finditer(r"^(?P<name>\w+) +exit +(?P<rc>\d+) +[\d.]+ s of +(?P<limit>\d+) s +"
                                               r"(?P<state>\w+)", summary, re.M)}


@pytest.mark.parametrize("phase", ["1", "2"])
def test_device_check_dry_run_leaves_one_archive_and_one_summary(tmp_path, phase):
    out = tmp_path / "out"
    proc = _device_check(out, *(("--phase", phase) if phase == "2" else ()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"phase{phase}.tar.gz", f"summary{phase}.txt"]
    summary = (out / f"summary{phase}.txt").read_text()
    assert proc.stdout.rstrip().endswith(summary.rstrip())  # printed last
    steps = _step_lines(summary)
    assert list(steps) == DEVICE_STEPS[phase]
    assert all(m["rc"] == "0" and m["state"] == "passed" for m in steps.values())
    timeouts = re.search(r"^timeouts: (\d+) s of 600 s", summary, re.M)
    assert timeouts and int(timeouts[1]) == sum(int(m["limit"]) for m in steps.values())
    assert int(timeouts[1]) <= 330  # a rerun of the phase fits in the session's 15 minutes with the first try
    assert re.search(r"^facts: gpu .*\| date: \d{4}-\d\d-\d\dT.*\| git: ", summary, re.M)
    with tarfile.open(out / f"phase{phase}.tar.gz") as tar:
        names = tar.getnames()
    logs = [f"phase{phase}/{i:02d}-{name}.log" for i, name in enumerate(DEVICE_STEPS[phase], 1)]
    assert sorted(n for n in names if n.endswith(".log")) == sorted(logs)
    assert f"phase{phase}/summary{phase}.txt" in names and all(n.startswith(f"phase{phase}") for n in names)
    # the stdout stays short: a line per step, then the summary
    assert len(proc.stdout) < 12_000 and "dry run: would run" not in proc.stdout.split(summary.splitlines()[0])[0]


def test_device_check_goes_on_past_a_failed_step_and_exits_1(tmp_path):
    proc = _device_check(tmp_path, DEVICE_CHECK_DRY_RUN_FAIL="pytest,p2p")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = _step_lines((tmp_path / "summary1.txt").read_text())
    assert list(steps) == DEVICE_STEPS["1"]  # every step ran
    assert {n for n, m in steps.items() if m["state"] != "passed"} == {"pytest", "p2p"}
    assert steps["pytest"]["rc"] == "3" and steps["calibrate"]["state"] == "passed"
    assert "2 failed: pytest (exit 3), p2p (exit 3)" in proc.stdout


def test_device_check_stops_at_once_with_one_line_naming_a_missing_import(tmp_path):
    proc = _device_check(tmp_path, DEVICE_CHECK_DRY_RUN_IMPORTS="json no_such_module_here")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    said = [line for line in proc.stdout.splitlines() if "missing" in line]
    assert len(said) == 1 and "no_such_module_here" in said[0] and "json" not in said[0].split("missing")[1]
    assert list(_step_lines((tmp_path / "summary1.txt").read_text())) == ["install", "imports"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phase1.tar.gz", "summary1.txt"]


@pytest.mark.parametrize("args", [("--phase", "3"), ("--phase",), ("--fast",)])
def test_device_check_refuses_a_bad_argument_with_one_line_and_exit_2(tmp_path, args):
    proc = _device_check(tmp_path / "out", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "device_check" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_device_check_phase_1_runs_the_decode_checks_with_their_outputs_in_work(tmp_path):
    """The decode terms come from calibrate --quick (its profile and plots), the plan beside the decode layer from
    plan_check.py on that profile (plan_check.json), the decode layer, its PyTorch comparison and the launch probe
    from gpu_check.py --quick (gpu_check.json): all written under work/, packed."""
    out = tmp_path / "out"
    proc = _device_check(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with tarfile.open(out / "phase1.tar.gz") as tar:
        logs = {Path(m.name).name: tar.extractfile(m).read().decode() for m in tar.getmembers()
                if m.name.endswith(".log")}
    work = re.escape(str(out / "work"))
    assert re.search(rf"calibrate --quick -o {work}/h200\.json --force --plots {work}/plots$",
                     logs["04-calibrate.log"], re.M)
    assert re.search(rf"bench/plan_check\.py --gpu {work}/h200\.json --out {work}/plan_check\.json$",
                     logs["05-plan_check.log"], re.M)  # the plan on the profile just calibrated
    assert re.search(rf"bench/gpu_check\.py --quick --out {work}/gpu_check\.json$", logs["07-gpu_check.log"], re.M)


# --- bench/gpu_check.py: the parts that run without a GPU (the virtual machine; PyTorch on the CPU where present) ---

def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ModelSpec(name="tiny", params=1e6, layers=1, hidden=64, heads=4, kv_heads=2, head_dim=16, vocab=100, ffn=96,
                 source="a test's")


def test_gpu_check_compares_the_gemv_with_the_decode_gemm_on_the_same_weights(monkeypatch):
    gpu_check = _gpu_check()
    backend = select("virtual:rtx4090", 0)
    policy = replace(policy_for(backend, 0.01), min_samples=3, max_samples=3)
    rows = gpu_check.compare_gemv_with_cublas(backend, (256, 512), (1, 3), measure, policy, rounds=1)
    assert list(rows) == ["b1", "b3"]
    for b, row in zip((1, 3), rows.values()):
        assert (row["batch"], row["m"], row["k"]) == (b, 256, 512)
        assert row["ratio"] == pytest.approx(row["cublas_s"] / row["ours_s"]) and row["ratio"] > 0
        assert row["ours_dram_Bps"] == pytest.approx((256 * 512 + b * 512 + b * 256) * 2 / row["ours_s"])
    # a GEMV that writes nothing leaves its poisoned output: the check refuses it before anything is timed
    monkeypatch.setattr(backend, "gemv_launcher", lambda *args: (lambda: None))
    with pytest.raises(AssertionError, match="^gpucal GEMV batch 1: "):
        gpu_check.compare_gemv_with_cublas(backend, (256, 512), (1,), measure, policy, rounds=1)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_the_pytorch_layer_is_our_layer_on_the_same_values(dtype):
    """The PyTorch layer of gpu_check.py on the CPU, against our layer on the virtual machine (NumPy kernels that
    compute what every backend's kernels compute): the cross-check passes, and fails for other weights."""
    torch = pytest.importorskip("torch")
    gpu_check = _gpu_check()
    backend = select("virtual:rtx4090", 0)
    shape = LayerShape.of(TINY, 1)
    pair = gpu_check.LayerPair(torch, backend, shape, 3, 24, dtype, seed=5)
    assert pair.verify(backend.sequence_launcher(pair.launches)) is None
    xc = pair.cross_check(pair.torch_layer())
    assert xc["ok"] and all(xc[f"{n}_rel_err"] < 2e-2 for n in gpu_check.CROSS_CHECKED), xc
    pair.tensors["w_down"].neg_()  # PyTorch's own copy of one weight changed: its y is no longer ours
    xc = pair.cross_check(pair.torch_layer())
    assert not xc["ok"] and xc["y_rel_err"] > 1 and xc["residual2_rel_err"] < 2e-2, xc
    half = TINY.head_dim // 2
    the_other_way = torch.cat([pair.tensors["cos_sin"][:half], -pair.tensors["cos_sin"][half:]])  # sin negated
    xc = pair.cross_check(gpu_check.torch_layer(torch, dict(pair.tensors, cos_sin=the_other_way), shape, 24)())
    assert xc["q_rel_err"] > 1 and xc["attention_rel_err"] > 2 * xc["rtol"], xc  # caught where y alone may not be
