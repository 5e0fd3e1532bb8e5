"""The decode kernels (``numba_decode.py``) and the decode GEMM on the CUDA simulator, at tiny and odd shapes, on
poisoned outputs, against ``decode_ref``'s checks; and each check refuses an output with one element wrong.
(The simulator is slow: shapes stay tiny. The simulator flag is set by ``tests/conftest.py`` before numba is
imported.)"""

from __future__ import annotations

import numpy as np
import pytest

from gpucal.kernels import decode_ref as dr
from gpucal.kernels.dtypes import DTYPES, POISON, to_float64
from gpucal.kernels.reference import GEMM_MODES, check_close, gemm_reference, gemm_tolerance

DTYPES_NUMBA = ("fp16", "fp32")
B, HQ, HKV, HIDDEN, FFN = 3, 4, 2, 24, 10


def _poisoned(backend, shape, dtype):
    return backend.full(shape, DTYPES[dtype].storage, POISON[dtype])


def _nudged(host, index, rel=0.05):
    """A copy of ``host`` with the element at ``index`` moved by ``rel`` of its size (far outside tolerance)."""
    wrong = host.copy()
    value = wrong[index].astype(np.float64)
    wrong[index] = value + rel * max(abs(value), 1.0)
    return wrong


def _chunk(simulator):
    from gpucal.kernels import numba_decode as nd

    return nd.ATTENTION_BLOCK_SIM[1]


def test_the_simulator_offers_the_decode_kernels(simulator):
    assert simulator.decode_reason() is None
    assert simulator.decode_dtypes == ("fp16", "fp32") and simulator.decode_gemm_dtypes() == ("fp16", "fp32")
    assert simulator.attention_splits(B, HKV, 100) == 1
    assert "graph" in simulator.graph_reason()
    assert "NCCL" in simulator.allreduce_reason((0, 1))


@pytest.mark.parametrize("dtype", DTYPES_NUMBA)
@pytest.mark.parametrize("heads,kv_heads,head_dim,context,t_max", [
    (HQ, HKV, 16, 5, 7),  # GQA, G = 2; one chunk
    (HQ, HKV, 16, 19, 21),  # GQA; three chunks, the last partial: the online softmax's rescaling
    (2, 2, 8, 11, 11),  # G = 1; two chunks, the whole cache
])
def test_attention_matches_reference(simulator, dtype, heads, kv_heads, head_dim, context, t_max):
    q = simulator.random_uniform((B, heads, head_dim), dtype, 11, 2.0)
    k = simulator.random_uniform((B, kv_heads, t_max, head_dim), dtype, 12, 2.0)
    v = simulator.random_uniform((B, kv_heads, t_max, head_dim), dtype, 13)
    if t_max > context:  # positions past the context must not count: make them loud
        kh, vh = simulator.to_host(k), simulator.to_host(v)
        kh[:, :, context:] = 60.0
        vh[:, :, context:] = 1000.0
        k, v = simulator.to_device(kh), simulator.to_device(vh)
    out = _poisoned(simulator, (B, heads, head_dim), dtype)
    simulator.attention_launcher(q, k, v, out, dtype, context)()
    got = simulator.to_host(out)
    args = (simulator.to_host(q), simulator.to_host(k), simulator.to_host(v), context, dtype)
    check = dr.check_attention(got, *args)
    assert check.ok, check
    assert (context > _chunk(simulator)) == (context in (19, 11))  # the cases cover both paths
    bad = dr.check_attention(_nudged(got, (2, heads - 1, 3)), *args)
    assert not bad.ok and bad.index == (2, heads - 1, 3)


