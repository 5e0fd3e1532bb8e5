"""The measured step (``gpucal.plan.measured``): each kernel priced as the virtual machine prices the decode-layer
probe's kernels of the same shard, the graphs and eager compositions, the stages of a pipeline, the fallbacks
to the ideal terms; the profile's figures read into it (``gpucal.profiles.decode_queries.decode_inputs``), the
published figures of the datasheet profiles included; and ``gpucal plan`` showing both steps."""

from __future__ import annotations

import json

import pytest

from gpucal.cli import main
from gpucal.kernels.virtual import VirtualBackend
from gpucal.kernels.virtual_machine import Faults, VirtualMachine
from gpucal.plan.decode import AttentionFit, GemmCurve, GemmRow, LaunchCosts, step_time_s
from gpucal.plan.measured import DecodeInputs, layer_kernels, measured_step, shard_of, step_kernels
from gpucal.plan.models import PRESETS, ModelSpec
from gpucal.plan.spec import GpuSpec, LinkSpec
from gpucal.plan.step import evaluate
from gpucal.probes.decode_layer import LayerShape, build_layer
from gpucal.profiles import Document, load_builtin
from gpucal.profiles.model import Profile, RateQuantity
from gpucal.profiles.decode_queries import decode_inputs, decode_terms, has_decode_terms

CURVE = GemmCurve("bf16", (GemmRow(1, 5e-6, 0.9e12), GemmRow(4, 5.3e-6, 0.88e12), GemmRow(16, 6e-6, 0.8e12),
                           GemmRow(64, 8e-6, 0.55e12)))
ATTENTION = AttentionFit(4e-6, 0.75e12)
LAUNCH = LaunchCosts(5e-6, 1.8e-6, 15e-6)
GPU = GpuSpec("card", 2.0e12, 400e12, 80e9)
LINK = LinkSpec("nvlink", 3e-6, 300e9)
TINY = ModelSpec("tiny", 3.9e6, 4, 256, 8, 4, 32, 2048, 704, "test")


def _profile_with_truth(memory_Bps: float = 2.0e12) -> Profile:
    data = load_builtin("profile", "h200-sxm").profile.model_dump(mode="json", by_alias=True, exclude_unset=True)
    q = lambda v: {"value": v, "source": "simulated", "method": "given", "statistic": "median", "n": 3}  # noqa: E731
    rows = [{"m": r.m, "alpha_s": r.alpha_s, "beta_Bps": r.beta_Bps, "points": []} for r in CURVE.rows]
    data["devices"][0]["memory_bandwidth_Bps"] = q(memory_Bps)
    data["devices"][0]["decode"] = {
        "gemm": {"bf16": {"source": "simulated", "method": "given", "byte_convention": "W/t", "shapes": [[8, 8]],
                          "rows": rows}},
        "attention": {"bf16": {"alpha_s": q(ATTENTION.alpha_s), "beta_Bps": q(ATTENTION.beta_Bps), "head_dim": 32,
                               "points": []}},
        "launch": {"eager_s": q(LAUNCH.eager_s), "graph_node_s": q(LAUNCH.graph_node_s), "sync_s": q(LAUNCH.sync_s)}}
    return Profile.model_validate(data)


