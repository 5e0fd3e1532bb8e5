"""``gpucal.figures.decode``: the decode-GEMM curve and the one-host all-reduce, drawn from a profile that has them
(the measured-profile fixture with ``devices[0].decode`` and ``collectives[]`` added), skipped without them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_gpucal

from gpucal import profiles
from gpucal.figures import FIGURES
from gpucal.figures.common import BYTES_PER_GB, PlotSkipped
from gpucal.figures.decode import allreduce_entries, allreduce_figure, decode_gemm_figure
from gpucal.figures.files import write_plots
from gpucal.profiles.model import validate
from gpucal.profiles.decode_queries import decode_terms

pytest.importorskip("matplotlib")

FIXTURE = Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPES = ((1024, 1024), (4096, 1024), (4096, 4096))  # (n, k): 2, 8 and 32 MiB of fp16
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
ALPHA_S, MEMORY_BPS, FLOPS = 4e-6, 0.9e12, 160e12
AR_ALPHA_S, AR_BETA_BPS = 12e-6, 20e9
AR_SIZES = (16384, 262144, 4194304, 16777216)


def _quantity(value, method="fit"):
    return {"value": value, "source": "simulated", "method": method, "statistic": "fit", "n": 6}


def _noise(m: int, n: int, dtype: str) -> float:
    """A deterministic wobble of the 'measured' points, so that they are not the fitted curve itself."""
    return 1.0 + 0.03 * np.sin(m + n / 512 + len(dtype))


def _curve(dtype: str, itemsize: int) -> dict:
    rows = []
    for m in MS:
        beta = 1.0 / (1.0 / MEMORY_BPS + 2 * m / (itemsize * FLOPS))  # t = alpha + W/bw + 2mnk/F, W = n·k·itemsize
        points = [[n * k * itemsize, (ALPHA_S + n * k * itemsize / beta) * _noise(m, n, dtype)] for n, k in SHAPES]
        rows.append({"m": m, "alpha_s": ALPHA_S, "beta_Bps": beta, "r2": 0.999, "n": len(points), "points": points})
    return {"source": "simulated", "method": "per m, t = alpha_m + W/beta_m", "statistic": "median",
            "byte_convention": "weight_Bps = n·k·itemsize/t", "shapes": [list(s) for s in SHAPES], "rows": rows,
            "holdout_max_error_frac": 0.05, "holdout": "each point predicted without it"}


def _allreduce(graphs: bool, alpha_s=AR_ALPHA_S, beta_Bps=AR_BETA_BPS, single_process=True) -> dict:
    points = [[s, alpha_s + s / beta_Bps] for s in AR_SIZES]
    entry = {"op": "all-reduce", "nranks": 2, "hosts": 1, "ranks_per_host": 2, "graphs": graphs,
             "library": "virtual (simulated)", "transport": None, "dtype": "float32",
             "alpha_s": _quantity(alpha_s), "beta_Bps": _quantity(beta_Bps), "busbw_factor": 1.0, "r2": 1.0,
             "points": points, "algbw_Bps": [s / t for s, t in points], "busbw_Bps": [s / t for s, t in points],
             "verified": True, "reason": None}
    if single_process:
        entry.update(single_process=True, devices=[0, 1])
    return entry


def _with_decode() -> dict:
    data = json.loads(FIXTURE.read_text())
    data["devices"][0]["decode"] = {"gemm": {"fp16": _curve("fp16", 2), "bf16": _curve("bf16", 2)}}
    # eager and graphs measured by one process, and an MPI-measured eager entry that the figure leaves out
    data["collectives"] = [_allreduce(False), _allreduce(True, alpha_s=7e-6),
                           _allreduce(False, alpha_s=50e-6, single_process=False)]
    validate("profile", data)  # the typed model takes it as it stands
    return data


@pytest.fixture(scope="module")
def data():
    return _with_decode()


@pytest.fixture(scope="module")
def doc(data):
    return profiles.validate(copy.deepcopy(data), "decode.json")


@pytest.fixture(scope="module")
def bare():
    return profiles.load(FIXTURE)


def _measured_lines(ax):
    return [line for line in ax.lines if line.get_marker() == "o" and len(line.get_xdata())]


def test_the_figures_are_registered():
    assert FIGURES[-2:] == ("decode-gemm", "allreduce")


def test_decode_gemm_plots_w_over_t_of_every_point_per_shape_and_dtype(doc, data):
    fig = decode_gemm_figure(doc)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["fp16", "bf16"]
    for ax in panels:
        dtype = ax.get_title().split(":")[0]
        rows = data["devices"][0]["decode"]["gemm"][dtype]["rows"]
        lines = _measured_lines(ax)
        assert len(lines) == len(SHAPES)
        for line, (n, k) in zip(lines, SHAPES):
            w = n * k * 2
            want = [p[1] for r in rows for p in r["points"] if p[0] == w]
            assert list(line.get_xdata()) == list(MS)
            np.testing.assert_allclose(line.get_ydata(), [w / t / BYTES_PER_GB for t in want], rtol=1e-12)
            assert line.get_label().startswith(f"{n}×{k} (")
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
        assert ax.get_xlim()[0] < 1 and ax.get_xlim()[1] > 512


def test_decode_gemm_draws_the_planners_curve_dashed_and_the_memory_bandwidth(doc):
    fig = decode_gemm_figure(doc)
    curve = decode_terms(doc.profile.devices[0]).gemm["fp16"]
    ax = fig.axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert len(dashed) == len(SHAPES)
    for line, (n, k) in zip(dashed, SHAPES):
        m = np.asarray(line.get_xdata())
        assert m[0] == 1 and m[-1] == 512 and len(m) > 50
        np.testing.assert_allclose(line.get_ydata(), [curve.weight_Bps(int(x), n * k * 2) / BYTES_PER_GB for x in m],
                                   rtol=1e-12)
    bandwidth = doc.profile.devices[0].memory_bandwidth_Bps.value / BYTES_PER_GB
    flat = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert len(flat) == 1 and set(flat[0].get_ydata()) == {bandwidth}
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-1].startswith("memory bandwidth ") and "fitted curve" in labels[-2]
    assert fig.get_suptitle().endswith("(simulated)")


def test_decode_gemm_is_skipped_with_the_reason_without_a_curve(bare):
    with pytest.raises(PlotSkipped, match=r"^sample-rtx4090x2 has no decode-GEMM curve \(devices\[\]\.decode\.gemm\)$"):
        decode_gemm_figure(bare)
    with pytest.raises(PlotSkipped, match=r"^rtx4090 is a datasheet profile: no decode-GEMM curve .*gpucal calibrate"):
        decode_gemm_figure(profiles.load_builtin("profile", "rtx4090"))


def test_allreduce_plots_the_points_and_the_fit_eager_solid_graphs_dashed(doc):
    entries = allreduce_entries(doc)
    assert [(e.nranks, e.graphs, e.single_process) for e in entries] == [(2, False, True), (2, True, True)]
    fig = allreduce_figure(doc)
    [ax] = fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    points = [line for line in ax.lines if line.get_linestyle() in ("None", "none") and len(line.get_xdata())]
    assert len(points) == 2  # the MPI-measured entry is left out: one process's are preferred
    for line, alpha in zip(points, (AR_ALPHA_S, 7e-6)):
        assert list(line.get_xdata()) == list(AR_SIZES)
        np.testing.assert_allclose(line.get_ydata(), [alpha + s / AR_BETA_BPS for s in AR_SIZES], rtol=1e-12)
    fits = {line.get_linestyle(): line for line in ax.lines if len(line.get_xdata()) == 100}
    assert set(fits) == {"-", "--"}
    for style, alpha in (("-", AR_ALPHA_S), ("--", 7e-6)):
        s = np.asarray(fits[style].get_xdata())
        np.testing.assert_allclose(fits[style].get_ydata(), alpha + s / AR_BETA_BPS, rtol=1e-12)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["TP 2, eager: α 12 µs, β 20 GB/s", "TP 2, CUDA graphs: α 7 µs, β 20 GB/s"]
    assert fig.get_suptitle().endswith("(simulated)")


def test_allreduce_falls_back_to_mpi_entries_and_is_skipped_without_any(data, bare):
    only_mpi = copy.deepcopy(data)
    only_mpi["collectives"] = [_allreduce(False, single_process=False)]
    [entry] = allreduce_entries(profiles.validate(only_mpi, "mpi.json"))
    assert not entry.single_process
    across = copy.deepcopy(data)
    across["collectives"] = [dict(_allreduce(False, single_process=False), hosts=2, ranks_per_host=1)]
    with pytest.raises(PlotSkipped, match=r"^sample-rtx4090x2 has no one-host all-reduce"):
        allreduce_figure(profiles.validate(across, "across.json"))
    with pytest.raises(PlotSkipped, match=r"^sample-rtx4090x2 has no one-host all-reduce"):
        allreduce_figure(bare)


def test_write_plots_skips_both_for_the_bare_fixture(bare, tmp_path):
    results = {name: (path, reason) for name, path, reason in write_plots(bare, tmp_path,
                                                                           which=["decode-gemm", "allreduce"])}
    assert results["decode-gemm"][0] is None and "decode-GEMM curve" in results["decode-gemm"][1]
    assert results["allreduce"][0] is None and "one-host all-reduce" in results["allreduce"][1]
    assert list(tmp_path.iterdir()) == []


def test_gpucal_plot_writes_the_two_pngs(data, tmp_path):
    profile = tmp_path / "decode.json"
    profile.write_text(json.dumps(data))
    out = tmp_path / "plots"
    done = run_gpucal("plot", str(profile), "-o", str(out), "--only", "decode-gemm,allreduce", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [(f["name"], f["skipped"]) for f in result["figures"]] == [("decode-gemm", None), ("allreduce", None)]
    for name in ("decode-gemm", "allreduce"):
        raw = (out / f"{name}.png").read_bytes()
        assert raw.startswith(PNG_SIGNATURE) and len(raw) > 10_000
    done = run_gpucal("plot", str(FIXTURE), "-o", str(tmp_path / "bare"), "--only", "decode-gemm,allreduce")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "skipped decode-gemm: sample-rtx4090x2 has no decode-GEMM curve (devices[].decode.gemm)",
        "skipped allreduce: sample-rtx4090x2 has no one-host all-reduce (collectives[] of op all-reduce on one host)"]