def test_attention_reads_kv_head_of_its_group(simulator):
    """With G = 2, query heads 0 and 1 read KV head 0, heads 2 and 3 KV head 1: equal queries in a group give
    equal outputs, and the groups differ."""
    dtype, d, t = "fp32", 8, 6
    qh = np.repeat(np.random.default_rng(5).uniform(-1, 1, (1, 1, d)).astype(np.float32), HQ, axis=1)
    q = simulator.to_device(qh)
    k = simulator.random_uniform((1, HKV, t, d), dtype, 6, 2.0)
    v = simulator.random_uniform((1, HKV, t, d), dtype, 7)
    out = _poisoned(simulator, (1, HQ, d), dtype)
    simulator.attention_launcher(q, k, v, out, dtype, t)()
    got = simulator.to_host(out)
    assert np.array_equal(got[0, 0], got[0, 1]) and np.array_equal(got[0, 2], got[0, 3])
    assert not np.allclose(got[0, 0], got[0, 2])
    assert dr.check_attention(got, qh, simulator.to_host(k), simulator.to_host(v), t, dtype).ok


@pytest.mark.parametrize("dtype", DTYPES_NUMBA)
def test_add_rmsnorm_matches_reference(simulator, dtype):
    x = simulator.random_uniform((B, HIDDEN), dtype, 21, 3.0)
    residual = simulator.random_uniform((B, HIDDEN), dtype, 22, 3.0)
    weight = simulator.random_uniform((HIDDEN,), dtype, 23)
    out, residual_out = _poisoned(simulator, (B, HIDDEN), dtype), _poisoned(simulator, (B, HIDDEN), dtype)
    launch = simulator.add_rmsnorm_launcher(x, residual, weight, out, residual_out, dtype, dr.RMS_EPS)
    launch()
    launch()  # out of place: repeating it gives the same outputs
    got, got_r = simulator.to_host(out), simulator.to_host(residual_out)
    inputs = (simulator.to_host(x), simulator.to_host(residual), simulator.to_host(weight), dtype, dr.RMS_EPS)
    check = dr.check_add_rmsnorm(got, got_r, *inputs)
    assert check.ok, check
    assert not dr.check_add_rmsnorm(_nudged(got, (1, 17)), got_r, *inputs).ok
    bad_r = dr.check_add_rmsnorm(got, _nudged(got_r, (2, 0)), *inputs)
    assert not bad_r.ok and "residual_out" in bad_r.method


@pytest.mark.parametrize("dtype", DTYPES_NUMBA)
def test_rotary_matches_reference(simulator, dtype):
    d, t_max, position = 8, 7, 3
    qkv = simulator.random_uniform((B, dr.qkv_width(HQ, HKV, d)), dtype, 31, 2.0)
    cos_sin = dr.cos_sin_table(position, d, base=10.0)  # a small base: every pair is turned noticeably
    q = _poisoned(simulator, (B, HQ, d), dtype)
    k_cache, v_cache = _poisoned(simulator, (B, HKV, t_max, d), dtype), _poisoned(simulator, (B, HKV, t_max, d), dtype)
    simulator.rotary_launcher(qkv, cos_sin, q, k_cache, v_cache, position, dtype, HQ, HKV, d)()
    got_q, got_k, got_v = simulator.to_host(q), simulator.to_host(k_cache), simulator.to_host(v_cache)
    rest = (simulator.to_host(qkv), cos_sin, HQ, HKV, d, dtype)
    check = dr.check_rotary(got_q, got_k, got_v, position, *rest)
    assert check.ok, check
    others = [p for p in range(t_max) if p != position]  # only the row at ``position`` is written
    assert np.isnan(got_k[:, :, others].astype(np.float32)).all() and np.isnan(got_v[:, :, others]).all()
    assert not dr.check_rotary(_nudged(got_q, (0, 3, d - 1)), got_k, got_v, position, *rest).ok
    assert not dr.check_rotary(got_q, _nudged(got_k, (2, 1, position, 0)), got_v, position, *rest).ok
    bad_v = dr.check_rotary(got_q, got_k, _nudged(got_v, (1, 0, position, 5), rel=1e-3), position, *rest)
    assert not bad_v.ok and "bit-exact" in bad_v.method