@pytest.mark.parametrize("tp, batch, context", [(1, 1, 16), (2, 8, 64), (4, 3, 33), (8, 16, 8)])
def test_each_kernel_of_a_layer_costs_what_the_machine_charges_for_the_probes_kernel(tp, batch, context):
    """The planner's layer, kernel by kernel, against the decode-layer probe's layer built on a virtual machine
    that prices each kernel from its arrays (their shapes and bytes, not the planner's counts)."""
    profile = _profile_with_truth(memory_Bps=0.3e12)  # a slow memory: the bytes weigh beside the fixed costs
    backend = VirtualBackend(VirtualMachine(profile, "truth", 8, Faults()))
    layer = build_layer(backend, LayerShape.of(TINY, tp), batch, context, "bf16", seed=1)
    machine = {p.name: p.launch.seconds for p in layer.parts}
    shard = shard_of(TINY, tp)
    kv = 2 * batch * context * shard.kv_heads * shard.head_dim * 2
    kernels = layer_kernels(shard, batch, kv, 2.0, 2.0)
    inputs = DecodeInputs(stream_Bps=0.3e12, gemm=CURVE, attention=ATTENTION, launch=LAUNCH)
    names = [k.name for k in kernels if k.kind != "allreduce"]
    assert names == [n for n in machine if not n.startswith("allreduce")]
    for k in kernels:
        if k.kind == "allreduce":
            continue
        if k.kind == "gemm":
            want = CURVE.time_s(k.m, k.nbytes)
        elif k.kind == "attention":
            want = ATTENTION.time_s(k.nbytes)
        else:
            want = LAUNCH.graph_node_s + k.nbytes / inputs.stream_Bps
        assert want == pytest.approx(machine[k.name], rel=1e-9), (k.name, want, machine[k.name])


def test_the_graph_step_is_its_kernels_one_launch_and_one_sync_and_eager_is_a_pipeline():
    inputs = DecodeInputs(stream_Bps=1.5e12, gemm=CURVE, attention=ATTENTION, launch=LAUNCH, graphs=True)
    graph = measured_step(TINY, GPU, inputs, batch=4, tp=1, pp=1, link=LINK, context_tokens=128)
    t = graph.terms
    work = t["gemm_time_s"] + t["lm_head_time_s"] + t["attention_time_s"] + t["elementwise_time_s"]
    assert graph.step.row()["token_latency_s"] == pytest.approx(work + LAUNCH.eager_s + LAUNCH.sync_s, rel=1e-12)
    assert t["launch_time_s"] == pytest.approx(LAUNCH.eager_s) and t["sync_time_s"] == LAUNCH.sync_s
    assert t["kernels_per_step"] == 1 + TINY.layers * 9 + 2  # embedding, 9 a layer, final norm and LM head
    eager = measured_step(TINY, GPU, DecodeInputs(stream_Bps=1.5e12, gemm=CURVE, attention=ATTENTION, launch=LAUNCH,
                                                  graphs=False), batch=4, tp=1, pp=1, link=LINK, context_tokens=128)
    stages = step_kernels(shard_of(TINY, 1), 4, [TINY.layers], eager.terms["kv_bytes_per_layer_per_card"], 2.0, 2.0)
    times = []
    for k in stages[0]:
        if k.kind in ("gemm", "lm_head"):
            times.append(CURVE.time_s(k.m, k.nbytes))
        elif k.kind == "attention":
            times.append(ATTENTION.time_s(k.nbytes))
        else:
            times.append(LAUNCH.graph_node_s + k.nbytes / 1.5e12)
    want = step_time_s(times, LAUNCH, graph=False) + LAUNCH.sync_s
    assert eager.step.row()["token_latency_s"] == pytest.approx(want, rel=1e-12)
    assert eager.step.row()["token_latency_s"] > graph.step.row()["token_latency_s"]  # tiny kernels: host-bound


def test_tp_all_reduces_two_a_layer_and_one_for_the_embedding_at_the_measured_fit():
    ar = LinkSpec("ar", 20e-6, 100e9)
    m = measured_step(TINY, GPU, DecodeInputs(stream_Bps=1e12, gemm=CURVE, attention=ATTENTION, launch=LAUNCH,
                                              allreduce=ar), batch=8, tp=4, pp=1, link=LINK)
    row, t = m.step.row(), m.terms
    size = 8 * TINY.hidden * 2
    assert t["tp_allreduces"] == row["tp_exchanges"] == 2 * TINY.layers + 1
    assert row["tp_exchange_time_s"] == pytest.approx(20e-6 + size / 100e9)
    assert t["tp_comm_time_s"] == pytest.approx((2 * TINY.layers + 1) * (20e-6 + size / 100e9))
    assert m.fallbacks == []


