"""The building blocks of the profile model: the strict base model, text, names and bounded numbers.

Every model refuses keys it does not know (``extra="forbid"``), takes JSON values as they are (``strict``:
no ``"24"`` for 24, no ``true`` for 1) and is immutable. Text fields refuse the characters of
``gpucal.limits.CONTROL_CHARACTERS`` through ``gpucal.limits.TEXT_PATTERN``, matched by Python's ``re``
(pydantic-core's own engine cannot see a lone surrogate), so that the generated schema carries the same
pattern. Bounds come from ``gpucal.limits``.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, GetPydanticSchema, PlainSerializer, WrapValidator
from pydantic_core import PydanticCustomError, core_schema

from gpucal import limits

__all__ = ["Strict", "Open", "Omittable", "Text", "Printable", "Name", "number", "integer", "Point", "walk"]

T = TypeVar("T")


class Strict(BaseModel):
    """A part of a document: unknown keys refused, JSON types taken as they are, immutable once built."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, regex_engine="python-re")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this part as gpucal writes it: exactly the keys that were given, no others."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


class Open(Strict):
    """A part that also keeps keys the model does not name (a profile's ``host`` provenance, ``cluster``)."""

    model_config = ConfigDict(extra="allow")


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("null", "None is not allowed here: leave the key out instead")
    return value


def _drop_null(schema: dict[str, Any]) -> None:
    """The JSON Schema of an omittable field: its type alone (absent is allowed, null is not)."""
    schema.pop("default", None)
    choices = schema.pop("anyOf", None)
    if choices is not None:
        schema.update(next(c for c in choices if c.get("type") != "null"))


# A key that may be left out but is never null: ``None`` on the model means "absent".
Omittable = Annotated[Optional[T], BeforeValidator(_refuse_null), Field(json_schema_extra=_drop_null)]

Text = Annotated[str, Field(max_length=2000, pattern=limits.TEXT_PATTERN)]  # shown to people
Printable = Annotated[str, Field(pattern=limits.TEXT_PATTERN)]  # a printable string of any length
Name = Annotated[str, Field(pattern="^[a-z0-9][a-z0-9._-]*$", max_length=100)]  # a document's name, a key


def _keep_int(value: Any, handler: Any) -> Any:
    """A number checked as a float but kept as given: an integer stays an integer when written back."""
    checked = handler(value)
    return value if type(value) is int else checked


def _as_given(value: float) -> float:
    """A number written back as it was read (an integer as an integer)."""
    return value


def _integral(value: Any) -> Any:
    """JSON Schema's integer: 4.0 is the integer 4."""
    exact = type(value) is float and value.is_integer() and abs(value) <= 2 ** 53  # beyond: a float, out of range
    return int(value) if exact else value


def number(lo: float | None, hi: float, *, above: float | None = None, description: str | None = None) -> Any:
    """A finite number in [lo, hi] (or in (above, hi]): the annotated type of a field."""
    bounds = Field(gt=above, le=hi, description=description) if above is not None else \
        Field(ge=lo, le=hi, description=description)
    return Annotated[float, bounds, WrapValidator(_keep_int), PlainSerializer(_as_given, return_type=Any)]


def integer(lo: int, hi: int, *, description: str | None = None) -> Any:
    """A whole number in [lo, hi]: the annotated type of a field."""
    return Annotated[int, Field(ge=lo, le=hi, description=description), BeforeValidator(_integral)]


_POINT_BYTES = integer(0, int(limits.RANGES["bytes"][1]))
_POINT_SECONDS = number(0, limits.RANGES["time"][1])
_POINT_MORE = number(0, limits.RANGES["bytes"][1])


def _point_schema(_source: Any, handler: Any) -> core_schema.CoreSchema:
    items = [handler.generate_schema(t) for t in (_POINT_BYTES, _POINT_SECONDS, _POINT_MORE)]
    return core_schema.no_info_before_validator_function(
        lambda v: tuple(v) if isinstance(v, list) else v,
        core_schema.tuple_schema(items, variadic_item_index=2, min_length=2))


# One measured size of a sweep: [bytes, median seconds, ...more numbers].
Point = Annotated[tuple, GetPydanticSchema(_point_schema),
                  Field(json_schema_extra={"description": "[bytes, median seconds] of one measured size"})]


def walk(node: Any, path: str = ""):
    """Every (dotted path, part) under ``node`` (the models, and the plain objects an Open part keeps), depth first in
    field order: the parts a rule reads."""
    if isinstance(node, BaseModel):
        yield path, node
        for key in type(node).model_fields:
            value = getattr(node, key)
            if value is not None:
                yield from walk(value, f"{path}.{key}" if path else key)
        for key, value in (node.model_extra or {}).items():  # an Open part's keys the model does not name
            yield from walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    elif isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
