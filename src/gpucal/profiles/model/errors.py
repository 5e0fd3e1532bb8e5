"""A validation error of the model in one line: the dotted field at fault and what is wrong with it.

pydantic reports where (``loc``) and what (``type``, ``ctx``); this names the field as a reader writes it
(``devices[0].memory_bytes.value``) and says what is wrong in the words of JSON Schema, so that a message
reads the same whichever tool checked the file. A missing or an unknown key is the fault of the object
that holds it; a bad key of a table (``dense_flops.fp17``) is the table's.
"""

from __future__ import annotations

import re
from typing import Any

from gpucal import limits

__all__ = ["CONTROL_CHARACTERS", "field_name", "describe"]

# What the text fields refuse (gpucal.limits.CONTROL_CHARACTERS), to say which character and where.
CONTROL_CHARACTERS = re.compile("[" + limits.CONTROL_CHARACTERS + "]")
_TYPES = {"float_type": "number", "int_type": "integer", "int_from_float": "integer", "string_type": "string",
          "bool_type": "boolean", "dict_type": "object", "model_type": "object", "model_attributes_type": "object",
          "list_type": "array", "tuple_type": "array", "literal_error": None}
_BOUNDS = {"greater_than_equal": ("ge", "is less than the minimum of"),
           "greater_than": ("gt", "is less than or equal to the minimum of"),
           "less_than_equal": ("le", "is greater than the maximum of"),
           "less_than": ("lt", "is greater than or equal to the maximum of")}
_SEPARATORS = ("[key]",)


def field_name(path: Any) -> str | None:
    """A path (keys and indices) as ``devices[0].memory_bytes.value``; ``None`` for the document itself."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _number(value: Any) -> str:
    return repr(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 1e16 else repr(value)


def _control(value: Any) -> str | None:
    if isinstance(value, str):
        bad = CONTROL_CHARACTERS.search(value)
        if bad:
            return (f"contains the control character U+{ord(bad.group()):04X} at character {bad.start() + 1}; "
                    "text fields may not hold control characters or bidirectional overrides")
    return None


def describe(error: dict[str, Any]) -> tuple[str | None, str]:
    """(field, what is wrong) of one pydantic error (an item of ``ValidationError.errors()``)."""
    loc, kind, ctx = list(error["loc"]), error["type"], error.get("ctx") or {}
    value = error.get("input")
    if loc and loc[-1] in _SEPARATORS:  # a key of a table: the table is at fault
        loc = loc[:-2]
        return field_name(loc), f"{value!r} is not an accepted key: {error['msg'].lower()}"
    if "at" in ctx:  # a rule of the model names its own field
        return ctx["at"], error["msg"]
    if kind == "missing":
        return field_name(loc[:-1]), f"'{loc[-1]}' is a required property"
    if kind == "extra_forbidden":
        return field_name(loc[:-1]), f"Additional properties are not allowed ({loc[-1]!r} was unexpected)"
    where = field_name(loc)
    if kind in ("string_pattern_mismatch", "string_unicode"):
        return where, _control(value) or f"{value!r} does not match {ctx.get('pattern', 'the text pattern')!r}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return where, f"{_number(value)} {words} {_number(ctx[key])}"
    if kind == "literal_error":
        return where, f"{value!r} is not one of {ctx.get('expected')}"
    if kind in ("too_short", "string_too_short"):
        least = ctx.get("min_length")
        return where, "should be non-empty" if least == 1 else f"has {ctx.get('actual_length')}, fewer than {least}"
    if kind in ("too_long", "string_too_long"):
        return where, f"is too long: {ctx.get('actual_length', len(value) if hasattr(value, '__len__') else '?')}, " \
                      f"the most accepted is {ctx.get('max_length')}"
    if kind in _TYPES:
        return where, f"{value!r} is not of type '{_TYPES[kind]}'"
    return where, error["msg"]
