"""Every number of the seed article, reproduced by the planner (the project's table of its numbers).

Each case asserts the planner's exact value for the article's inputs (relative 1e-6) and, where the
article's printed figure follows, that figure within its own rounding. Where the printed figure does
not follow from the inputs (a discrepancy), a second assertion shows which input reproduces it.

Article inputs: P 70e9, w 2 (fp16), L 80, h 8192; RTX 4090 1e12 B/s, 330e12 FLOP/s, 24 GB; H100
3.35e12 B/s, 1979e12 FLOP/s (sparse), 80 GB; PCIe Gen4 beta 32e9 B/s, CPU overhead alpha 30 µs;
NVLink beta 450e9 B/s; 1 Gbit/s Ethernet beta 125e6 B/s with 0.25 ms per hop; KV cache 40 GB.
"""

import math
from dataclasses import replace

import pytest

from gpucal.plan import PRESETS, GpuSpec, LinkSpec, evaluate, max_batch_for_target
from gpucal.plan import equations as eq

EXACT = dict(rel=1e-6)
MODEL = PRESETS["seed-70b"]
RTX4090 = GpuSpec("seed-rtx4090", memory_bandwidth_Bps=1e12, flops=330e12, memory_bytes=24e9)
H100 = GpuSpec("seed-h100", memory_bandwidth_Bps=3.35e12, flops=1979e12, memory_bytes=80e9)
IDEAL = LinkSpec("ideal", 0.0, math.inf)
PCIE_NO_ALPHA = LinkSpec("pcie4", 0.0, 32e9)
PCIE_CPU = LinkSpec("pcie4+cpu", 30e-6, 32e9)
NVLINK = LinkSpec("nvlink", 0.0, 450e9)
GBE = LinkSpec("1GbE", 0.25e-3, 125e6)


def printed(value, text_value, last_digit):
    """``value`` rounds to the article's printed ``text_value`` (half a unit of its last digit)."""
    return abs(value - text_value) <= last_digit / 2 * (1 + 1e-9)


def pp_over_network(batch, net, model=MODEL, gpu=RTX4090):
    """8 x 4090 in a pipeline, one card per host, over ``net`` (the article's multi-host case)."""
    return evaluate(model, gpu, batch=batch, tp=1, pp=8, link=IDEAL, net=net, cards_per_host=1).row()


def tp8(batch, link, gpu=RTX4090, model=MODEL):
    return evaluate(model, gpu, batch=batch, tp=8, pp=1, link=link).row()


def test_case_01_fp16_weights_bytes():
    assert eq.weights_bytes(MODEL.params, 2) == 140e9


@pytest.mark.parametrize("gpu, cards", [(H100, 3), (RTX4090, 8)], ids=["case02-h100", "case03-rtx4090"])
def test_cases_02_03_cards_for_weights_and_40GB_kv(gpu, cards):
    row = evaluate(MODEL, gpu, batch=1, tp=1, pp=1, link=IDEAL, kv_cache_bytes=40e9).row()
    assert row["min_cards"] == cards
    # A TP split must divide 64 heads and 8 KV heads: three H100 are a capacity bound, TP needs four.
    assert row["min_tp_degree"] == (4 if cards == 3 else 8)


def test_case_04_intermediate_results_batch8_4096_tokens():
    nbytes = eq.activation_bytes(8, 4096, MODEL.hidden, 2)
    assert nbytes == 536_870_912
    assert nbytes == 0.5 * 2**30  # the article's "0.5 GB" is 0.5 GiB


def test_cases_05_06_pp_card_time_and_token_time_comm_neglected():
    row = evaluate(MODEL, RTX4090, batch=1, tp=1, pp=8, link=IDEAL).row()
    assert row["memory_time_s"] == pytest.approx(0.0175, **EXACT)  # case 5: 17.5 ms
    assert row["card_time_s"] == pytest.approx(0.0175, **EXACT)
    assert row["token_latency_s"] == pytest.approx(0.140, **EXACT)  # case 6: 0.14 s
    assert row["tokens_per_s"] == pytest.approx(7.142857, **EXACT)
    assert printed(row["tokens_per_s"], 7, 1)  # "only 7 tokens can be output per second"


