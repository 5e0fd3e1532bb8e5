"""What every export reads of a profile: the one card, its FLOP/s entries and derived integer rates, the link between
cards and between hosts, each value rounded and its source recorded (``Reader``); refusals name the file, the field
and the format."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpucal import profiles
from gpucal.errors import InputError
from gpucal.profiles.model import Device, Profile, Quantity
from gpucal.profiles.names import profile_reference
from gpucal.profiles.queries import LinkChoice, planner_link, profile_link, profile_network, resolve_link

__all__ = ["DEFAULT_NET", "Reader", "rounded", "value_of", "int8_tensor_ops", "int4_tensor_ops"]

DEFAULT_NET = "ib200g"  # the link preset used between hosts when neither --net nor network[] gives one
_DIGITS = 12


def rounded(value: float) -> float:
    """``value`` to 12 significant digits, so that 989.4e12 / 1e12 prints as 989.4."""
    return float(f"{value:.{_DIGITS}g}")


def value_of(quantity: Quantity | None) -> float | None:
    """A quantity's value, or None where it is missing or null."""
    if quantity is not None and quantity.known:
        return float(quantity.value)
    return None


def int8_tensor_ops(dense: dict[str, Quantity], compute_capability: tuple[int, int] | None) -> tuple[float, str]:
    """The dense int8 tensor rate (op/s) derived from a dense FLOP/s table, and how it was derived.

    NVIDIA's datasheets give int8 the fp8 tensor rate where a card has fp8 (Ada, Hopper, Blackwell:
    RTX 4090 660.6e12, L40S 733e12, H100 SXM 1979e12) and twice the fp16 tensor rate before that
    (Turing, Ampere: A100 624e12, RTX 3090 284e12). So: the fastest dense fp8 rate where the table has
    one, else 2 x the fastest dense fp16 rate (fp16 accumulate where listed: GeForce cards halve fp32
    accumulate). Before compute capability 7.5 (Volta and older) there are no int8 tensor cores: 0.
    """
    if compute_capability is not None and compute_capability < (7, 5):
        return 0.0, f"0: no int8 tensor cores before compute capability 7.5 (this card: {_cc_text(compute_capability)})"
    for modes, factor, why in ((("fp8_fp16acc", "fp8_fp32acc"), 1.0, "int8 runs at the fp8 tensor rate"),
                               (("fp16_fp16acc", "fp16_fp32acc"), 2.0, "int8 runs at twice the fp16 tensor rate")):
        rates = [(value_of(dense.get(mode)), mode) for mode in modes if value_of(dense.get(mode))]
        if rates:
            rate, mode = max(rates)
            times = "" if factor == 1.0 else f"{factor:g} x "
            return factor * rate, f"derived: {times}devices[0].dense_flops.{mode} ({why})"
    raise InputError("devices[0].dense_flops: no fp8 or fp16 rate to derive an int8 rate from")


def int4_tensor_ops(int8_ops: float, compute_capability: tuple[int, int] | None) -> tuple[float, str]:
    """The dense int4 tensor rate (op/s): 2 x int8 where the architecture has int4 tensor cores
    (compute capability 7.5 to 8.9: Turing, Ampere, Ada; A100 1248e12, RTX 4090 1321.2e12), else 0
    (Volta and older; Hopper and Blackwell dropped them), and 0 where the compute capability is unknown."""
    if compute_capability is None:
        return 0.0, "0: compute capability unknown, so no int4 rate is claimed"
    if (7, 5) <= compute_capability < (9, 0):
        return 2.0 * int8_ops, "derived: 2 x the int8 rate (int4 tensor cores on Turing, Ampere and Ada)"
    return 0.0, f"0: no int4 tensor cores on compute capability {_cc_text(compute_capability)}"


def _cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


