"""The ``virtual`` backend: a simulated multi-GPU machine built from a profile.

``--backend virtual:PROFILE[:N][+OPTION...]`` builds N devices of the profile's first device entry
(default: the profile's own device count, or 2 for a one-card profile), with its links, its P2P flags
and an NVML-like topology (``FakeNvml``). Copies and kernels really run, in NumPy, so every check is
real; time comes from a virtual clock priced by the profile, never from this CPU. Every result it gives
is labelled ``simulated``.

The clock's model (all per copy of n bytes along a path with latency α, pipelined latency α_p and
bandwidth β):
- one copy, issued and waited for (``time_oneshot``): α + n/β;
- back to back behind a blocked start (``time_ops``): α_p + n/β each;
- back to back as a program issues them (``time_back_to_back``): max(enqueue, α_p + n/β) each;
- issuing alone (``time_enqueue``): ``ENQUEUE_S``;
- a kernel: the bytes of the arrays it touches over the memory bandwidth, or (a GEMM) 2·m·n·k from its
  operands' shapes over the mode's FLOP/s, the larger; never the probe's declared work, which a wrong
  declaration would otherwise price back to the profile's own figures;
- a decode kernel (``kernels/decode_ref.py``), as a node of a replayed CUDA graph (``seconds``): the decode
  GEMM from the profile's curve (``GemmCurve.time_s(m, W)``, m = A's rows, W = the weights' bytes), else the
  graph node's cost + the larger of (A, W, C bytes)/memory bandwidth and 2·m·n·k/FLOP/s; attention from the
  profile's fit (alpha + KV/beta, KV = 2·B·T·H_kv·D·itemsize from the caches' shapes and the context), else
  the node's cost + (KV + q + out bytes)/memory bandwidth; add_rmsnorm, rotary, silu_mul and tick: the node's
  cost + the bytes they touch/memory bandwidth. Launched eagerly (``eager_seconds``, what ``time_k`` prices)
  each takes at least the host's launch interval: max(eager_s, seconds) (``plan.decode.kernel_time_s``);
- a graph of launches: the sum of their ``seconds``, replayed at least eager_s apart; a sequence launched
  eagerly again and again (a layer after a layer): max(n·eager_s, the sum of their ``seconds``) per
  repetition, the host running ahead of the GPU (``plan.decode.repeated_time_s``); ``host_roundtrip_s``: sync_s + max(0, seconds − graph_node_s) per call (the launch run
  once). The launch costs are the profile's ``devices[0].decode.launch``, else the machine's assumptions
  (``EAGER_LAUNCH_S``, ``GRAPH_NODE_S``, ``SYNC_S`` in ``kernels/virtual_machine.py``);
- an all-reduce over devices of this process (S bytes a device): alpha + S/beta of the profile's one-host
  all-reduce over as many ranks (``profiles.decode_queries.host_allreduce``; its ``graphs`` entry for a captured
  one), else the ring model (``plan.equations.ring_collective_time_s``) over the slowest link between the
  devices, as the virtual collectives price it; with a ``p2p=`` fault the links changed, so always the ring.
Where the profile has measured α/β (``host_link.h2d``/``d2h``) they are used; otherwise β is the PCIe
rate of the link's generation and width times ``PCIE_EFFICIENCY`` (NVLink: the peer bandwidth times
``NVLINK_EFFICIENCY``), α the order of magnitude of the link presets, and α_p = ``PIPELINED_FRAC``·α.
Directions of a link are independent (full duplex). Host staging costs both hops' α and runs at the
slower hop's β (``DRIVER_STAGED_EFFICIENCY`` of it when the driver stages).

Options (``+name=value``): ``noise=F`` (each sample × 1 + F·N(0,1)), ``outliers=F`` (that share of
samples × ``outlier_factor``), ``warmup=N`` (the first N samples of each case × ``warmup_factor``),
``seed=N``; ``p2p=on|off|corrupt|slow`` (P2P over PCIe where the profile has none; no P2P; P2P that
flips bytes; P2P slower than host staging, as with resizable BAR off); ``downtrain=DEV:GEN:WIDTH``
(device DEV's PCIe link trained at a lower generation or width); ``numa=local|remote`` (pinned host memory
on the device's NUMA node, the default, or on the other one: what the ``numa-remote`` anomaly looks for; the
copies' times do not change).
"""