def test_case_07_compute_time_batch_1024():
    row = evaluate(MODEL, RTX4090, batch=1024, tp=1, pp=8, link=IDEAL).row()
    assert row["compute_time_s"] == pytest.approx(0.054303030, **EXACT)
    assert printed(row["compute_time_s"], 0.0543, 1e-4)
    assert row["bound"] == "compute"


def test_cases_08_09_balance_batch():
    assert eq.balance_batch(330e12, 1e12, 2) == pytest.approx(330.0, **EXACT)  # case 8
    h100 = eq.balance_batch(1979e12, 3.35e12, 2)  # case 9, with the sparse rate the article used
    assert h100 == pytest.approx(590.746, rel=1e-6)
    assert math.floor(h100) == 590
    # Discrepancy in kind, not arithmetic: 1979e12 is sparse; the dense rate gives 295.
    assert eq.balance_batch(989.4e12, 3.35e12, 2) == pytest.approx(295.343, rel=1e-5)


def test_case_10_pp_activations_batch8():
    nbytes = eq.transfer_bytes(8, MODEL.hidden, 2)
    assert nbytes == 131_072  # "128 KB" (KiB)
    assert eq.transfer_time_s(nbytes, 0.0, 32e9) == pytest.approx(4.096e-6, **EXACT)  # "4 microseconds"


def test_case_11_pp_hop_batch330_pcie():
    nbytes = eq.transfer_bytes(330, MODEL.hidden, 2)
    assert nbytes == 5_406_720
    assert eq.transfer_time_s(nbytes, 0.0, 32e9) == pytest.approx(1.6896e-4, **EXACT)  # "0.16 ms" (truncated)
    # Discrepancy: the article's "5.28 MB" is 330 x 16,000 B, i.e. h taken as 8000.
    assert eq.transfer_bytes(330, 8000, 2) == 5.28e6


def test_cases_12_13_gbe_hop_batch1():
    row = pp_over_network(1, GBE)
    hop = row["pp_comm_time_s"] / 8
    assert hop == pytest.approx(3.81072e-4, **EXACT)  # case 12
    assert row["pp_comm_time_s"] == pytest.approx(3.048576e-3, **EXACT)  # case 13
    assert row["pp_network_hops"] == 8
    # Discrepancy: 16 KiB at 1 Gbit/s is 0.131 ms, not 0.25 ms; beta = 65.536e6 B/s reproduces the
    # article's 0.5 ms per hop and 4 ms for 8 hops exactly.
    slow = pp_over_network(1, LinkSpec("article", 0.25e-3, 65.536e6))
    assert slow["pp_comm_time_s"] / 8 == pytest.approx(0.5e-3, **EXACT)
    assert slow["pp_comm_time_s"] == pytest.approx(4e-3, **EXACT)


def test_case_14_duty_cycle_of_gbe_batch1():
    # The article: 0.25 ms of data every 18 ms (17.5 ms card + its 0.5 ms hop), 1/72. The stage
    # period is batch / aggregate throughput.
    article = pp_over_network(1, LinkSpec("article", 0.25e-3, 65.536e6))
    period = 1 / article["aggregate_tokens_per_s"]
    data_s = article["transfer_bytes"] / 65.536e6
    assert period == pytest.approx(18e-3, **EXACT)
    assert data_s / period == pytest.approx(1 / 72, **EXACT)
    # With the consistent beta (125e6) the link is busy even less: 0.131 ms in 17.88 ms.
    row = pp_over_network(1, GBE)
    consistent = (row["transfer_bytes"] / 125e6) * row["aggregate_tokens_per_s"]
    assert consistent == pytest.approx(1.31072e-4 / 17.881072e-3, **EXACT)
    assert consistent < 1 / 72


