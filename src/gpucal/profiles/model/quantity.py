"""A quantity: a value with its provenance, the unit of every figure a document holds.

``source`` says where the value came from: ``datasheet`` and ``spec`` cite a key of the document's
``documents`` (``ref``), and so does a known ``published`` value (measured by others, on another card of the
model: a microbenchmark's published result, its ``note`` saying which card, tool and convention; a null one
says in its ``reason`` what was looked for); ``measured`` and ``simulated`` (gpucal on a real or a virtual device; a simulated
value is never a measurement) state ``method``, ``statistic`` and ``n``, with ``p10``/``p90`` and
``byte_convention`` where they apply; ``derived`` says how in its ``note``; ``article`` (the seed article's
assumption), ``estimate`` (an order of magnitude to be replaced) and ``reported`` (what the device, driver
or operating system says of itself) need nothing more. A null value needs a ``reason``.

The typed variants bound ``value``, ``p10`` and ``p90`` by ``gpucal.limits.RANGES``: ``TimeQuantity``
(seconds), ``BytesQuantity``, ``RateQuantity`` (B/s), ``FlopsQuantity`` (FLOP/s), ``IntegerQuantity`` (a
small count: PCIe generation, lanes) and ``FlagQuantity`` (yes or no). Builders use the constructors
(``RateQuantity.measured(...)``, ``.datasheet(value, ref)``, ``.derived(value, note)``, ``.null(reason,
source)``) and write ``to_json()``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from gpucal import limits
from gpucal.profiles.model.base import Name, Omittable, Strict, Text, integer, number

__all__ = ["Source", "Statistic", "Quantity", "TimeQuantity", "BytesQuantity", "RateQuantity", "FlopsQuantity",
           "IntegerQuantity", "FlagQuantity", "SAMPLES_MAX"]

Source = Literal["datasheet", "spec", "published", "article", "derived", "estimate", "measured", "simulated",
                 "reported"]
Statistic = Literal["median", "mean", "min", "max", "fit"]
SAMPLES_MAX = 1_000_000_000  # the most samples a statistic is taken over
CITED = ("datasheet", "spec")
SAMPLED = ("measured", "simulated")

# The rules a quantity's provenance follows, as JSON Schema (the model checks the same in ``_provenance``).
_RULES = {"allOf": [
    {"if": {"properties": {"source": {"enum": list(CITED)}}}, "then": {"required": ["ref"]}},
    {"if": {"properties": {"source": {"const": "published"}, "value": {"not": {"type": "null"}}}},
     "then": {"required": ["ref"]}},
    {"if": {"properties": {"source": {"enum": list(SAMPLED)}}}, "then": {"required": ["method", "statistic", "n"]}},
    {"if": {"properties": {"value": {"type": "null"}}}, "then": {"required": ["reason"]}},
]}


def _required(name: str) -> PydanticCustomError:
    return PydanticCustomError("required", "'{name}' is a required property", {"name": name})


class Quantity(Strict):
    """A value with its provenance. ``value`` is ``None`` where it is unknown (``reason`` says why)."""

    model_config = ConfigDict(json_schema_extra=_RULES)
    unit: ClassVar[str] = ""

    value: Any
    source: Source
    ref: Omittable[Name] = None
    note: Omittable[Text] = None
    reason: Omittable[Text] = None
    method: Omittable[Text] = None
    statistic: Omittable[Statistic] = None
    n: Omittable[integer(1, SAMPLES_MAX)] = None
    p10: Omittable[float] = None
    p90: Omittable[float] = None
    byte_convention: Omittable[Text] = None

    @model_validator(mode="after")
    def _provenance(self) -> Quantity:
        if (self.source in CITED or (self.source == "published" and self.value is not None)) and self.ref is None:
            raise _required("ref")
        if self.source in SAMPLED:
            for key in ("method", "statistic", "n"):
                if getattr(self, key) is None:
                    raise _required(key)
        if self.value is None and self.reason is None:
            raise _required("reason")
        return self

    @property
    def known(self) -> bool:
        """True when the value is known (not null)."""
        return self.value is not None

    @property
    def cited(self) -> str:
        """Where the value came from, in words: ``datasheet (h100-datasheet)``, ``measured``."""
        return f"{self.source} ({self.ref})" if self.ref else self.source

    # -- constructors: each returns a validated quantity; keys left ``None`` are left out --

    @classmethod
    def of(cls, value: Any, source: str, **provenance: Any):
        """A quantity of ``value`` from ``source`` with the given provenance (``None`` keys left out)."""
        return cls.model_validate({"value": value, "source": source,
                                   **{k: v for k, v in provenance.items() if v is not None}})

    @classmethod
    def measured(cls, value: Any, *, method: str, n: int, statistic: str = "median", p10: float | None = None,
                 p90: float | None = None, byte_convention: str | None = None, note: str | None = None,
                 reason: str | None = None, simulated: bool = False):
        """A value gpucal measured (``simulated``: on a virtual device; never a measurement)."""
        return cls.of(value, "simulated" if simulated else "measured", method=method, statistic=statistic, n=n,
                      p10=p10, p90=p90, byte_convention=byte_convention, note=note, reason=reason)

    @classmethod
    def simulated(cls, value: Any, **provenance: Any):
        """A value gpucal measured on a simulated device (``measured``'s keywords)."""
        return cls.measured(value, simulated=True, **provenance)

    @classmethod
    def datasheet(cls, value: Any, ref: str, *, note: str | None = None, reason: str | None = None):
        """A value from the maker's document ``ref`` (a key of the document's ``documents``)."""
        return cls.of(value, "datasheet", ref=ref, note=note, reason=reason)

    @classmethod
    def published(cls, value: Any, ref: str, *, note: str | None = None, reason: str | None = None):
        """A value measured by others on another card of the model, from the published result ``ref``."""
        return cls.of(value, "published", ref=ref, note=note, reason=reason)

    @classmethod
    def spec(cls, value: Any, ref: str, *, note: str | None = None):
        """A value from the standard ``ref`` (PCIe, IEEE 802.3)."""
        return cls.of(value, "spec", ref=ref, note=note)

    @classmethod
    def derived(cls, value: Any, note: str):
        """A value computed from other quoted values; ``note`` says how."""
        return cls.of(value, "derived", note=note)

    @classmethod
    def estimate(cls, value: Any, note: str | None = None):
        """An order-of-magnitude default, to be replaced by a measurement."""
        return cls.of(value, "estimate", note=note)

    @classmethod
    def reported(cls, value: Any, *, note: str | None = None, reason: str | None = None):
        """What the device, driver or operating system reported (a null value: ``reason``, else "not reported")."""
        return cls.of(value, "reported", note=note, reason=reason or ("not reported" if value is None else None))

    @classmethod
    def article(cls, value: Any, note: str | None = None):
        """The seed article's assumption."""
        return cls.of(value, "article", note=note)

    @classmethod
    def null(cls, reason: str, source: str, **provenance: Any):
        """An unknown value and why (``provenance``: what its source needs, e.g. method, statistic, n)."""
        return cls.of(None, source, reason=reason, **provenance)



class TimeQuantity(Quantity):
    """A time in seconds (a latency, an alpha) with its provenance; null with a reason when unknown."""

    unit: ClassVar[str] = "s"
    value: Optional[number(*limits.RANGES["time"])]
    p10: Omittable[number(*limits.RANGES["time"])] = None
    p90: Omittable[number(*limits.RANGES["time"])] = None


class BytesQuantity(Quantity):
    """An amount of memory in bytes with its provenance; null with a reason when unknown."""

    unit: ClassVar[str] = "B"
    value: Optional[number(*limits.RANGES["bytes"])]
    p10: Omittable[number(*limits.RANGES["bytes"])] = None
    p90: Omittable[number(*limits.RANGES["bytes"])] = None


class RateQuantity(Quantity):
    """A bandwidth in B/s with its provenance; null with a reason when unknown."""

    unit: ClassVar[str] = "B/s"
    value: Optional[number(*limits.RANGES["rate"])]
    p10: Omittable[number(*limits.RANGES["rate"])] = None
    p90: Omittable[number(*limits.RANGES["rate"])] = None


class FlopsQuantity(Quantity):
    """A rate in FLOP/s with its provenance; null with a reason when unknown."""

    unit: ClassVar[str] = "FLOP/s"
    value: Optional[number(*limits.RANGES["flops"])]
    p10: Omittable[number(*limits.RANGES["flops"])] = None
    p90: Omittable[number(*limits.RANGES["flops"])] = None


SMALL_COUNT_MAX = 64  # a PCIe generation or width


class IntegerQuantity(Quantity):
    """A small count (PCIe generation, PCIe lanes) with its provenance; null with a reason when unknown."""

    value: Optional[integer(1, SMALL_COUNT_MAX)]
    p10: Omittable[number(1, SMALL_COUNT_MAX)] = None
    p90: Omittable[number(1, SMALL_COUNT_MAX)] = None


class FlagQuantity(Quantity):
    """A yes/no fact with its provenance; null with a reason when unknown."""

    value: Optional[bool]
