"""The simulated machine behind the ``virtual`` backend: N devices built from a profile, the model of each
copy path (latency α, pipelined latency α_p, bandwidth β), the faults, and the ``virtual:`` spec.

See ``kernels/virtual.py`` (the backend) and docs/links.md (the model's numbers and where they come from).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucal import limits
from gpucal.errors import InputError
from gpucal.standards import PCIE_GT_S, pcie_Bps
from gpucal.units import parse_quantity

__all__ = ["VirtualMachine", "VirtualDevice", "PeerModel", "PathModel", "Faults", "parse_spec", "path_model",
           "PCIE_EFFICIENCY", "NVLINK_EFFICIENCY", "ALPHA_S", "PIPELINED_FRAC", "ENQUEUE_S", "PAGEABLE_BETA_FRAC",
           "PAGEABLE_ALPHA_FACTOR", "DRIVER_STAGED_EFFICIENCY", "SLOW_P2P_FRAC", "CORRUPT_STRIDE_BYTES",
           "CORES_PER_SOCKET", "P2P_MODES", "NUMA_MODES", "TOPOLOGY_LEVELS"]

# NVML's common-ancestor levels (NVML_TOPOLOGY_*)
TOPOLOGY_LEVELS = {"internal": 0, "single": 10, "multiple": 20, "hostbridge": 30, "node": 40, "system": 50}
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
NUMA_MODES = ("local", "remote")  # numa=: where pinned host memory lands, the device's node or the other one


@dataclass(frozen=True)
class PathModel:
    alpha_s: float
    alpha_pipelined_s: float
    beta_Bps: float

    def oneshot_s(self, n: int) -> float:
        return self.alpha_s + n / self.beta_Bps

    def pipelined_s(self, n: int) -> float:
        return self.alpha_pipelined_s + n / self.beta_Bps


def path_model(alpha_s: float, beta_Bps: float) -> PathModel:
    """A path of one-shot latency ``alpha_s`` and bandwidth ``beta_Bps``; its pipelined latency is ``PIPELINED_FRAC`` of it."""
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
    numa: str = "local"


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


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` and ``int`` also take ``٣`` and ``³``)."""
    return text.isascii() and text.isdigit()


def _int(text: str) -> int:
    if not _digits(text):
        raise ValueError(text)
    return int(text)