def test_cases_15_16_gbe_hop_batch330_no_alpha():
    net = LinkSpec("1GbE", 0.0, 125e6)
    row = pp_over_network(330, net)
    assert row["pp_comm_time_s"] / 8 == pytest.approx(4.325376e-2, **EXACT)  # case 15
    assert row["pp_comm_time_s"] == pytest.approx(0.34603008, **EXACT)  # case 16
    assert 1 / row["pp_comm_time_s"] == pytest.approx(2.8899, rel=1e-4)  # comm alone: 2.89 tok/s
    # The planner's whole token (0.14 s of cards + 0.346 s of comm) is slower still.
    assert row["token_latency_s"] == pytest.approx(0.48603008, **EXACT)
    # Discrepancy: 41 ms (41.25) per hop and 0.33 s are 5.28e6 B at 128e6 B/s (h 8000, beta 128e6).
    article = pp_over_network(330, LinkSpec("article", 0.0, 128e6), model=replace(MODEL, hidden=8000))
    assert article["pp_comm_time_s"] / 8 == pytest.approx(41.25e-3, **EXACT)
    assert article["pp_comm_time_s"] == pytest.approx(0.33, **EXACT)
    assert printed(1 / article["pp_comm_time_s"], 3, 1)  # "only 3 tokens per second"


def test_cases_17_18_comm_budget_and_bytes_per_stage_for_5_tokens_per_s():
    t_cards = pp_over_network(1, LinkSpec("ideal", 0.0, math.inf))["token_latency_s"]
    budget = 1 / 5 - t_cards
    assert budget == pytest.approx(0.060, **EXACT)  # case 17: 60 ms
    assert budget / 8 == pytest.approx(7.5e-3, **EXACT)  # 7.5 ms per stage
    assert budget / 8 * 125e6 == pytest.approx(937_500, **EXACT)  # case 18
    # Discrepancy: the article's 960 KB in 7.5 ms needs beta = 128e6 B/s.
    assert budget / 8 * 128e6 == pytest.approx(960_000, **EXACT)


def _max_batch(net, model=MODEL):
    return max_batch_for_target(lambda b: pp_over_network(b, net, model=model)["tokens_per_s"], 5.0)


def test_cases_19_20_21_largest_batch_for_5_tokens_per_s_and_its_throughput():
    net = LinkSpec("1GbE", 0.0, 125e6)  # the article's budget ignores the 0.25 ms stack time
    batch = _max_batch(net)
    assert batch == 57  # case 19: floor(937,500 / 16,384)
    row = pp_over_network(batch, net)
    assert row["tokens_per_s"] >= 5.0
    assert pp_over_network(batch + 1, net)["tokens_per_s"] < 5.0
    # Case 20: the article multiplies B x 5 tok/s x 8 micro-batches; the planner's aggregate at B = 57
    # is a little higher because B = 57 does not use the whole 60 ms budget.
    assert batch * 5 * 8 == 2280
    assert row["aggregate_tokens_per_s"] == pytest.approx(8 * 57 / (0.14 + 8 * 57 * 16384 / 125e6), **EXACT)
    # Case 21: utilization of compute, B / B* = 57 / 330 = 0.173 ("less than 20%").
    assert row["compute_utilization_frac"] == pytest.approx(57 / 330, **EXACT)
    assert row["compute_utilization_frac"] < 0.20
    # Discrepancy: the article's 60 and 2400 come from beta 128e6 and 16,000 B per token (h 8000).
    article_model = replace(MODEL, hidden=8000)
    article_net = LinkSpec("article", 0.0, 128e6)
    assert _max_batch(article_net, article_model) == 60
    article = pp_over_network(60, article_net, model=article_model)
    assert article["token_latency_s"] == pytest.approx(0.2, **EXACT)
    assert article["aggregate_tokens_per_s"] == pytest.approx(2400, **EXACT)


