"""Two hardware profiles side by side: each field, both values, and the ratio B/A.

Pure: it takes two validated profile documents (read through their typed ``Profile``s) (and the link the planner uses between each one's cards,
which the caller resolves, see ``gpucal.profiles.queries.planner_link``) and returns a ``Comparison``; no I/O and
no printing. ``gpucal compare`` renders it (docs/compare.md).

The device rows compare each profile's first device, ``devices[0]``: a calibrated profile lists its
devices one by one in the runtime's order (``index``), a datasheet or article profile has one entry.
(``plan`` takes each figure from the slowest device; ``gpucal calibrate``'s summary shows the spread.) A row appears when either profile has the field; a side without
it shows no value and no ratio. Every field name carries its unit (``memory_bandwidth_Bps``,
``dense_flops.fp16_fp32acc``, ``host_link.h2d.alpha_s``); values are SI.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from gpucal.profiles import Document
from gpucal.profiles.model import Device, Profile, Quantity

__all__ = ["FLOPS_MODES", "GEMV_DTYPES", "Comparison", "PlannerLink", "Row", "Side", "compare", "device_count",
           "ratio"]

# Schema order (profiles/schema.json: flops_mode, gemv_Bps).
FLOPS_MODES = ("fp64", "fp64_tensor", "fp32", "tf32", "fp16_fp32acc", "bf16_fp32acc", "fp16_fp16acc",
               "fp8_fp32acc", "fp8_fp16acc")
GEMV_DTYPES = ("fp16", "bf16", "fp32", "fp8")


@dataclass(frozen=True)
class PlannerLink:
    """The link the planner uses between a profile's cards: its name and the alpha and beta quantities.

    Each is a ``Quantity``, or its JSON (``{value, source, ...}``), taken as the model's quantity without
    validation: the planner's link may carry only a value and a source (a measured link's fit, whose method
    stays in the profile)."""

    name: str
    alpha_s: Quantity | dict[str, Any]
    beta_Bps: Quantity | dict[str, Any]

    def __post_init__(self) -> None:
        for key in ("alpha_s", "beta_Bps"):
            value = getattr(self, key)
            if isinstance(value, dict):
                object.__setattr__(self, key, Quantity.model_construct(**value))


def ratio(a: Any, b: Any) -> float | None:
    """``b / a`` for two numbers (not booleans); ``None`` when either is missing or not a number, ``a`` is
    zero (the ratio is undefined) or the ratio is not finite (the schema's ranges keep it finite; this
    keeps ``inf`` out of the table whatever the caller passes)."""
    def is_number(x: Any) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool)

    if not (is_number(a) and is_number(b)) or a == 0:
        return None
    try:
        value = float(b) / float(a)
    except OverflowError:  # an integer too large for a float
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Row:
    """One field of both profiles. ``a``/``b`` are ``None`` where the profile lacks the field (source
    ``None``) or has it as unknown (``reason`` says why)."""

    field: str
    label: str
    unit: str | None  # bytes, Bps, flops, s, generation, lanes, devices; None for a yes/no or a name
    a: Any
    b: Any
    a_source: str | None
    b_source: str | None
    a_reason: str | None = None
    b_reason: str | None = None

    @property
    def ratio(self) -> float | None:
        return ratio(self.a, self.b)

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "a": self.a, "b": self.b, "ratio": self.ratio, "a_source": self.a_source,
                "b_source": self.b_source, "a_reason": self.a_reason, "b_reason": self.b_reason, "unit": self.unit}


@dataclass(frozen=True)
class Side:
    """One profile of the comparison."""

    name: str
    origin: str
    source: str  # the profile's own source: datasheet, article, measured, simulated
    device: str  # the name of devices[0], the device the rows compare
    device_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "origin": self.origin, "source": self.source, "device": self.device}


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    rows: tuple[Row, ...]

    def row(self, field: str) -> Row:
        """The row of ``field``; ``KeyError`` if neither profile has it."""
        for item in self.rows:
            if item.field == field:
                return item
        raise KeyError(field)

    def simulated(self, side: str) -> bool:
        """True when side ``"a"`` or ``"b"`` is a simulated profile or shows any simulated figure."""
        which = self.a if side == "a" else self.b
        return which.source == "simulated" or any(getattr(r, f"{side}_source") == "simulated" for r in self.rows)

    @property
    def notes(self) -> tuple[str, ...]:
        """What a reader must know besides the rows: simulated sides, profiles whose devices differ."""
        out = []
        for key, side in (("a", self.a), ("b", self.b)):
            label = key.upper()
            if self.simulated(key):
                out.append(f"{label} ({side.name}) is simulated: its figures come from a virtual device priced by "
                           "a profile; a simulated figure is never a measurement")
            if len(set(side.device_names)) > 1:
                names = ", ".join(sorted(set(side.device_names)))
                out.append(f"{label} ({side.name}) holds different devices ({names}); "
                           f"the device rows compare devices[0], {side.device}")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "rows": [r.to_dict() for r in self.rows],
                "notes": list(self.notes)}


Cell = tuple  # (value, source, reason) of one side of a row


def _cell(quantity: Quantity | None) -> Cell | None:
    """(value, source, reason) of a quantity, the reason only where the value is unknown; ``None`` when the
    quantity is absent."""
    if quantity is None:
        return None
    return quantity.value, quantity.source, quantity.reason if quantity.value is None else None


def _row(field: str, label: str, unit: str | None, ca: Cell | None, cb: Cell | None,
         always: bool = False) -> Row | None:
    """The row of two cells, or ``None`` when neither side has the field (unless ``always``)."""
    if ca is None and cb is None and not always:
        return None
    a, a_source, a_reason = ca or (None, None, None)
    b, b_source, b_reason = cb or (None, None, None)
    return Row(field, label, unit, a, b, a_source, b_source, a_reason, b_reason)


def _pair(field: str, label: str, unit: str | None, da: Device, db: Device, pick,
          always: bool = False) -> Row | None:
    """The row of the quantity ``pick(device)`` (``None``: absent) of both devices."""
    return _row(field, label, unit, _cell(pick(da)), _cell(pick(db)), always)


def _host_field(device: Device, *keys: str) -> Quantity | None:
    """The quantity at ``host_link.<keys>`` of ``device``; ``None`` where any part is absent."""
    node: Any = device.host_link
    for key in keys:
        if node is None:
            return None
        node = getattr(node, key)
    return node


def _peer_field(device: Device, key: str) -> Quantity | None:
    """The quantity ``peer_link.<key>`` of ``device``; ``None`` where it is absent."""
    return None if device.peer_link is None else getattr(device.peer_link, key)


def _device_rows(da: Device, db: Device) -> list[Row | None]:
    rows = [_pair("memory_bytes", "memory", "bytes", da, db, lambda d: d.memory_bytes, always=True),
            _pair("memory_bandwidth_Bps", "memory bandwidth", "Bps", da, db, lambda d: d.memory_bandwidth_Bps,
                  always=True)]
    for dtype in GEMV_DTYPES:
        rows.append(_pair(f"gemv_Bps.{dtype}", f"decode GEMV {dtype}", "Bps", da, db,
                          lambda d, dtype=dtype: (d.gemv_Bps or {}).get(dtype)))
    rows.append(_pair("theoretical_memory_bandwidth_Bps", "theoretical memory bandwidth", "Bps", da, db,
                      lambda d: d.theoretical_memory_bandwidth_Bps))
    modes = [m for m in FLOPS_MODES if m in da.dense_flops or m in db.dense_flops]
    modes += sorted((set(da.dense_flops) | set(db.dense_flops)) - set(FLOPS_MODES))
    for mode in modes:
        rows.append(_pair(f"dense_flops.{mode}", f"dense {mode}", "flops", da, db,
                          lambda d, mode=mode: d.dense_flops.get(mode)))
    for key, label, unit in (("pcie_generation", "PCIe generation", "generation"),
                             ("pcie_generation_max", "PCIe generation, max", "generation"),
                             ("pcie_width", "PCIe width", "lanes"),
                             ("pcie_width_max", "PCIe width, max", "lanes")):
        rows.append(_pair(f"host_link.{key}", label, unit, da, db, lambda d, key=key: _host_field(d, key)))
    for direction in ("h2d", "d2h"):
        for key, label, unit in (("alpha_s", "alpha", "s"), ("beta_Bps", "beta", "Bps")):
            rows.append(_pair(f"host_link.{direction}.{key}", f"host link {direction.upper()} {label}", unit, da, db,
                              lambda d, direction=direction, key=key: _host_field(d, direction, key)))
    pa, pb = da.peer_link, db.peer_link
    if pa is not None or pb is not None:
        def kind(peer) -> Cell | None:
            # The kind has no quantity of its own: it shares the provenance of p2p_supported.
            return None if peer is None else (peer.kind, peer.p2p_supported.source, None)

        rows.append(_row("peer_link.kind", "peer link", None, kind(pa), kind(pb)))
        rows.append(_pair("peer_link.p2p_supported", "P2P supported", None, da, db,
                          lambda d: _peer_field(d, "p2p_supported")))
        rows.append(_pair("peer_link.bandwidth_Bps", "peer link bandwidth", "Bps", da, db,
                          lambda d: _peer_field(d, "bandwidth_Bps")))
    return rows


def _link_rows(la: PlannerLink | None, lb: PlannerLink | None) -> list[Row | None]:
    if la is None and lb is None:
        return []

    def name(link: PlannerLink | None) -> Cell | None:
        if link is None:
            return None
        return link.name, " + ".join(sorted({link.alpha_s.source, link.beta_Bps.source})), None

    return [_row("planner_link.name", "planner's link", None, name(la), name(lb)),
            _row("planner_link.alpha_s", "planner's link alpha", "s", _cell(la and la.alpha_s),
                 _cell(lb and lb.alpha_s)),
            _row("planner_link.beta_Bps", "planner's link beta", "Bps", _cell(la and la.beta_Bps),
                 _cell(lb and lb.beta_Bps))]


def device_count(profile: Profile) -> int:
    """The devices a profile stands for: the sum of each entry's ``count`` (1 where absent)."""
    return profile.device_count


def _count(profile: Profile) -> Cell:
    # A calibrated profile lists the devices the runtime reported; other profiles state a count.
    source = "reported" if profile.source in ("measured", "simulated") else profile.source
    return device_count(profile), source, None


def _side(doc: Document) -> Side:
    profile = doc.profile
    names = tuple(d.name for d in profile.devices)
    return Side(name=doc.name, origin=doc.origin, source=profile.source, device=names[0], device_names=names)


def compare(a: Document, b: Document, a_link: PlannerLink | None = None,
            b_link: PlannerLink | None = None) -> Comparison:
    """Profile ``b`` against profile ``a``, field by field, with the ratio B/A; ``a_link`` and ``b_link`` are
    the links the planner uses between each one's cards (``None``: none)."""
    for doc in (a, b):
        if doc.kind != "profile":
            raise ValueError(f"{doc.origin}: a {doc.kind} document, not a profile")
    rows = _device_rows(a.profile.devices[0], b.profile.devices[0]) + _link_rows(a_link, b_link)
    rows.append(_row("device_count", "devices", "devices", _count(a.profile), _count(b.profile)))
    return Comparison(a=_side(a), b=_side(b), rows=tuple(r for r in rows if r is not None))
