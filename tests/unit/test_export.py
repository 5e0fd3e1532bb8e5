"""Exports to llm-analysis and aiconfigurator (``gpucal.profiles.export``): key sets, units, derivations, refusals."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from gpucal import profiles as profile
from gpucal.errors import InputError, ProfileExistsError
from gpucal.profiles import export as ex
from gpucal.profiles.model import FlopsQuantity
from gpucal.profiles.queries import planner_link, resolve_link

FIXTURE = Path(__file__).parent.parent / "fixtures" / "profile-simulated-rtx4090x2.json"
EXACT = {"rel": 1e-12, "abs": 0.0}
GiB = 2**30


def builtin(name):
    return profile.load_builtin("profile", name)


def fixture():
    return profile.load(FIXTURE)


def edited(name, change, origin="edited.json"):
    """A copy of built-in profile ``name`` changed by ``change(data)``, validated as file ``origin``."""
    data = copy.deepcopy(builtin(name).data)
    change(data)
    return profile.validate(data, origin)


# Pinned llm-analysis values, written out by hand from the profiles (GiB for memory, GB = 1e9 for rates, TFLOP/s).
LLM_ANALYSIS_EXPECTED = {
    "h100-sxm": {"mem_per_GPU_in_GB": 80.0, "hbm_bandwidth_in_GB_per_sec": 3350.0,
                 "intra_node_bandwidth_in_GB_per_sec": 450.0, "intra_node_min_message_latency": 3e-6,
                 "peak_fp16_TFLOPS": 989.4, "peak_i8_TFLOPS": 1978.9, "peak_i4_TFLOPS": 0.0,
                 "inter_node_bandwidth_in_GB_per_sec": 25.0},
    "rtx4090": {"mem_per_GPU_in_GB": 24.0, "hbm_bandwidth_in_GB_per_sec": 1008.0,
                "intra_node_bandwidth_in_GB_per_sec": 16 * 16 * 128 / 130 / 8, "intra_node_min_message_latency": 10e-6,
                "peak_fp16_TFLOPS": 165.2, "peak_i8_TFLOPS": 660.6, "peak_i4_TFLOPS": 1321.2,
                "inter_node_bandwidth_in_GB_per_sec": 25.0},
    "a100-sxm-80gb": {"mem_per_GPU_in_GB": 80.0, "hbm_bandwidth_in_GB_per_sec": 2039.0,
                      "intra_node_bandwidth_in_GB_per_sec": 300.0, "intra_node_min_message_latency": 3e-6,
                      "peak_fp16_TFLOPS": 312.0, "peak_i8_TFLOPS": 624.0, "peak_i4_TFLOPS": 1248.0,
                      "inter_node_bandwidth_in_GB_per_sec": 25.0},
    # the simulated 2 x RTX 4090: measured memory bandwidth and fp16 rates, the host-staged link between the cards
    "sample-rtx4090x2": {"mem_per_GPU_in_GB": 24.0, "hbm_bandwidth_in_GB_per_sec": 1007.9,
                         "intra_node_bandwidth_in_GB_per_sec": 26.15, "intra_node_min_message_latency": 20e-6,
                         "peak_fp16_TFLOPS": 165.1, "peak_i8_TFLOPS": 660.2, "peak_i4_TFLOPS": 1320.4,
                         "inter_node_bandwidth_in_GB_per_sec": 25.0},
}


def _doc(name):
    return fixture() if name == "sample-rtx4090x2" else builtin(name)


@pytest.mark.parametrize("name", sorted(LLM_ANALYSIS_EXPECTED))
def test_llm_analysis_has_exactly_the_nine_keys_with_pinned_values(name):
    data = ex.to_llm_analysis(_doc(name))
    assert tuple(data) == ex.LLM_ANALYSIS_KEYS and len(data) == 9
    assert data["name"] == name
    for key, want in LLM_ANALYSIS_EXPECTED[name].items():
        assert type(data[key]) is float, key
        assert data[key] == pytest.approx(want, **EXACT), key
    text = ex.dumps("llm-analysis", data)
    assert json.loads(text) == data and text.endswith("}\n")


@pytest.mark.parametrize("name", sorted(LLM_ANALYSIS_EXPECTED))
def test_llm_analysis_values_are_the_profile_values_converted(name):
    doc = _doc(name)
    device = doc.data["devices"][0]
    link = planner_link(doc)
    data = ex.to_llm_analysis(doc)
    assert data["mem_per_GPU_in_GB"] == pytest.approx(device["memory_bytes"]["value"] / GiB, **EXACT)
    assert data["mem_per_GPU_in_GB"] != pytest.approx(device["memory_bytes"]["value"] / 1e9, rel=1e-3)  # GiB, not GB
    assert data["hbm_bandwidth_in_GB_per_sec"] == pytest.approx(device["memory_bandwidth_Bps"]["value"] / 1e9, **EXACT)
    assert data["intra_node_bandwidth_in_GB_per_sec"] == pytest.approx(link.spec.beta_Bps / 1e9, **EXACT)
    assert data["intra_node_min_message_latency"] == pytest.approx(link.spec.alpha_s, **EXACT)
    assert data["peak_fp16_TFLOPS"] == pytest.approx(device["dense_flops"]["fp16_fp32acc"]["value"] / 1e12, **EXACT)


@pytest.mark.parametrize("name, int8_tops, int4_tops", [
    ("a100-sxm-80gb", 624, 1248), ("a100-pcie-80gb", 624, 1248), ("rtx3090", 284, 568),
    ("rtx4090", 660.6, 1321.2), ("l40s", 733, 1466), ("h100-sxm", 1979, 0), ("h100-pcie", 1513, 0),
    ("h200-sxm", 1979, 0), ("rtx5090", 838, 0),
])
def test_int8_and_int4_rates_match_the_datasheets(name, int8_tops, int4_tops):
    """Dense INT8/INT4 TOPS as NVIDIA prints them (A100, L40S, H100 datasheets; GA102, Ada, RTX Blackwell
    whitepapers); Hopper and Blackwell have no INT4 tensor cores."""
    data = ex.to_llm_analysis(builtin(name))
    assert data["peak_i8_TFLOPS"] == pytest.approx(int8_tops, rel=1e-3)
    assert data["peak_i4_TFLOPS"] == pytest.approx(int4_tops, rel=1e-3)


def _rate(value):
    return FlopsQuantity.estimate(value) if value is not None else FlopsQuantity.null("none", "estimate")


def test_int_rate_rules_by_compute_capability():
    ampere = {"fp16_fp32acc": _rate(100e12)}
    assert ex.int8_tensor_ops(ampere, (8, 0))[0] == 200e12
    assert ex.int8_tensor_ops({**ampere, "fp16_fp16acc": _rate(150e12)}, (8, 6))[0] == 300e12
    assert ex.int8_tensor_ops({**ampere, "fp8_fp32acc": _rate(180e12), "fp8_fp16acc": _rate(None)}, (8, 9))[0] == 180e12
    value, how = ex.int8_tensor_ops(ampere, (7, 0))  # Volta: no int8 tensor cores
    assert value == 0.0 and how.startswith("0: no int8 tensor cores")
    assert ex.int8_tensor_ops(ampere, None)[0] == 200e12
    assert ex.int4_tensor_ops(200e12, (7, 5))[0] == 400e12
    assert ex.int4_tensor_ops(200e12, (8, 9))[0] == 400e12
    for cc in ((7, 0), (9, 0), (10, 0), (12, 0), None):
        value, how = ex.int4_tensor_ops(200e12, cc)
        assert value == 0.0 and how.startswith("0: ")


def test_sources_say_where_each_value_came_from():
    result = ex.export(builtin("h100-sxm"), "llm-analysis")
    assert set(result.sources) == set(ex.LLM_ANALYSIS_KEYS) - {"name"}
    assert result.sources["mem_per_GPU_in_GB"] == "devices[0].memory_bytes: datasheet (h100-datasheet)"
    assert result.sources["intra_node_bandwidth_in_GB_per_sec"].startswith("plan_defaults.link: preset nvlink4")
    assert result.sources["inter_node_bandwidth_in_GB_per_sec"].startswith("default: link preset ib200g")
    assert "fp8_fp32acc" in result.sources["peak_i8_TFLOPS"]
    assert result.filename == "h100-sxm.json"
    measured = ex.export(fixture(), "llm-analysis").sources
    assert measured["intra_node_bandwidth_in_GB_per_sec"].startswith("links[]: sample-rtx4090x2: dev0->dev1 host-staged")


def _aiconfigurator_spec(doc, **kwargs):
    """The exported YAML text, parsed back the way aiconfigurator's loader reads it (yaml.safe_load)."""
    result = ex.export(doc, "aiconfigurator", **kwargs)
    spec = yaml.safe_load(result.text)
    assert spec == result.data
    return spec


