"""``gpucal.figures``: the figures of a profile, drawn from the measured-profile fixture and a datasheet."""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cluster import _allreduce, _cluster, _network

from gpucal import profiles
from gpucal.cli import main
from gpucal.errors import InputError, ProfileError
from gpucal.figures import FIGURES
from gpucal.figures.bandwidth import bandwidth_figure
from gpucal.figures.common import LEGEND_MAX_SERIES, PlotSkipped
from gpucal.figures.files import write_plots
from gpucal.figures.network import network_figure
from gpucal.figures.p2p import p2p_figure
from gpucal.figures.plan import PLAN_BATCHES, plan_curves, plan_figure
from gpucal.figures.roofline import roofline_figure

pytest.importorskip("matplotlib")  # gpucal.figures imports it when it draws; the test extra installs it

FIXTURE = Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def measured():
    return profiles.load(FIXTURE)


@pytest.fixture(scope="module")
def datasheet():
    return profiles.load_builtin("profile", "rtx4090")


@pytest.fixture(scope="module")
def cluster():
    """Two hosts of two simulated RTX 4090s, the network between them and an all-reduce over the four ranks."""
    return profiles.validate(_cluster(), "twohosts.json")


NO_NETWORK = "has no network[] or collectives[]: gpucal calibrate --cluster measures them"


@pytest.fixture(scope="module")
def written(measured, tmp_path_factory):
    out = tmp_path_factory.mktemp("plots")
    return out, write_plots(measured, out)


def variant(doc, origin="variant.json", **changes):
    """The fixture with some top-level fields replaced, validated again."""
    data = doc.profile.to_json() | changes
    return profiles.validate(data, origin)


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [fig.get_suptitle()] + \
        [ax.get_title() for ax in fig.axes]


def legend_labels(fig) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def test_every_figure_of_a_measured_profile_is_a_real_png(written):
    import matplotlib.image

    out, results = written
    assert [name for name, _, _ in results] == list(FIGURES)
    assert results[4] == ("network", None, f"sample-rtx4090x2 {NO_NETWORK}")  # one machine: no network
    assert [(name, path) for name, path, _ in results[5:]] == [("decode-gemm", None), ("allreduce", None)]  # no decode
    for name, path, reason in results[:4]:
        assert reason is None and path == out / f"{name}.png"
        raw = path.read_bytes()
        assert raw.startswith(PNG_SIGNATURE)
        assert len(raw) > 10_000, name
        pixels = np.round(matplotlib.image.imread(path) * 255).astype(np.uint8)
        assert pixels.shape[-1] == 4  # RGBA: one 32-bit number per colour
        colours = np.unique(pixels.reshape(-1, 4).view(np.uint32))
        assert len(colours) > 50, f"{name}: {len(colours)} colours"
        assert pixels.shape[0] > 300 and pixels.shape[1] > 400


def test_a_datasheet_profile_skips_the_measured_figures_and_says_why(datasheet, tmp_path):
    results = {name: (path, reason) for name, path, reason in write_plots(datasheet, tmp_path)}
    for name in ("bandwidth", "p2p"):
        path, reason = results[name]
        assert path is None and "datasheet" in reason and not (tmp_path / f"{name}.png").exists()
    assert "copy series" in results["bandwidth"][1] and "links" in results["p2p"][1]
    for name in ("roofline", "plan"):
        assert results[name] == (tmp_path / f"{name}.png", None)
    assert results["network"] == (None, f"rtx4090 {NO_NETWORK}") and not (tmp_path / "network.png").exists()
    with pytest.raises(PlotSkipped, match=r"^rtx4090 has no network\[\] or collectives\[\]"):
        network_figure(datasheet)
    fig = roofline_figure(datasheet)
    assert any("roof only" in t for t in texts(fig))
    assert not any("simulated" in t for t in texts(fig))


def test_titles_say_simulated(measured, cluster):
    for fig in (bandwidth_figure(measured), p2p_figure(measured), roofline_figure(measured)):
        assert "(simulated)" in " ".join(texts(fig))
    assert "(simulated)" in plan_figure(measured, plan_curves(measured)).get_suptitle()
    assert network_figure(cluster).get_suptitle().endswith("(simulated)")


