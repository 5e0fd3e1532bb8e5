"""Every decode kernel of ``decode_src.DECODE_SOURCE`` on the CPU emulator (``emu.h``), launched with the shapes
``cupy_backend`` uses, on poisoned outputs inside guard bands, against ``decode_ref``'s checks: all twenty
attention instances (fp16, bf16; D = 64, 128; group bounds 1 to 16, at G equal to and below the bound), with one
split and with several (then the combine kernel), partial tiles, more than ``ATTENTION_CHUNK`` positions in a split
(the online softmax's rescaling), a single position, and positions past the context made loud; add_rmsnorm (the
vector and the scalar path, up to 1024 threads looping), rotary (other cache rows untouched), silu_mul, tick. Each
kernel runs in several of emu.h's four scheduling orders across its cases. And two mutations of the real source
each fail the check.

What this proves: indexing, fragment layouts, the chunked softmax, the split/combine protocol, reductions and
barriers; not timing, nor the PTX of the helpers emu.h replaces."""

from __future__ import annotations

import numpy as np
import pytest

from emu_fixtures import decode_lib, emu_dir, emulated_cupy, kernels_lib, libraries, memory, toolchain  # noqa: F401 - the emulator's fixtures

import emu_build as eb
from gpucal.kernels import decode_ref as dr
from gpucal.kernels import decode_src as ds
from gpucal.kernels.dtypes import DTYPES, POISON, to_storage

DTYPES_DECODE = ds.DECODE_KERNEL_DTYPES
CHUNK = ds.ATTENTION_CHUNK


def _values(rng, shape, dtype, scale=1.0):
    return to_storage((rng.random(shape, dtype=np.float32) * 2 - 1) * np.float32(scale), dtype)


def _poisoned(memory, shape, dtype):
    return memory.array(shape, DTYPES[dtype].storage, POISON[dtype])


def _is_poison(a, dtype):
    return bool((a.view(np.uint16) == np.asarray(POISON[dtype]).view(np.uint16)).all())