def test_aiconfigurator_datasheet_profile():
    spec = _aiconfigurator_spec(builtin("h100-sxm"))
    assert list(spec) == ["data_dir", "gpu", "node", "misc", "gpucal"] and spec["data_dir"] == "data/h100-sxm"
    gpu, node = spec["gpu"], spec["node"]
    assert gpu["mem_bw"] == 3.35e12 and gpu["mem_bw_empirical_scaling_factor"] == 1.0
    assert gpu["mem_empirical_constant_latency"] == 3e-6
    assert gpu["mem_capacity"] == 80 * GiB and type(gpu["mem_capacity"]) is int
    # aiconfigurator 0.12.0 reads bfloat16_tc_flops for fp16 and bf16 alike, float16_tc_flops nowhere
    assert "float16_tc_flops" not in gpu and gpu["bfloat16_tc_flops"] == 989.4e12
    assert gpu["int8_tc_flops"] == 1978.9e12 and gpu["fp8_tc_flops"] == 1978.9e12 and gpu["sm_version"] == 90
    # one card of a datasheet: the 8-card server aiconfigurator's own files describe, so TP 8 stays in the node
    assert node == {"num_gpus_per_node": 8, "inter_node_bw": 25e9, "intra_node_bw": 450e9,
                    "pcie_bw": pytest.approx(32e9 * 16 * 128 / 130 / 8, **EXACT), "p2p_latency": 3e-6}
    about = spec["gpucal"]
    assert about["profile"] == "h100-sxm" and about["source"] == "datasheet" and about["created"] == "2026-11-28"
    assert about["sources"]["gpu.bfloat16_tc_flops"] == "devices[0].dense_flops.bf16_fp32acc: datasheet (hopper-whitepaper)"
    assert set(about["sources"]) >= {f"gpu.{k}" for k in gpu} | {f"node.{k}" for k in node} | {
        f"misc.{k}" for k in spec["misc"]}
    # aiconfigurator's memory model reads misc in every mode: nccl_mem per TP size, other_mem, nccl_version
    assert spec["misc"] == {"nccl_mem": ex.AIC_NCCL_MEM_BYTES, "other_mem": ex.AIC_OTHER_MEM_BYTES,
                            "nccl_version": ex.AIC_NCCL_VERSION}
    assert about["sources"]["misc.nccl_mem"].startswith("estimate") and "SOL" in about["not_measured"]


