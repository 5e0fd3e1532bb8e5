"""The virtual backend's decode kernels, graphs, launches and one-host all-reduce: outputs that pass
kernels/decode_ref.py's checks (and wrong ones that fail them), and prices from a profile's decode terms and
collectives, or from the virtual machine's fallbacks; the existing launches' prices unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gpucal.kernels import decode_ref
from gpucal.kernels.dtypes import DTYPES, POISON, to_float64
from gpucal.kernels.reference import GEMM_MODES, gemm_reference, gemm_tolerance
from gpucal.kernels.virtual import VirtualBackend, VirtualLaunch
from gpucal.kernels.virtual_machine import (EAGER_LAUNCH_S, GRAPH_NODE_S, SYNC_S, Faults, VirtualMachine)
from gpucal.plan.decode import AttentionFit, GemmCurve, GemmRow, LaunchCosts, attention_kv_bytes
from gpucal.plan.equations import ring_collective_time_s
from gpucal.profiles import load_builtin
from gpucal.profiles.model import Profile
from gpucal.profiles.decode_queries import DecodeModel, decode_terms, host_allreduce

from gpucal.errors import GpucalError, InputError

DTYPE_NAMES = ("fp16", "bf16", "fp32")


def _q(value):
    return {"value": value, "source": "estimate"}


DECODE = {
    "gemm": {"fp16": {"source": "simulated", "method": "decode GEMM in a replayed graph", "byte_convention": "W",
                      "shapes": [[64, 32]],
                      "rows": [{"m": 1, "alpha_s": 5e-6, "beta_Bps": 3e12, "points": [[4096, 5.1e-6]]},
                               {"m": 8, "alpha_s": 7e-6, "beta_Bps": 2e12, "points": [[4096, 7.2e-6]]},
                               {"m": 64, "alpha_s": 9e-6, "beta_Bps": 1e12, "points": [[4096, 9.4e-6]]}]}},
    "attention": {"fp16": {"alpha_s": _q(6e-6), "beta_Bps": _q(2.5e12), "head_dim": 16, "points": []},
                  "bf16": {"alpha_s": {"value": None, "source": "estimate", "reason": "failed"},
                           "beta_Bps": _q(2.5e12), "head_dim": 16, "points": []}},
    "launch": {"eager_s": _q(5e-6), "graph_node_s": _q(2e-6), "sync_s": _q(20e-6)},
}


def _profile(name: str = "h100-sxm", decode: dict | None = None, collectives: list | None = None) -> Profile:
    data = load_builtin("profile", name).profile.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if decode is not None:
        data["devices"][0]["decode"] = decode
    if collectives is not None:
        data["collectives"] = collectives
    return Profile.model_validate(data)


def _backend(name: str = "h100-sxm", count: int = 4, decode: dict | None = None, collectives: list | None = None,
             faults: Faults | None = None) -> VirtualBackend:
    return VirtualBackend(VirtualMachine(_profile(name, decode, collectives), name, count, faults or Faults()))


def _poisoned(backend, shape, dtype):
    return backend.full(shape, DTYPES[dtype].storage, POISON[dtype])


def _wrong(array, dtype):
    """``array`` (stored) with its first element replaced by a value far from it."""
    bad = np.array(array, copy=True)
    flat = bad.reshape(-1)
    if dtype == "bf16":
        flat[0] = flat[0] ^ np.uint16(0x4000)  # flips an exponent bit
    else:
        flat[0] = flat[0] * 3 + 1
    return bad


# --- outputs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 2), (8, 2), (3, 3)])
def test_attention_output_passes_the_check(dtype, heads, kv_heads):
    be = _backend()
    b, d, t_max, context = 3, 16, 11, 7
    q = be.random_uniform((b, heads, d), dtype, seed=1)
    k = be.random_uniform((b, kv_heads, t_max, d), dtype, seed=2)
    v = be.random_uniform((b, kv_heads, t_max, d), dtype, seed=3)
    out = _poisoned(be, (b, heads, d), dtype)
    be.attention_launcher(q, k, v, out, dtype, context)()
    assert decode_ref.check_attention(out, q, k, v, context, dtype).ok
    assert not decode_ref.check_attention(_wrong(out, dtype), q, k, v, context, dtype).ok
    # the positions at or beyond the context are not read: a cache poisoned there gives the same output
    k[:, :, context:] = POISON[dtype]
    v[:, :, context:] = POISON[dtype]
    again = _poisoned(be, (b, heads, d), dtype)
    be.attention_launcher(q, k, v, again, dtype, context)()
    assert np.array_equal(again.view(np.uint8), out.view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_add_rmsnorm_output_passes_the_check(dtype):
    be = _backend()
    b, h = 3, 24
    x, r = be.random_uniform((b, h), dtype, seed=4), be.random_uniform((b, h), dtype, seed=5)
    w = be.random_uniform((h,), dtype, seed=6)
    out, r_out = _poisoned(be, (b, h), dtype), _poisoned(be, (b, h), dtype)
    be.add_rmsnorm_launcher(x, r, w, out, r_out, dtype, decode_ref.RMS_EPS)()
    assert decode_ref.check_add_rmsnorm(out, r_out, x, r, w, dtype).ok
    assert not decode_ref.check_add_rmsnorm(_wrong(out, dtype), r_out, x, r, w, dtype).ok
    assert not decode_ref.check_add_rmsnorm(out, _wrong(r_out, dtype), x, r, w, dtype).ok


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_rotary_output_passes_the_check(dtype):
    be = _backend()
    b, heads, kv_heads, d, t_max, position = 3, 4, 2, 16, 9, 5
    qkv = be.random_uniform((b, decode_ref.qkv_width(heads, kv_heads, d)), dtype, seed=7)
    cos_sin = decode_ref.cos_sin_table(position, d)
    q = _poisoned(be, (b, heads, d), dtype)
    k, v = _poisoned(be, (b, kv_heads, t_max, d), dtype), _poisoned(be, (b, kv_heads, t_max, d), dtype)
    be.rotary_launcher(qkv, cos_sin, q, k, v, position, dtype, heads, kv_heads, d)()
    args = (position, qkv, cos_sin, heads, kv_heads, d, dtype)
    assert decode_ref.check_rotary(q, k, v, *args).ok
    assert not decode_ref.check_rotary(_wrong(q, dtype), k, v, *args).ok
    bad_v = np.array(v, copy=True)
    bad_v[:, :, position] = _wrong(v[:, :, position], dtype)
    assert not decode_ref.check_rotary(q, k, bad_v, *args).ok
    # only the row at ``position`` is written
    others = [t for t in range(t_max) if t != position]
    assert np.isnan(to_float64(k[:, :, others], dtype)).all() and np.isnan(to_float64(v[:, :, others], dtype)).all()


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_silu_mul_output_passes_the_check(dtype):
    be = _backend()
    b, f = 3, 10
    gate_up = be.random_uniform((b, 2 * f), dtype, seed=8, scale=4.0)
    out = _poisoned(be, (b, f), dtype)
    be.silu_mul_launcher(gate_up, out, dtype)()
    assert decode_ref.check_silu_mul(out, gate_up, dtype).ok
    assert not decode_ref.check_silu_mul(_wrong(out, dtype), gate_up, dtype).ok


def test_tick_adds_one_modulo_two_to_the_32():
    be = _backend()
    counter = be.to_device(np.array([decode_ref.TICK_POISON], dtype=np.uint32))
    tick = be.tick_launcher(counter)
    for _ in range(3):
        tick()
    assert decode_ref.check_tick(be.to_host(counter), 3).ok
    assert not decode_ref.check_tick(be.to_host(counter), 2).ok
    wrap = be.to_device(np.array([2 ** 32 - 1], dtype=np.uint32))
    be.tick_launcher(wrap)()
    assert int(wrap[0]) == 0


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_decode_gemm_writes_c_in_the_dtype(dtype):
    be = _backend()
    m, k, n = 3, 32, 24
    a, w = be.random_uniform((m, k), dtype, seed=9), be.random_uniform((k, n), dtype, seed=10)
    c = _poisoned(be, (m, n), dtype)
    be.decode_gemm_launcher(a, w, c, dtype)()
    assert c.dtype == DTYPES[dtype].storage
    mode = GEMM_MODES["fp32" if dtype == "fp32" else f"{dtype}_fp32acc"]
    ref, abs_product = gemm_reference(a, w, mode.dtype_in)
    tol = gemm_tolerance(mode, k, abs_product, ref) + DTYPES[dtype].eps * np.abs(ref)  # + C's rounding to dtype
    err = np.abs(to_float64(c, dtype) - ref)
    assert np.all(err <= tol)
    assert np.all(np.abs(to_float64(_wrong(c, dtype), dtype) - ref).reshape(-1)[0] > tol.reshape(-1)[0])


def test_decode_dtypes_and_reasons():
    be = _backend()
    assert be.decode_dtypes == ("fp16", "bf16", "fp32")
    assert be.decode_reason() is None and be.graph_reason() is None
    assert set(be.decode_gemm_dtypes()) >= {"fp16", "bf16", "fp32"}


def test_a_wrong_shape_or_context_is_refused():
    be = _backend()
    q = be.random_uniform((1, 4, 16), "fp16", seed=1)
    k = be.random_uniform((1, 2, 8, 16), "fp16", seed=2)
    out = _poisoned(be, (1, 4, 16), "fp16")
    with pytest.raises(ValueError, match="context"):
        be.attention_launcher(q, k, k, out, "fp16", 9)
    with pytest.raises(ValueError, match="dtype"):
        be.attention_launcher(q, k, k, out, "fp8", 4)


# --- prices -------------------------------------------------------------------------------------------

def _gemm(be, m, k=32, n=64, dtype="fp16"):
    a, w = be.random_uniform((m, k), dtype, seed=1), be.random_uniform((k, n), dtype, seed=2)
    return be.decode_gemm_launcher(a, w, _poisoned(be, (m, n), dtype), dtype), a, w


def _attention(be, b=2, heads=8, kv_heads=2, d=16, t_max=32, context=20, dtype="fp16"):
    q = be.random_uniform((b, heads, d), dtype, seed=1)
    k = be.random_uniform((b, kv_heads, t_max, d), dtype, seed=2)
    v = be.random_uniform((b, kv_heads, t_max, d), dtype, seed=3)
    return be.attention_launcher(q, k, v, _poisoned(be, (b, heads, d), dtype), dtype, context), q


def test_decode_terms_read_from_the_model():
    model = decode_terms(_profile(decode=DECODE).devices[0])
    assert model.gemm["fp16"] == GemmCurve("fp16", (GemmRow(1, 5e-6, 3e12), GemmRow(8, 7e-6, 2e12),
                                                    GemmRow(64, 9e-6, 1e12)))
    assert model.attention == {"fp16": AttentionFit(6e-6, 2.5e12)}  # bf16's alpha is null: left out
    assert model.launch == LaunchCosts(5e-6, 2e-6, 20e-6)
    assert decode_terms(_profile().devices[0]) == DecodeModel()
    partial = dict(DECODE, launch=dict(DECODE["launch"], sync_s={"value": None, "source": "estimate",
                                                                 "reason": "not measured"}))
    assert decode_terms(_profile(decode=partial).devices[0]).launch is None


def test_a_launch_cost_of_zero_is_refused_naming_the_field():
    zero = dict(DECODE, launch=dict(DECODE["launch"], eager_s=_q(0.0)))
    with pytest.raises(InputError, match=r"devices\[0\]\.decode\.launch\.eager_s"):
        _backend(decode=zero)


def test_gemm_between_measured_m_follows_the_profiles_curve():
    be = _backend(decode=DECODE)
    launch, _, w = _gemm(be, m=4)
    curve = be.machine.devices[0].decode.gemm["fp16"]
    want = curve.time_s(4, w.nbytes)
    assert want != curve.rows[0].time_s(w.nbytes) and want != curve.rows[1].time_s(w.nbytes)
    assert launch.seconds == pytest.approx(want, rel=1e-12)
    assert launch.eager_seconds == max(5e-6, want)
    assert be.time_k(launch, 7) == pytest.approx(7 * max(5e-6, want), rel=1e-12)


def test_gemm_without_a_curve_is_the_fallback():
    be = _backend(decode=DECODE)
    launch, a, w = _gemm(be, m=4, dtype="bf16")  # the profile has a curve for fp16 only
    dev = be.machine.devices[0]
    c_bytes = 4 * 64 * 2
    want = 2e-6 + max((a.nbytes + w.nbytes + c_bytes) / dev.memory_Bps, 2 * 4 * 64 * 32 / dev.flops["bf16_fp32acc"])
    assert launch.seconds == pytest.approx(want, rel=1e-12)
    plain = _backend()
    launch, a, w = _gemm(plain, m=4)
    dev = plain.machine.devices[0]
    want = GRAPH_NODE_S + max((a.nbytes + w.nbytes + c_bytes) / dev.memory_Bps, 2 * 4 * 64 * 32 / dev.flops["fp16_fp32acc"])
    assert launch.seconds == pytest.approx(want, rel=1e-12)
    assert launch.eager_seconds == pytest.approx(max(EAGER_LAUNCH_S, want), rel=1e-12)


def test_attention_follows_the_profiles_fit_from_the_cache_shapes():
    be = _backend(decode=DECODE)
    launch, _ = _attention(be, b=2, kv_heads=2, d=16, t_max=32, context=20)
    kv = 2 * 2 * 20 * 2 * 16 * 2
    assert kv == attention_kv_bytes(2, 20, 2, 16, 2)
    assert launch.seconds == pytest.approx(6e-6 + kv / 2.5e12, rel=1e-12)
    assert be.time_k(launch, 2) == pytest.approx(2 * max(5e-6, 6e-6 + kv / 2.5e12), rel=1e-12)


def test_attention_without_a_fit_is_the_fallback():
    be = _backend(decode=DECODE)
    launch, q = _attention(be, dtype="bf16", context=20)  # bf16's fit has a null alpha
    kv = attention_kv_bytes(2, 20, 2, 16, 2)
    want = 2e-6 + (kv + 2 * q.nbytes) / be.machine.devices[0].memory_Bps
    assert launch.seconds == pytest.approx(want, rel=1e-12)


def test_elementwise_kernels_are_a_node_plus_their_bytes():
    be = _backend()
    bw = be.machine.devices[0].memory_Bps
    gate_up = be.random_uniform((3, 20), "fp16", seed=1)
    launch = be.silu_mul_launcher(gate_up, _poisoned(be, (3, 10), "fp16"), "fp16")
    assert launch.seconds == pytest.approx(GRAPH_NODE_S + (120 + 60) / bw, rel=1e-12)
    tick = be.tick_launcher(np.zeros(1, np.uint32))
    assert tick.seconds == pytest.approx(GRAPH_NODE_S + 8 / bw, rel=1e-12)
    assert be.time_k(tick, 10) == pytest.approx(10 * EAGER_LAUNCH_S, rel=1e-12)


def test_a_sequence_pays_the_launch_interval_and_a_graph_does_not():
    be = _backend(decode=DECODE)
    counter = np.array([decode_ref.TICK_POISON], dtype=np.uint32)
    ticks = [be.tick_launcher(counter) for _ in range(3)]
    big, _, _ = _gemm(be, m=64, k=256, n=1024)  # longer than the launch interval
    steps = [*ticks, big]
    node = sum(s.seconds for s in steps)
    sequence, graph = be.sequence_launcher(steps), be.graph_launcher(steps)
    # repeated eagerly, the host issues a kernel every 5 µs and runs ahead of the GPU: max(n·eager, sum)
    assert sequence.seconds == sequence.eager_seconds == pytest.approx(max(4 * 5e-6, node), rel=1e-12)
    short_ones = be.sequence_launcher(ticks)
    assert short_ones.seconds == pytest.approx(3 * 5e-6, rel=1e-12)  # launch-bound
    long_one = be.sequence_launcher([ticks[0], big])
    assert long_one.seconds == pytest.approx(max(2 * 5e-6, ticks[0].seconds + big.seconds), rel=1e-12)
    assert graph.seconds == pytest.approx(node, rel=1e-12)
    assert graph.eager_seconds == pytest.approx(max(5e-6, node), rel=1e-12)
    assert be.time_k(graph, 4) <= be.time_k(sequence, 4)
    assert be.time_k(graph, 4) == pytest.approx(4 * node, rel=1e-12)
    graph()  # replaying the graph runs every launch, in order
    assert decode_ref.check_tick(counter, 3).ok
    sequence()
    assert decode_ref.check_tick(counter, 6).ok
    short = be.graph_launcher(ticks[:2])  # a replay shorter than a launch still takes one launch interval
    assert be.time_k(short, 1) == pytest.approx(5e-6, rel=1e-12)
    with pytest.raises(GpucalError):
        be.graph_launcher([lambda: None])


def test_host_roundtrip_is_the_sync_plus_what_the_launch_adds():
    be = _backend(decode=DECODE)
    tick = be.tick_launcher(np.zeros(1, np.uint32))
    assert be.host_roundtrip_s(tick, 5) == pytest.approx(5 * (20e-6 + tick.seconds - 2e-6), rel=1e-12)
    big, _, _ = _gemm(be, m=64, k=256, n=1024)
    assert be.host_roundtrip_s(big, 2) == pytest.approx(2 * (20e-6 + big.seconds - 2e-6), rel=1e-12)
    plain = _backend()
    counter = np.array([decode_ref.TICK_POISON], dtype=np.uint32)
    tick = plain.tick_launcher(counter)
    assert plain.host_roundtrip_s(tick, 1) == pytest.approx(SYNC_S + tick.seconds - GRAPH_NODE_S, rel=1e-12)
    assert decode_ref.check_tick(counter, 1).ok  # one call runs the launch once: its output can be checked


def test_prices_go_through_the_clock():
    be = _backend(faults=Faults(warmup_runs=1, warmup_factor=2.0))
    tick = be.tick_launcher(np.zeros(1, np.uint32))
    assert be.time_k(tick, 1) == pytest.approx(2 * EAGER_LAUNCH_S)
    assert be.time_k(tick, 1) == pytest.approx(EAGER_LAUNCH_S)


# --- the one-host all-reduce ----------------------------------------------------------------------------

def _entry(nranks, alpha_s, beta_Bps, **extra):
    return {"op": "all-reduce", "nranks": nranks, "alpha_s": _q(alpha_s), "beta_Bps": _q(beta_Bps), **extra}


def _sends(be, devices, count=33):
    sends = [np.random.default_rng(i).random(count, dtype=np.float32) for i in range(len(devices))]
    recvs = [np.full(count, np.nan, dtype=np.float32) for _ in devices]
    return sends, recvs


def test_allreduce_sums_into_every_recv():
    be = _backend()
    devices = (0, 2, 3)
    sends, recvs = _sends(be, devices)
    be.allreduce_launcher(devices, sends, recvs)()
    want = sends[0] + sends[1] + sends[2]
    for recv in recvs:
        np.testing.assert_allclose(recv, want, rtol=4 * 2.0 ** -24)
    recvs[1][...] = np.nan
    be.allreduce_graph_launcher(devices, sends, recvs, 3)()
    np.testing.assert_allclose(recvs[1], want, rtol=4 * 2.0 ** -24)


def test_allreduce_reason():
    be = _backend(count=4)
    assert be.allreduce_reason((0, 1)) is None
    assert "two devices" in be.allreduce_reason((0,))
    assert "twice" in be.allreduce_reason((1, 1))
    assert "does not exist" in be.allreduce_reason((0, 4))
    with pytest.raises(GpucalError, match="does not exist"):
        be.allreduce_launcher((0, 4), *_sends(be, (0, 4)))


def test_allreduce_priced_from_the_profiles_one_host_entry():
    entries = [_entry(2, 30e-6, 50e9),  # MPI ranks, eager
               _entry(2, 20e-6, 80e9, single_process=True, devices=[0, 1]),  # one process: preferred
               _entry(2, 9e-6, 90e9, single_process=True, graphs=True),
               _entry(2, 1e-6, 10e9, hosts=2, single_process=True),  # spans two hosts: not this machine's
               _entry(3, 1e-6, 900e9)]
    be = _backend(collectives=entries)
    sends, recvs = _sends(be, (0, 1), count=1 << 14)
    s = sends[0].nbytes
    eager = be.allreduce_launcher((0, 1), sends, recvs)
    assert eager.seconds == pytest.approx(20e-6 + s / 80e9, rel=1e-12)
    assert be.time_k(eager, 3) == pytest.approx(3 * max(EAGER_LAUNCH_S, 20e-6 + s / 80e9), rel=1e-12)
    graph = be.allreduce_graph_launcher((0, 1), sends, recvs, 5)
    assert graph.seconds == pytest.approx(5 * (9e-6 + s / 90e9), rel=1e-12)
    assert graph.eager_seconds == pytest.approx(max(EAGER_LAUNCH_S, graph.seconds), rel=1e-12)
    assert host_allreduce(be.machine.profile, 2, False) == (20e-6, 80e9)
    assert host_allreduce(be.machine.profile, 2, True) == (9e-6, 90e9)
    assert host_allreduce(be.machine.profile, 4, False) is None


def test_allreduce_graph_without_a_graphs_entry_is_count_eager_prices():
    be = _backend(collectives=[_entry(2, 30e-6, 50e9)])
    sends, recvs = _sends(be, (0, 1))
    s = sends[0].nbytes
    assert host_allreduce(be.machine.profile, 2, True) is None
    graph = be.allreduce_graph_launcher((0, 1), sends, recvs, 4)
    assert graph.seconds == pytest.approx(4 * (30e-6 + s / 50e9), rel=1e-12)


@pytest.mark.parametrize(("name", "kind"), [("h100-sxm", "nvlink P2P"), ("rtx4090", "host staging")])
def test_allreduce_without_an_entry_is_the_ring_over_the_slowest_link(name, kind):
    be = _backend(name, count=4)
    devices = (0, 1, 3)
    sends, recvs = _sends(be, devices, count=1 << 12)
    s = sends[0].nbytes
    link = be.machine.group_link(devices)
    assert link.description == kind
    m = be.machine
    paths = [m.peer(a, b).model if m.peer(a, b).kind != "none" else m.staged(a, b, driver=False)
             for a in devices for b in devices if a != b]
    assert link.alpha_s == max(p.alpha_s for p in paths) and link.beta_Bps == min(p.beta_Bps for p in paths)
    want = ring_collective_time_s("all-reduce", s, link.alpha_s, link.beta_Bps, 3)
    assert want == pytest.approx(4 * link.alpha_s + 4 / 3 * s / link.beta_Bps)
    launch = be.allreduce_launcher(devices, sends, recvs)
    assert launch.seconds == pytest.approx(want, rel=1e-12)
    graph = be.allreduce_graph_launcher(devices, sends, recvs, 2)
    assert graph.seconds == pytest.approx(2 * want, rel=1e-12)


def test_the_group_link_takes_the_largest_alpha_and_the_smallest_beta_of_its_paths():
    data = _profile().model_dump(mode="json", by_alias=True, exclude_unset=True)
    data["links"] = [{"src": a, "dst": b, "path": "nvlink", "verdict": "nvlink", "alpha_s": _q(alpha),
                      "beta_Bps": _q(beta)} for a, b, alpha, beta in ((0, 1, 20e-6, 500e9), (1, 3, 1e-6, 50e9))]
    be = VirtualBackend(VirtualMachine(Profile.model_validate(data), "h100-sxm", 4))
    link = be.machine.group_link((0, 1, 3))
    assert (link.alpha_s, link.beta_Bps) == (20e-6, 50e9)
    sends, recvs = _sends(be, (0, 1, 3))
    launch = be.allreduce_launcher((0, 1, 3), sends, recvs)
    assert launch.seconds == pytest.approx(4 * 20e-6 + 4 / 3 * sends[0].nbytes / 50e9, rel=1e-12)


def test_a_p2p_fault_prices_the_ring_not_the_entry():
    be = _backend(collectives=[_entry(2, 20e-6, 80e9)], faults=Faults(p2p="off"))
    sends, recvs = _sends(be, (0, 1))
    link = be.machine.group_link((0, 1))
    assert link.description == "host staging"
    launch = be.allreduce_launcher((0, 1), sends, recvs)
    assert launch.seconds == pytest.approx(ring_collective_time_s("all-reduce", sends[0].nbytes, link.alpha_s,
                                                                  link.beta_Bps, 2), rel=1e-12)


# --- the existing launches keep their prices ---------------------------------------------------------------

def test_the_stream_gemv_and_gemm_prices_are_unchanged():
    be = VirtualBackend(VirtualMachine(load_builtin("profile", "rtx4090").profile, "rtx4090"))
    dev = be.machine.devices[0]
    n = 1 << 16
    src, dst = np.zeros(n, np.uint32), np.zeros(n, np.uint32)
    copy = be.stream_launcher("copy", {"src": src, "dst": dst})
    assert isinstance(copy, VirtualLaunch) and copy.eager_seconds is None
    assert be.time_k(copy, 3) == 3 * (2 * 4 * n / dev.memory_Bps)
    w, x, y = np.zeros((64, 128), np.float16), np.zeros((4, 128), np.float16), np.zeros((4, 64), np.float16)
    gemv = be.gemv_launcher(w, x, y, 2, "fp16")
    assert gemv.eager_seconds is None
    assert be.time_k(gemv, 1) == (w.nbytes + x[:2].nbytes + y[:2].nbytes) / dev.memory_Bps
    a, b, c = np.zeros((64, 64), np.float16), np.zeros((64, 64), np.float16), np.zeros((64, 64), np.float32)
    gemm = be.gemm_launcher(a, b, c, "fp16_fp32acc")
    assert gemm.eager_seconds is None
    assert be.time_k(gemm, 2) == 2 * max(2 * 64 ** 3 / dev.flops["fp16_fp32acc"],
                                         (a.nbytes + b.nbytes + c.nbytes) / dev.memory_Bps)
    # the figures themselves, as they were priced before the decode kernels came
    assert math.isclose(be.time_k(copy, 1), 2 * 4 * n / 1008e9, rel_tol=1e-12)