def test_a_cluster_profile_gets_the_network_figure(cluster, tmp_path):
    import matplotlib.image

    [(name, path, reason)] = write_plots(cluster, tmp_path, which=["network"])
    assert (name, path, reason) == ("network", tmp_path / "network.png", None)
    raw = path.read_bytes()
    assert raw.startswith(PNG_SIGNATURE) and len(raw) > 10_000
    pixels = np.round(matplotlib.image.imread(path) * 255).astype(np.uint8)
    assert len(np.unique(pixels.reshape(-1, 4).view(np.uint32))) > 50
    fig = network_figure(cluster)
    left, right = fig.axes
    assert "network between hosts" in left.get_title() and "collectives" in right.get_title()
    assert (left.get_xscale(), left.get_yscale(), right.get_xscale()) == ("log", "log", "log")
    assert "node0<->node1: α 60 µs, β 125 MB/s" in legend_labels(fig)
    assert "all-reduce: 4 ranks on 2 hosts" in legend_labels(fig)
    # the network: the measured points as markers, the fit alpha + n/beta as a line through their range
    points, fit = left.lines[0], left.lines[1]
    assert list(points.get_xdata()) == [8, 1 << 20] and list(points.get_ydata()) == [6e-5, 8.4e-3]
    n = fit.get_xdata()
    assert fit.get_ydata() == pytest.approx(60e-6 + n / 125e6)
    # the collectives: busbw per point, in GB/s
    busbw = right.lines[0]
    assert list(busbw.get_xdata()) == [16384, 16777216]
    assert busbw.get_ydata() == pytest.approx([0.072, 0.15])


def test_the_allreduce_inside_each_host_is_dashed(tmp_path):
    inside = []
    for host in (0, 1):
        entry = _allreduce(nranks=2, hosts=1) | {"host": host, "busbw_Bps": [1e9, 2e10]}
        inside.append(entry)
    doc = profiles.validate(_cluster(network=[], collectives=[_allreduce(), *inside]), "inside.json")
    fig = network_figure(doc)
    [ax] = fig.axes  # no network[]: the collectives alone
    assert "collectives" in ax.get_title() and "network" not in fig.get_suptitle()
    dashed = [line for line in ax.lines if line.get_linestyle() not in ("-", "None")]
    assert [line.get_label() for line in dashed] == ["all-reduce inside node0: 2 ranks",
                                                    "all-reduce inside node1: 2 ranks"]
    assert list(dashed[0].get_ydata()) == [1.0, 20.0]


def test_only_the_network_panel_when_there_are_no_collectives(tmp_path):
    doc = profiles.validate(_cluster(collectives=[]), "netonly.json")
    fig = network_figure(doc)
    [ax] = fig.axes
    assert "network between hosts" in ax.get_title()
    assert fig.get_suptitle() == "twohosts: the network between hosts (simulated)"
    [(_, path, reason)] = write_plots(doc, tmp_path, which=["network"])
    assert reason is None and path.stat().st_size > 10_000


def test_the_network_legend_is_bounded(cluster):
    template = _network()[0]
    pairs = []
    for a in range(6):
        for b in range(a + 1, 6):
            pairs.append(copy.deepcopy(template) | {"src_host": a, "dst_host": b, "src_hostname": f"node{a}",
                                                    "dst_hostname": f"node{b}"})
    pairs.append(copy.deepcopy(template) | {"dst_rank": 1, "dst_host": 0, "dst_hostname": "node0", "same_host": True})
    fig = network_figure(variant(cluster, network=pairs))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 11 and labels[-1] == "+6 more"  # 16 pairs: 10 named
    assert labels[0] == "node0<->node1: α 60 µs, β 125 MB/s"
    fig = network_figure(variant(cluster, network=pairs[-1:]))
    assert legend_labels(fig)[0] == "node0<->node0 (same host): α 60 µs, β 125 MB/s"


