"""``gpucal plan`` as users run it: a subprocess, its stdout, stderr and exit code."""

import json
import subprocess
import sys

import pytest

from conftest import run_gpucal

DONE = ["plan", "--gpu", "seed-rtx4090", "--model", "seed-70b", "--cards", "8", "--strategy", "tp", "--batch", "1",
        "--link", "seed-pcie4"]
REQUIRED_KEYS = {"token_latency_s", "tokens_per_s", "aggregate_tokens_per_s", "card_time_s", "memory_time_s",
                 "compute_time_s", "comm_time_s", "bound", "balance_batch", "weights_bytes_per_card",
                 "kv_bytes_per_card", "fits", "min_cards", "inputs"}


def plan_json(*args):
    out = run_gpucal(*args, "--json")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    return json.loads(out.stdout)


def test_the_articles_tp_case_reports_its_token_latency():
    result = plan_json(*DONE)
    assert result["token_latency_s"] == 0.02238192
    assert REQUIRED_KEYS <= set(result)
    assert result["bound"] == "memory" and result["fits"] is True and result["balance_batch"] == 330.0
    inputs = result["inputs"]
    assert inputs["link"] == {"name": "seed-pcie4", "alpha_s": 30e-6, "beta_Bps": 32e9, "source": "article"}
    assert inputs["gpu"]["memory_bandwidth_Bps"] == 1e12 and inputs["gpu"]["flops_mode"] == "fp16_fp16acc"
    assert (inputs["cards"], inputs["tp"], inputs["pp"], inputs["batch"]) == (8, 8, 1, 1)


def test_the_human_output_shows_the_terms_the_bound_and_the_result():
    out = run_gpucal(*DONE)
    assert out.returncode == 0, out.stderr
    for text in ("memory time per card", "17.5 ms", "memory-bound; balance batch 330", "TP comm", "4.882 ms",
                 "token latency", "22.38 ms", "44.68", "seed-pcie4 (article)"):
        assert text in out.stdout


def test_python_dash_m_and_the_console_script_agree():
    script = subprocess.run([sys.executable, "-c", "import sys; from gpucal.cli import main; sys.exit(main())",
                             *DONE, "--json"], capture_output=True, text=True)
    assert json.loads(script.stdout) == plan_json(*DONE)


def test_pp_over_one_gigabit_ethernet_and_the_target_solver():
    result = plan_json("plan", "--gpu", "seed-rtx4090", "--model", "seed-70b", "--cards", "8", "--strategy", "pp",
                       "--batch", "1", "--cards-per-host", "1", "--net", "alpha=0s,beta=1Gbit/s", "--target-tps", "5")
    assert result["pp_network_hops"] == 8 and result["hosts"] == 8
    target = result["target"]
    assert target["max_batch"] == 57 and target["solved_link"] == "net" and target["nics"] == 1
    # The article's rounded inputs (h 8000, 128e6 B/s) give its 60 and 2400.
    article = plan_json("plan", "--gpu", "seed-rtx4090", "--model", "seed-70b", "--hidden", "8000", "--cards", "8",
                        "--strategy", "pp", "--batch", "60", "--cards-per-host", "1", "--net",
                        "alpha=0,beta=128MB/s", "--target-tps", "5")
    assert article["target"]["max_batch"] == 60 and article["aggregate_tokens_per_s"] == 2400


