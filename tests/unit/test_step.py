"""The composed step: hybrid layouts, several hosts, the ring model, uneven stages, memory."""

import math

import numpy as np
import pytest

from gpucal.plan import PRESETS, GpuSpec, LinkSpec, evaluate
from gpucal.plan import equations as eq

MODEL = PRESETS["seed-70b"]
GPU = GpuSpec("card", memory_bandwidth_Bps=1e12, flops=330e12, memory_bytes=24e9)
LINK = LinkSpec("link", 30e-6, 32e9)
NET = LinkSpec("net", 0.25e-3, 125e6)
S1 = 8192 * 2  # bytes per transfer at batch 1


def test_ring_model_costs_2_n_minus_1_steps_of_s_over_n():
    for n in (2, 4, 8):
        row = evaluate(MODEL, GPU, batch=1, tp=n, pp=1, link=LINK, comm="ring").row()
        one = 2 * (n - 1) * 30e-6 + 2 * (n - 1) / n * S1 / 32e9
        assert row["tp_exchange_time_s"] == pytest.approx(one, rel=1e-12)
        assert row["tp_comm_time_s"] == pytest.approx(160 * one, rel=1e-12)
    # At two cards the ring pays two alphas where the seed model pays one.
    seed = evaluate(MODEL, GPU, batch=1, tp=2, pp=1, link=LINK).row()["tp_exchange_time_s"]
    ring = evaluate(MODEL, GPU, batch=1, tp=2, pp=1, link=LINK, comm="ring").row()["tp_exchange_time_s"]
    assert ring - seed == pytest.approx(30e-6, rel=1e-9)


@pytest.mark.parametrize("comm", ["seed", "ring"])
def test_one_card_per_group_has_no_tp_comm_and_one_stage_no_hops(comm):
    row = evaluate(MODEL, GPU, batch=64, tp=1, pp=1, link=LINK, comm=comm).row()
    assert row["tp_comm_time_s"] == 0 and row["pp_comm_time_s"] == 0 and row["pp_hops"] == 0
    assert row["token_latency_s"] == row["card_time_s"]


def test_hybrid_composes_tp_inside_stages_and_pp_across():
    row = evaluate(MODEL, GPU, batch=4, tp=2, pp=4, link=LINK).row()
    t_card = max(140e9 / 8 / 1e12, 4 * 2 * 70e9 / 8 / 330e12)
    hop = 30e-6 + 4 * S1 / 32e9
    assert row["card_time_s"] == pytest.approx(t_card)
    assert row["tp_comm_time_s"] == pytest.approx(160 * hop)  # 2 exchanges per layer, all stages together
    assert row["pp_comm_time_s"] == pytest.approx(4 * hop)
    assert row["token_latency_s"] == pytest.approx(4 * t_card + 164 * hop)
    # Four micro-batches in flight: each stage (20 layers, 40 exchanges) plus its hop sets the pace.
    assert row["aggregate_tokens_per_s"] == pytest.approx(4 / (t_card + 40 * hop + hop))
    assert row["aggregate_tokens_per_s"] == pytest.approx(4 * 4 / row["token_latency_s"])


def test_hops_between_hosts_go_over_the_network():
    # 2 cards per stage, 4 cards per host: stages 0-1 on host 0, 2-3 on host 1; the ring of four hops
    # crosses the host boundary twice.
    row = evaluate(MODEL, GPU, batch=1, tp=2, pp=4, link=LINK, net=NET, cards_per_host=4).row()
    assert row["hosts"] == 2 and row["pp_hops"] == 4 and row["pp_network_hops"] == 2
    link_hop, net_hop = 30e-6 + S1 / 32e9, 0.25e-3 + S1 / 125e6
    assert row["pp_comm_time_s"] == pytest.approx(2 * link_hop + 2 * net_hop)
    assert row["tp_comm_time_s"] == pytest.approx(160 * link_hop)  # TP groups stay inside a host
    # The slowest hop sets the pipeline's pace.
    stage = row["card_time_s"] + 40 * link_hop
    assert row["aggregate_tokens_per_s"] == pytest.approx(1 / (stage + net_hop))


def test_a_tp_group_wider_than_a_host_exchanges_over_the_network():
    row = evaluate(MODEL, GPU, batch=1, tp=8, pp=1, link=LINK, net=NET, cards_per_host=4).row()
    assert row["tp_exchange_time_s"] == pytest.approx(0.25e-3 + S1 / 125e6)


def test_the_network_is_required_when_cards_span_hosts():
    with pytest.raises(ValueError, match="net"):
        evaluate(MODEL, GPU, batch=1, tp=1, pp=8, link=LINK, cards_per_host=4)


def test_uneven_stages_keep_the_latency_and_load_the_largest_stage():
    even = evaluate(MODEL, GPU, batch=1, tp=1, pp=3, link=LinkSpec("ideal", 0, math.inf)).row()
    assert even["token_latency_s"] == pytest.approx(140e9 / 1e12)  # every term is linear in the layers
    assert even["weights_bytes_per_card"] == pytest.approx(140e9 * 27 / 80)  # ceil(80 / 3) = 27 layers
    assert even["aggregate_tokens_per_s"] == pytest.approx(1 / (140e9 * 27 / 80 / 1e12))


def test_context_adds_kv_cache_to_memory_and_memory_time():
    model = PRESETS["llama-2-70b"]
    row = evaluate(model, GPU, batch=8, tp=8, pp=1, link=LINK, context_tokens=4096).row()
    kv = 8 * 4096 * 327_680
    assert row["kv_cache_bytes"] == kv
    assert row["kv_bytes_per_card"] == pytest.approx(kv / 8)
    assert row["memory_time_s"] == pytest.approx((model.params * 2 + kv) / 8 / 1e12)
    assert row["activation_bytes_per_card"] == 8 * 4096 * 8192 * 2
    assert row["memory_bytes_per_card_needed"] == pytest.approx(
        model.params * 2 / 8 + kv / 8 + 8 * 4096 * 8192 * 2)


def test_fits_and_min_cards():
    assert evaluate(MODEL, GPU, batch=1, tp=8, pp=1, link=LINK).row()["fits"]
    row = evaluate(MODEL, GPU, batch=1, tp=4, pp=1, link=LINK).row()
    assert not row["fits"] and row["min_cards"] == 6 and row["min_tp_degree"] == 8


def test_smallest_tp_degree_vectorised_and_none():
    assert list(eq.smallest_tp_degree(np.array([1, 3, 5, 8, 9]), 64, 8)) == [1, 4, 8, 8, 0]
    assert eq.smallest_tp_degree(3, 40, 40) == 4


def test_min_cards_is_a_ceiling_without_float_noise():
    assert eq.min_cards_by_capacity(160e9, 80e9) == 2
    assert eq.min_cards_by_capacity(180e9, 24e9) == 8
    assert eq.min_cards_by_capacity(0.1 + 0.2, 0.3) == 1


def test_bad_step_inputs_are_refused():
    with pytest.raises(ValueError, match="comm"):
        evaluate(MODEL, GPU, batch=1, tp=1, pp=1, link=LINK, comm="tree")
    with pytest.raises(ValueError, match="positive"):
        evaluate(MODEL, GPU, batch=0, tp=1, pp=1, link=LINK)
    with pytest.raises(ValueError, match="memory_bandwidth_Bps"):
        GpuSpec("x", memory_bandwidth_Bps=float("nan"), flops=1.0, memory_bytes=1.0)
    with pytest.raises(ValueError, match="alpha_s"):
        LinkSpec("x", -1e-6, 1e9)
