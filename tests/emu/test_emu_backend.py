"""``CupyBackend``'s own launchers (grid and block shapes, the attention plan's splits and its workspace, the
argument types it packs) driving the kernels of the repository's sources on the CPU emulator: the GEMV at every
batch bound and variant, every decode launcher, the stream kernels and the copy variants, the copy engine and the
blocked-start gate. Outputs are poisoned, arrays guarded (``emu_build.Memory``), results checked with the
project's checks (the stream checks as ``probes/membw.py`` makes them)."""

from __future__ import annotations

import numpy as np
import pytest

from emu_fixtures import decode_lib, emu_dir, emulated_cupy, kernels_lib, libraries, memory, toolchain  # noqa: F401 - the emulator's fixtures

from gpucal.kernels import cuda_src as cs
from gpucal.kernels import decode_ref as dr
from gpucal.kernels.dtypes import DTYPES, POISON, to_float64, to_storage
from gpucal.kernels.reference import GEMM_MODES, check_close, gemm_tolerance, gemv_reference, write_pattern


def _values(rng, shape, dtype, scale=1.0):
    return to_storage((rng.random(shape, dtype=np.float32) * 2 - 1) * np.float32(scale), dtype)


def _poisoned(memory, shape, dtype):
    return memory.array(shape, DTYPES[dtype].storage, POISON[dtype])


@pytest.mark.parametrize("dtype", cs.GEMV_DTYPES)
def test_the_gemv_launcher_at_every_batch_bound(emulated_cupy, memory, dtype):
    backend, rng = emulated_cupy(4), np.random.default_rng(1)
    per_vec = 16 // DTYPES[dtype].itemsize_bytes
    variants = [v[2:] for v in cs.GEMV_VARIANTS if v[0] == dtype]
    cases = [(batch, None) for batch in (1, 2, 3, 4, 7, 8, 13, 16)] + [(b, v) for v in variants for b in (1, 9)]
    for batch, variant in cases:
        m, k = 45, 37 * per_vec
        w, x = memory.like(_values(rng, (m, k), dtype)), memory.like(_values(rng, (batch, k), dtype))
        y = _poisoned(memory, (batch, m), dtype)
        backend.gemv_launcher(w, x, y, batch, dtype, variant=variant)()
        ref, abs_product = gemv_reference(w, x, dtype)
        mode = GEMM_MODES["fp32" if dtype == "fp32" else f"{dtype}_fp32acc"]
        c = check_close(to_float64(y, dtype), ref, gemm_tolerance(mode, k, abs_product, ref), "GEMV")
        assert c.ok, (batch, variant, c)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("batch,kv_heads,group,head_dim,t_max,context,sm_count,splits", [
    (1, 1, 4, 128, 700, 600, 2, 3),  # three splits (256, 256, 88), then the combine
    (2, 2, 2, 64, 100, 77, 2, 1),  # one split
    (1, 2, 8, 128, 300, 300, 1, 2),  # G = 8, two splits (256 + 44)
    (3, 1, 1, 64, 520, 513, 1, 2),  # G = 1, three sequences, two splits (320 + 193)
    (1, 1, 16, 64, 40, 33, 8, 1),
    (1, 1, 3, 64, 300, 257, 16, 2),  # G = 3 on the bound-4 kernel, a last split of one position
])
def test_the_attention_launcher(emulated_cupy, memory, dtype, batch, kv_heads, group, head_dim, t_max, context,
                                sm_count, splits):
    backend, rng = emulated_cupy(sm_count), np.random.default_rng(context)
    heads = kv_heads * group
    q = memory.like(_values(rng, (batch, heads, head_dim), dtype, 3.0))
    k = memory.like(_values(rng, (batch, kv_heads, t_max, head_dim), dtype))
    v = memory.like(_values(rng, (batch, kv_heads, t_max, head_dim), dtype))
    out = _poisoned(memory, q.shape, dtype)
    assert backend.attention_splits(batch, kv_heads, context) == splits
    launch = backend.attention_launcher(q, k, v, out, dtype, context)
    launch()
    assert (c := dr.check_attention(out, q, k, v, context, dtype)).ok, c
    out[...] = POISON[dtype]  # the same launcher again: its workspace is reused
    launch()
    assert (c := dr.check_attention(out, q, k, v, context, dtype)).ok, c


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_the_other_decode_launchers(emulated_cupy, memory, dtype):
    backend, rng = emulated_cupy(4), np.random.default_rng(2)
    for batch, hidden in ((2, 4096), (3, 1000), (1, 8), (2, 20000), (2, 30)):
        x, r = memory.like(_values(rng, (batch, hidden), dtype)), memory.like(_values(rng, (batch, hidden), dtype))
        w = memory.like(_values(rng, (hidden,), dtype, 2.0))
        out, res_out = _poisoned(memory, (batch, hidden), dtype), _poisoned(memory, (batch, hidden), dtype)
        backend.add_rmsnorm_launcher(x, r, w, out, res_out, dtype, dr.RMS_EPS)()
        assert (c := dr.check_add_rmsnorm(out, res_out, x, r, w, dtype)).ok, (batch, hidden, c)
    for batch, heads, kv_heads, head_dim, t_max, position in ((2, 8, 2, 128, 5, 4), (1, 3, 1, 64, 2, 0)):
        qkv = memory.like(_values(rng, (batch, dr.qkv_width(heads, kv_heads, head_dim)), dtype, 2.0))
        table = memory.like(dr.cos_sin_table(position, head_dim))
        q = _poisoned(memory, (batch, heads, head_dim), dtype)
        kc, vc = (_poisoned(memory, (batch, kv_heads, t_max, head_dim), dtype) for _ in range(2))
        backend.rotary_launcher(qkv, table, q, kc, vc, position, dtype, heads, kv_heads, head_dim)()
        assert (c := dr.check_rotary(q, kc, vc, position, qkv, table, heads, kv_heads, head_dim, dtype)).ok, c
    for batch, ffn in ((2, 1024), (3, 37)):
        gate_up = memory.like(_values(rng, (batch, 2 * ffn), dtype, 6.0))
        out = _poisoned(memory, (batch, ffn), dtype)
        backend.silu_mul_launcher(gate_up, out, dtype)()
        assert (c := dr.check_silu_mul(out, gate_up, dtype)).ok, (batch, ffn, c)
    counter = memory.array(1, np.uint32, fill=dr.TICK_POISON)
    tick = backend.tick_launcher(counter)
    for _ in range(5):
        tick()
    assert dr.check_tick(counter, 5).ok


