"""Issue 15 at the command line: bad sizes, counts, numbers, empty strings and incomplete profiles give exit 2
and one line naming the flag (and the limit), never a traceback, a hang or an allocation that cannot fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_gpucal

V2 = "virtual:rtx4090:2"
FIXTURE = Path(__file__).parent.parent / "fixtures" / "profile-simulated-rtx4090x2.json"


def refused(*args: str, cwd=None) -> str:
    proc = run_gpucal(*args, cwd=cwd)
    assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.parametrize(("args", "words"), [
    (("probe", "membw", "--sizes", "1TiB"), ("--sizes:", "device memory")),
    (("probe", "membw", "--gemv-shape", "200000x200000"), ("--gemv-shape:", "device memory")),
    (("probe", "membw", "--batches", "100000000"), ("--batches:", "device memory")),
    (("probe", "flops", "--sizes", "100000"), ("--sizes:", "device memory")),
    (("probe", "host-link", "--sizes", "1B..1PiB"), ("--sizes:", "memory")),
    (("p2p", "--sizes", "1B..512TiB"), ("--sizes:", "memory")),
])
def test_what_cannot_fit_is_refused_before_allocating(args, words):
    err = refused(*args, "--backend", V2)
    assert all(w in err for w in words), err


@pytest.mark.parametrize("args", [("probe", "membw", "--backend", "virtual:rtx4090:100000"),
                                  ("p2p", "--backend", "virtual:rtx4090:1000")])
def test_a_virtual_machine_of_too_many_devices_is_refused(args):
    err = refused(*args)
    assert "--backend:" in err and "64" in err


@pytest.mark.parametrize("text", ["4B..8B..16B", "4B...256MiB", "0.5B"])
def test_size_ranges_and_units(text):
    assert "--sizes:" in refused("probe", "host-link", "--backend", V2, "--sizes", text)


@pytest.mark.parametrize(("command", "value"), [
    (("probe", "membw", "--backend", V2), "nan"), (("p2p", "--backend", V2), "inf"),
    (("calibrate", "--simulate", "rtx4090"), "1e308"), (("probe", "membw", "--backend", V2), "1e308")])
def test_budget_must_be_finite_and_in_range(command, value, tmp_path):
    assert "--budget" in refused(*command, "--budget", value, cwd=tmp_path)


@pytest.mark.parametrize(("args", "flag"), [
    (("--params", "1e308"), "--params"), (("--mem-bw", "\u0663TB/s"), "--mem-bw"), (("--batch", "99999999999"), "--batch"),
    (("--sweep", "batch=1:65536:1", "--sweep", "cards=1:16:1"), "--sweep")])
def test_plan_flags_are_bounded(args, flag):
    base = ("plan", "--gpu", "rtx4090", "--model", "llama-2-70b", "--strategy", "pp", "--cards", "8", "--batch", "1")
    err = refused(*base, *args)
    assert flag in err and "Traceback" not in err


def test_an_empty_probe_name_is_refused():
    err = refused("probe", "")
    assert "NAME:" in err and "empty" in err


@pytest.mark.parametrize(("args", "words"), [
    (("probe", "peer", "--backend", V2, "--pairs", ""), ("--pairs", "empty")),
    (("p2p", "--backend", V2, "--pairs", ""), ("--pairs", "empty")),
    (("probe", "d2d", "--backend", V2, "--pairs", "0-1"), ("--pairs:", "d2d")),
    (("probe", "latency", "--backend", "virtual:rtx4090:1", "--pairs", "0-1"), ("--pairs:", "1 device")),
    (("p2p", "--backend", "virtual:rtx4090:1", "--pairs", "0-1"), ("--pairs:", "1 device")),
])
def test_pairs_are_never_silently_ignored(args, words):
    err = refused(*args)
    assert all(w in err for w in words), err


def test_a_profile_with_a_null_bandwidth_is_refused_as_a_virtual_machine(tmp_path):
    data = json.loads(FIXTURE.read_text())
    data["devices"][0]["memory_bandwidth_Bps"] = {"value": None, "source": "simulated", "method": "stream read",
                                                  "statistic": "median", "n": 1, "reason": "every case failed"}
    path = tmp_path / "incomplete.json"
    path.write_text(json.dumps(data))
    for args, flag in ((("probe", "membw", "--backend", f"virtual:{path}"), "--backend"),
                       (("calibrate", "--simulate", str(path), "-o", str(tmp_path / "out.json")), "--simulate")):
        err = refused(*args, cwd=tmp_path)
        assert err.startswith(f"gpucal {args[0]}: error: {flag}: "), err
        assert "memory_bandwidth_Bps is null" in err, err
    assert not (tmp_path / "out.json").exists()