def test_how_many_nics_a_target_needs():
    # TP over 2 hosts of 4 H100: the exchanges cross the network; 100 tok/s per sequence at batch 64.
    result = plan_json("plan", "--gpu", "h100-sxm", "--model", "llama-3.1-70b", "--cards", "8", "--strategy", "tp",
                       "--batch", "64", "--cards-per-host", "4", "--net", "ib400g", "--target-tps", "100",
                       "--nic", "400Gbit/s")
    target = result["target"]
    assert target["solved_link"] == "net" and target["nic_beta_Bps"] == 50e9
    assert target["nics"] == -(-target["required_beta_Bps"] // 50e9)


def test_hybrid_and_ring():
    result = plan_json("plan", "--gpu", "h100-sxm", "--model", "llama-3.1-405b", "--cards", "16", "--strategy",
                       "hybrid", "--tp", "8", "--batch", "32", "--comm", "ring", "--cards-per-host", "8", "--net",
                       "ib400g")
    assert (result["inputs"]["tp"], result["inputs"]["pp"], result["hosts"]) == (8, 2, 2)
    assert result["pp_network_hops"] == 2 and result["inputs"]["comm_model"] == "ring"


def test_a_sweep_gives_one_row_per_configuration():
    result = plan_json("plan", "--gpu", "rtx4090", "--model", "llama-2-70b", "--strategy", "pp", "--sweep",
                       "batch=1:1024", "--sweep", "cards=6:8:1", "--context", "1024")
    assert result["schema"] == "gpucal.plan-sweep/1" and result["count"] == 11 * 3
    assert {row["batch"] for row in result["rows"]} == {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}
    assert any(not row["fits"] for row in result["rows"])
    human = run_gpucal("plan", "--gpu", "rtx4090", "--model", "llama-2-70b", "--strategy", "pp", "--sweep",
                       "batch=1:1024", "--sweep", "cards=6:8:1")
    assert human.returncode == 0 and "33 configurations" in human.stdout


def test_models_from_files(tmp_path):
    config = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
              "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from_config = plan_json("plan", "--gpu", "rtx4090", "--model", str(tmp_path), "--cards", "1", "--strategy", "tp",
                            "--batch", "1")
    preset = plan_json("plan", "--gpu", "rtx4090", "--model", "llama-3.1-8b", "--cards", "1", "--strategy", "tp",
                       "--batch", "1")
    assert from_config["token_latency_s"] == preset["token_latency_s"]
    model = {"schema": "gpucal.model/1", "name": "tiny", "params": 1e9, "layers": 16, "hidden": 2048, "heads": 16,
             "kv_heads": 4}
    (tmp_path / "tiny.json").write_text(json.dumps(model))
    tiny = plan_json("plan", "--gpu", "rtx4090", "--model", str(tmp_path / "tiny.json"), "--cards", "2",
                     "--strategy", "pp", "--batch", "1")
    assert tiny["weights_bytes_per_card"] == 1e9


def test_a_users_own_profile_file(tmp_path):
    data = json.loads(run_gpucal("profiles", "show", "rtx4090", "--json").stdout)
    data["name"] = "my-4090"
    data["devices"][0]["memory_bandwidth_Bps"] = {"value": 0.9e12, "source": "estimate", "note": "a slow one"}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    result = plan_json("plan", "--gpu", str(path), "--model", "seed-70b", "--cards", "8", "--strategy", "pp",
                       "--batch", "1")
    assert result["inputs"]["gpu"]["memory_bandwidth_Bps"] == 0.9e12
    assert result["inputs"]["gpu"]["sources"]["memory_bandwidth_Bps"] == "my-4090: estimate"