def test_a_pipeline_is_its_stages_and_the_articles_hops():
    inputs = DecodeInputs(stream_Bps=1e12, gemm=CURVE, attention=ATTENTION, launch=LAUNCH)
    one = measured_step(TINY, GPU, inputs, batch=2, tp=1, pp=1, link=LINK)
    two = measured_step(TINY, GPU, inputs, batch=2, tp=1, pp=2, link=LINK)
    seed = evaluate(TINY, GPU, batch=2, tp=1, pp=2, link=LINK).row()
    assert two.terms["pp_comm_time_s"] == pytest.approx(seed["pp_comm_time_s"]) and seed["pp_comm_time_s"] > 0
    assert len(two.terms["stage_time_s"]) == 2
    # the same kernels, one more graph launch, and the hops
    assert two.step.row()["token_latency_s"] == pytest.approx(
        one.step.row()["token_latency_s"] + LAUNCH.eager_s + seed["pp_comm_time_s"], rel=1e-9)
    uneven = measured_step(ModelSpec("odd", 3.9e6, 5, 256, 8, 4, 32, 2048, 704, "t"), GPU, inputs, batch=2, tp=1,
                           pp=2, link=LINK)
    first, last = uneven.terms["stage_time_s"]
    assert first != last  # three layers and the embedding, two and the LM head


def test_without_figures_every_term_is_the_ideal_one_and_says_so():
    m = measured_step(TINY, GPU, DecodeInputs(), batch=1, tp=2, pp=1, link=LINK)
    text = " | ".join(m.fallbacks)
    for word in ("stream bandwidth", "launch costs", "decode GEMMs", "attention", "TP all-reduce"):
        assert word in text, text
    t = m.terms
    assert t["launch_time_s"] == 0.0 and t["sync_time_s"] == 0.0
    seed = evaluate(TINY, GPU, batch=1, tp=2, pp=1, link=LINK).row()
    assert m.step.row()["tp_exchange_time_s"] == pytest.approx(seed["tp_exchange_time_s"])
    weights = sum(k.nbytes for k in step_kernels(shard_of(TINY, 2), 1, [TINY.layers], 0, 2.0, 2.0)[0]
                  if k.kind in ("gemm", "lm_head"))
    assert t["gemm_time_s"] + t["lm_head_time_s"] == pytest.approx(weights / GPU.memory_bandwidth_Bps)


def test_a_shard_splits_heads_ffn_and_vocabulary_and_replicates_kv_heads_past_their_count():
    s = shard_of(PRESETS["llama-3.1-8b"], 8)
    assert (s.heads, s.kv_heads, s.ffn, s.vocab) == (4, 1, 1792, 16032)
    s = shard_of(PRESETS["llama-3.1-70b"], 16)
    assert (s.heads, s.kv_heads) == (4, 1)
    no_ffn = ModelSpec("x", PRESETS["llama-3.1-8b"].params, 32, 4096, 32, 8, 128, 128256, None, "t")
    assert shard_of(no_ffn, 1).ffn == pytest.approx(14336, rel=0.001)  # what the parameter count leaves


def test_the_profiles_decode_figures_are_read_with_their_sources():
    profile = _profile_with_truth()
    doc = Document("profile", "truth", "truth.json", profile.model_dump(mode="json", by_alias=True,
                                                                      exclude_unset=True), typed=profile)
    assert has_decode_terms(doc)
    inputs = decode_inputs(doc, dtype="bf16", tp=1, cards_per_host=None, graphs=True)
    assert inputs.gemm == decode_terms(profile.devices[0]).gemm["bf16"] and inputs.attention == ATTENTION
    assert inputs.launch == LAUNCH and inputs.stream_Bps == 2.0e12
    assert set(inputs.sources) == {"stream", "gemm", "attention", "launch"}
    assert decode_inputs(doc, dtype="fp16", tp=1, cards_per_host=None, graphs=True).gemm is None  # bf16 only