@dataclass
class Reader:
    """Reads one profile's values for one format; every refusal names the file, the field and the format."""

    doc: profiles.Document
    fmt: str
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def profile(self) -> Profile:
        return self.doc.profile

    @property
    def device(self) -> Device:
        return self.profile.devices[0]

    def refuse(self, where: str, why: str, key: str) -> InputError:
        return InputError(f"{self.doc.origin}: {where}: {why}; needed by {self.fmt} ({key})")

    def quantity(self, where: str, quantity: Quantity | None, key: str) -> float:
        """The value at ``where`` (for the message), recorded as the source of exported ``key``."""
        if quantity is None:
            raise self.refuse(where, "missing", key)
        if not quantity.known:
            raise self.refuse(where, f"unknown ({quantity.reason or 'no reason given'})", key)
        self.sources[key] = f"{where}: {quantity.cited}"
        return float(quantity.value)

    def flops(self, mode: str, key: str) -> float:
        return self.quantity(f"devices[0].dense_flops.{mode}", self.device.dense_flops.get(mode), key)

    def flops_entry(self, mode: str, key: str) -> float:
        """The FLOP/s entry ``mode`` (``sparse:`` names a 2:4-sparse one), as ``flops``."""
        where = f"devices[0].{'sparse' if mode.startswith('sparse:') else 'dense'}_flops.{mode.removeprefix('sparse:')}"
        return self.quantity(where, self.device.flops(mode), key)

    def compute_capability(self) -> tuple[tuple[int, int] | None, str]:
        """The card's compute capability, from the profile or else the datasheet profile of its name."""
        device, where = self.device, "devices[0].compute_capability"
        if device.compute_capability is None:
            sheet = profiles.datasheet_for(device.name)
            if sheet is not None:
                device, where = sheet.profile.devices[0], f"datasheet profile {sheet.name}"
        if device.cc is None:
            return None, "unknown"
        return device.cc, f"{device.compute_capability} ({where})"

    def int_rates(self, int8_key: str, int4_key: str | None) -> tuple[float, float]:
        cc, cc_source = self.compute_capability()
        int8, how8 = int8_tensor_ops(self.device.dense_flops, cc)
        int4, how4 = int4_tensor_ops(int8, cc)
        self.sources[int8_key] = f"{how8}; compute capability {cc_source}"
        if int4_key:
            self.sources[int4_key] = f"{how4}; compute capability {cc_source}"
        return int8, int4

    def link(self, given: LinkChoice | None, keys: tuple[str, str]) -> LinkChoice:
        """The link between cards (``keys``: the exported bandwidth and latency keys)."""
        if given is not None:
            chosen, how = given, f"--link {given.spec.name}"
        elif (measured := profile_link(self.doc)) is not None:
            chosen, how = measured, f"links[]: {measured.spec.name}"
        else:
            chosen = planner_link(self.doc, flag="NAME")
            preset = self.profile.default_link
            if chosen is None:
                raise self.refuse("links", "no measured link between cards and no plan_defaults.link (give --link)",
                                  keys[0])
            kind = profile_reference(self.doc, "plan_defaults.link", "NAME", "link").model.kind
            peer = self.device.peer_link.kind if self.device.peer_link else "unknown"
            if kind == "nvlink" and peer != "nvlink":
                raise self.refuse("plan_defaults.link", f"{preset} is an NVLink preset but devices[0].peer_link.kind "
                                  f"is {peer} (give --link)", keys[0])
            how = f"plan_defaults.link: preset {preset}"
        self.sources[keys[0]] = f"{how}: beta, per direction ({chosen.source})"
        self.sources[keys[1]] = f"{how}: alpha ({chosen.source})"
        return chosen

    def network_Bps(self, given: LinkChoice | None, key: str) -> float:
        """Bandwidth between hosts, per direction."""
        if given is not None:
            self.sources[key] = f"--net {given.spec.name}: beta ({given.source})"
            return given.spec.beta_Bps
        measured = profile_network(self.doc)  # the slowest pair of hosts; ranks sharing a host are left out
        if measured is not None:
            self.sources[key] = f"network: {measured.spec.name} ({measured.source}): beta, per direction"
            return measured.spec.beta_Bps
        preset = resolve_link(DEFAULT_NET, "--net")
        self.sources[key] = (f"default: link preset {DEFAULT_NET} ({preset.source}); the profile has no network "
                             "entry (give --net)")
        return preset.spec.beta_Bps
