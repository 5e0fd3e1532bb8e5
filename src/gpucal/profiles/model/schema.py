"""The JSON Schema of every document, generated from the model (``profiles/schema.json`` is its copy).

``json_schema()`` builds it: pydantic's schema of the three documents, with each part's definition named
in snake case (``Device`` is ``$defs/device``), without pydantic's generated titles and defaults, under a
top level that picks the document by its ``schema`` field. ``python -m gpucal.profiles.model`` prints it;
``tests/unit/test_profile_model.py`` checks that the shipped copy is that text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic.json_schema import models_json_schema

from gpucal.profiles.model.documents import FORMATS, MODELS

__all__ = ["SCHEMA_ID", "json_schema", "schema_text"]

SCHEMA_ID = "https://gpucal.invalid/schema/1.json"
_TITLE = "gpucal documents, format 1: hardware profiles, link presets, model descriptions"
_DESCRIPTION = (
    "Generated from gpucal.profiles.model (python -m gpucal.profiles.model); do not edit. SI units with the unit "
    "in every key (_s, _bytes, _Bps, _flops); decimal GB. Every measured or quoted value is a quantity object "
    "that says where it came from. The 'schema' field picks the document kind; readers reject a major version "
    "they do not know. Every number lies in a physical range (gpucal.limits.RANGES, MAX_DEVICES; docs/limits.md) "
    "and no text holds a control character.")
# Keywords whose value maps names to schemas (a property named "title" is no title keyword).
_NAMED = ("properties", "$defs", "patternProperties")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


def _clean(node: Any, names: dict[str, str]) -> Any:
    """``node`` without pydantic's titles and defaults, each $ref renamed by ``names``."""
    if isinstance(node, list):
        return [_clean(item, names) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "default"):
            continue
        if key == "$ref":
            out[key] = "#/$defs/" + names[value.rsplit("/", 1)[1]]
        elif key in _NAMED:
            out[key] = {(names.get(k, k) if key == "$defs" else k): _clean(v, names) for k, v in value.items()}
        else:
            out[key] = _clean(value, names)
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every gpucal document, as a dict."""
    _, generated = models_json_schema([(model, "validation") for model in MODELS.values()],
                                      ref_template="#/$defs/{model}")
    defs = generated["$defs"]
    names = {name: _snake(name) for name in defs}
    kinds = {kind: fmt for fmt, kind in FORMATS.items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": _TITLE,
        "description": _DESCRIPTION,
        "type": "object",
        "required": ["schema"],
        "properties": {"schema": {"enum": list(FORMATS)}},
        "allOf": [{"if": {"properties": {"schema": {"const": kinds[kind]}}, "required": ["schema"]},
                   "then": {"$ref": f"#/$defs/{names[model.__name__]}"}} for kind, model in MODELS.items()],
        "$defs": {names[k]: _clean(v, names) for k, v in sorted(defs.items(), key=lambda kv: names[kv[0]])},
    }


def schema_text() -> str:
    """The text of ``profiles/schema.json``: ``json_schema()``, two-space indent, a final newline."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