def test_published_figures_cite_their_documents_and_convert_busbw_to_the_fits_beta():
    doc = load_builtin("profile", "h100-sxm")
    device = doc.profile.devices[0]
    published = device.published
    assert published.stream_Bps.source == "published" and published.stream_Bps.ref in doc.profile.documents
    assert has_decode_terms(doc)
    inputs = decode_inputs(doc, dtype="fp16", tp=8, cards_per_host=None, graphs=True)
    entry = next(e for e in published.allreduce if e.nranks == 8 and e.alpha_s.known and e.busbw_Bps.known)
    alpha, beta = inputs.allreduce.alpha_s, inputs.allreduce.beta_Bps
    assert alpha == entry.alpha_s.value and beta == pytest.approx(entry.busbw_Bps.value * 8 / 14)
    assert "published" in inputs.sources["allreduce"] and inputs.stream_Bps == published.stream_Bps.value
    for name in ("rtx4090", "h200-sxm", "a100-sxm-80gb", "l40s"):
        d = load_builtin("profile", name)
        for q in (d.profile.devices[0].published.stream_Bps, d.profile.devices[0].published.decode_gemm_weight_Bps):
            assert (q.ref in d.profile.documents) if q.known else bool(q.reason)
    assert not has_decode_terms(load_builtin("profile", "seed-h100"))  # the article's cards: the article's step


def test_a_published_value_needs_its_document_and_a_null_one_its_reason():
    with pytest.raises(ValueError, match="ref"):
        RateQuantity.model_validate({"value": 1e12, "source": "published"})
    with pytest.raises(ValueError, match="reason"):
        RateQuantity.model_validate({"value": None, "source": "published"})
    assert not RateQuantity.model_validate({"value": None, "source": "published", "reason": "none found"}).known


def _plan(capsys, *argv):
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_json_gives_the_chosen_step_and_the_other_under_its_name(capsys):
    common = ("--gpu", "h100-sxm", "--model", "llama-3.1-70b", "--cards", "8", "--strategy", "tp", "--batch", "16")
    measured = _plan(capsys, *common)
    assert measured["step"] == "measured" and "seed" in measured and "terms" in measured
    seed = _plan(capsys, *common, "--step", "seed")
    assert seed["step"] == "seed" and seed["measured"]["token_latency_s"] == measured["token_latency_s"]
    assert measured["seed"]["token_latency_s"] == seed["token_latency_s"]
    assert measured["token_latency_s"] > seed["token_latency_s"]  # real fixed costs and NCCL's latency
    eager = _plan(capsys, *common, "--no-graphs")
    assert eager["terms"]["graphs"] is False and eager["inputs"]["graphs"] is False
    article = _plan(capsys, "--gpu", "seed-h100", "--model", "seed-70b", "--cards", "8", "--strategy", "tp",
                    "--batch", "1")
    assert article["step"] == "seed"


def test_plan_text_puts_the_articles_step_beside_the_measured_one(capsys):
    assert main(["plan", "--gpu", "h200-sxm", "--model", "llama-3.1-8b", "--cards", "2", "--strategy", "tp",
                 "--batch", "8"]) == 0
    out = capsys.readouterr().out
    for text in ("article's step", "measured step", "matrix products", "TP all-reduce", "launches and host sync",
                 "ideal  decode GEMMs"):
        assert text in out, out


def test_flags_reach_the_measured_step(capsys):
    base = ("--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--cards", "1", "--strategy", "tp", "--batch", "1")
    plain = _plan(capsys, *base)
    slow = _plan(capsys, *base, "--mem-bw", "1TB/s")
    assert slow["terms"]["stream_Bps"] == 1e12 and slow["sources"]["stream"].startswith("flag")
    assert slow["token_latency_s"] > 2.5 * plain["token_latency_s"]
    bigger = _plan(capsys, *base, "--params", "16e9", "--ignore-memory")
    assert bigger["terms"]["gemm_time_s"] > 1.8 * plain["terms"]["gemm_time_s"]  # the FFN the count leaves