def test_aiconfigurator_node_size_flops_mode_and_fp8_from_the_datasheet():
    doc = builtin("h100-sxm")
    assert _aiconfigurator_spec(doc, gpus_per_node=4)["node"]["num_gpus_per_node"] == 4
    # inter_node_bw is per GPU: one NIC's beta times the node's NICs over its GPUs (default: a NIC per GPU)
    shared = ex.export(doc, "aiconfigurator", gpus_per_node=8, nics_per_node=2)
    assert shared.data["node"]["inter_node_bw"] == pytest.approx(25e9 * 2 / 8, **EXACT)
    assert "x 2 NICs / 8 GPUs a node (--nics-per-node)" in shared.sources["node.inter_node_bw"]
    alone = ex.export(doc, "aiconfigurator", gpus_per_node=4)
    assert alone.data["node"]["inter_node_bw"] == 25e9 and "a NIC per GPU" in alone.sources["node.inter_node_bw"]
    sparse = ex.to_aiconfigurator(doc, flops_mode="sparse:bf16_fp32acc")["gpu"]["bfloat16_tc_flops"]
    assert sparse == 1979e12
    article = ex.to_aiconfigurator(builtin("seed-rtx4090"))  # no bf16 entry: its fp16 rate, said so
    assert article["gpu"]["bfloat16_tc_flops"] == 330e12
    assert "no bf16 rate" in article["gpucal"]["sources"]["gpu.bfloat16_tc_flops"]
    measured = ex.to_aiconfigurator(fixture())  # a calibrated card without an fp8 figure: its datasheet's
    assert measured["gpu"]["fp8_tc_flops"] == 330.3e12
    assert "not measured" in measured["gpucal"]["sources"]["gpu.fp8_tc_flops"]