BAD = [
    (["--gpu", "rtx409"], "--gpu", "did you mean rtx4090"),
    (["--model", "llama2-70b"], "--model", "did you mean llama-2-70b"),
    (["--cards", "0"], "--cards", "at least 1"),
    (["--cards", "-3"], "--cards", "at least 1"),
    (["--cards", "3"], "--cards", "valid TP degrees: 1, 2, 4, 8"),
    (["--cards", "2"], "--cards", "at least 6 cards"),
    (["--batch", "4096", "--context", "4096"], "--batch", "the largest batch that fits is"),
    (["--batch", "nan"], "--batch", "whole number"),
    (["--mem-bw", "nan"], "--mem-bw", "bandwidth"),
    (["--mem-bw", "0GB/s"], "--mem-bw", "greater than zero"),
    (["--flops", "-1"], "--flops", "greater than zero"),
    (["--link", "alpha=30parsec,beta=32GB/s"], "--link", "unknown unit 'parsec'"),
    (["--link", "alpha=30us"], "--link", "beta is missing"),
    (["--link", "pcie9"], "--link", "unknown link"),
    (["--link", "rtx4090"], "--link", "unknown link"),
    (["--strategy", "zz"], "--strategy", "invalid choice"),
    (["--strategy", "hybrid"], "--tp", "hybrid needs --tp or --pp"),
    (["--strategy", "hybrid", "--tp", "3"], "--tp", "does not divide"),
    (["--strategy", "pp", "--cards-per-host", "2"], "--net", "required"),
    (["--cards-per-host", "3", "--net", "eth1g"], "--cards-per-host", "line up"),
    (["--dtype", "fp8", "--gpu", "a100-sxm-80gb"], "--dtype", "no FP8 tensor cores"),
    (["--flops-mode", "fp4"], "--flops-mode", "no FLOP/s entry 'fp4'"),
    (["--sweep", "batch=0:4"], "--sweep", "at least 1"),
    (["--sweep", "depth=1:4"], "--sweep", "expected batch=RANGE"),
    (["--gpu", "/no/such/file.json"], "--gpu", "cannot read"),
    (["--target-tps", "0"], "--target-tps", "greater than zero"),
    (["--pp", "2"], "--pp", "only with --strategy hybrid"),
    (["--nic", "eth1g"], "--nic", "only with --target-tps"),
    (["--sweep", "batch=1:8", "--target-tps", "5"], "--target-tps", "drop --sweep"),
    (["--nic", "warp9", "--target-tps", "5"], "--nic", "unknown link"),
]