def test_the_link_solver_scales_the_one_host_allreduce_with_the_link(capsys):
    plan = _plan(capsys, "--gpu", "h100-sxm", "--model", "llama-3.1-70b", "--cards", "4", "--strategy", "tp",
                 "--batch", "1", "--target-tps", "60")
    entry = next(e for e in load_builtin("profile", "h100-sxm").profile.devices[0].published.allreduce
                 if e.alpha_s.known and e.busbw_Bps.known)
    alpha, beta_ar = entry.alpha_s.value, entry.busbw_Bps.value * 4 / 6  # nccl-tests' busbw over 4 ranks
    s_bytes, n = 1 * 8192 * 2, 2 * 80 + 1
    assert plan["tp_exchange_time_s"] == pytest.approx(alpha + s_bytes / beta_ar, rel=1e-9)
    # with the link's beta x, the all-reduce's is beta_ar·x/beta_link: t(x) = t_inf + n·S·beta_link/(beta_ar·x)
    beta_link = plan["inputs"]["link"]["beta_Bps"]
    t_inf = plan["token_latency_s"] - n * s_bytes / beta_ar
    expected = n * s_bytes * beta_link / beta_ar / (1 / 60 - t_inf)
    assert plan["target"]["required_beta_Bps"] == pytest.approx(expected, rel=1e-9)


def test_a_pipelines_throughput_is_bound_by_its_slowest_hop(capsys):
    plan = _plan(capsys, "--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--cards", "16", "--strategy", "pp",
                 "--cards-per-host", "8", "--net", "eth1g", "--batch", "8")
    t = plan["terms"]
    hop = 50e-6 + 8 * 4096 * 2 / 125e6  # eth1g: the hops across hosts are the slow ones
    assert plan["aggregate_tokens_per_s"] == pytest.approx(8 / (max(t["stage_time_s"]) + hop + t["sync_time_s"]))
    assert plan["aggregate_tokens_per_s"] < plan["seed"]["aggregate_tokens_per_s"]


def test_the_default_step_needs_a_usable_figure_and_seed_never_needs_one(capsys, tmp_path):
    # h100-pcie: no stream bandwidth found, its all-reduce gives busbw alone: nothing the measured step can use
    assert not has_decode_terms(load_builtin("profile", "h100-pcie"))
    data = load_builtin("profile", "rtx5090").profile.model_dump(mode="json", by_alias=True, exclude_unset=True)
    data["devices"][0]["published"]["launch"]["graph_node_s"]["value"] = 0.0  # a valid quantity, not a cost
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(data))
    common = ("--gpu", str(path), "--model", "llama-3.1-8b", "--cards", "1", "--strategy", "tp", "--batch", "1")
    seed = _plan(capsys, *common, "--step", "seed")
    assert seed["step"] == "seed" and "error" in seed["measured"]
    assert main(["plan", *common, "--step", "measured"]) == 2
    err = capsys.readouterr().err
    assert "published.launch" in err and "graph_node_s" in err and len(err.strip().splitlines()) == 1


def test_a_sweep_row_is_the_single_plan(capsys):
    common = ("--gpu", "h100-sxm", "--model", "llama-3.1-70b", "--strategy", "tp", "--link", "alpha=1us,beta=10GB/s")
    sweep = _plan(capsys, *common, "--sweep", "cards=2:8", "--sweep", "batch=1:16")
    assert sweep["inputs"]["step"] == "measured"
    for row in sweep["rows"][::5]:
        one = _plan(capsys, *common, "--cards", str(row["cards"]), "--batch", str(row["batch"]), "--ignore-memory")
        assert row["token_latency_s"] == pytest.approx(one["token_latency_s"], rel=1e-9), row
        assert row["seed_token_latency_s"] == pytest.approx(one["seed"]["token_latency_s"], rel=1e-9)
