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
- a kernel: its declared bytes over the memory bandwidth, or its FLOP over the mode's FLOP/s, the larger.
Where the profile has measured α/β (``host_link.h2d``/``d2h``) they are used; otherwise β is the PCIe
rate of the link's generation and width times ``PCIE_EFFICIENCY`` (NVLink: the peer bandwidth times
``NVLINK_EFFICIENCY``), α the order of magnitude of the link presets, and α_p = ``PIPELINED_FRAC``·α.
Directions of a link are independent (full duplex). Host staging costs both hops' α and runs at the
slower hop's β (``DRIVER_STAGED_EFFICIENCY`` of it when the driver stages).

Options (``+name=value``): ``noise=F`` (each sample × 1 + F·N(0,1)), ``outliers=F`` (that share of
samples × ``outlier_factor``), ``warmup=N`` (the first N samples of each case × ``warmup_factor``),
``seed=N``; ``p2p=on|off|corrupt|slow`` (P2P over PCIe where the profile has none; no P2P; P2P that
flips bytes; P2P slower than host staging, as with resizable BAR off); ``downtrain=DEV:GEN:WIDTH``
(device DEV's PCIe link trained at a lower generation or width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import numpy as np

from gpucal.errors import GpucalError, InputError
from gpucal.kernels.backend import Backend, DeviceInfo
from gpucal.kernels.links import STAGING_CHUNK_BYTES, Buffer, CopyOp, check_op

__all__ = ["VirtualBackend", "VirtualMachine", "Faults", "PathModel", "FakeNvml", "parse_spec", "pcie_Bps"]

PCIE_GT_S = {1: (2.5, 0.8), 2: (5.0, 0.8), 3: (8.0, 128 / 130), 4: (16.0, 128 / 130), 5: (32.0, 128 / 130),
             6: (64.0, 242 / 256)}  # GT/s per lane, encoding efficiency
PCIE_EFFICIENCY = 0.83  # DMA copies reach about 80-85 % of the PCIe rate (method.md's sanity ranges)
NVLINK_EFFICIENCY = 0.83  # H100 SXM: about 375 of 450 GB/s one way
NVLINK_LINK_Bps = 25e9  # per link and direction (NVLink 3 and 4)
ALPHA_S = {"pcie": 10e-6, "nvlink": 3e-6, "local": 5e-6}  # one copy issued and waited for (link presets)
PIPELINED_FRAC = 0.2
ENQUEUE_S = 2.5e-6
PAGEABLE_BETA_FRAC, PAGEABLE_ALPHA_FACTOR = 0.6, 1.5
DRIVER_STAGED_EFFICIENCY = 0.9
SLOW_P2P_FRAC = 0.45  # p2p=slow: P2P at this share of the staged bandwidth
CORRUPT_STRIDE_BYTES = 4096
CORES_PER_SOCKET = 32
P2P_MODES = ("on", "off", "corrupt", "slow")


def pcie_Bps(generation: int, width: int) -> float:
    """The PCIe rate per direction in B/s: GT/s × encoding × lanes / 8."""
    gts, enc = PCIE_GT_S[generation]
    return gts * 1e9 * enc * width / 8.0


@dataclass(frozen=True)
class PathModel:
    alpha_s: float
    alpha_pipelined_s: float
    beta_Bps: float

    def oneshot_s(self, n: int) -> float:
        return self.alpha_s + n / self.beta_Bps

    def pipelined_s(self, n: int) -> float:
        return self.alpha_pipelined_s + n / self.beta_Bps


def _model(alpha_s: float, beta_Bps: float) -> PathModel:
    return PathModel(alpha_s, PIPELINED_FRAC * alpha_s, beta_Bps)


@dataclass(frozen=True)
class Faults:
    noise_frac: float = 0.0
    outlier_frac: float = 0.0
    outlier_factor: float = 3.0
    warmup_runs: int = 0
    warmup_factor: float = 2.0
    seed: int = 0
    p2p: str | None = None
    downtrain: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class VirtualDevice:
    index: int
    name: str
    memory_bytes: int
    memory_Bps: float
    flops: dict
    pcie_generation_max: int
    pcie_width_max: int
    pcie_generation: int
    pcie_width: int
    numa_node: int
    h2d: PathModel
    d2h: PathModel

    @property
    def pci_bus_id(self) -> str:
        return f"00000000:{0x18 + 0x10 * self.index:02X}:00.0"

    @property
    def uuid(self) -> str:
        return f"GPU-00000000-0000-0000-0000-{self.index:012d}"


@dataclass(frozen=True)
class PeerModel:
    kind: str  # nvlink, pcie, none
    model: PathModel | None
    corrupt: bool = False
    nvlink_links: int = 0


def _value(q):
    return q.get("value") if isinstance(q, dict) else None


def parse_spec(text: str) -> tuple[str, int | None, Faults]:
    """``virtual:PROFILE[:N][+OPTION...]`` as (profile, N or None, faults); bad input names --backend."""
    flag = "--backend"
    body = text.split(":", 1)[1] if ":" in text else ""
    head, *options = body.split("+")
    count = None
    if ":" in head and head.rsplit(":", 1)[1].isdigit():
        head, n = head.rsplit(":", 1)
        count = int(n)
        if count < 1:
            raise InputError(f"{flag}: {text}: the device count must be at least 1")
    if not head:
        raise InputError(f"{flag}: {text}: expected virtual:PROFILE[:N][+OPTION...], e.g. virtual:rtx4090:8")
    kw: dict = {}
    downtrain = []
    for opt in options:
        name, _, value = opt.partition("=")
        try:
            if name in ("noise", "outliers"):
                v = float(value)
                if not 0 <= v < 1:
                    raise ValueError
                kw["noise_frac" if name == "noise" else "outlier_frac"] = v
            elif name in ("warmup", "seed"):
                v = int(value)
                if v < 0:
                    raise ValueError
                kw["warmup_runs" if name == "warmup" else "seed"] = v
            elif name == "p2p":
                if value not in P2P_MODES:
                    raise ValueError
                kw["p2p"] = value
            elif name == "downtrain":
                dev, gen, width = (int(x) for x in value.split(":"))
                if gen not in PCIE_GT_S or width not in (1, 2, 4, 8, 16) or dev < 0:
                    raise ValueError
                downtrain.append((dev, gen, width))
            else:
                raise InputError(f"{flag}: {text}: unknown option {name!r} (noise, outliers, warmup, seed, p2p, "
                                 "downtrain)")
        except InputError:
            raise
        except ValueError:
            hint = {"p2p": "on, off, corrupt or slow", "downtrain": "DEV:GEN:WIDTH, e.g. 1:3:8",
                    "noise": "a fraction in [0, 1)", "outliers": "a fraction in [0, 1)"}.get(name, "a whole number")
            raise InputError(f"{flag}: {text}: option {name}={value!r}: expected {hint}") from None
    return head, count, Faults(downtrain=tuple(downtrain), **kw)


class VirtualMachine:
    """N devices built from a profile's first device entry, their host links and the links between them."""

    def __init__(self, profile: dict, name: str, count: int | None = None, faults: Faults = Faults()):
        entry = profile["devices"][0]
        self.profile_name = name
        own = sum(d.get("count", 1) for d in profile["devices"])
        self.count = count or (own if own > 1 else 2)
        self.faults = faults
        host = entry.get("host_link") or {}
        gen_max = _value(host.get("pcie_generation_max")) or _value(host.get("pcie_generation")) or 4
        width_max = _value(host.get("pcie_width_max")) or _value(host.get("pcie_width")) or 16
        trained = {d: (g, w) for d, g, w in faults.downtrain}
        for d in trained:
            if d >= self.count:
                raise InputError(f"--backend: downtrain names device {d}, but the machine has {self.count}")
        sockets = 2 if self.count >= 4 else 1
        self.sockets = sockets
        self.devices: list[VirtualDevice] = []
        for i in range(self.count):
            gen, width = trained.get(i, (gen_max, width_max))
            scale = pcie_Bps(gen, width) / pcie_Bps(gen_max, width_max)
            links = {}
            for direction in ("h2d", "d2h"):
                measured = host.get(direction)
                if measured:
                    links[direction] = _model(_value(measured["alpha_s"]), _value(measured["beta_Bps"]) * scale)
                else:
                    links[direction] = _model(ALPHA_S["pcie"], PCIE_EFFICIENCY * pcie_Bps(gen, width))
            self.devices.append(VirtualDevice(
                index=i, name=entry["name"], memory_bytes=int(_value(entry["memory_bytes"])),
                memory_Bps=float(_value(entry["memory_bandwidth_Bps"])),
                flops={k: float(_value(q)) for k, q in entry.get("dense_flops", {}).items() if _value(q)},
                pcie_generation_max=gen_max, pcie_width_max=width_max, pcie_generation=gen, pcie_width=width,
                numa_node=i * sockets // self.count, h2d=links["h2d"], d2h=links["d2h"]))
        self._peer = entry.get("peer_link") or {"kind": "none", "p2p_supported": {"value": False}}
        self._measured_links = {(item.get("src"), item.get("dst")): item for item in profile.get("links") or []
                                if isinstance(item, dict)}

    # links -----------------------------------------------------------------------------------------
    def staged(self, src: int, dst: int, driver: bool) -> PathModel:
        a, b = self.devices[src].d2h, self.devices[dst].h2d
        beta = min(a.beta_Bps, b.beta_Bps) * (DRIVER_STAGED_EFFICIENCY if driver else 1.0)
        return PathModel(a.alpha_s + b.alpha_s, a.alpha_pipelined_s + b.alpha_pipelined_s, beta)

    def peer(self, src: int, dst: int) -> PeerModel:
        kind = self._peer.get("kind", "none")
        supported = bool(_value(self._peer.get("p2p_supported")))
        mode = self.faults.p2p
        if mode == "off" or (mode is None and not supported):
            return PeerModel("none", None)
        host_beta = min(self.devices[src].d2h.beta_Bps, self.devices[dst].h2d.beta_Bps)
        measured = self._measured_links.get((src, dst))
        if kind == "nvlink" and mode != "slow":
            bandwidth = _value(self._peer.get("bandwidth_Bps")) or 300e9
            model = _model(ALPHA_S["nvlink"], NVLINK_EFFICIENCY * bandwidth)
            links = max(1, round(bandwidth / NVLINK_LINK_Bps))
        else:
            kind, links = "pcie", 0
            model = _model(ALPHA_S["pcie"], host_beta)
            if mode == "slow":
                model = _model(ALPHA_S["pcie"], SLOW_P2P_FRAC * self.staged(src, dst, False).beta_Bps)
        if measured and mode is None and _value(measured.get("beta_Bps")):
            model = _model(_value(measured.get("alpha_s")) or model.alpha_s, _value(measured["beta_Bps"]))
        return PeerModel(kind, model, corrupt=mode == "corrupt", nvlink_links=links)

    def socket(self, i: int) -> int:
        return self.devices[i].numa_node

    def topology_level(self, a: int, b: int) -> int:
        """NVML's common-ancestor level of two devices' PCIe paths."""
        if a == b:
            return FakeNvml.NVML_TOPOLOGY_INTERNAL
        if self.socket(a) != self.socket(b):
            return FakeNvml.NVML_TOPOLOGY_SYSTEM
        if self.peer(a, b).kind == "pcie" and a // 2 == b // 2:
            return FakeNvml.NVML_TOPOLOGY_SINGLE
        return FakeNvml.NVML_TOPOLOGY_HOSTBRIDGE


class FakeNvmlError(Exception):
    """What the fake NVML raises where real NVML would (a call the device does not support)."""


class FakeNvml:
    """The part of ``pynvml`` the topology reader uses, answering for a ``VirtualMachine``."""

    NVMLError = FakeNvmlError
    NVML_TOPOLOGY_INTERNAL, NVML_TOPOLOGY_SINGLE, NVML_TOPOLOGY_MULTIPLE = 0, 10, 20
    NVML_TOPOLOGY_HOSTBRIDGE, NVML_TOPOLOGY_NODE, NVML_TOPOLOGY_SYSTEM = 30, 40, 50
    NVML_P2P_STATUS_OK, NVML_P2P_STATUS_GPU_NOT_SUPPORTED, NVML_P2P_STATUS_NOT_SUPPORTED = 0, 2, 5
    NVML_NVLINK_MAX_LINKS = 18
    NVML_NVLINK_DEVICE_TYPE_GPU, NVML_NVLINK_DEVICE_TYPE_SWITCH = 0, 2
    NVML_FEATURE_ENABLED = 1

    def __init__(self, machine: VirtualMachine):
        self.m = machine

    def _dev(self, h) -> VirtualDevice:
        if not isinstance(h, int) or not 0 <= h < self.m.count:
            raise FakeNvmlError("invalid argument")
        return self.m.devices[h]

    def nvmlDeviceGetCount(self):
        return self.m.count

    def nvmlDeviceGetHandleByIndex(self, i):
        self._dev(i)
        return i

    def nvmlDeviceGetName(self, h):
        return self._dev(h).name

    def nvmlDeviceGetUUID(self, h):
        return self._dev(h).uuid

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=self._dev(h).pci_bus_id)

    def nvmlDeviceGetTopologyCommonAncestor(self, a, b):
        self._dev(a), self._dev(b)
        return self.m.topology_level(a, b)

    def nvmlDeviceGetP2PStatus(self, a, b, index):
        self._dev(a), self._dev(b)
        if not isinstance(index, int):  # real NVML rejects the binding's tuple constant the same way
            raise FakeNvmlError("invalid argument")
        peer = self.m.peer(a, b)
        if peer.kind == "none":
            return self.NVML_P2P_STATUS_GPU_NOT_SUPPORTED
        if index == 2:  # NVLink
            return self.NVML_P2P_STATUS_OK if peer.kind == "nvlink" else self.NVML_P2P_STATUS_NOT_SUPPORTED
        if index == 3:  # atomics: over NVLink only
            return self.NVML_P2P_STATUS_OK if peer.kind == "nvlink" else self.NVML_P2P_STATUS_NOT_SUPPORTED
        return self.NVML_P2P_STATUS_OK

    def _links(self, h) -> int:
        others = [j for j in range(self.m.count) if j != h]
        peers = [self.m.peer(h, j) for j in others]
        return max((p.nvlink_links for p in peers if p.kind == "nvlink"), default=0)

    def nvmlDeviceGetNvLinkState(self, h, link):
        self._dev(h)
        if link >= self._links(h):
            raise FakeNvmlError("not supported")
        return self.NVML_FEATURE_ENABLED

    def _switched(self) -> bool:
        return self.m.count > 2

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h, link):
        self.nvmlDeviceGetNvLinkState(h, link)
        return self.NVML_NVLINK_DEVICE_TYPE_SWITCH if self._switched() else self.NVML_NVLINK_DEVICE_TYPE_GPU

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link):
        self.nvmlDeviceGetNvLinkState(h, link)
        if self._switched():
            return SimpleNamespace(busId=f"00000000:{0xC0 + link % 4:02X}:00.0")  # one of 4 NVSwitches
        return SimpleNamespace(busId=self.m.devices[1 - h].pci_bus_id)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return self._dev(h).pcie_generation

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):
        return self._dev(h).pcie_width

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return self._dev(h).pcie_generation_max

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return self._dev(h).pcie_width_max

    def nvmlDeviceGetNumaNodeId(self, h):
        return self._dev(h).numa_node

    def nvmlDeviceGetCpuAffinity(self, h, size):
        first = self._dev(h).numa_node * CORES_PER_SOCKET
        words = [0] * size
        for cpu in range(first, first + CORES_PER_SOCKET):
            words[cpu // 64] |= 1 << (cpu % 64)
        return words


@dataclass(eq=False)
class VirtualLaunch:
    """A kernel on the virtual machine: ``run`` computes in NumPy; ``seconds`` is its virtual cost."""

    run: object
    seconds: float
    key: str = ""

    def __call__(self):
        self.run()


@dataclass
class _Clock:
    faults: Faults
    rng: np.random.Generator = field(init=False)
    seen: dict = field(default_factory=dict)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.faults.seed)

    def sample(self, key: str, seconds: float) -> float:
        """``seconds`` as one sample would read: noise, outliers and warm-up slowness applied."""
        f = self.faults
        factor = max(0.05, 1.0 + f.noise_frac * self.rng.standard_normal()) if f.noise_frac else 1.0
        if f.outlier_frac and self.rng.random() < f.outlier_frac:
            factor *= f.outlier_factor
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        if n < f.warmup_runs:
            factor *= f.warmup_factor
        return seconds * factor


