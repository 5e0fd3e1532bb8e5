"""The simulated machine behind the ``virtual`` backend: N devices built from a profile, the model of each
copy path (latency α, pipelined latency α_p, bandwidth β). Its ``virtual:`` spec and faults are read in
``kernels/virtual_spec.py``.

Each device also holds its decode-step figures (``DecodeModel``: the profile's ``devices[0].decode`` read by
``gpucal.profiles.decode_queries.decode_terms``) and its launch costs: the profile's where it has them, else
``EAGER_LAUNCH_S``, ``GRAPH_NODE_S`` and ``SYNC_S``, the virtual machine's assumptions (not measurements).

See ``kernels/virtual.py`` (the backend) and docs/links.md (the model's numbers and where they come from).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from gpucal import limits
from gpucal.errors import InputError
from gpucal.kernels.virtual_spec import NUMA_MODES, P2P_MODES, Faults, parse_spec
from gpucal.plan.decode import LaunchCosts
from gpucal.profiles.model import LinkEntry, PeerLink, Profile, Quantity
from gpucal.profiles.model.errors import describe
from gpucal.profiles.decode_queries import DecodeModel, decode_terms
from gpucal.standards import PCIE_GT_S, pcie_Bps

__all__ = ["VirtualMachine", "VirtualDevice", "PeerModel", "PathModel", "Faults", "parse_spec", "path_model",
           "PCIE_EFFICIENCY", "NVLINK_EFFICIENCY", "ALPHA_S", "PIPELINED_FRAC", "ENQUEUE_S", "PAGEABLE_BETA_FRAC",
           "PAGEABLE_ALPHA_FACTOR", "DRIVER_STAGED_EFFICIENCY", "SLOW_P2P_FRAC", "CORRUPT_STRIDE_BYTES",
           "CORES_PER_SOCKET", "P2P_MODES", "NUMA_MODES", "TOPOLOGY_LEVELS", "EAGER_LAUNCH_S", "GRAPH_NODE_S",
           "SYNC_S", "DEFAULT_LAUNCH", "GroupLink"]

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
# The host's fixed costs where the profile has no measured ``decode.launch`` (assumptions, not measurements: the
# order of magnitude of a CUDA launch back to back, of a node of a replayed graph, of a launch and synchronize).
EAGER_LAUNCH_S = 4e-6
GRAPH_NODE_S = 1.5e-6
SYNC_S = 12e-6
DEFAULT_LAUNCH = LaunchCosts(EAGER_LAUNCH_S, GRAPH_NODE_S, SYNC_S)


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
    decode: DecodeModel = field(default_factory=DecodeModel)  # the profile's decode figures (empty: none)
    launch: LaunchCosts = DEFAULT_LAUNCH  # the profile's launch costs, else the machine's assumptions

    @property
    def pci_bus_id(self) -> str:
        return f"00000000:{0x18 + 0x10 * self.index:02X}:00.0"

    @property
    def uuid(self) -> str:
        return f"GPU-00000000-0000-0000-0000-{self.index:012d}"


@dataclass(frozen=True)
class GroupLink:
    """The slowest link between the devices of a group: the largest one-shot alpha and the smallest beta of
    their paths (P2P, or host staging where there is none), and the path that has that beta."""

    alpha_s: float
    beta_Bps: float
    description: str


@dataclass(frozen=True)
class PeerModel:
    kind: str  # nvlink, pcie, none
    model: PathModel | None
    corrupt: bool = False
    nvlink_links: int = 0


def _value(q: Quantity | None):
    """The value of a quantity of the profile, ``None`` when it is absent or unknown."""
    return None if q is None else q.value


class _Figures:
    """The figures of a profile's device entry the machine is built from: each must be there, not null, and in
    its physical range (``limits.RANGES``); what is not is refused naming the file and the field."""

    def __init__(self, name: str):
        self.name = name

    def get(self, q: Quantity | None, field: str, kind: str, required: bool = True):
        if q is None and not required:
            return None
        value = _value(q)
        if value is None:
            reason = q.reason if q is not None else None
            why = f"is null ({reason})" if reason else ("is missing" if q is None else "is null")
            raise InputError(f"--backend: {self.name}: devices[0].{field} {why}; a virtual machine needs every "
                             "figure it prices with (use a profile that has it, or a built-in such as rtx4090)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"--backend: {self.name}: devices[0].{field}: expected a number, got {value!r}")
        bad = limits.check_range(float(value), kind)
        if bad:
            raise InputError(f"--backend: {self.name}: devices[0].{field}: {value!r} is {bad}")
        return value


class VirtualMachine:
    """N devices built from a profile's first device entry, their host links and the links between them."""

    def __init__(self, profile: Profile | dict, name: str, count: int | None = None, faults: Faults = Faults(),
                 origin: str | None = None):
        """``profile``: the typed profile (``Document.profile``; its JSON is validated into one). ``origin``: where the profile came from (its
        file), named when one of its figures is refused."""
        origin = origin or name
        if not isinstance(profile, Profile):  # a profile's JSON: read through the model
            try:
                profile = Profile.model_validate(profile)
            except ValidationError as exc:
                field, detail = describe(exc.errors(include_url=False)[0])
                raise InputError(f"--backend: {origin}: {field + ': ' if field else ''}{detail}") from None
        entry = profile.devices[0]
        self.profile_name = name
        own = profile.device_count
        self.count = count or (own if own > 1 else 2)
        if self.count > limits.MAX_DEVICES:
            raise InputError(f"--backend: {origin}: the profile counts {own} devices, more than the {limits.MAX_DEVICES} "
                             "a virtual machine holds (gpucal.limits.MAX_DEVICES); give the count: "
                             f"virtual:{name}:N")
        figures = _Figures(origin)
        self.faults = faults
        host = entry.host_link
        gen_max = (host and (_value(host.pcie_generation_max) or _value(host.pcie_generation))) or 4
        width_max = (host and (_value(host.pcie_width_max) or _value(host.pcie_width))) or 16
        if gen_max not in PCIE_GT_S:
            raise InputError(f"--backend: {origin}: devices[0].host_link.pcie_generation: PCIe Gen{gen_max} has no "
                             f"known rate (known: Gen{min(PCIE_GT_S)} to Gen{max(PCIE_GT_S)})")
        trained = {d: (g, w) for d, g, w in faults.downtrain}
        for d in trained:
            if d >= self.count:
                raise InputError(f"--backend: downtrain names device {d}, but the machine has {self.count}")
        memory_bytes = figures.get(entry.memory_bytes, "memory_bytes", "bytes")
        memory_Bps = figures.get(entry.memory_bandwidth_Bps, "memory_bandwidth_Bps", "rate")
        flops = {k: float(figures.get(q, f"dense_flops.{k}", "flops")) for k, q in entry.dense_flops.items()
                 if q.known}
        if not flops:
            raise InputError(f"--backend: {origin}: devices[0].dense_flops has no figure (every mode is null or "
                             "missing); a virtual machine prices its GEMMs with them")
        try:
            decode = decode_terms(entry)
        except ValueError as exc:
            raise InputError(f"--backend: {origin}: devices[0].{exc}") from None
        launch = decode.launch or DEFAULT_LAUNCH
        self.profile = profile
        sockets = 2 if self.count >= 4 else 1
        self.sockets = sockets
        self.devices: list[VirtualDevice] = []
        for i in range(self.count):
            gen, width = trained.get(i, (gen_max, width_max))
            scale = pcie_Bps(gen, width) / pcie_Bps(gen_max, width_max)
            links = {}
            for direction in ("h2d", "d2h"):
                measured = getattr(host, direction) if host is not None else None
                if measured is not None:
                    field = f"host_link.{direction}"
                    links[direction] = path_model(figures.get(measured.alpha_s, f"{field}.alpha_s", "time"),
                                                  figures.get(measured.beta_Bps, f"{field}.beta_Bps", "rate")
                                                  * scale)
                else:
                    links[direction] = path_model(ALPHA_S["pcie"], PCIE_EFFICIENCY * pcie_Bps(gen, width))
            self.devices.append(VirtualDevice(
                index=i, name=entry.name, memory_bytes=int(memory_bytes), memory_Bps=float(memory_Bps),
                flops=flops,
                pcie_generation_max=gen_max, pcie_width_max=width_max, pcie_generation=gen, pcie_width=width,
                numa_node=i * sockets // self.count, h2d=links["h2d"], d2h=links["d2h"], decode=decode,
                launch=launch))
        self._peer: PeerLink | None = entry.peer_link
        if self._peer is not None and self._peer.bandwidth_Bps is not None:
            figures.get(self._peer.bandwidth_Bps, "peer_link.bandwidth_Bps", "rate")
        self._measured_links: dict[tuple[int, int], LinkEntry] = {(item.src, item.dst): item
                                                                  for item in profile.links or []}

    # links -----------------------------------------------------------------------------------------
    def staged(self, src: int, dst: int, driver: bool) -> PathModel:
        a, b = self.devices[src].d2h, self.devices[dst].h2d
        beta = min(a.beta_Bps, b.beta_Bps) * (DRIVER_STAGED_EFFICIENCY if driver else 1.0)
        return PathModel(a.alpha_s + b.alpha_s, a.alpha_pipelined_s + b.alpha_pipelined_s, beta)

    def peer(self, src: int, dst: int) -> PeerModel:
        kind = self._peer.kind if self._peer is not None else "none"
        supported = bool(self._peer is not None and _value(self._peer.p2p_supported))
        mode = self.faults.p2p
        if mode == "off" or (mode is None and not supported):
            return PeerModel("none", None)
        host_beta = min(self.devices[src].d2h.beta_Bps, self.devices[dst].h2d.beta_Bps)
        measured = self._measured_links.get((src, dst))
        if kind == "nvlink" and mode != "slow":
            bandwidth = _value(self._peer.bandwidth_Bps) or 300e9  # checked in __init__ where given
            model = path_model(ALPHA_S["nvlink"], NVLINK_EFFICIENCY * bandwidth)
            links = max(1, round(bandwidth / NVLINK_LINK_Bps))
        else:
            kind, links = "pcie", 0
            model = path_model(ALPHA_S["pcie"], host_beta)
            if mode == "slow":
                model = path_model(ALPHA_S["pcie"], SLOW_P2P_FRAC * self.staged(src, dst, False).beta_Bps)
        if measured is not None and mode is None and _value(measured.beta_Bps):
            model = path_model(_value(measured.alpha_s) or model.alpha_s, _value(measured.beta_Bps))
        return PeerModel(kind, model, corrupt=mode == "corrupt", nvlink_links=links)

    def group_link(self, devices: tuple[int, ...]) -> GroupLink:
        """The slowest link between ``devices`` (at least two), as the virtual collectives price a ring: over
        every ordered pair, P2P where the machine has it, else host staging; alpha the largest one-shot alpha,
        beta the smallest beta."""
        paths = []
        for a in devices:
            for b in devices:
                if a == b:
                    continue
                peer = self.peer(a, b)
                paths.append((f"{peer.kind} P2P", peer.model) if peer.kind != "none" and peer.model else
                             ("host staging", self.staged(a, b, driver=False)))
        if not paths:
            raise ValueError(f"devices: a group needs two distinct devices, got {devices}")
        slowest = min(paths, key=lambda p: p[1].beta_Bps)
        return GroupLink(max(m.alpha_s for _, m in paths), slowest[1].beta_Bps, slowest[0])

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