from __future__ import annotations

import numpy as np

from gpucal.errors import GpucalError, InputError
from gpucal.kernels.base import Backend, DeviceInfo
from gpucal.kernels.decode_ref import DECODE_DTYPES
from gpucal.kernels.dtypes import to_float64, to_storage
from gpucal.kernels.fake_nvml import FakeNvml, FakeNvmlError
from gpucal.kernels.links import STAGING_CHUNK_BYTES, Buffer, CopyOp, check_op
from gpucal.kernels.reference import GEMM_MODES, gemm_work, write_pattern
from gpucal.kernels.virtual_clock import VirtualClock
from gpucal.kernels.virtual_decode import VirtualDecode, VirtualLaunch
from gpucal.kernels.virtual_machine import (ALPHA_S, CORRUPT_STRIDE_BYTES, ENQUEUE_S, PAGEABLE_ALPHA_FACTOR,
                                            PAGEABLE_BETA_FRAC, PathModel, VirtualDevice, VirtualMachine, path_model)
from gpucal.kernels.virtual_spec import parse_spec
from gpucal.profiles.names import resolve_document

__all__ = ["VirtualBackend", "VirtualMachine", "FakeNvml", "FakeNvmlError", "parse_spec"]


class VirtualBackend(VirtualDecode, Backend):
    name = "virtual"
    simulated = True
    clock = "virtual"
    xp = np
    gemv_dtypes = ("fp16", "bf16", "fp32")
    decode_dtypes = DECODE_DTYPES

    def __init__(self, machine: VirtualMachine, device: int = 0):
        if not 0 <= device < machine.count:
            raise InputError(f"--device: device {device} does not exist (the virtual machine has {machine.count})")
        self.machine = machine
        self.device_index = device
        self.name = f"virtual:{machine.profile_name}:{machine.count}"
        self._clock = VirtualClock(machine.faults)
        self._peer_enabled: set[tuple[int, int]] = set()

    @classmethod
    def from_spec(cls, text: str, device: int = 0) -> VirtualBackend:
        profile, count, faults = parse_spec(text)
        doc = resolve_document(profile, "--backend", "profile")
        return cls(VirtualMachine(doc.profile, doc.name, count, faults, origin=doc.origin), device)

    def on_device(self, device: int) -> VirtualBackend:
        """The same machine (its clock and peer state shared), with kernels on ``device``."""
        if device == self.device_index:
            return self
        other = VirtualBackend(self.machine, device)
        other._clock, other._peer_enabled = self._clock, self._peer_enabled
        return other

    # devices ---------------------------------------------------------------------------------------
    def devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(index=d.index, name=d.name, uuid=d.uuid, memory_bytes=d.memory_bytes,
                           pci_bus_id=d.pci_bus_id, pcie_generation=d.pcie_generation,
                           pcie_generation_max=d.pcie_generation_max, pcie_width=d.pcie_width,
                           pcie_width_max=d.pcie_width_max, sources={"*": "virtual"})
                for d in self.machine.devices]

    def versions(self):
        return {"virtual": self.name, "numpy": np.__version__}

    def nvml(self):
        return FakeNvml(self.machine)

    # arrays ----------------------------------------------------------------------------------------
    def to_device(self, host):
        return np.array(host, copy=True)

    def to_host(self, array):
        return np.array(array, copy=True)

    def to_xp(self, array):
        return array

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def synchronize(self):
        pass

    def time_k(self, launch, k):
        if not isinstance(launch, VirtualLaunch):
            raise GpucalError("the virtual backend times only its own launches")
        return self._clock.sample(launch.key, k * launch.launched_s)

    # kernels: NumPy, priced by the profile --------------------------------------------------------------
    def _dev(self) -> VirtualDevice:
        return self.machine.devices[self.device_index]

    def _memory_s(self, *arrays) -> float:
        """The time to move ``arrays`` once through memory: the bytes a launch touches, counted from the
        arrays themselves (never from a probe's declared work, so that a wrong declaration shows as a wrong
        figure instead of pricing itself back to the profile's)."""
        return sum(int(a.nbytes) for a in arrays) / self._dev().memory_Bps

    def stream_partials(self, n_words):
        return max(1, -(-n_words // 1024))

    def stream_launcher(self, kind, arrays):
        if kind == "copy":
            src, dst = arrays["src"], arrays["dst"]
            touched = (src, dst)

            def run():
                dst[...] = src
        elif kind == "read":
            src, partial = arrays["src"], arrays["partial"]
            touched = (src, partial)

            def run():
                chunks = np.array_split(src, partial.size)
                partial[...] = [np.bitwise_xor.reduce(c) if c.size else 0 for c in chunks]
        elif kind == "write":
            dst = arrays["dst"]
            touched = (dst,)

            def run():
                dst[...] = write_pattern(dst.size, arrays["seed"])
        else:
            a, b, c, s = arrays["a"], arrays["b"], arrays["c"], np.float32(arrays["scalar"])
            touched = (a, b, c)

            def run():
                a[...] = b + s * c
        return VirtualLaunch(run, self._memory_s(*touched), f"stream-{kind}-{touched[0].nbytes}")

    def gemv_launcher(self, w, x, y, batch, dtype):
        m, k = w.shape
        gemm = self._gemm_run(x[:batch], w.T, y[:batch], dtype, dtype)
        return VirtualLaunch(gemm, self._memory_s(w, x[:batch], y[:batch]), f"gemv-{dtype}-{batch}-{m}x{k}")

    def _gemm_run(self, a, b, c, dtype_in, dtype_out):
        def run():
            product = to_float64(a, dtype_in) @ to_float64(b, dtype_in)
            c[...] = to_storage(product.astype(np.float32), dtype_out) if dtype_out != "fp64" else product
        return run

    def gemm_modes(self):
        have = self._dev().flops
        return {mode: "NumPy float64, rounded to the output type; timed on the virtual clock"
                for mode in GEMM_MODES if self._flops(mode, have)}

    @staticmethod
    def _flops(mode, have):
        keys = ("fp64_tensor", "fp64") if mode == "fp64" else (mode,)
        return next((have[k] for k in keys if have.get(k)), None)

    def plateau_size(self, modes) -> int:
        """The smallest square GEMM size (256 … 8192, powers of 2) at which every one of ``modes`` is bound by
        its FLOP/s rather than its memory: the virtual machine's plateau,
        reached without NumPy multiplying 8192³ matrices."""
        have, bw = self._dev().flops, self._dev().memory_Bps
        n = 256
        while n < 8192:
            works = [(gemm_work(n, n, n, m), self._flops(m, have)) for m in modes if self._flops(m, have)]
            if all(w.flop / f >= w.bytes_moved / bw for w, f in works):
                break
            n *= 2
        return n

    def gemm_launcher(self, a, b, c, mode):
        gm = GEMM_MODES[mode]
        (m, k), n = a.shape, b.shape[1]
        multiply_adds = m * n * k  # from the operands' shapes, not from the probe's declaration
        seconds = max(2 * multiply_adds / self._flops(mode, self._dev().flops), self._memory_s(a, b, c))
        return VirtualLaunch(self._gemm_run(a, b, c, gm.dtype_in, gm.dtype_out), seconds, f"gemm-{mode}-{m}x{n}x{k}")

    # links -----------------------------------------------------------------------------------------
    def links_reason(self):
        return None

    def alloc(self, kind, nbytes, device):
        if kind not in ("device", "pinned", "pageable"):
            raise ValueError(f"unknown memory kind {kind!r}")
        numa = self.machine.pinned_node(device) if kind == "pinned" else None
        return Buffer(kind, device, nbytes, np.zeros(nbytes, dtype=np.uint8), numa_node=numa,
                      numa_how="the virtual machine's placement" if numa is not None else None)

    def write(self, buf, data):
        buf.handle[: data.size] = data

    def read(self, buf, nbytes):
        return np.array(buf.handle[:nbytes], copy=True)

    def can_access_peer(self, src, dst):
        return src != dst and self.machine.peer(src, dst).kind != "none"

    def set_peer_access(self, a, b, enabled):
        if enabled and not (self.can_access_peer(a, b) and self.can_access_peer(b, a)):
            raise GpucalError(f"peer access between devices {a} and {b} is not possible")
        for pair in ((a, b), (b, a)):
            (self._peer_enabled.add if enabled else self._peer_enabled.discard)(pair)

    def copy_op(self, path, engine, src, dst, nbytes):
        check_op(path, engine, src, dst, nbytes)
        if path == "p2p" and (src.device, dst.device) not in self._peer_enabled:
            raise GpucalError(f"peer access from device {src.device} to {dst.device} is not enabled")
        if path == "driver-staged" and (src.device, dst.device) in self._peer_enabled:
            raise GpucalError("the driver stages a peer copy only while peer access is not enabled")
        device = dst.device if engine == "sm-read" or path == "h2d" else src.device
        gate = path != "driver-staged" and not any(b.kind == "pageable" for b in (src, dst))  # as the cupy backend
        return CopyOp(path, engine, src, dst, nbytes, device, {"model": self._path_model(path, src, dst), "gate": gate})

    def _path_model(self, path, src, dst) -> PathModel:
        m = self.machine
        if path in ("h2d", "d2h"):
            dev = m.devices[dst.device if path == "h2d" else src.device]
            model = dev.h2d if path == "h2d" else dev.d2h
            if any(b.kind == "pageable" for b in (src, dst)):
                model = PathModel(model.alpha_s * PAGEABLE_ALPHA_FACTOR, model.alpha_pipelined_s * PAGEABLE_ALPHA_FACTOR,
                                  model.beta_Bps * PAGEABLE_BETA_FRAC)
            return model
        if path == "d2d":
            return path_model(ALPHA_S["local"], m.devices[src.device].memory_Bps / 2.0)  # n read + n written
        if path == "p2p":
            return m.peer(src.device, dst.device).model
        return m.staged(src.device, dst.device, driver=path == "driver-staged")

    def _copy_s(self, op, oneshot: bool = False) -> float:
        """One copy's virtual time: pipelined (back to back) or one-shot; explicit staging also fills its
        pipeline with one chunk at the faster hop's rate."""
        model = op.state["model"]
        t = model.oneshot_s(op.nbytes) if oneshot else model.pipelined_s(op.nbytes)
        if op.path == "host-staged":
            a, b = self.machine.devices[op.src.device].d2h, self.machine.devices[op.dst.device].h2d
            t += min(op.nbytes, STAGING_CHUNK_BYTES) / max(a.beta_Bps, b.beta_Bps)
        return t

    def run_op(self, op):
        n, src, dst = op.nbytes, op.src.handle, op.dst.handle
        if op.path == "host-staged":
            staging = [np.empty(STAGING_CHUNK_BYTES, np.uint8) for _ in range(2)]
            for i, start in enumerate(range(0, n, STAGING_CHUNK_BYTES)):
                end = min(n, start + STAGING_CHUNK_BYTES)
                buf = staging[i % 2][: end - start]
                buf[...] = src[start:end]
                dst[start:end] = buf
        else:
            dst[:n] = src[:n]
        if op.path == "p2p" and self.machine.peer(op.src.device, op.dst.device).corrupt:
            dst[:n:CORRUPT_STRIDE_BYTES] ^= np.uint8(0x5A)

    def _key(self, op, how):
        return f"{how}:{op.label}:{op.nbytes}"

    # Each clock moves the op's bytes once per call (a copy is idempotent: the k copies it prices would write
    # the same bytes), so what a timed call leaves in the destination is what the probe compares after timing.
    def time_ops(self, ops, k):
        for op in ops:
            self.run_op(op)
        return [self._clock.sample(self._key(op, "ops"), k * self._copy_s(op)) for op in ops]

    def time_back_to_back(self, op, k):
        self.run_op(op)
        return self._clock.sample(self._key(op, "b2b"), k * max(ENQUEUE_S, self._copy_s(op)))

    def time_oneshot(self, op, k):
        self.run_op(op)
        return self._clock.sample(self._key(op, "oneshot"), k * self._copy_s(op, oneshot=True))

    def time_enqueue(self, op, k):
        self.run_op(op)
        return self._clock.sample(self._key(op, "enqueue"), k * ENQUEUE_S)