@pytest.mark.parametrize("cards, strategy", [(2, "tp"), (2, "pp"), (1, "tp")])
def test_the_plan_curve_is_what_gpucal_plan_json_gives(measured, capsys, cards, strategy):
    curves = plan_curves(measured, model="llama-3.1-8b", cards=cards, strategy=strategy)
    assert list(curves.batch) == [2 ** k for k in range(11)]  # 1 ... 1024, as docs/plots.md promises
    for batch in (1, 64, 1024):
        assert main(["plan", "--gpu", str(FIXTURE), "--model", "llama-3.1-8b", "--cards", str(cards), "--strategy",
                     strategy, "--batch", str(batch), "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        i = PLAN_BATCHES.index(batch)
        assert curves.token_latency_s[i] == pytest.approx(plan["token_latency_s"], rel=1e-9)
        assert curves.aggregate_tokens_per_s[i] == pytest.approx(plan["aggregate_tokens_per_s"], rel=1e-9)
        assert curves.bound[i] == plan["bound"] and bool(curves.fits[i]) == plan["fits"]
        assert curves.balance_batch == pytest.approx(plan["balance_batch"], rel=1e-9)
        assert curves.link == (plan["inputs"]["link"]["name"] if plan["inputs"]["link"] else None)


def test_the_plan_defaults_to_the_profiles_cards_and_tp(measured, datasheet):
    curves = plan_curves(measured)
    assert (curves.model, curves.cards, curves.strategy, curves.tp, curves.pp) == ("llama-3.1-8b", 2, "tp", 2, 1)
    assert "slowest of 2" in curves.link  # the measured link, as the planner takes it
    assert set(curves.bound) == {"memory", "compute"}
    one = plan_curves(datasheet)
    assert (one.cards, one.strategy, one.link is not None) == (1, "tp", True)


def test_three_cards_fall_back_to_pp_unless_tp_is_asked_for(measured):
    devices = [measured.profile.devices[0].to_json() | {"index": i} for i in range(3)]
    three = variant(measured, devices=devices)
    assert plan_curves(three).strategy == "pp"
    with pytest.raises(InputError, match=r"^--strategy: a TP degree of 3 does not divide"):
        plan_curves(three, strategy="tp")
    with pytest.raises(InputError, match=r"^--cards: a TP degree of 6"):
        plan_curves(three, cards=6, strategy="tp")


def test_batches_that_do_not_fit_are_marked(measured):
    curves = plan_curves(measured, context_tokens=32768)
    assert curves.fits[0] and not curves.fits[-1]
    fig = plan_figure(measured, curves)
    assert "does not fit in memory" in legend_labels(fig)
    assert "does not fit in memory" not in legend_labels(plan_figure(measured, plan_curves(measured)))
    assert any("balance batch B* = 163.8" in label for label in legend_labels(fig))


def test_the_heatmap_cells_are_the_links_verdicts(measured):
    template = measured.profile.links[0].to_json()
    verdicts = {(0, 1): ("nvlink", "nvlink", 150e9), (1, 0): ("p2p-pcie", "p2p-pcie", 25e9),
                (0, 2): ("host-staged", "host-staged", 20e9), (2, 0): ("p2p-slower-than-staged", "host-staged", 19e9),
                (1, 2): ("p2p-corrupt", "host-staged", 18e9)}  # (2, 1) not measured
    links = []
    for (src, dst), (verdict, path, beta) in verdicts.items():
        link = copy.deepcopy(template) | {"src": src, "dst": dst, "verdict": verdict, "path": path}
        link["beta_Bps"]["value"] = beta
        links.append(link)
    links[1]["flags"] = ["downtrained"]
    devices = [measured.profile.devices[0].to_json() | {"index": i} for i in range(3)]
    fig = p2p_figure(variant(measured, devices=devices, links=links))
    ax = fig.axes[0]
    cells = {tuple(round(v) for v in t.get_position()): t.get_text() for t in ax.texts}
    assert len(cells) == len(verdicts)
    for (src, dst), (verdict, _, beta) in verdicts.items():
        lines = cells[(dst, src)].split("\n")  # x is the destination, y the source
        assert lines[0] == verdict and lines[1] == f"{beta / 1e9:.3g} GB/s"
    assert cells[(0, 1)].endswith("downtrained")
    codes = np.ma.getdata(ax.images[0].get_array())
    mask = np.ma.getmaskarray(ax.images[0].get_array())
    assert mask.diagonal().all() and mask.sum() == 3  # the diagonal is blank
    order = ["nvlink", "p2p-pcie", "host-staged", "p2p-slower-than-staged", "p2p-corrupt"]
    for (src, dst), (verdict, _, _) in verdicts.items():
        assert codes[src, dst] == order.index(verdict)
    assert codes[2, 1] == len(order) and "not measured" in legend_labels(fig)


def test_one_device_has_no_p2p_figure(measured):
    one = variant(measured, devices=[measured.profile.devices[0].to_json()], links=[],
                  fits=[f.to_json() for f in measured.profile.fits if f.src == f.dst == 0])
    with pytest.raises(PlotSkipped, match="one device: P2P not applicable"):
        p2p_figure(one)
    assert plan_curves(one).cards == 1


def test_a_failed_series_is_drawn_as_not_verified(measured):
    fits = [f.to_json() for f in measured.profile.fits]
    fits[0] |= {"verified": False, "reason": "byte 12: got 0x00, expected 0x5a"}
    fig = bandwidth_figure(variant(measured, fits=fits))
    labels = legend_labels(fig)
    assert any(label.startswith("h2d-ce-pinned-dev0: NOT verified (byte 12") for label in labels)
    assert "d2h-ce-pinned-dev0: α 2 µs, β 26.15 GB/s" in labels
    red = [line for ax in fig.axes for line in ax.lines if line.get_marker() == "x"]
    assert len(red) == 1 and red[0].get_color() == "red"
    assert [ax.get_title() for ax in fig.axes] == ["h2d", "d2h", "driver-staged", "host-staged"]


def test_the_roofline_has_the_ridge_and_the_kernels_of_device_0(measured):
    fig = roofline_figure(measured)
    ax = fig.axes[0]
    device = measured.profile.devices[0]
    bw, flops = device.memory_bandwidth_Bps.value, device.dense_flops["fp16_fp32acc"].value
    assert any(t.get_text() == f"ridge {flops / bw:.3g} FLOP/B" for t in ax.texts)
    points = {t.get_text() for t in ax.texts} - {f"ridge {flops / bw:.3g} FLOP/B"}
    expected = {k.case for k in measured.profile.kernels if k.device == 0 and k.flop > 0}
    assert points == expected and len(expected) == 6
    assert any(label.startswith("stream read-256MiB") for label in legend_labels(fig))
    assert {"GEMV (simulated)", "GEMM (simulated)"} <= set(legend_labels(fig))  # never "measured"


@pytest.mark.parametrize("kwargs, flag", [
    ({"which": ["bandwidth", "nope"]}, "--only: unknown figure 'nope'"),
    ({"which": []}, "--only:"),
    ({"cards": 0}, "--cards:"),
    ({"strategy": "hybrid"}, "--strategy:"),
    ({"model": "llama-9"}, "--model: unknown model 'llama-9'"),
])
def test_bad_arguments_name_the_flag(measured, tmp_path, kwargs, flag):
    with pytest.raises(InputError) as exc:
        write_plots(measured, tmp_path / "out", **kwargs)
    assert str(exc.value).startswith(flag)
    assert not (tmp_path / "out").exists()


def test_a_document_that_does_not_validate_is_refused_before_anything_is_drawn(measured, tmp_path):
    """The figures read the typed profile: a Document built from a dict beyond the schema is one ProfileError
    naming its origin and the field, and nothing is written."""
    data = measured.profile.to_json()
    data["devices"][0]["memory_bandwidth_Bps"]["value"] = 1e-300
    doc = profiles.Document(kind="profile", name="beyond", origin="beyond.json", data=data)
    with pytest.raises(ProfileError) as exc:
        write_plots(doc, tmp_path / "out")
    assert str(exc.value).startswith("beyond.json: devices[0].memory_bandwidth_Bps.value: ")
    assert "\n" not in str(exc.value) and not (tmp_path / "out").exists()


def test_an_output_path_that_is_a_file_is_refused(measured, tmp_path):
    target = tmp_path / "taken"
    target.write_text("")
    with pytest.raises(InputError, match=r"^-o: .* is a file"):
        write_plots(measured, target, which=["roofline"])


def test_without_matplotlib_it_says_what_to_install(measured, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(InputError, match=r"pip install 'gpucal\[plot\]'"):
        write_plots(measured, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_series_with_regimes_is_drawn_regime_by_regime(measured):
    fits = [f.to_json() for f in measured.profile.fits]
    fits[0]["pieces"] = [{"lo_bytes": 4, "hi_bytes": 32768, "alpha_s": 2e-6, "beta_Bps": 10e9},
                         {"lo_bytes": 65536, "hi_bytes": 16 << 20, "alpha_s": 8e-6, "beta_Bps": 25e9}]
    fig = bandwidth_figure(variant(measured, fits=fits))
    assert any(label.startswith("h2d-ce-pinned-dev0: 2 regimes") for label in legend_labels(fig))
    h2d = next(ax for ax in fig.axes if ax.get_title() == "h2d")
    curves = [line for line in h2d.lines if line.get_linestyle() == "-" and len(line.get_xdata()) == 100]
    spans = {(round(min(c.get_xdata())), round(max(c.get_xdata()))) for c in curves}
    assert {(4, 32768), (65536, 16 << 20)} <= spans  # the other device's series: its one line
    big = next(c for c in curves if min(c.get_xdata()) == 65536)
    assert big.get_ydata()[-1] == pytest.approx((16 << 20) / (8e-6 + (16 << 20) / 25e9) / 1e9, rel=1e-9)


def test_the_bandwidth_legend_is_bounded(measured):
    template = next(f for f in measured.profile.fits if f.path == "h2d" and f.verified)
    fits = [template.to_json() | {"series": f"h2d-series-{i:02d}"} for i in range(LEGEND_MAX_SERIES + 2)]
    fig = bandwidth_figure(variant(measured, fits=fits))
    [ax] = [ax for ax in fig.axes if ax.get_visible()]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == LEGEND_MAX_SERIES + 1 and labels[-1] == "... and 2 more series"
    assert labels[0].startswith("h2d-series-00: α ")


def test_the_figures_import_without_matplotlib():
    """The plot command lists ``FIGURES`` and every figure module imports without matplotlib (it is imported
    when a figure is drawn, and then its absence is one InputError saying what to install)."""
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from gpucal.figures import FIGURES\n"
            "import gpucal.figures.files, gpucal.figures.plan\n"
            "from gpucal.figures.common import canvas_figure\n"
            "from gpucal.errors import InputError\n"
            "try:\n    canvas_figure((1, 1))\nexcept InputError as exc:\n    print(exc)\n"
            "print(','.join(FIGURES))\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("matplotlib is not installed: pip install 'gpucal[plot]'\n"
                           "bandwidth,p2p,roofline,plan,network,decode-gemm,allreduce\n")


def test_no_figure_module_imports_a_sibling_that_imports_it_back():
    """The package's import graph has no cycle: ``common`` imports no figure, no figure imports another or
    ``files``, and the package itself imports none of its modules."""
    folder = Path(__file__).parents[2] / "src" / "gpucal" / "figures"
    imports = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        found |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        name = "gpucal.figures" if path.stem == "__init__" else f"gpucal.figures.{path.stem}"
        imports[name] = {m for m in found if m == "gpucal.figures" or m.startswith("gpucal.figures.")}
    assert imports["gpucal.figures"] == set() and imports["gpucal.figures.common"] == set()
    figures = {"bandwidth", "p2p", "roofline", "plan", "network", "decode"}
    for figure in figures:
        assert imports[f"gpucal.figures.{figure}"] == {"gpucal.figures.common"}, figure
    assert imports["gpucal.figures.files"] == {"gpucal.figures", "gpucal.figures.common"} | {
        f"gpucal.figures.{f}" for f in figures}


def test_the_docs_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """docs/plots.md's "From Python" block, run in a folder holding the fixture as my-machine.json."""
    doc = (Path(__file__).parents[2] / "docs" / "plots.md").read_text(encoding="utf-8")
    block = doc.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my-machine.json").write_bytes(FIXTURE.read_bytes())
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/plots.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [f"{name} plots/{name}.png" for name in FIGURES[:4]]
    assert lines[4].startswith("network skipped: ")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [f"{name}.png" for name in sorted(FIGURES[:4])]
