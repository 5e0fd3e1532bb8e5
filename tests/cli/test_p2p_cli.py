"""``gpucal p2p`` and the copy probes as users run them, on virtual machines (no GPU needed)."""

from __future__ import annotations

import json

import pytest
from conftest import run_gpucal

from gpucal.commands import p2p
from gpucal.kernels.backend import select

QUICK = ("--sizes", "4B..1MiB", "--budget", "0.1")


def _p2p(spec, *extra):
    return run_gpucal("p2p", "--backend", spec, *QUICK, *extra)


def test_p2p_on_a_4090_box_says_host_staged_with_the_evidence():
    proc = _p2p("virtual:rtx4090:2", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["simulated"] is True and data["applicable"] is True
    assert [(v["src"], v["dst"], v["verdict"]) for v in data["verdicts"]] == [(0, 1, "host-staged"), (1, 0, "host-staged")]
    v = data["verdicts"][0]
    assert v["evidence"]["runtime_can_access_peer"] is False
    assert v["evidence"]["nvml_p2p"]["read"] == "GPU not supported"
    staged = v["evidence"]["paths"]["driver-staged-ce-dev0->dev1"]
    assert staged["verified"] and staged["beta_Bps"] > 1e9 and staged["source"] == "simulated"
    assert data["topology"]["available"] and len(data["topology"]["pairs"]) == 2
    assert all(r["source"] == "simulated" for r in data["results"])
    text = _p2p("virtual:rtx4090:2").stdout
    assert "host-staged" in text and "P2P verdict per ordered pair" in text and "simulated" in text
    assert "every copied byte compared" in text


def test_p2p_on_a_corrupt_rig_exits_1_and_names_the_bytes():
    proc = _p2p("virtual:rtx4090:2+p2p=corrupt", "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert {v["verdict"] for v in data["verdicts"]} == {"p2p-corrupt"}
    assert any("bytes differ" in reason for reason in data["verdicts"][0]["reasons"])


def test_p2p_on_nvlink_and_on_a_downtrained_link():
    data = json.loads(_p2p("virtual:h100-sxm:2", "--json").stdout)
    assert {v["verdict"] for v in data["verdicts"]} == {"nvlink"}
    data = json.loads(_p2p("virtual:rtx4090:2+p2p=on+downtrain=0:4:8", "--json").stdout)
    assert {v["verdict"] for v in data["verdicts"]} == {"p2p-pcie"}
    assert all(v["flags"] == ["downtrained"] for v in data["verdicts"])


def test_p2p_on_one_device_reports_the_host_links():
    proc = _p2p("virtual:h100-pcie:1", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["applicable"] is False and data["verdicts"] == []
    assert {f["path"] for f in data["fits"]} == {"h2d", "d2h"}
    text = _p2p("virtual:h100-pcie:1").stdout
    assert "P2P is not applicable" in text and "h2d-ce-pinned-dev0" in text


@pytest.mark.parametrize("args, flag", [
    (("p2p", "--backend", "virtual:nosuchgpu:2"), "--backend"),
    (("p2p", "--backend", "virtual:rtx4090:2+p2p=maybe"), "--backend"),
    (("p2p", "--backend", "virtual:rtx4090:2", "--pairs", "0-5"), "--pairs"),
    (("p2p", "--backend", "virtual:rtx4090:2", "--pairs", "zero-one"), "--pairs"),
    (("p2p", "--backend", "virtual:rtx4090:2", "--sizes", "1MiB..4B"), "--sizes"),
    (("p2p", "--backend", "virtual:rtx4090:2", "--budget", "0"), "--budget"),
    (("p2p", "--backend", "nonsense"), "--backend"),
    (("probe", "peer", "--backend", "virtual:rtx4090:1"), "--backend"),
    (("probe", "d2d", "--backend", "virtual:rtx4090:1", "--dtype", "fp16"), "--dtype"),
    (("probe", "membw", "--backend", "virtual:rtx4090:1", "--pairs", "0-1"), "--pairs"),
])
def test_bad_input_is_one_line_naming_the_flag_and_exit_2(args, flag):
    proc = run_gpucal(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in proc.stderr


def test_probe_peer_and_latency_on_a_virtual_machine():
    proc = run_gpucal("probe", "peer", "--backend", "virtual:h100-sxm:2", "--sizes", "4B,4KiB,1MiB", "--budget", "0.1",
                      "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["simulated"] is True
    series = {r["params"]["series"] for r in data["results"]}
    assert "p2p-sm-read-dev0->dev1" in series and "host-staged-dev1->dev0" in series
    assert all(r["status"] == "passed" for r in data["results"])
    args = ("probe", "latency", "--backend", "virtual:rtx4090:2", "--sizes", "4B,64KiB", "--budget", "0.1")
    data = json.loads(run_gpucal(*args, "--json").stdout)
    cases = {r["case"] for r in data["results"]}
    assert {"oneshot-h2d-ce-pinned-dev0-4B", "b2b-d2h-ce-pinned-dev1-65536B",
            "enqueue-driver-staged-ce-dev0->dev1-4B"} <= cases
    proc = run_gpucal(*args)
    assert proc.returncode == 0, proc.stderr
    assert "no figure here is a measurement" in proc.stdout and "median seconds per copy" in proc.stdout


def test_p2p_full_and_pairs():
    proc = run_gpucal("p2p", "--backend", "virtual:rtx4090:4+p2p=on", "--pairs", "2-3", "--full", "--sizes", "4B..64KiB",
                      "--budget", "0.05", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(v["src"], v["dst"]) for v in data["verdicts"]] == [(2, 3), (3, 2)]
    assert {v["verdict"] for v in data["verdicts"]} == {"p2p-pcie"}
    memories = {f["memory"] for f in data["fits"] if f["path"] == "h2d"}
    assert memories == {"pinned", "pageable"}  # --full: the whole host-link probe
    assert {f["engine"] for f in data["fits"] if f["path"] == "p2p"} == {"ce", "sm-read", "sm-write"}
    assert all(f["fit"] for f in data["fits"] if f["path"] == "p2p")  # every engine swept


def test_the_text_flags_regimes_poor_fits_and_noisy_sizes_as_the_json_does(capsys):
    """A noisy 4090 box: sweeps stop sampling noisy, and host staging's pipeline fill bends its curve more than
    a line over its few sizes above the chunk can follow. One measurement, shown both ways: the text names
    what the JSON says."""
    backend = select("virtual:rtx4090:2+noise=0.05+seed=4")
    out = p2p.collect(backend, p2p.quick_config(backend, budget_s=0.1))  # 4 B .. 16 MiB by powers of 4
    p2p._print(backend, [d.name for d in backend.devices()], out)
    text = capsys.readouterr().out
    fits = [f.to_dict() for f in out["fits"]]
    flagged = 0
    for f in fits:
        notes = []
        fit = f["fit"]
        if fit and len(fit["pieces"]) > 1:
            notes.append(f"{len(fit['pieces'])} regimes")
        if fit and fit["poor_fit"]:
            notes.append(f"poor fit ({100 * fit['max_abs_residual_frac']:.0f} % off)")
        if f.get("noisy_sizes"):
            notes.append(f"noisy {len(f['noisy_sizes'])}/{f['cases']} sizes")
        line = next((x.strip() for x in text.splitlines() if x.strip().startswith(f"{f['series']}: ")), "")
        for note in notes:
            assert note in line, (f["series"], note, line)
        flagged += bool(notes)
        if not notes:
            assert not line
    assert flagged and any(f["fit"] and f["fit"]["poor_fit"] for f in fits)
    assert any(f.get("noisy_sizes") for f in fits)
