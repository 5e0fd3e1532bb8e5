"""The virtual machine's decode step (``kernels/virtual.py`` is the backend): the decode kernels computed in
NumPy as ``kernels/decode_ref.py`` says and priced from their arrays' shapes, CUDA graphs and eager sequences
of them, the host's round trip, and the all-reduce over devices of one process (``VirtualDecode``, a part of
``VirtualBackend``); ``VirtualLaunch``, what every virtual launch is. The prices are listed in the backend's
docstring and in docs/links.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpucal.errors import GpucalError
from gpucal.kernels.base import decode_gemm_mode
from gpucal.kernels.dtypes import from_bf16_bits, to_storage
from gpucal.plan.decode import attention_kv_bytes, kernel_time_s, repeated_time_s
from gpucal.plan.equations import ring_collective_time_s
from gpucal.profiles.decode_queries import host_allreduce

__all__ = ["VirtualLaunch", "VirtualDecode", "launches_of"]


@dataclass(eq=False)
class VirtualLaunch:
    """A kernel on the virtual machine: ``run`` computes in NumPy; ``seconds`` is its virtual cost (for a decode
    kernel, a graph or an all-reduce: its cost as a node of a replayed CUDA graph); ``eager_seconds``, where
    set, its cost launched eagerly, which ``time_k`` prices."""

    run: object
    seconds: float
    key: str = ""
    eager_seconds: float | None = None
    idempotent: bool = True  # running it again leaves the same outputs (a tick does not: it counts)

    def __call__(self):
        self.run()

    @property
    def launched_s(self) -> float:
        """What one call costs as ``time_k`` prices it: ``eager_seconds`` where set, else ``seconds``."""
        return self.seconds if self.eager_seconds is None else self.eager_seconds


def _f32(stored, dtype: str) -> np.ndarray:
    """Stored values of ``dtype`` as float32 (exact for fp16, bf16 and fp32)."""
    return from_bf16_bits(stored) if dtype == "bf16" else np.asarray(stored).astype(np.float32)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def launches_of(launches) -> tuple[VirtualLaunch, ...]:
    steps = tuple(launches)
    bad = next((s for s in steps if not isinstance(s, VirtualLaunch)), None)
    if bad is not None:
        raise GpucalError("the virtual backend captures and sequences only its own launches")
    return steps


class VirtualDecode:
    """The decode-step part of ``VirtualBackend`` (it uses the backend's machine, device, clock and memory
    pricing: ``_dev``, ``_memory_s``, ``machine``, ``device_index``, ``_clock``, ``_peer_enabled``)."""

    # decode kernels (kernels/decode_ref.py), fp32 arithmetic, priced from the arrays' shapes ---------------
    def decode_reason(self):
        return None

    def graph_reason(self):
        return None

    def _decode_launch(self, run, graph_s: float, key: str, device: int | None = None) -> VirtualLaunch:
        """A decode launch of ``graph_s`` as a graph node, eagerly at least the host's launch interval."""
        launch = self.machine.devices[self.device_index if device is None else device].launch
        return VirtualLaunch(run, graph_s, key, kernel_time_s(graph_s, launch, graph=False))

    def _node_s(self, *arrays) -> float:
        """A memory-bound kernel as a graph node: the node's cost + the bytes of ``arrays`` over the memory
        bandwidth."""
        return self._dev().launch.graph_node_s + self._memory_s(*arrays)

    def _decode_dtype(self, dtype: str) -> None:
        _require(dtype in self.decode_dtypes, f"dtype: the virtual decode kernels take {', '.join(self.decode_dtypes)}, "
                                              f"got {dtype!r}")

    def decode_gemm_launcher(self, a, w, c, dtype):
        offered = self.decode_gemm_dtypes()
        _require(dtype in offered, f"dtype: this virtual machine's decode GEMM takes {', '.join(offered)}, got {dtype!r}")
        (m, k), n = a.shape, w.shape[1]
        _require(w.shape[0] == k and c.shape == (m, n), f"shapes: A {a.shape} · W {w.shape} -> C {c.shape}")
        curve = self._dev().decode.gemm.get(dtype)
        if curve is not None:
            seconds = curve.time_s(m, int(w.nbytes))
        else:
            flops = self._flops(decode_gemm_mode(dtype), self._dev().flops)
            seconds = self._dev().launch.graph_node_s + max(self._memory_s(a, w, c), 2 * m * n * k / flops)
        return self._decode_launch(self._gemm_run(a, w, c, dtype, dtype), seconds, f"decode-gemm-{dtype}-{m}x{n}x{k}")

    def attention_launcher(self, q, k_cache, v_cache, out, dtype, context):
        self._decode_dtype(dtype)
        b, hq, d = q.shape
        bk, hkv, t_max, dk = k_cache.shape
        _require(bk == b and dk == d and v_cache.shape == k_cache.shape and out.shape == q.shape and hq % hkv == 0,
                 f"shapes: q {q.shape}, K {k_cache.shape}, V {v_cache.shape}, out {out.shape}")
        _require(1 <= context <= t_max, f"context: must be 1 … {t_max} (the caches' positions), got {context}")
        g = hq // hkv
        scale = np.float32(1.0 / math.sqrt(d))

        def run():
            kd, vd = _f32(k_cache[:, :, :context], dtype), _f32(v_cache[:, :, :context], dtype)
            qg = _f32(q, dtype).reshape(b, hkv, g, d)
            scores = np.einsum("bhgd,bhtd->bhgt", qg, kd) * scale
            p = np.exp(scores - scores.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            out[...] = to_storage(np.einsum("bhgt,bhtd->bhgd", p, vd).reshape(b, hq, d), dtype)

        kv = attention_kv_bytes(b, context, hkv, d, k_cache.itemsize)
        fit = self._dev().decode.attention.get(dtype)
        if fit is not None:
            seconds = fit.time_s(kv)
        else:
            seconds = self._dev().launch.graph_node_s + (kv + q.nbytes + out.nbytes) / self._dev().memory_Bps
        return self._decode_launch(run, seconds, f"attention-{dtype}-{b}x{hq}x{hkv}x{d}-{context}of{t_max}")

    def add_rmsnorm_launcher(self, x, residual, weight, out, residual_out, dtype, eps):
        self._decode_dtype(dtype)
        b, h = x.shape
        _require(residual.shape == out.shape == residual_out.shape == x.shape and weight.shape == (h,),
                 f"shapes: x {x.shape}, residual {residual.shape}, weight {weight.shape}, out {out.shape}, "
                 f"residual_out {residual_out.shape}")

        def run():
            stored = to_storage(_f32(x, dtype) + _f32(residual, dtype), dtype)  # the fp32 sum, as stored
            residual_out[...] = stored
            r = _f32(stored, dtype)
            inv = np.float32(1.0) / np.sqrt(np.mean(r * r, axis=-1, keepdims=True, dtype=np.float32) + np.float32(eps))
            out[...] = to_storage(r * inv * _f32(weight, dtype), dtype)

        seconds = self._node_s(x, residual, weight, out, residual_out)
        return self._decode_launch(run, seconds, f"add-rmsnorm-{dtype}-{b}x{h}")

    def rotary_launcher(self, qkv, cos_sin, q, k_cache, v_cache, position, dtype, heads, kv_heads, head_dim):
        self._decode_dtype(dtype)
        b, width = qkv.shape
        t_max = k_cache.shape[2]
        _require(width == (heads + 2 * kv_heads) * head_dim and head_dim % 2 == 0 and q.shape == (b, heads, head_dim)
                 and k_cache.shape == v_cache.shape == (b, kv_heads, t_max, head_dim)
                 and np.shape(cos_sin) == (head_dim,),
                 f"shapes: qkv {qkv.shape}, cos_sin {np.shape(cos_sin)}, q {q.shape}, K {k_cache.shape}, "
                 f"V {v_cache.shape} for {heads} heads, {kv_heads} KV heads of {head_dim}")
        _require(0 <= position < t_max, f"position: must be 0 … {t_max - 1} (the caches' positions), got {position}")
        half = head_dim // 2
        table = np.asarray(cos_sin, dtype=np.float32)
        c, s = table[:half], table[half:]

        def rotate(x):
            x1, x2 = x[..., :half], x[..., half:]
            return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)

        def run():
            heads_of = qkv.reshape(b, heads + 2 * kv_heads, head_dim)
            t = _f32(heads_of, dtype)
            q[...] = to_storage(rotate(t[:, :heads]), dtype)
            k_cache[:, :, position] = to_storage(rotate(t[:, heads:heads + kv_heads]), dtype)
            v_cache[:, :, position] = heads_of[:, heads + kv_heads:]  # a bit-exact copy

        seconds = self._node_s(qkv, table, q, k_cache[:, :, position], v_cache[:, :, position])
        return self._decode_launch(run, seconds, f"rotary-{dtype}-{b}x{heads}x{kv_heads}x{head_dim}")

    def silu_mul_launcher(self, gate_up, out, dtype):
        self._decode_dtype(dtype)
        b, f = out.shape
        _require(gate_up.shape == (b, 2 * f), f"shapes: gate_up {gate_up.shape}, out {out.shape}")

        def run():
            t = _f32(gate_up, dtype)
            g, u = t[:, :f], t[:, f:]
            with np.errstate(over="ignore"):  # exp(-g) overflows to inf for very negative g: silu is then -0
                out[...] = to_storage(g / (np.float32(1.0) + np.exp(-g)) * u, dtype)

        return self._decode_launch(run, self._node_s(gate_up, out), f"silu-mul-{dtype}-{b}x{f}")

    def tick_launcher(self, counter):
        _require(counter.dtype == np.uint32 and counter.size >= 1, f"counter: a uint32 array, got {counter.dtype}")

        def run():
            counter[:1] += np.uint32(1)  # mod 2³², as the device's unsigned add

        word = counter[:1]
        launch = self._decode_launch(run, self._node_s(word, word), "tick")  # read and written
        launch.idempotent = False
        return launch

    # graphs, sequences, the host's round trip -----------------------------------------------------------
    def graph_launcher(self, launches):
        steps = launches_of(launches)
        seconds = sum(s.seconds for s in steps)

        def run():  # a repeat of the launch just run computes it once more only where that changes the outputs
            previous = None
            for step in steps:
                if step is not previous or not step.idempotent:
                    step()
                previous = step
        return VirtualLaunch(run, seconds, "graph:" + "|".join(s.key for s in steps),
                             kernel_time_s(seconds, self._dev().launch, graph=False))

    def sequence_launcher(self, launches):
        steps = launches_of(launches)
        seconds = repeated_time_s([s.seconds for s in steps], self._dev().launch, graph=False)

        def run():
            for step in steps:
                step()
        return VirtualLaunch(run, seconds, "sequence:" + "|".join(s.key for s in steps), seconds)

    def host_roundtrip_s(self, launch, k):
        """k × (the host's launch-and-wait cost ``sync_s`` + what the launch adds beyond a graph node's cost),
        on the virtual clock. The launch runs once per call (as a copy moves its bytes once per timed call), so
        what one round trip leaves is what the caller finds."""
        if not isinstance(launch, VirtualLaunch):
            raise GpucalError("the virtual backend times only its own launches")
        launch()
        costs = self._dev().launch
        return self._clock.sample("roundtrip:" + launch.key,
                                  k * (costs.sync_s + max(0.0, launch.seconds - costs.graph_node_s)))

    # all-reduce over devices of this process ---------------------------------------------------------
    def allreduce_reason(self, devices):
        devices = tuple(devices)
        if len(devices) < 2:
            return f"an all-reduce needs at least two devices, got {list(devices)}"
        if len(set(devices)) != len(devices):
            return f"devices {list(devices)} name a device twice"
        missing = [d for d in devices if not (isinstance(d, int) and 0 <= d < self.machine.count)]
        if missing:
            return f"device {missing[0]} does not exist (the virtual machine has {self.machine.count})"
        return None

    def allreduce_library(self):
        return "virtual (NumPy float32 sum; priced by the profile's all-reduce or the ring model)"

    def _allreduce_run(self, devices, sends, recvs):
        reason = self.allreduce_reason(devices)
        if reason is not None:
            raise GpucalError(reason)
        _require(len(sends) == len(recvs) == len(devices), f"sends, recvs: one of each per device ({len(devices)}), "
                                                           f"got {len(sends)} and {len(recvs)}")
        shape = sends[0].shape
        _require(all(a.dtype == np.float32 and a.shape == shape for a in (*sends, *recvs)),
                 "sends, recvs: float32 arrays of one shape")

        def run():
            total = np.array(sends[0], dtype=np.float32, copy=True)
            for send in sends[1:]:
                total += send
            for recv in recvs:
                recv[...] = total
        return run, int(sends[0].nbytes)

    def _allreduce_s(self, devices, nbytes: int, graphs: bool) -> float | None:
        """One all-reduce of ``nbytes`` a device: the profile's one-host entry (``graphs``: its captured one;
        ``None`` without it), else (eagerly) the ring over the group's slowest link."""
        n = len(devices)
        measured = host_allreduce(self.machine.profile, n, graphs) if self.machine.faults.p2p is None else None
        if measured is not None:
            alpha_s, beta_Bps = measured
            return alpha_s + nbytes / beta_Bps
        if graphs:
            return None
        link = self.machine.group_link(tuple(devices))
        return float(ring_collective_time_s("all-reduce", nbytes, link.alpha_s, link.beta_Bps, n))

    def allreduce_launcher(self, devices, sends, recvs):
        run, nbytes = self._allreduce_run(devices, sends, recvs)
        seconds = self._allreduce_s(devices, nbytes, graphs=False)
        return self._decode_launch(run, seconds, f"allreduce-{len(devices)}-{nbytes}", devices[0])

    def allreduce_graph_launcher(self, devices, sends, recvs, count):
        """``count`` all-reduces as one graph: ``count`` × the profile's captured price (the eager one without
        it). The sum is idempotent, so calling it computes it once."""
        _require(isinstance(count, int) and count >= 1, f"count: must be a positive integer, got {count!r}")
        run, nbytes = self._allreduce_run(devices, sends, recvs)
        one = self._allreduce_s(devices, nbytes, graphs=True)
        if one is None:
            one = self._allreduce_s(devices, nbytes, graphs=False)
        return self._decode_launch(run, count * one, f"allreduce-graph-{len(devices)}-{nbytes}-x{count}", devices[0])
