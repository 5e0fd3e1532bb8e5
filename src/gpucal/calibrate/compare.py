"""Two hardware profiles side by side: each field, both values, and the ratio B/A.

Pure: it takes two validated profile documents (and the link the planner uses between each one's cards,
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

__all__ = ["FLOPS_MODES", "GEMV_DTYPES", "Comparison", "PlannerLink", "Row", "Side", "compare", "device_count",
           "ratio"]

# Schema order (profiles/schema.json: flops_mode, gemv_Bps).
FLOPS_MODES = ("fp64", "fp64_tensor", "fp32", "tf32", "fp16_fp32acc", "bf16_fp32acc", "fp16_fp16acc",
               "fp8_fp32acc", "fp8_fp16acc")
GEMV_DTYPES = ("fp16", "bf16", "fp32", "fp8")


@dataclass(frozen=True)
class PlannerLink:
    """The link the planner uses between a profile's cards: its name and the alpha and beta quantities
    (``{value, source, ...}``, as in a profile)."""

    name: str
    alpha_s: dict[str, Any]
    beta_Bps: dict[str, Any]


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


def _cell(quantity: dict[str, Any] | None) -> tuple[Any, str | None, str | None]:
    """(value, source, reason) of a quantity; all ``None`` when it is absent."""
    if quantity is None:
        return None, None, None
    value = quantity["value"]
    return value, quantity["source"], quantity.get("reason") if value is None else None


def _row(field: str, label: str, unit: str | None, qa: dict | None, qb: dict | None,
         always: bool = False) -> Row | None:
    """The row of two quantities, or ``None`` when neither side has the field (unless ``always``)."""
    if qa is None and qb is None and not always:
        return None
    a, a_source, a_reason = _cell(qa)
    b, b_source, b_reason = _cell(qb)
    return Row(field, label, unit, a, b, a_source, b_source, a_reason, b_reason)


def _get(node: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _device_rows(da: dict[str, Any], db: dict[str, Any]) -> list[Row | None]:
    rows = [_row("memory_bytes", "memory", "bytes", da["memory_bytes"], db["memory_bytes"], always=True),
            _row("memory_bandwidth_Bps", "memory bandwidth", "Bps", da["memory_bandwidth_Bps"],
                 db["memory_bandwidth_Bps"], always=True)]
    for dtype in GEMV_DTYPES:
        rows.append(_row(f"gemv_Bps.{dtype}", f"decode GEMV {dtype}", "Bps", _get(da, "gemv_Bps", dtype),
                         _get(db, "gemv_Bps", dtype)))
    rows.append(_row("theoretical_memory_bandwidth_Bps", "theoretical memory bandwidth", "Bps",
                     da.get("theoretical_memory_bandwidth_Bps"), db.get("theoretical_memory_bandwidth_Bps")))
    modes = [m for m in FLOPS_MODES if m in da["dense_flops"] or m in db["dense_flops"]]
    modes += sorted((set(da["dense_flops"]) | set(db["dense_flops"])) - set(FLOPS_MODES))
    for mode in modes:
        rows.append(_row(f"dense_flops.{mode}", f"dense {mode}", "flops", da["dense_flops"].get(mode),
                         db["dense_flops"].get(mode)))
    for key, label, unit in (("pcie_generation", "PCIe generation", "generation"),
                             ("pcie_generation_max", "PCIe generation, max", "generation"),
                             ("pcie_width", "PCIe width", "lanes"),
                             ("pcie_width_max", "PCIe width, max", "lanes")):
        rows.append(_row(f"host_link.{key}", label, unit, _get(da, "host_link", key), _get(db, "host_link", key)))
    for direction in ("h2d", "d2h"):
        for key, label, unit in (("alpha_s", "alpha", "s"), ("beta_Bps", "beta", "Bps")):
            rows.append(_row(f"host_link.{direction}.{key}", f"host link {direction.upper()} {label}", unit,
                             _get(da, "host_link", direction, key), _get(db, "host_link", direction, key)))
    pa, pb = da.get("peer_link"), db.get("peer_link")
    if pa is not None or pb is not None:
        # The kind has no quantity of its own: it shares the provenance of p2p_supported.
        kind_a = None if pa is None else dict(pa["p2p_supported"], value=pa["kind"])
        kind_b = None if pb is None else dict(pb["p2p_supported"], value=pb["kind"])
        rows.append(_row("peer_link.kind", "peer link", None, kind_a, kind_b))
        rows.append(_row("peer_link.p2p_supported", "P2P supported", None, _get(pa, "p2p_supported"),
                         _get(pb, "p2p_supported")))
        rows.append(_row("peer_link.bandwidth_Bps", "peer link bandwidth", "Bps", _get(pa, "bandwidth_Bps"),
                         _get(pb, "bandwidth_Bps")))
    return rows


def _link_rows(la: PlannerLink | None, lb: PlannerLink | None) -> list[Row | None]:
    if la is None and lb is None:
        return []

    def name(link: PlannerLink | None) -> dict | None:
        if link is None:
            return None
        return {"value": link.name, "source": " + ".join(sorted({link.alpha_s["source"], link.beta_Bps["source"]}))}

    return [_row("planner_link.name", "planner's link", None, name(la), name(lb)),
            _row("planner_link.alpha_s", "planner's link alpha", "s", la and la.alpha_s, lb and lb.alpha_s),
            _row("planner_link.beta_Bps", "planner's link beta", "Bps", la and la.beta_Bps, lb and lb.beta_Bps)]


def device_count(doc: Document) -> int:
    """The devices a profile stands for: the sum of each entry's ``count`` (1 where absent)."""
    return sum(int(d.get("count", 1)) for d in doc.data["devices"])


def _count(doc: Document) -> dict[str, Any]:
    # A calibrated profile lists the devices the runtime reported; other profiles state a count.
    source = "reported" if doc.data["source"] in ("measured", "simulated") else doc.data["source"]
    return {"value": device_count(doc), "source": source}


def _side(doc: Document) -> Side:
    names = tuple(d["name"] for d in doc.data["devices"])
    return Side(name=doc.name, origin=doc.origin, source=doc.data["source"], device=names[0], device_names=names)


def compare(a: Document, b: Document, a_link: PlannerLink | None = None,
            b_link: PlannerLink | None = None) -> Comparison:
    """Profile ``b`` against profile ``a``, field by field, with the ratio B/A; ``a_link`` and ``b_link`` are
    the links the planner uses between each one's cards (``None``: none)."""
    for doc in (a, b):
        if doc.kind != "profile":
            raise ValueError(f"{doc.origin}: a {doc.kind} document, not a profile")
    rows = _device_rows(a.data["devices"][0], b.data["devices"][0]) + _link_rows(a_link, b_link)
    rows.append(_row("device_count", "devices", "devices", _count(a), _count(b)))
    return Comparison(a=_side(a), b=_side(b), rows=tuple(r for r in rows if r is not None))
