"""``gpucal profiles export``: the file on stdout or in a folder, --force, --json, and one-line refusals."""

import json
import re
import shlex
from pathlib import Path

import yaml
from conftest import run_gpucal

from gpucal import profiles as profile
from gpucal.profiles import export as ex

FIXTURE = Path(__file__).parent.parent / "fixtures" / "profile-simulated-rtx4090x2.json"


def one_line_error(out, text):
    assert out.returncode == 2, out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert text in out.stderr, out.stderr


def test_without_a_folder_the_file_goes_to_stdout():
    out = run_gpucal("profiles", "export", "h100-sxm", "--format", "llm-analysis")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data == ex.to_llm_analysis(profile.load_builtin("profile", "h100-sxm"))
    assert data["mem_per_GPU_in_GB"] == 80.0 and data["peak_fp16_TFLOPS"] == 989.4 and len(data) == 9
    out = run_gpucal("profiles", "export", str(FIXTURE), "--format", "aiconfigurator")
    assert out.returncode == 0, out.stderr
    spec = yaml.safe_load(out.stdout)
    assert spec["node"]["intra_node_bw"] == 26.15e9 and spec["node"]["num_gpus_per_node"] == 2
    assert spec["gpucal"]["profile"] == "sample-rtx4090x2" and spec["gpucal"]["source"] == "simulated"


def test_a_folder_is_created_and_the_file_named_after_the_profile(tmp_path):
    folder = tmp_path / "exports" / "aic"
    out = run_gpucal("profiles", "export", "rtx4090", "--format", "aiconfigurator", "-o", str(folder))
    assert out.returncode == 0, out.stderr
    written = folder / "rtx4090.yaml"
    assert out.stdout.strip() == f"wrote {written} (aiconfigurator, from the datasheet profile rtx4090)"
    spec = yaml.safe_load(written.read_text())
    assert spec["gpu"]["mem_bw"] == 1.008e12 and spec["gpu"]["bfloat16_tc_flops"] == 165.2e12
    assert written.read_text().startswith("# aiconfigurator system file exported by gpucal")
    assert [p.name for p in folder.iterdir()] == ["rtx4090.yaml"]


def test_json_describes_what_was_written(tmp_path):
    out = run_gpucal("profiles", "export", str(FIXTURE), "--format", "llm-analysis", "-o", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    written = tmp_path / "sample-rtx4090x2.json"
    assert report["file"] == str(written) and report["format"] == "llm-analysis"
    assert report["profile"] == "sample-rtx4090x2" and report["from"] == str(FIXTURE)
    assert report["data"] == json.loads(written.read_text()) and report["bytes"] == len(written.read_bytes())
    assert report["data"]["intra_node_bandwidth_in_GB_per_sec"] == 26.15
    assert report["sources"]["inter_node_bandwidth_in_GB_per_sec"].startswith("default: link preset ib200g")
    assert json.loads(run_gpucal("profiles", "export", "h100-sxm", "--format", "llm-analysis", "--json").stdout)["file"] is None


def test_link_and_net_flags(tmp_path):
    out = run_gpucal("profiles", "export", "rtx4090", "--format", "llm-analysis", "--link", "alpha=20us,beta=26GB/s",
                     "--net", "eth100g")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["intra_node_bandwidth_in_GB_per_sec"] == 26.0 and data["intra_node_min_message_latency"] == 20e-6
    assert data["inter_node_bandwidth_in_GB_per_sec"] == 12.5
    one_line_error(run_gpucal("profiles", "export", "rtx4090", "--format", "llm-analysis", "--net", "eth7g"),
                   "--net: unknown link 'eth7g'")


def test_an_existing_file_is_kept_without_force(tmp_path):
    args = ("profiles", "export", "h100-sxm", "--format", "llm-analysis", "-o", str(tmp_path))
    target = tmp_path / "h100-sxm.json"
    target.write_text("old content\n")
    out = run_gpucal(*args)
    one_line_error(out, f"gpucal profiles: error: {target}: exists; pass --force to overwrite it")
    assert target.read_text() == "old content\n"
    assert run_gpucal(*args, "--force").returncode == 0
    assert json.loads(target.read_text())["name"] == "h100-sxm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h100-sxm.json"]


def test_bad_input_is_one_line_naming_the_flag_file_or_field(tmp_path):
    one_line_error(run_gpucal("profiles", "export", "h100-sxm", "--format", "calculon"),
                   "argument --format: invalid choice: 'calculon'")
    one_line_error(run_gpucal("profiles", "export", "h100-sxm"), "the following arguments are required: --format")
    one_line_error(run_gpucal("profiles", "export", "h100sxm", "--format", "llm-analysis"),
                   "NAME: unknown profile 'h100sxm'; did you mean h100-sxm")
    one_line_error(run_gpucal("profiles", "export", "h100-sxm", "--format", "llm-analysis", "--flops-mode", "fp4"),
                   "gpucal profiles: error: --flops-mode: datasheet/h100-sxm.json has no known FLOP/s entry 'fp4'")
    one_line_error(run_gpucal("profiles", "export", "h100-sxm", "--format", "llm-analysis", "--gpus-per-node", "8"),
                   "--gpus-per-node: only with --format aiconfigurator")
    one_line_error(run_gpucal("profiles", "export", "h100-sxm", "--format", "aiconfigurator", "--gpus-per-node", "0"),
                   "--gpus-per-node")
    one_line_error(run_gpucal("profiles", "export", "h100-sxm", "--format", "llm-analysis", "--nics-per-node", "8"),
                   "--nics-per-node: only with --format aiconfigurator")
    one_line_error(run_gpucal("profiles", "export", "h100-sxm", "--format", "aiconfigurator", "--nics-per-node", "0"),
                   "--nics-per-node")
    data = json.loads(FIXTURE.read_text())
    data["devices"][0]["dense_flops"].pop("bf16_fp32acc")  # with no fp16 rate either: nothing to export
    data["devices"][0]["dense_flops"].pop("fp16_fp32acc")
    no_bf16 = tmp_path / "no-bf16.json"
    no_bf16.write_text(json.dumps(data))
    one_line_error(run_gpucal("profiles", "export", str(no_bf16), "--format", "aiconfigurator", "-o", str(tmp_path)),
                   f"{no_bf16}: devices[0].dense_flops.bf16_fp32acc: missing; needed by aiconfigurator")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-bf16.json"]  # nothing written
    one_line_error(run_gpucal("profiles", "export", str(tmp_path / "none.json"), "--format", "llm-analysis"),
                   "cannot read")
    one_line_error(run_gpucal("profiles", "export", str(FIXTURE), "--format", "llm-analysis", "-o", str(no_bf16)),
                   f"-o: {no_bf16}: not a folder")


DOC = (Path(__file__).resolve().parents[2] / "docs" / "exports.md").read_text(encoding="utf-8")


def test_the_doc_example_prints_what_the_doc_says():
    block = re.search(r"```console\n\$ (gpucal .*?)\n(.*?)```", DOC, flags=re.S)
    argv = shlex.split(block.group(1))
    out = run_gpucal(*argv[1:])
    assert out.returncode == 0, out.stderr
    assert out.stdout == block.group(2)


def test_the_doc_maps_every_exported_key():
    for key in ex.LLM_ANALYSIS_KEYS:
        assert f"| `{key}` |" in DOC, key
    spec = ex.to_aiconfigurator(profile.load_builtin("profile", "h100-sxm"))
    for section in ("gpu", "node", "misc"):
        for key in spec[section]:
            assert f"| `{section}.{key}` |" in DOC, f"{section}.{key}"
    assert "| `data_dir` |" in DOC