def test_the_stream_kernels_and_every_copy_variant(emulated_cupy, memory):
    backend, rng = emulated_cupy(1), np.random.default_rng(3)
    n_words = 4 * 1000 + 4 * 3  # not a multiple of the block: the grid-stride tails
    src = memory.like(rng.integers(0, 2 ** 32, n_words, dtype=np.uint64).astype(np.uint32))
    for name in cs.COPY_VARIANTS:
        backend.copy_kernel = name
        dst = memory.array(n_words, np.uint32, fill=0xDEADBEEF)
        backend.stream_launcher("copy", {"src": src, "dst": dst})()
        assert np.array_equal(dst, src), name
    partial = memory.array(backend.stream_partials(n_words), np.uint32, fill=0)
    backend.stream_launcher("read", {"src": src, "partial": partial})()
    assert np.bitwise_xor.reduce(partial) == np.bitwise_xor.reduce(src)
    dst = memory.array(n_words, np.uint32, fill=0)
    backend.stream_launcher("write", {"dst": dst, "seed": 12345})()
    assert np.array_equal(dst, write_pattern(n_words, 12345))
    b = memory.like(rng.random(n_words, dtype=np.float32))
    c = memory.like(rng.random(n_words, dtype=np.float32))
    a = memory.array(n_words, np.float32, fill=np.nan)
    backend.stream_launcher("triad", {"a": a, "b": b, "c": c, "scalar": 3.0})()
    ref = b.astype(np.float64) + 3.0 * c.astype(np.float64)
    assert np.all(np.abs(a - ref) <= 2 * DTYPES["fp32"].eps * 2 * (np.abs(b) + 3.0 * np.abs(c)))


def test_the_copy_engine_and_the_blocked_start_gate(kernels_lib, memory):
    rng = np.random.default_rng(4)
    src = memory.like(rng.integers(0, 256, 1000, dtype=np.uint8))
    for offset, n in ((0, 1000), (1, 999), (0, 7)):  # 16-byte vectors, then bytes only (a misaligned pointer)
        dst = memory.array(1000, np.uint8, fill=0)
        kernels_lib.launch("copy_bytes", (2,), (64,), (src[offset:], dst[offset:], np.uint64(n - offset)))
        assert np.array_equal(dst[offset:n], src[offset:n]) and not dst[n:].any() and not dst[:offset].any()
    flag, status = memory.array(1, np.int32, fill=1), memory.array(1, np.int32, fill=0)
    kernels_lib.launch("spin_wait", (1,), (1,), (flag, status, np.uint64(10 ** 9)))
    assert status[0] == 1  # the host had set the flag
    flag[0] = 0
    kernels_lib.launch("spin_wait", (1,), (1,), (flag, status, np.uint64(10 ** 5)))
    assert status[0] == 2  # timed out on %globaltimer