def test_aiconfigurator_no_fp8_key_where_the_card_has_none():
    gpu = _aiconfigurator_spec(builtin("a100-sxm-80gb"))["gpu"]
    assert "fp8_tc_flops" not in gpu and gpu["int8_tc_flops"] == 624e12 and gpu["sm_version"] == 80


def test_aiconfigurator_measured_profile_scales_the_datasheet_and_uses_the_measured_link():
    doc = fixture()
    spec = _aiconfigurator_spec(doc)
    gpu, node = spec["gpu"], spec["node"]
    measured_Bps = doc.data["devices"][0]["memory_bandwidth_Bps"]["value"]
    assert gpu["mem_bw"] == 1.008e12  # the rtx4090 datasheet profile's rate
    assert gpu["mem_bw_empirical_scaling_factor"] == pytest.approx(measured_Bps / 1.008e12, rel=1e-11)
    assert gpu["mem_bw"] * gpu["mem_bw_empirical_scaling_factor"] == pytest.approx(measured_Bps, rel=1e-11)
    assert "float16_tc_flops" not in gpu and gpu["bfloat16_tc_flops"] == 165.2e12
    assert gpu["fp8_tc_flops"] == 330.3e12 and gpu["sm_version"] == 89  # the datasheet's: not measured
    # a PCIe box without P2P: the measured host-staged link, never an NVLink figure
    assert node == {"num_gpus_per_node": 2, "inter_node_bw": 25e9, "intra_node_bw": 26.15e9,
                    "pcie_bw": 26.15e9, "p2p_latency": 20e-6}
    assert spec["gpucal"]["source"] == "simulated"
    # aiconfigurator's memory-op time: bytes / (mem_bw * factor) + constant
    seconds = 1e9 / (gpu["mem_bw"] * gpu["mem_bw_empirical_scaling_factor"]) + gpu["mem_empirical_constant_latency"]
    assert seconds == pytest.approx(1e9 / measured_Bps + 3e-6, rel=1e-11)


def test_link_and_net_overrides_and_network_entries():
    nvlink, eth = resolve_link("nvlink4"), resolve_link("alpha=5us,beta=12.5GB/s")
    data = ex.to_llm_analysis(builtin("rtx4090"), link=nvlink, net=eth)
    assert data["intra_node_bandwidth_in_GB_per_sec"] == 450.0 and data["inter_node_bandwidth_in_GB_per_sec"] == 12.5

    def entry(a, b, beta_Bps, same_host=False):
        q = {"source": "measured", "method": "fit", "statistic": "fit", "n": 20}
        return {"src_rank": a, "dst_rank": b, "src_host": a, "dst_host": b, "same_host": same_host,
                "alpha_s": {**q, "value": 20e-6}, "beta_Bps": {**q, "value": beta_Bps}}

    def networks(d):
        d["network"] = [entry(0, 1, 50e9), entry(0, 2, 40e9), entry(1, 2, 10e9, same_host=True)]
    doc = edited("h100-sxm", networks)
    assert ex.to_aiconfigurator(doc)["node"]["inter_node_bw"] == 40e9
    result = ex.export(doc, "llm-analysis")
    assert result.data["inter_node_bandwidth_in_GB_per_sec"] == 40.0
    assert result.sources["inter_node_bandwidth_in_GB_per_sec"] == \
        "network: h100-sxm: host0<->host2 network, the slowest of 2 (measured): beta, per direction"
    assert ex.to_llm_analysis(doc, net=eth)["inter_node_bandwidth_in_GB_per_sec"] == 12.5


