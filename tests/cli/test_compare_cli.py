"""``gpucal compare A [B] [--json]``."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_gpucal

from gpucal.cli import main

FIXTURE = Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"
LINK_FILE = Path(__file__).parents[2] / "src" / "gpucal" / "profiles" / "links" / "pcie4-x16.json"


def gpucal(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows_of(data):
    return {row["field"]: row for row in data["rows"]}


def test_json_ratios_by_hand(capsys):
    code, out, err = gpucal(capsys, "compare", "rtx4090", "seed-rtx4090", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["a"] == {"name": "rtx4090", "origin": "datasheet/rtx4090.json", "source": "datasheet",
                         "device": "NVIDIA GeForce RTX 4090"}
    assert data["b"]["name"] == "seed-rtx4090" and data["b"]["source"] == "article"
    rows = rows_of(data)
    bw = rows["memory_bandwidth_Bps"]
    assert (bw["a"], bw["b"], bw["unit"]) == (1.008e12, 1e12, "Bps")
    assert (bw["a_source"], bw["b_source"]) == ("datasheet", "article")
    assert bw["ratio"] == pytest.approx(1e12 / 1.008e12, rel=1e-11)
    assert rows["memory_bytes"]["ratio"] == pytest.approx(24e9 / 25769803776, rel=1e-11)
    # the planner's links: the rtx4090's pcie4-x16 preset against the article's seed-pcie4
    assert rows["planner_link.name"]["a"] == "pcie4-x16" and rows["planner_link.name"]["b"] == "seed-pcie4"
    assert rows["planner_link.alpha_s"]["ratio"] == pytest.approx(30e-6 / 10e-6)
    assert rows["planner_link.alpha_s"]["a_source"] == "estimate"
    assert rows["planner_link.beta_Bps"]["ratio"] == pytest.approx(32e9 / 31507692307.692307)
    assert rows["planner_link.beta_Bps"]["a_source"] == "spec"


def test_a_mode_on_one_side_only(capsys):
    code, out, _ = gpucal(capsys, "compare", "rtx4090", "seed-rtx4090", "--json")
    row = rows_of(json.loads(out))["dense_flops.fp16_fp32acc"]
    assert row == {"field": "dense_flops.fp16_fp32acc", "a": 165.2e12, "b": None, "ratio": None,
                   "a_source": "datasheet", "b_source": None, "a_reason": None, "b_reason": None, "unit": "flops"}
    code, out, _ = gpucal(capsys, "compare", "rtx4090", "seed-rtx4090")
    assert code == 0
    line = next(text for text in out.splitlines() if text.startswith("dense fp16_fp32acc"))
    assert line.split() == ["dense", "fp16_fp32acc", "165.2", "TFLOP/s", "-", "datasheet"]


def test_text_table_has_human_units_ratios_and_sources(capsys):
    code, out, err = gpucal(capsys, "compare", "rtx4090", "seed-rtx4090")
    assert code == 0 and err == ""
    assert out.startswith("A: rtx4090 (datasheet, datasheet/rtx4090.json): NVIDIA GeForce RTX 4090\n"
                          "B: seed-rtx4090 (article, article/seed-rtx4090.json)")
    line = next(text for text in out.splitlines() if text.startswith("memory bandwidth"))
    assert line.split() == ["memory", "bandwidth", "1.008", "TB/s", "1", "TB/s", "0.99", "datasheet", "article"]
    for text in ("planner's link alpha", "10 µs", "30 µs", "3.00", "Gen4", "x16", "estimate + spec"):
        assert text in out, text
    assert "note:" not in out


def test_one_argument_compares_with_the_datasheet(capsys):
    code, out, err = gpucal(capsys, "compare", str(FIXTURE), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["a"]["name"] == "sample-rtx4090x2" and data["a"]["source"] == "simulated"
    assert data["b"] == {"name": "rtx4090", "origin": "datasheet/rtx4090.json", "source": "datasheet",
                         "device": "NVIDIA GeForce RTX 4090"}
    rows = rows_of(data)
    assert rows["memory_bandwidth_Bps"]["ratio"] == pytest.approx(1.008e12 / 1.0079e12, rel=1e-11)
    assert rows["gemv_Bps.fp16"]["a"] == 1.0076e12 and rows["gemv_Bps.fp16"]["b"] is None
    assert rows["host_link.h2d.alpha_s"]["a"] == 1e-5 and rows["host_link.h2d.alpha_s"]["a_source"] == "simulated"
    # the planner takes the measured (here simulated) link, the slowest of links[]
    link = rows["planner_link.alpha_s"]
    assert (link["a"], link["b"], link["ratio"]) == (2e-5, 1e-5, 0.5)
    assert rows["planner_link.name"]["a"].endswith("host-staged, the slowest of 2")
    assert (rows["device_count"]["a"], rows["device_count"]["b"]) == (2, 1)
    assert any("simulated" in note and "never a measurement" in note for note in data["notes"])
    code, text, _ = gpucal(capsys, "compare", str(FIXTURE))
    assert code == 0
    assert "note: A (sample-rtx4090x2) is simulated" in text and "never a measurement" in text


def test_a_null_value_shows_its_reason(capsys):
    code, out, _ = gpucal(capsys, "compare", "a100-sxm-80gb", "h100-sxm", "--json")
    row = rows_of(json.loads(out))["dense_flops.fp8_fp32acc"]
    assert row["a"] is None and row["a_reason"] == "no FP8 tensor cores on Ampere" and row["ratio"] is None
    code, text, _ = gpucal(capsys, "compare", "a100-sxm-80gb", "h100-sxm")
    assert code == 0 and "unknown: no FP8" in text


def test_a_zero_alpha_has_no_ratio(capsys):
    code, out, _ = gpucal(capsys, "compare", "seed-h100", "h100-sxm", "--json")
    assert code == 0
    row = rows_of(json.loads(out))["planner_link.alpha_s"]
    assert (row["a"], row["b"], row["ratio"]) == (0.0, 3e-6, None)


def test_unknown_profile_is_one_line_and_exit_2(capsys):
    code, out, err = gpucal(capsys, "compare", "rtx4090", "x")
    assert code == 2 and out == ""
    assert err.splitlines() == ["gpucal compare: error: B: unknown profile 'x' (gpucal profiles list shows them all)"]
    code, _, err = gpucal(capsys, "compare", "rtx409")
    assert code == 2 and err.startswith("gpucal compare: error: A: unknown profile 'rtx409'; did you mean rtx4090")


def test_a_link_preset_is_not_a_profile(capsys, tmp_path):
    code, out, err = gpucal(capsys, "compare", "nvlink4")
    assert code == 2 and out == ""
    assert err.splitlines() == [("gpucal compare: error: A: 'nvlink4' is a link preset, not a profile "
                                 "(gpucal profiles list shows the profiles)")]
    copy = tmp_path / "link.json"
    shutil.copy(LINK_FILE, copy)
    code, _, err = gpucal(capsys, "compare", "rtx4090", str(copy))
    assert code == 2
    assert err.splitlines() == [f"gpucal compare: error: B: {copy} is a link document (gpucal.link/1), not a profile"]


def test_no_datasheet_for_the_device_needs_b(capsys):
    code, out, err = gpucal(capsys, "compare", "seed-h100")
    assert code == 2 and out == ""
    assert err.splitlines() == [("gpucal compare: error: B: no datasheet profile for 'NVIDIA H100' (A's first "
                                 "device); name B, a profile or file, to compare A with")]


def test_the_installed_command():
    out = run_gpucal("compare", "rtx4090", "seed-rtx4090", "--json")
    assert out.returncode == 0, out.stderr
    assert rows_of(json.loads(out.stdout))["memory_bandwidth_Bps"]["ratio"] == pytest.approx(1e12 / 1.008e12)
    bad = run_gpucal("compare", "nope")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