def attention(lib, memory, rng, dtype, head_dim, batch, kv_heads, group, t_max, context, split_len, k_boost=1.0):
    """One attention launch (grid (splits, H_kv, B), ATTENTION_THREADS), then the combine kernel where there are
    several splits (grid (H_q, B), D threads): the backend's launch. Returns (out, q, k, v)."""
    heads = kv_heads * group
    q = _values(rng, (batch, heads, head_dim), dtype, 3.0)
    k = _values(rng, (batch, kv_heads, t_max, head_dim), dtype)
    v = _values(rng, (batch, kv_heads, t_max, head_dim), dtype)
    if k_boost != 1.0:  # later chunks with larger scores: the running max moves, the rescaling matters
        k[:, :, CHUNK:] = to_storage(np.float32(k_boost) * np.asarray(_f32(k[:, :, CHUNK:], dtype)), dtype)
    k[:, :, context:] = to_storage(np.full(k[:, :, context:].shape, 60.0, np.float32), dtype)  # loud past the context
    v[:, :, context:] = to_storage(np.full(v[:, :, context:].shape, 1000.0, np.float32), dtype)
    q, k, v = memory.like(q), memory.like(k), memory.like(v)
    out = _poisoned(memory, (batch, heads, head_dim), dtype)
    splits = -(-context // split_len)
    name = ds.attention_kernel_name(dtype, head_dim, ds.attention_group_bound(group))
    sizes = (np.int32(context), np.int32(t_max), np.int32(split_len), np.int32(group))
    if splits == 1:
        unused = memory.array(1, np.float32, fill=np.nan, read_only=True)  # one split: the workspace is not touched
        lib.launch(name, (1, kv_heads, batch), (ds.ATTENTION_THREADS,), (q, k, v, out, unused, unused, unused) + sizes)
    else:
        parts = batch * heads * splits
        ws_o, ws_m, ws_l = memory.empty(parts * head_dim), memory.empty(parts), memory.empty(parts)
        lib.launch(name, (splits, kv_heads, batch), (ds.ATTENTION_THREADS,), (q, k, v, out, ws_o, ws_m, ws_l) + sizes)
        lib.launch(ds.attention_combine_name(dtype), (heads, batch), (head_dim,),
                   (ws_o, ws_m, ws_l, out, np.int32(splits), np.int32(head_dim)))
    return out, q, k, v


def _f32(stored, dtype):
    if dtype == "bf16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    return stored.astype(np.float32)


# (head_dim, bound) -> cases (batch, H_kv, G, t_max, context, split length): G at the bound with one split and a
# partial tile; G below the bound (where there is one) with three splits, the last one short
def _attention_cases(head_dim, bound):
    below = {1: 1, 2: 1, 4: 3, 8: 5, 16: 12}[bound]
    return ((1, 2, bound, 40, 37, 64), (2, 1, below, 101, 100, 40))


ATTENTION = [(dtype, d, g) for dtype in DTYPES_DECODE for d in ds.ATTENTION_HEAD_DIMS for g in ds.ATTENTION_GROUPS]


@pytest.mark.parametrize("dtype,head_dim,bound", ATTENTION, ids=[ds.attention_kernel_name(*a) for a in ATTENTION])
def test_every_attention_instance_matches_the_reference(decode_lib, memory, dtype, head_dim, bound):
    rng = np.random.default_rng(head_dim + bound)
    first_order = 2 * (ATTENTION.index((dtype, head_dim, bound)) % 2)  # instances alternate orders 0, 1 and 2, 3
    try:
        for i, (batch, kv_heads, group, t_max, context, split_len) in enumerate(_attention_cases(head_dim, bound)):
            decode_lib.set_order(first_order + i)
            out, q, k, v = attention(decode_lib, memory, rng, dtype, head_dim, batch, kv_heads, group, t_max, context,
                                     split_len)
            c = dr.check_attention(out, q, k, v, context, dtype)
            assert c.ok, (batch, kv_heads, group, context, split_len, c)
    finally:
        decode_lib.set_order(0)


@pytest.mark.parametrize("dtype,head_dim,batch,kv_heads,group,t_max,context,split_len", [
    ("fp16", 64, 1, 1, 1, 600, 577, 576),  # one split of two chunks, the second of 65 positions
    ("bf16", 128, 1, 1, 8, 700, 650, 704),  # G = 8, one split, two chunks
    ("fp16", 128, 1, 1, 2, 1100, 1100, 576),  # two splits (576 + 524), the first of two chunks
    ("bf16", 64, 1, 1, 16, 3, 1, 64),  # a single position
])
def test_attention_over_several_chunks_and_one_position(decode_lib, memory, dtype, head_dim, batch, kv_heads, group,
                                                        t_max, context, split_len):
    try:
        for order in range(4):
            decode_lib.set_order(order)
            out, q, k, v = attention(decode_lib, memory, np.random.default_rng(context), dtype, head_dim, batch,
                                     kv_heads, group, t_max, context, split_len, k_boost=2.0)
            c = dr.check_attention(out, q, k, v, context, dtype)
            assert c.ok, (order, c)
    finally:
        decode_lib.set_order(0)


def test_every_decode_kernel_is_covered():
    covered = {ds.attention_kernel_name(*a) for a in ATTENTION}
    covered |= {f"{kind}_{t}" for t in DTYPES_DECODE
                for kind in ("decode_attention_combine", "add_rmsnorm", "rotary", "silu_mul")} | {"tick"}
    assert covered == set(ds.DECODE_KERNEL_NAMES)


def _norm_threads(hidden):
    """cupy_backend.add_rmsnorm_launcher's block: h/8 (or h) threads rounded up to 32, at most 1024."""
    per_thread = hidden // 8 if hidden % 8 == 0 else hidden
    return min(1024, max(32, -(-per_thread // 32) * 32))


@pytest.mark.parametrize("dtype", DTYPES_DECODE)
def test_add_rmsnorm_matches_the_reference(decode_lib, memory, dtype):
    rng = np.random.default_rng(3)
    try:
        for order, (batch, hidden, threads) in enumerate((
                (3, 4096, _norm_threads(4096)),  # vectors, 512 threads
                (2, 9000, _norm_threads(9000)),  # vectors, 1024 threads looping
                (2, 1000, 32),  # vectors, fewer threads than vectors
                (2, 20, _norm_threads(20)),  # scalar path (h % 8 != 0)
                (1, 8, _norm_threads(8)))):
            decode_lib.set_order(order % 4)
            x, r = memory.like(_values(rng, (batch, hidden), dtype)), memory.like(_values(rng, (batch, hidden), dtype))
            w = memory.like(_values(rng, (hidden,), dtype, 2.0))
            out, res_out = _poisoned(memory, (batch, hidden), dtype), _poisoned(memory, (batch, hidden), dtype)
            decode_lib.launch(ds.decode_kernel_name("add_rmsnorm", dtype), (batch,), (threads,),
                              (x, r, w, out, res_out, np.int32(hidden), np.float32(dr.RMS_EPS)))
            c = dr.check_add_rmsnorm(out, res_out, x, r, w, dtype)
            assert c.ok, (batch, hidden, threads, c)
    finally:
        decode_lib.set_order(0)


@pytest.mark.parametrize("dtype", DTYPES_DECODE)
def test_rotary_matches_the_reference_and_leaves_other_cache_rows(decode_lib, memory, dtype):
    rng = np.random.default_rng(4)
    try:
        for order, (batch, heads, kv_heads, head_dim, t_max, position, threads) in enumerate((
                (2, 4, 2, 64, 9, 5, 32),
                (1, 8, 1, 128, 3, 0, 64),
                (2, 3, 3, 12, 4, 3, 32),
                (1, 2, 1, 128, 2, 1, 32))):  # fewer threads than rotated pairs
            decode_lib.set_order(order % 4)
            qkv = memory.like(_values(rng, (batch, dr.qkv_width(heads, kv_heads, head_dim)), dtype, 2.0))
            table = memory.like(dr.cos_sin_table(position, head_dim))
            q = _poisoned(memory, (batch, heads, head_dim), dtype)
            kc = _poisoned(memory, (batch, kv_heads, t_max, head_dim), dtype)
            vc = _poisoned(memory, (batch, kv_heads, t_max, head_dim), dtype)
            decode_lib.launch(ds.decode_kernel_name("rotary", dtype), (heads + 2 * kv_heads, batch), (threads,),
                              (qkv, table, q, kc, vc, np.int32(position), np.int32(heads), np.int32(kv_heads),
                               np.int32(head_dim), np.int32(t_max)))
            c = dr.check_rotary(q, kc, vc, position, qkv, table, heads, kv_heads, head_dim, dtype)
            assert c.ok, (batch, heads, kv_heads, head_dim, position, c)
            assert _is_poison(np.delete(kc, position, axis=2), dtype) and _is_poison(np.delete(vc, position, axis=2),
                                                                                     dtype)
    finally:
        decode_lib.set_order(0)


@pytest.mark.parametrize("dtype", DTYPES_DECODE)
def test_silu_mul_matches_the_reference(decode_lib, memory, dtype):
    rng = np.random.default_rng(5)
    try:
        for order, (batch, ffn, blocks) in enumerate(((3, 1024, 2), (2, 100, 1), (1, 24, 4), (2, 37, 1))):
            decode_lib.set_order(order % 4)
            gate_up = memory.like(_values(rng, (batch, 2 * ffn), dtype, 6.0))
            out = _poisoned(memory, (batch, ffn), dtype)
            decode_lib.launch(ds.decode_kernel_name("silu_mul", dtype), (blocks,), (256,),
                              (gate_up, out, np.int32(batch), np.int32(ffn)))
            c = dr.check_silu_mul(out, gate_up, dtype)
            assert c.ok, (batch, ffn, blocks, c)
    finally:
        decode_lib.set_order(0)


def test_tick_adds_one_per_launch(decode_lib, memory):
    counter = memory.array(1, np.uint32, fill=dr.TICK_POISON)
    for _ in range(3):
        decode_lib.launch("tick", (1,), (1,), (counter,))
    assert dr.check_tick(counter, 3).ok
    assert not dr.check_tick(counter, 2).ok


# --- the harness catches a wrong kernel --------------------------------------------------------------

MUTATED_KERNEL = ds.attention_kernel_name("fp16", 64, 4)
MUTATIONS = {  # a change of the real source (occurring exactly once) -> what it breaks
    "rescale of the accumulated outputs dropped": ("acc[g][e] *= a;", "acc[g][e] *= 1.0f;"),
    "last pairwise sum of the warps dropped": ("for (int half = ATT_WARPS / 2; half >= 1; half >>= 1)",
                                               "for (int half = ATT_WARPS / 2; half >= 2; half >>= 1)"),
}


@pytest.fixture(scope="module")
def mutated(toolchain, emu_dir):
    """The module cupy_backend loads for MUTATED_KERNEL (decode_module_source), each mutation alone, built once."""
    source = ds.decode_module_source(MUTATED_KERNEL)
    units = {}
    for i, (label, (old, new)) in enumerate(MUTATIONS.items()):
        assert source.count(old) == 1, f"{label}: the line to mutate is no longer once in the attention source"
        units[f"attention-mutant-{i}"] = (source.replace(old, new), [MUTATED_KERNEL])
    built = eb.build_many(units, emu_dir)
    return {label: built[f"attention-mutant-{i}"] for i, label in enumerate(MUTATIONS)}


@pytest.mark.parametrize("label", list(MUTATIONS))
def test_a_mutated_attention_fails_its_check(mutated, memory, label):
    rng = np.random.default_rng(9)
    context = CHUNK + 100  # two chunks in the one split
    out, q, k, v = attention(mutated[label], memory, rng, "fp16", 64, 1, 1, 4, context, context, context,
                             k_boost=2.0)
    c = dr.check_attention(out, q, k, v, context, "fp16")
    assert not c.ok and c.index is not None, c