def test_case_22_23_tp_batch1_with_cpu_overhead():
    row = tp8(1, PCIE_CPU)
    assert row["tp_comm_time_s"] == pytest.approx(4.88192e-3, **EXACT)  # case 22
    assert row["tp_exchanges"] == 160
    assert 160 * 30e-6 == pytest.approx(4.8e-3, **EXACT)  # the article's 4.8 ms drops the 0.5 µs data term
    assert row["token_latency_s"] == pytest.approx(2.238192e-2, **EXACT)  # case 23
    assert row["tokens_per_s"] == pytest.approx(44.6789, rel=1e-5)
    assert row["token_latency_s"] == pytest.approx(22.3e-3, rel=5e-3)  # "22.3 ms", within 0.5 %
    assert printed(row["tokens_per_s"], 45, 1)  # "45 tokens per second"


def test_cases_24_25_26_tp_batch330():
    row = tp8(330, PCIE_NO_ALPHA)
    assert row["tp_exchange_time_s"] == pytest.approx(1.6896e-4, **EXACT)  # case 24: "0.17 ms"
    assert printed(row["tp_exchange_time_s"], 0.17e-3, 0.01e-3)
    assert row["tp_comm_time_s"] == pytest.approx(2.70336e-2, **EXACT)  # case 25: "27 ms"
    assert printed(row["tp_comm_time_s"], 27e-3, 1e-3)
    assert row["token_latency_s"] == pytest.approx(4.45336e-2, **EXACT)  # case 26: "44.5 ms"
    assert printed(row["token_latency_s"], 44.5e-3, 0.1e-3)
    assert printed(row["tokens_per_s"], 22, 1)  # "22 tokens per second"
    # With the 30 µs alpha the article used at batch 1, the same step is 49.3 ms.
    assert tp8(330, PCIE_CPU)["token_latency_s"] == pytest.approx(4.93336e-2, **EXACT)


def test_cases_27_to_31_h100_tp_batch590_nvlink():
    row = tp8(590, NVLINK, gpu=H100)
    assert row["transfer_bytes"] == 9_666_560  # case 27
    assert eq.transfer_bytes(590, 8000, 2) == 9.44e6  # discrepancy: "9.44 MB" is 590 x 16,000 B
    assert row["tp_exchange_time_s"] == pytest.approx(2.148124e-5, **EXACT)  # case 28: "0.02 ms"
    assert printed(row["tp_exchange_time_s"], 0.02e-3, 0.01e-3)
    assert row["tp_comm_time_s"] == pytest.approx(3.436999e-3, **EXACT)  # case 29
    assert 160 * 0.02e-3 == pytest.approx(3.2e-3, **EXACT)  # discrepancy: 0.0215 ms rounded to 0.02 first
    assert row["memory_time_s"] == pytest.approx(5.223881e-3, **EXACT)  # case 30
    assert row["compute_time_s"] == pytest.approx(5.217282e-3, **EXACT)
    assert row["card_time_s"] == pytest.approx(5.223881e-3, **EXACT)
    assert printed(row["card_time_s"], 5.2e-3, 0.1e-3)
    assert row["token_latency_s"] == pytest.approx(8.660880e-3, **EXACT)  # case 31
    assert row["tokens_per_s"] == pytest.approx(115.46, rel=1e-4)
    assert row["token_latency_s"] == pytest.approx(8.4e-3, rel=0.032)  # "8.4 ms", within 3.2 %
    # With h = 8000 and unrounded terms: 8.580 ms.
    assert tp8(590, NVLINK, gpu=H100, model=replace(MODEL, hidden=8000))["token_latency_s"] == pytest.approx(
        8.580e-3, rel=1e-4)


def test_case_32_tp_comm_does_not_change_with_the_number_of_cards():
    comm = [evaluate(MODEL, RTX4090, batch=330, tp=n, pp=1, link=PCIE_CPU).row()["tp_comm_time_s"] for n in (2, 4, 8)]
    assert comm[0] == comm[1] == comm[2] > 0


def test_case_33_kv_bytes_per_token_llama2_70b():
    model = PRESETS["llama-2-70b"]
    assert eq.kv_bytes_per_token(model.layers, model.kv_heads, model.head_dim, 2) == 327_680
