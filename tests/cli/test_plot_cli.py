"""``gpucal plot`` as users run it: a subprocess, the PNG files it writes, its stdout, stderr and exit code."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_gpucal

pytest.importorskip("matplotlib")

DOC = (Path(__file__).parents[2] / "docs" / "plots.md").read_text(encoding="utf-8")
FIXTURE = str(Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json")


def test_a_measured_profile_gets_every_figure_but_the_clusters(tmp_path):
    out = tmp_path / "new" / "plots"
    done = run_gpucal("plot", FIXTURE, "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result = json.loads(done.stdout)
    assert result["schema"] == "gpucal.plots/1" and result["profile"] == FIXTURE
    assert [(f["name"], f["skipped"]) for f in result["figures"]] == [
        ("bandwidth", None), ("p2p", None), ("roofline", None), ("plan", None),
        ("network", "sample-rtx4090x2 has no network[] or collectives[]: gpucal calibrate --cluster measures them"),
        ("decode-gemm", "sample-rtx4090x2 has no decode-GEMM curve (devices[].decode.gemm)"),
        ("allreduce", "sample-rtx4090x2 has no one-host all-reduce (collectives[] of op all-reduce on one host)")]
    for figure in result["figures"][:4]:
        path = Path(figure["path"])
        assert path == out / f"{figure['name']}.png"
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 10_000


def test_the_docs_example_prints_what_the_docs_say(tmp_path):
    """docs/plots.md's console example (a datasheet: three figures skipped, with the reason), run as written."""
    block = re.search(r"```console\n\$ (.*?)\n(.*?)```", DOC, flags=re.S)
    command, expected = shlex.split(block.group(1)), block.group(2)
    assert command[:2] == ["gpucal", "plot"]
    done = run_gpucal(*command[1:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["plan.png", "roofline.png"]


@pytest.mark.parametrize("args, start", [
    (["--only", "roofline,heatmap"], "gpucal plot: error: --only: unknown figure 'heatmap'"),
    (["--cards", "0"], "gpucal plot: error: argument --cards: must be at least 1"),
    (["--strategy", "hybrid"], "gpucal plot: error: argument --strategy: invalid choice"),
    (["--model", "llama-9"], "gpucal plot: error: --model: unknown model 'llama-9'"),
    (["--cards", "3", "--strategy", "tp"], "gpucal plot: error: --cards: a TP degree of 3 does not divide"),
])
def test_bad_input_is_one_line_naming_the_flag_and_exit_2(tmp_path, args, start):
    done = run_gpucal("plot", FIXTURE, "-o", str(tmp_path / "out"), "--only", "plan", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(start) and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_an_unknown_profile_is_named(tmp_path):
    done = run_gpucal("plot", "rtx4091", "-o", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("gpucal plot: error: PROFILE: unknown profile 'rtx4091'; did you mean rtx4090")


def test_without_matplotlib_exit_2_and_what_to_install(tmp_path):
    code = "import sys; sys.modules['matplotlib'] = None; from gpucal.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, "plot", FIXTURE, "-o", str(tmp_path / "out")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "gpucal plot: error: matplotlib is not installed: pip install 'gpucal[plot]'\n"
    assert not (tmp_path / "out").exists()