class _Figures:
    """The figures of a profile's device entry the machine is built from: each must be there, not null, and in
    its physical range (``limits.RANGES``); what is not is refused naming the file and the field."""

    def __init__(self, entry: dict, name: str):
        self.entry, self.name = entry, name

    def get(self, q, field: str, kind: str, required: bool = True):
        if q is None and not required:
            return None
        value = _value(q)
        if value is None:
            reason = q.get("reason") if isinstance(q, dict) else None
            why = f"is null ({reason})" if reason else ("is missing" if q is None else "is null")
            raise InputError(f"--backend: {self.name}: devices[0].{field} {why}; a virtual machine needs every "
                             "figure it prices with (use a profile that has it, or a built-in such as rtx4090)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"--backend: {self.name}: devices[0].{field}: expected a number, got {value!r}")
        bad = limits.check_range(float(value), kind)
        if bad:
            raise InputError(f"--backend: {self.name}: devices[0].{field}: {value!r} is {bad}")
        return value


def parse_spec(text: str) -> tuple[str, int | None, Faults]:
    """``virtual:PROFILE[:N][+OPTION...]`` as (profile, N or None, faults); bad input names --backend."""
    flag = "--backend"
    body = text.split(":", 1)[1] if ":" in text else ""
    head, *options = body.split("+")
    count = None
    if ":" in head and _digits(head.rsplit(":", 1)[1]):
        head, n = head.rsplit(":", 1)
        count = int(n)
        if count < 1:
            raise InputError(f"{flag}: {text}: the device count must be at least 1")
        if count > limits.MAX_DEVICES:
            raise InputError(f"{flag}: {text}: {count} devices, more than the {limits.MAX_DEVICES} a virtual machine "
                             "holds (gpucal.limits.MAX_DEVICES)")
    if not head:
        raise InputError(f"{flag}: {text}: expected virtual:PROFILE[:N][+OPTION...], e.g. virtual:rtx4090:8")
    kw: dict = {}
    downtrain = []
    for opt in options:
        name, _, value = opt.partition("=")
        try:
            if name in ("noise", "outliers"):
                v = parse_quantity(value, "number")  # ASCII digits, finite (float() takes '٠.٥' and '0.0_1')
                if not 0 <= v < 1:
                    raise ValueError
                kw["noise_frac" if name == "noise" else "outlier_frac"] = v
            elif name in ("warmup", "seed"):
                v = _int(value)
                if v < 0:
                    raise ValueError
                kw["warmup_runs" if name == "warmup" else "seed"] = v
            elif name == "p2p":
                if value not in P2P_MODES:
                    raise ValueError
                kw["p2p"] = value
            elif name == "numa":
                if value not in NUMA_MODES:
                    raise ValueError
                kw["numa"] = value
            elif name == "downtrain":
                dev, gen, width = (_int(x) for x in value.split(":"))
                if gen not in PCIE_GT_S or width not in (1, 2, 4, 8, 16) or dev < 0:
                    raise ValueError
                downtrain.append((dev, gen, width))
            else:
                raise InputError(f"{flag}: {text}: unknown option {name!r} (noise, outliers, warmup, seed, p2p, "
                                 "downtrain, numa)")
        except InputError:
            raise
        except ValueError:
            hint = {"p2p": "on, off, corrupt or slow", "downtrain": "DEV:GEN:WIDTH, e.g. 1:3:8",
                    "numa": "local or remote",
                    "noise": "a fraction in [0, 1)", "outliers": "a fraction in [0, 1)"}.get(name, "a whole number")
            raise InputError(f"{flag}: {text}: option {name}={value!r}: expected {hint}") from None
    return head, count, Faults(downtrain=tuple(downtrain), **kw)


class VirtualMachine:
    """N devices built from a profile's first device entry, their host links and the links between them."""

    def __init__(self, profile: dict, name: str, count: int | None = None, faults: Faults = Faults(),
                 origin: str | None = None):
        """``origin``: where the profile came from (its file), named when one of its figures is refused."""
        origin = origin or name
        entry = profile["devices"][0]
        self.profile_name = name
        own = sum(d.get("count", 1) for d in profile["devices"])
        self.count = count or (own if own > 1 else 2)
        if self.count > limits.MAX_DEVICES:
            raise InputError(f"--backend: {origin}: the profile counts {own} devices, more than the {limits.MAX_DEVICES} "
                             "a virtual machine holds (gpucal.limits.MAX_DEVICES); give the count: "
                             f"virtual:{name}:N")
        figures = _Figures(entry, origin)
        self.faults = faults
        host = entry.get("host_link") or {}
        gen_max = _value(host.get("pcie_generation_max")) or _value(host.get("pcie_generation")) or 4
        width_max = _value(host.get("pcie_width_max")) or _value(host.get("pcie_width")) or 16
        if gen_max not in PCIE_GT_S:
            raise InputError(f"--backend: {origin}: devices[0].host_link.pcie_generation: PCIe Gen{gen_max} has no "
                             f"known rate (known: Gen{min(PCIE_GT_S)} to Gen{max(PCIE_GT_S)})")
        trained = {d: (g, w) for d, g, w in faults.downtrain}
        for d in trained:
            if d >= self.count:
                raise InputError(f"--backend: downtrain names device {d}, but the machine has {self.count}")
        memory_bytes = figures.get(entry.get("memory_bytes"), "memory_bytes", "bytes")
        memory_Bps = figures.get(entry.get("memory_bandwidth_Bps"), "memory_bandwidth_Bps", "rate")
        dense = entry.get("dense_flops") or {}
        flops = {k: float(figures.get(q, f"dense_flops.{k}", "flops")) for k, q in dense.items() if _value(q) is not None}
        if not flops:
            raise InputError(f"--backend: {origin}: devices[0].dense_flops has no figure (every mode is null or "
                             "missing); a virtual machine prices its GEMMs with them")
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
                    field = f"host_link.{direction}"
                    links[direction] = path_model(figures.get(measured.get("alpha_s"), f"{field}.alpha_s", "time"),
                                                  figures.get(measured.get("beta_Bps"), f"{field}.beta_Bps", "rate")
                                                  * scale)
                else:
                    links[direction] = path_model(ALPHA_S["pcie"], PCIE_EFFICIENCY * pcie_Bps(gen, width))
            self.devices.append(VirtualDevice(
                index=i, name=entry["name"], memory_bytes=int(memory_bytes), memory_Bps=float(memory_Bps),
                flops=flops,
                pcie_generation_max=gen_max, pcie_width_max=width_max, pcie_generation=gen, pcie_width=width,
                numa_node=i * sockets // self.count, h2d=links["h2d"], d2h=links["d2h"]))
        self._peer = entry.get("peer_link") or {"kind": "none", "p2p_supported": {"value": False}}
        if "bandwidth_Bps" in self._peer:
            figures.get(self._peer["bandwidth_Bps"], "peer_link.bandwidth_Bps", "rate")
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
            bandwidth = _value(self._peer.get("bandwidth_Bps")) or 300e9  # checked in __init__ where given
            model = path_model(ALPHA_S["nvlink"], NVLINK_EFFICIENCY * bandwidth)
            links = max(1, round(bandwidth / NVLINK_LINK_Bps))
        else:
            kind, links = "pcie", 0
            model = path_model(ALPHA_S["pcie"], host_beta)
            if mode == "slow":
                model = path_model(ALPHA_S["pcie"], SLOW_P2P_FRAC * self.staged(src, dst, False).beta_Bps)
        if measured and mode is None and _value(measured.get("beta_Bps")):
            model = path_model(_value(measured.get("alpha_s")) or model.alpha_s, _value(measured["beta_Bps"]))
        return PeerModel(kind, model, corrupt=mode == "corrupt", nvlink_links=links)

    def socket(self, i: int) -> int:
        return self.devices[i].numa_node

    def pinned_node(self, i: int) -> int:
        """The NUMA node of pinned host memory allocated for device ``i``: the device's own, or with
        ``numa=remote`` the other one (node 1 for a one-socket machine's devices, all on node 0)."""
        node = self.devices[i].numa_node
        return 1 - node if self.faults.numa == "remote" else node

    def topology_level(self, a: int, b: int) -> int:
        """NVML's common-ancestor level of two devices' PCIe paths."""
        if a == b:
            return TOPOLOGY_LEVELS["internal"]
        if self.socket(a) != self.socket(b):
            return TOPOLOGY_LEVELS["system"]
        if self.peer(a, b).kind == "pcie" and a // 2 == b // 2:
            return TOPOLOGY_LEVELS["single"]
        return TOPOLOGY_LEVELS["hostbridge"]