def test_refuses_a_missing_or_null_flops_entry_naming_the_field():
    # the article's card names its fp16 rate (plan_flops_mode: fp16_fp16acc), as gpucal plan uses it
    assert ex.to_llm_analysis(builtin("seed-rtx4090"))["peak_fp16_TFLOPS"] == 330.0

    def no_fp16(d):
        d["devices"][0]["dense_flops"].pop("fp16_fp32acc")
    with pytest.raises(InputError) as err:
        ex.to_llm_analysis(edited("h100-sxm", no_fp16, origin="h100-nofp16.json"))
    assert str(err.value) == ("h100-nofp16.json: devices[0].dense_flops.fp16_fp32acc: missing; "
                              "needed by llm-analysis (peak_fp16_TFLOPS)")

    def no_bf16(d):
        d["devices"][0]["dense_flops"]["bf16_fp32acc"] = {"value": None, "source": "datasheet",
                                                          "ref": "h100-datasheet", "reason": "not measured"}
    doc = edited("h100-sxm", no_bf16, origin="h100-nobf16.json")
    assert ex.to_llm_analysis(doc)["peak_fp16_TFLOPS"] == 989.4  # llm-analysis does not need bf16
    with pytest.raises(InputError) as err:
        ex.to_aiconfigurator(doc)
    assert str(err.value) == ("h100-nobf16.json: devices[0].dense_flops.bf16_fp32acc: unknown (not measured); "
                              "needed by aiconfigurator (gpu.bfloat16_tc_flops)")
    assert err.value.exit_code == 2


def test_refuses_an_nvlink_preset_on_a_card_without_nvlink_and_a_profile_without_a_link():
    def pcie_card(d):
        d["devices"][0]["peer_link"] = {"kind": "pcie", "p2p_supported": {"value": True, "source": "datasheet",
                                                                           "ref": "h100-datasheet"}}
    with pytest.raises(InputError, match=r"edited.json: plan_defaults.link: nvlink4 is an NVLink preset but "
                                         r"devices\[0\].peer_link.kind is pcie \(give --link\); needed by aiconfigurator"):
        ex.to_aiconfigurator(edited("h100-sxm", pcie_card))
    assert ex.to_aiconfigurator(edited("h100-sxm", pcie_card), link=resolve_link("pcie5-x16"))["node"]["intra_node_bw"] \
        == pytest.approx(32e9 * 16 * 128 / 130 / 8, **EXACT)
    with pytest.raises(InputError, match=r"edited.json: links: no measured link between cards and no plan_defaults.link"):
        ex.to_llm_analysis(edited("rtx4090", lambda d: d.pop("plan_defaults")))


def test_refuses_unknown_formats_and_other_documents():
    doc = builtin("h100-sxm")
    with pytest.raises(InputError, match="--format: unknown format 'llm_analysis'; gpucal exports llm-analysis, aiconfigurator"):
        ex.export(doc, "llm_analysis")
    with pytest.raises(InputError, match="--format: unknown format"):
        ex.dumps("calculon", {})
    with pytest.raises(InputError, match="links/nvlink4.json: is a link document"):
        ex.export(profile.load_builtin("link", "nvlink4"), "llm-analysis")
    with pytest.raises(ValueError, match="exactly the keys"):
        ex.dumps("llm-analysis", {**ex.to_llm_analysis(doc), "notes": "an extra key breaks llm-analysis's loader"})