@pytest.mark.parametrize("change, flag, words", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_gets_one_line_naming_the_flag_and_exit_2(change, flag, words):
    args = dict(zip(DONE[1::2], DONE[2::2]))
    args.pop("--link")
    for key, value in zip(change[0::2], change[1::2]):
        args[key] = value
    argv = ["plan"] + [x for kv in args.items() for x in kv]
    out = run_gpucal(*argv)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert flag in lines[0] and words in lines[0], lines[0]


def test_a_bad_profile_file_names_the_file_and_the_field(tmp_path):
    data = json.loads(run_gpucal("profiles", "show", "rtx4090", "--json").stdout)
    data["devices"][0]["memory_bandwidth_Bps"]["value"] = -5
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    out = run_gpucal("plan", "--gpu", str(path), "--model", "seed-70b", "--cards", "8", "--strategy", "pp",
                     "--batch", "1")
    assert out.returncode == 2
    assert f"--gpu: {path}: devices[0].memory_bandwidth_Bps.value" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_bad_model_file_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mixtral", "num_local_experts": 8}))
    out = run_gpucal("plan", "--gpu", "rtx4090", "--model", str(path), "--cards", "8", "--strategy", "pp",
                     "--batch", "1")
    assert out.returncode == 2 and "--model" in out.stderr and "model_type" in out.stderr


def test_ignore_memory_plans_what_does_not_fit():
    result = plan_json("plan", "--gpu", "rtx4090", "--model", "seed-70b", "--cards", "2", "--strategy", "pp",
                       "--batch", "1", "--ignore-memory")
    assert result["fits"] is False and result["min_cards"] == 6


def test_planning_imports_neither_numba_nor_cupy():
    code = ("import sys; from gpucal.cli import main; "
            f"rc = main({DONE + ['--json']!r}); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'cupy', 'pynvml', 'matplotlib')); "
            "print(rc, heavy, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stderr.strip() == "0 []", out.stderr


def test_a_link_file_and_a_nic_preset(tmp_path):
    link = json.loads(run_gpucal("profiles", "show", "seed-pcie4", "--json").stdout)
    link.update(name="my-link")
    link["alpha_s"] = {"value": 15e-6, "source": "estimate", "note": "a guess"}
    path = tmp_path / "link.json"
    path.write_text(json.dumps(link))
    result = plan_json("plan", "--gpu", "seed-rtx4090", "--model", "seed-70b", "--cards", "8", "--strategy", "tp",
                       "--batch", "1", "--link", str(path), "--target-tps", "50", "--nic", "pcie5-x16")
    assert result["inputs"]["link"] == {"name": "my-link", "alpha_s": 15e-6, "beta_Bps": 32e9,
                                        "source": "article + estimate"}
    assert result["tp_comm_time_s"] == 160 * (15e-6 + 16384 / 32e9)
    assert result["target"]["solved_link"] == "link" and result["target"]["nic_beta_Bps"] > 63e9


def test_the_articles_capacity_cases_with_a_40GB_kv_cache():
    three = plan_json("plan", "--gpu", "seed-h100", "--model", "seed-70b", "--cards", "3", "--strategy", "pp",
                      "--batch", "1", "--kv-bytes", "40GB")
    assert (three["min_cards"], three["min_tp_degree"], three["fits"]) == (3, 4, True)
    assert three["kv_cache_bytes"] == 40e9
    two = run_gpucal("plan", "--gpu", "seed-h100", "--model", "seed-70b", "--cards", "2", "--strategy", "pp",
                     "--batch", "1", "--kv-bytes", "40GB")
    assert two.returncode == 2 and "--cards" in two.stderr and "at least 3 cards" in two.stderr


def test_version_and_missing_command():
    assert run_gpucal("--version").stdout.strip().startswith("gpucal ")
    out = run_gpucal()
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_overrides_turn_datasheet_inputs_into_the_articles():
    result = plan_json("plan", "--gpu", "rtx4090", "--model", "llama-2-70b", "--params", "70e9", "--layers", "80",
                       "--hidden", "8192", "--mem-bw", "1TB/s", "--flops", "330e12", "--mem-bytes", "24GB",
                       "--cards", "8", "--strategy", "tp", "--batch", "1", "--link", "alpha=30us,beta=32GB/s",
                       "--step", "seed")
    assert result["token_latency_s"] == 0.02238192
    gpu = result["inputs"]["gpu"]
    assert gpu["flops_mode"] == "flag" and gpu["sources"] == {"memory_bandwidth_Bps": "flag", "memory_bytes": "flag",
                                                              "flops": "flag"}


def test_dtypes_and_flops_modes():
    base = ["plan", "--gpu", "h100-sxm", "--model", "llama-3.1-70b", "--cards", "4", "--strategy", "tp", "--batch",
            "16", "--context", "4096"]
    fp16 = plan_json(*base)
    fp8 = plan_json(*base, "--dtype", "fp8")
    assert fp8["inputs"]["gpu"]["flops"] == 1978.9e12 and fp8["inputs"]["bytes_per_weight"] == 1.0
    assert fp8["weights_bytes_per_card"] == fp16["weights_bytes_per_card"] / 2
    assert fp8["kv_bytes_per_card"] == fp16["kv_bytes_per_card"] / 2  # the KV cache follows --dtype
    kv16 = plan_json(*base, "--dtype", "fp8", "--kv-dtype", "fp16")
    assert kv16["kv_bytes_per_card"] == fp16["kv_bytes_per_card"]
    acc16 = plan_json("plan", "--gpu", "rtx4090", "--model", "seed-70b", "--cards", "8", "--strategy", "pp",
                      "--batch", "1", "--flops-mode", "fp16_fp16acc")
    assert acc16["inputs"]["gpu"]["flops"] == 330.3e12
    sparse = plan_json("plan", "--gpu", "h100-sxm", "--model", "seed-70b", "--cards", "8", "--strategy", "tp",
                       "--batch", "1", "--flops-mode", "sparse:fp16_fp32acc")
    assert sparse["inputs"]["gpu"]["flops"] == 1979e12 and sparse["balance_batch"] == pytest.approx(590.746, rel=1e-5)


def test_hybrid_by_pipeline_stages():
    result = plan_json("plan", "--gpu", "a100-sxm-80gb", "--model", "llama-2-70b", "--cards", "8", "--strategy",
                       "hybrid", "--pp", "2", "--batch", "8")
    assert (result["inputs"]["tp"], result["inputs"]["pp"], result["pp_hops"]) == (4, 2, 2)