@pytest.mark.parametrize("dtype", DTYPES_NUMBA)
def test_silu_mul_matches_reference(simulator, dtype):
    gate_up = simulator.random_uniform((B, 2 * FFN), dtype, 41, 4.0)
    out = _poisoned(simulator, (B, FFN), dtype)
    simulator.silu_mul_launcher(gate_up, out, dtype)()
    got = simulator.to_host(out)
    check = dr.check_silu_mul(got, simulator.to_host(gate_up), dtype)
    assert check.ok, check
    bad = dr.check_silu_mul(_nudged(got, (2, FFN - 1)), simulator.to_host(gate_up), dtype)
    assert not bad.ok and bad.index == (2, FFN - 1)


def test_tick_adds_one_per_launch(simulator):
    counter = simulator.to_device(np.array([dr.TICK_POISON], dtype=np.uint32))
    launch = simulator.tick_launcher(counter)
    for _ in range(3):
        launch()
    host = simulator.to_host(counter)
    assert dr.check_tick(host, 3).ok
    assert not dr.check_tick(host, 2).ok


@pytest.mark.parametrize("m,n,k", [(1, 5, 3), (3, 17, 20)])
def test_decode_gemm_writes_fp16(simulator, m, n, k):
    a = simulator.random_uniform((m, k), "fp16", 51)
    w = simulator.random_uniform((k, n), "fp16", 52)
    c = _poisoned(simulator, (m, n), "fp16")
    simulator.decode_gemm_launcher(a, w, c, "fp16")()
    got = simulator.to_host(c)
    assert got.dtype == np.float16
    ref, absp = gemm_reference(simulator.to_host(a), simulator.to_host(w), "fp16")
    tol = gemm_tolerance(GEMM_MODES["fp16_fp32acc"], k, absp, ref)
    check = check_close(to_float64(got, "fp16"), ref, tol, "float64 reference")
    assert check.ok, check
    assert not check_close(to_float64(_nudged(got, (m - 1, 4)), "fp16"), ref, tol, "t").ok


def test_decode_gemm_writes_fp32(simulator):
    a, w = simulator.random_uniform((2, 9), "fp32", 53), simulator.random_uniform((9, 6), "fp32", 54)
    c = _poisoned(simulator, (2, 6), "fp32")
    simulator.decode_gemm_launcher(a, w, c, "fp32")()
    ref, absp = gemm_reference(simulator.to_host(a), simulator.to_host(w), "fp32")
    check = check_close(simulator.to_host(c).astype(np.float64), ref, gemm_tolerance(GEMM_MODES["fp32"], 9, absp, ref),
                        "float64 reference")
    assert check.ok, check


def test_decode_launchers_refuse_what_they_cannot_run(simulator):
    from gpucal.errors import InputError

    x = simulator.random_uniform((B, HIDDEN), "fp16", 1)
    with pytest.raises(InputError, match="bf16"):
        simulator.silu_mul_launcher(x, x, "bf16")
    with pytest.raises(InputError, match="bf16"):
        simulator.decode_gemm_launcher(x, x, x, "bf16")
    with pytest.raises(ValueError, match="float16"):  # arrays not stored in the dtype named
        simulator.add_rmsnorm_launcher(x, x, x[0], x, x, "fp32", dr.RMS_EPS)
    q = simulator.random_uniform((1, 2, 8), "fp32", 2)
    cache = simulator.random_uniform((1, 2, 4, 8), "fp32", 3)
    with pytest.raises(InputError, match="context"):
        simulator.attention_launcher(q, cache, cache, q, "fp32", 5)
    wide = simulator.random_uniform((1, 1, 64), "fp32", 4)
    with pytest.raises(InputError, match="head dimension"):
        wide_cache = simulator.random_uniform((1, 1, 2, 64), "fp32", 5)
        simulator.attention_launcher(wide, wide_cache, wide_cache, wide, "fp32", 1)


def test_host_roundtrip_counts_each_launch_and_wait(simulator):
    calls = []
    seconds = simulator.host_roundtrip_s(lambda: calls.append(1), 4)
    assert len(calls) == 4 and seconds > 0.0
