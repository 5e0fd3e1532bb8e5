"""Properties the planner must keep for any inputs (hypothesis)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpucal.plan import PRESETS, GpuSpec, LinkSpec, evaluate, max_batch_for_target, required_beta_for_target, sweep

MODELS = st.sampled_from(sorted(PRESETS))
BW = st.floats(1e10, 1e13)
FLOPS = st.floats(1e12, 5e15)
ALPHA = st.floats(0, 1e-3)
BETA = st.floats(1e6, 1e12)
BATCH = st.integers(1, 4096)
COMM = st.sampled_from(["seed", "ring"])


def _layout(model, data):
    degrees = [t for t in (1, 2, 4, 8) if model.heads % t == 0 and model.kv_heads % t == 0]
    tp = data.draw(st.sampled_from(degrees))
    pp = data.draw(st.integers(1, 16))
    return tp, pp


def _step(model, bw, flops, tp, pp, batch, alpha, beta, comm, **kw):
    gpu = GpuSpec("g", memory_bandwidth_Bps=bw, flops=flops, memory_bytes=1e12)
    return evaluate(model, gpu, batch=batch, tp=tp, pp=pp, link=LinkSpec("l", alpha, beta), comm=comm, **kw).row()


@given(MODELS, BW, FLOPS, st.floats(1.0, 10.0), st.floats(1.0, 10.0), BATCH, ALPHA, BETA, COMM, st.data())
def test_more_bandwidth_or_flops_never_makes_a_step_slower(name, bw, flops, more_bw, more_flops, batch, alpha, beta,
                                                           comm, data):
    model = PRESETS[name]
    tp, pp = _layout(model, data)
    base = _step(model, bw, flops, tp, pp, batch, alpha, beta, comm)
    faster = _step(model, bw * more_bw, flops * more_flops, tp, pp, batch, alpha, beta, comm)
    assert faster["token_latency_s"] <= base["token_latency_s"] * (1 + 1e-12)
    assert faster["aggregate_tokens_per_s"] >= base["aggregate_tokens_per_s"] * (1 - 1e-12)
    wider = _step(model, bw, flops, tp, pp, batch, alpha, beta * more_bw, comm)
    assert wider["token_latency_s"] <= base["token_latency_s"] * (1 + 1e-12)


@given(MODELS, BW, FLOPS, BATCH, st.integers(0, 4096), ALPHA, BETA, COMM, st.integers(0, 8192), st.data())
def test_a_larger_batch_never_lowers_the_step_time(name, bw, flops, batch, extra, alpha, beta, comm, context, data):
    model = PRESETS[name]
    tp, pp = _layout(model, data)
    small = _step(model, bw, flops, tp, pp, batch, alpha, beta, comm, context_tokens=context)
    large = _step(model, bw, flops, tp, pp, batch + extra, alpha, beta, comm, context_tokens=context)
    assert large["token_latency_s"] >= small["token_latency_s"] * (1 - 1e-12)
    assert large["card_time_s"] >= small["card_time_s"] * (1 - 1e-12)


@given(BW, FLOPS, BATCH, ALPHA, BETA)
def test_seed_tp_comm_does_not_depend_on_the_number_of_cards(bw, flops, batch, alpha, beta):
    model = PRESETS["llama-3.1-405b"]  # 128 heads, 8 KV heads: TP 2, 4 and 8 all valid
    comm = {n: _step(model, bw, flops, n, 1, batch, alpha, beta, "seed")["tp_comm_time_s"] for n in (2, 4, 8)}
    assert comm[2] == comm[4] == comm[8] > 0


@given(MODELS, BW, FLOPS, BATCH, ALPHA, BETA, COMM, st.integers(1, 16))
def test_tp_1_has_no_tp_comm(name, bw, flops, batch, alpha, beta, comm, pp):
    row = _step(PRESETS[name], bw, flops, 1, pp, batch, alpha, beta, comm)
    assert row["tp_comm_time_s"] == 0 and row["tp_exchanges"] == 0


@settings(max_examples=30, deadline=None)
@given(MODELS, BW, FLOPS, ALPHA, BETA, COMM, st.data())
def test_a_sweep_row_equals_the_single_plan(name, bw, flops, alpha, beta, comm, data):
    model = PRESETS[name]
    gpu = GpuSpec("g", memory_bandwidth_Bps=bw, flops=flops, memory_bytes=1e11)
    link = LinkSpec("l", alpha, beta)
    result = sweep(model, gpu, batches=[1, 7, 64, 1000], cards=[1, 2, 3, 4, 8], strategies=("pp", "tp", "hybrid"),
                   hybrid_tp=2, link=link, comm=comm, context_tokens=128)
    i = data.draw(st.integers(0, len(result) - 1))
    row = result.row(i)
    single = evaluate(model, gpu, batch=row["batch"], tp=row["tp"], pp=row["pp"], link=link, comm=comm,
                      context_tokens=128).row()
    for key, value in single.items():
        assert row[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), key


@given(BW, FLOPS, ALPHA, BETA, st.floats(0.5, 200.0))
def test_the_largest_batch_meets_the_target_and_one_more_does_not(bw, flops, alpha, beta, target):
    model = PRESETS["seed-70b"]

    def tps(b):
        return _step(model, bw, flops, 1, 8, b, alpha, beta, "seed")["tokens_per_s"]

    batch = max_batch_for_target(tps, target, batch_limit=1 << 20)
    if batch is None:
        assert tps(1) < target
    elif batch < 1 << 20:
        assert tps(batch) >= target * (1 - 1e-9) and tps(batch + 1) < target * (1 - 1e-9)


@given(BW, FLOPS, ALPHA, BETA, st.floats(0.5, 200.0), BATCH)
def test_the_required_bandwidth_gives_exactly_the_target(bw, flops, alpha, beta, target, batch):
    model = PRESETS["seed-70b"]

    def latency(b):
        return _step(model, bw, flops, 8, 1, batch, alpha, b, "seed")["token_latency_s"]

    need = required_beta_for_target(latency, target, beta)
    if need is None:
        assert latency(math.inf) >= 1 / target * (1 - 1e-12)
    else:
        assert latency(need) == pytest.approx(1 / target, rel=1e-9)


def test_sweep_drops_configurations_the_strategy_cannot_run():
    model = PRESETS["seed-70b"]
    gpu = GpuSpec("g", memory_bandwidth_Bps=1e12, flops=330e12, memory_bytes=24e9)
    result = sweep(model, gpu, batches=[1], cards=np.arange(1, 100), strategies=("tp", "pp"),
                   link=LinkSpec("l", 0, 1e9))
    tp_cards = sorted(int(c) for c, s in zip(result.cards, result.strategy) if s == "tp")
    assert tp_cards == [1, 2, 4, 8]  # 64 heads and 8 KV heads
    pp_cards = [int(c) for c, s in zip(result.cards, result.strategy) if s == "pp"]
    assert max(pp_cards) == 80  # one layer per stage at most