class VirtualBackend(Backend):
    name = "virtual"
    simulated = True
    clock = "virtual"
    xp = np
    gemv_dtypes = ("fp16", "bf16", "fp32")

    def __init__(self, machine: VirtualMachine, device: int = 0):
        if not 0 <= device < machine.count:
            raise InputError(f"--device: device {device} does not exist (the virtual machine has {machine.count})")
        self.machine = machine
        self.device_index = device
        self.name = f"virtual:{machine.profile_name}:{machine.count}"
        self._clock = _Clock(machine.faults)
        self._peer_enabled: set[tuple[int, int]] = set()

    @classmethod
    def from_spec(cls, text: str, device: int = 0) -> VirtualBackend:
        from gpucal.inputs import resolve_document

        profile, count, faults = parse_spec(text)
        doc = resolve_document(profile, "--backend", "profile")
        return cls(VirtualMachine(doc.data, doc.name, count, faults), device)

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
        seconds = getattr(launch, "seconds", None)
        if seconds is None:
            raise GpucalError("the virtual backend times only its own launches")
        return self._clock.sample(launch.key, k * seconds)

    # kernels: NumPy, priced by the profile --------------------------------------------------------------
    def _dev(self) -> VirtualDevice:
        return self.machine.devices[self.device_index]

    def _memory_s(self, work) -> float:
        return work.bytes_moved / self._dev().memory_Bps

    def stream_partials(self, n_words):
        return max(1, -(-n_words // 1024))

    def stream_launcher(self, kind, arrays):
        from gpucal.kernels.reference import stream_work, write_pattern

        if kind == "copy":
            src, dst = arrays["src"], arrays["dst"]
            n = src.nbytes

            def run():
                dst[...] = src
        elif kind == "read":
            src, partial = arrays["src"], arrays["partial"]
            n = src.nbytes

            def run():
                chunks = np.array_split(src, partial.size)
                partial[...] = [np.bitwise_xor.reduce(c) if c.size else 0 for c in chunks]
        elif kind == "write":
            dst = arrays["dst"]
            n = dst.nbytes

            def run():
                dst[...] = write_pattern(dst.size, arrays["seed"])
        else:
            a, b, c, s = arrays["a"], arrays["b"], arrays["c"], np.float32(arrays["scalar"])
            n = a.nbytes

            def run():
                a[...] = b + s * c
        partials = arrays["partial"].nbytes if kind == "read" else 0
        return VirtualLaunch(run, self._memory_s(stream_work(kind, n, partials)), f"stream-{kind}-{n}")

    def gemv_launcher(self, w, x, y, batch, dtype):
        from gpucal.kernels.reference import gemv_work

        m, k = w.shape
        work = gemv_work(m, k, batch, dtype)
        gemm = self._gemm_run(x[:batch], w.T, y[:batch], dtype, dtype)
        return VirtualLaunch(gemm, self._memory_s(work), f"gemv-{dtype}-{batch}-{m}x{k}")

    def _gemm_run(self, a, b, c, dtype_in, dtype_out):
        from gpucal.kernels.dtypes import to_float64, to_storage

        def run():
            product = to_float64(a, dtype_in) @ to_float64(b, dtype_in)
            c[...] = to_storage(product.astype(np.float32), dtype_out) if dtype_out != "fp64" else product
        return run

    def gemm_modes(self):
        from gpucal.kernels.reference import GEMM_MODES

        have = self._dev().flops
        return {mode: "NumPy float64, rounded to the output type; timed on the virtual clock"
                for mode in GEMM_MODES if self._flops(mode, have)}

    @staticmethod
    def _flops(mode, have):
        keys = ("fp64_tensor", "fp64") if mode == "fp64" else (mode,)
        return next((have[k] for k in keys if have.get(k)), None)

    def gemm_launcher(self, a, b, c, mode):
        from gpucal.kernels.reference import GEMM_MODES, gemm_work

        gm = GEMM_MODES[mode]
        m, k = a.shape
        n = b.shape[1]
        work = gemm_work(m, n, k, mode)
        seconds = max(work.flop / self._flops(mode, self._dev().flops), self._memory_s(work))
        return VirtualLaunch(self._gemm_run(a, b, c, gm.dtype_in, gm.dtype_out), seconds, f"gemm-{mode}-{m}x{n}x{k}")

    # links -----------------------------------------------------------------------------------------
    def links_reason(self):
        return None

    def alloc(self, kind, nbytes, device):
        if kind not in ("device", "pinned", "pageable"):
            raise ValueError(f"unknown memory kind {kind!r}")
        numa = self.machine.devices[device].numa_node if kind == "pinned" else None
        return Buffer(kind, device, nbytes, np.zeros(nbytes, dtype=np.uint8), numa_node=numa)

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
            return _model(ALPHA_S["local"], m.devices[src.device].memory_Bps / 2.0)  # n read + n written
        if path == "p2p":
            return m.peer(src.device, dst.device).model
        return m.staged(src.device, dst.device, driver=path == "driver-staged")

    def _staging_fill_s(self, op) -> float:
        if op.path != "host-staged":
            return 0.0
        a, b = self.machine.devices[op.src.device].d2h, self.machine.devices[op.dst.device].h2d
        return min(op.nbytes, STAGING_CHUNK_BYTES) / max(a.beta_Bps, b.beta_Bps)

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

    def time_ops(self, ops, k):
        return [self._clock.sample(self._key(op, "ops"), k * (op.state["model"].pipelined_s(op.nbytes)
                                                              + self._staging_fill_s(op))) for op in ops]

    def time_back_to_back(self, op, k):
        per = max(ENQUEUE_S, op.state["model"].pipelined_s(op.nbytes) + self._staging_fill_s(op))
        return self._clock.sample(self._key(op, "b2b"), k * per)

    def time_oneshot(self, op, k):
        per = op.state["model"].oneshot_s(op.nbytes) + self._staging_fill_s(op)
        return self._clock.sample(self._key(op, "oneshot"), k * per)

    def time_enqueue(self, op, k):
        return self._clock.sample(self._key(op, "enqueue"), k * ENQUEUE_S)


def describe(machine: VirtualMachine) -> str:
    """One line: what the virtual machine is."""
    peer = machine.peer(0, 1) if machine.count > 1 else None
    what = {"nvlink": "NVLink P2P", "pcie": "P2P over PCIe", "none": "no P2P"}[peer.kind] if peer else "one device"
    d = machine.devices[0]
    faults = replace(machine.faults)
    extra = [f"p2p={faults.p2p}"] if faults.p2p else []
    extra += [f"noise {faults.noise_frac:g}"] if faults.noise_frac else []
    extra += [f"dev{x} Gen{g} x{w}" for x, g, w in faults.downtrain]
    return (f"{machine.count} x {d.name} (simulated from {machine.profile_name}), PCIe Gen{d.pcie_generation_max} "
            f"x{d.pcie_width_max}, {what}" + (f"; {', '.join(extra)}" if extra else "") + (
                "" if math.isfinite(d.memory_Bps) else ""))