def test_write_is_atomic_and_never_replaces_a_file_without_force(tmp_path):
    folder = tmp_path / "new" / "deeper"
    target = folder / "h100-sxm.json"
    first = ex.export(builtin("h100-sxm"), "llm-analysis")
    assert ex.write(first, folder) == [target] and target.read_text() == first.text
    second = ex.export(builtin("h100-sxm"), "llm-analysis", flops_mode="fp8_fp32acc")
    with pytest.raises(ProfileExistsError, match=r"h100-sxm.json: exists; pass --force to overwrite it"):
        ex.write(second, folder)
    assert target.read_text() == first.text
    ex.write(second, folder, force=True)
    assert target.read_text() == second.text
    assert sorted(p.name for p in folder.iterdir()) == ["h100-sxm.json"]  # no temporary file left
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        ex.write(first, blocker)


def test_llm_analysis_loads_the_exported_files(tmp_path):
    """llm-analysis's own loader (``read_configs(folder, type="gpu")``, which builds ``GPUConfig(**json)``
    for every file of a folder) reads every export."""
    config = pytest.importorskip("llm_analysis.config")
    names = sorted(LLM_ANALYSIS_EXPECTED)
    for name in names:
        ex.write(ex.export(_doc(name), "llm-analysis"), tmp_path)
    loaded = config.read_configs(str(tmp_path), type="gpu")
    assert sorted(loaded) == names
    for name in names:
        gpu = loaded[name]
        assert isinstance(gpu, config.GPUConfig)
        for key, want in LLM_ANALYSIS_EXPECTED[name].items():
            assert getattr(gpu, key) == pytest.approx(want, **EXACT), (name, key)


LLM_ANALYSIS_MODEL = dict(name="llama-shape", num_layers=32, n_head=32, hidden_dim=4096, vocab_size=128256,
                          num_key_value_heads=8, ffn_embed_dim=16384, model_type="llama")


@pytest.mark.parametrize("name, path", [("h200-sxm", "h200-sxm"), ("sample-rtx4090x2", str(FIXTURE))])
@pytest.mark.parametrize("batch", [1, 32])
def test_llm_analysis_estimates_decode_as_gpucal_plans_it(tmp_path, name, path, batch):
    """llm-analysis's own estimate (``LLMAnalysis.inference``) on the exported GPU config, for a Llama shape it can
    express (its FFN must be a multiple of the hidden size) and gpucal's article step for the same parameters
    (``--params``: what llm-analysis counts, two MLP matrices), both at full efficiency: its decode latency is
    gpucal's memory time plus one more read of the KV cache (llm-analysis reads it twice a step, at the context
    after the last token), within 2 % (docs/exports.md)."""
    config = pytest.importorskip("llm_analysis.config")
    analysis = pytest.importorskip("llm_analysis.analysis")
    from conftest import run_gpucal

    ex.write(ex.export(_doc(name) if name != "sample-rtx4090x2" else fixture(), "llm-analysis"), tmp_path)
    gpu = config.read_configs(str(tmp_path), type="gpu")[name]
    model = config.ModelConfig(**LLM_ANALYSIS_MODEL)
    estimate = analysis.LLMAnalysis(model, gpu, hbm_memory_efficiency=1.0, flops_efficiency=1.0).inference(
        batch_size_per_gpu=batch, seq_len=1024, num_tokens_to_generate=128)
    params = estimate["weight_memory_per_gpu"] / 2
    context = 1024 + 128
    done = run_gpucal("plan", "--gpu", path, "--model", "llama-3.1-8b", "--params", str(params), "--cards", "1",
                      "--strategy", "tp", "--batch", str(batch), "--context", str(context), "--step", "seed", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    bandwidth = plan["inputs"]["gpu"]["memory_bandwidth_Bps"]
    assert gpu.hbm_bandwidth_in_GB_per_sec * 1e9 == pytest.approx(bandwidth, rel=1e-9)
    second_kv_read_s = batch * context * 2 * 32 * 8 * 128 * 2 / bandwidth
    assert estimate["decode_latency"] == pytest.approx(plan["memory_time_s"] + second_kv_read_s, rel=0.02)
