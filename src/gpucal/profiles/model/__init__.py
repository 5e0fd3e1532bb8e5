"""The typed profile model: gpucal's documents as pydantic models, the single source of truth of the format.

A document is a ``Profile`` (``gpucal.profile/1``), a ``LinkPreset`` (``gpucal.link/1``) or a ``ModelDoc``
(``gpucal.model/1``). Every figure in them is a ``Quantity`` (``TimeQuantity``, ``BytesQuantity``,
``RateQuantity``, ``FlopsQuantity``, ``IntegerQuantity``, ``FlagQuantity``) that says where it came from;
every measured alpha/beta fit is one ``MeasuredFit`` (``LinkEntry``, ``NetworkEntry``,
``CollectiveEntry``; ``CopyFit`` for the copy series), its regimes ``FitPiece``s. ``validate(kind, data)``
builds one from parsed JSON, ``json_schema()`` is the JSON Schema that ``profiles/schema.json`` holds
(``python -m gpucal.profiles.model > src/gpucal/profiles/schema.json`` writes it), and
``gpucal.profiles.model.errors.describe`` says what is wrong with a document in one line.

Why pydantic (v2) rather than msgspec: its errors carry the location as a path of keys and indices, which
gives the one-line ``FILE: devices[0].memory_bytes.value: ...`` message; it generates a JSON Schema that
keeps every constraint (bounds, patterns, lengths, ``additionalProperties: false``), so the published schema
comes from the same definitions that validate; its ``python-re`` regex engine checks text with Python's
``re``, which sees the lone surrogates that the schema's text pattern refuses; and it is widely used and
kept. msgspec is faster but reports locations as text, generates no constraints for patterns on keys, and
has no Python regex engine.
"""

from __future__ import annotations

from typing import Any

from gpucal.profiles.model.base import Strict, walk
from gpucal.profiles.model.decode import DecodeAttention, DecodeGemmCurve, DecodeGemmRow, DecodeTerms, LaunchCosts
from gpucal.profiles.model.device import FLOPS_MODES, Device, HostLink, PeerLink
from gpucal.profiles.model.documents import (FORMATS, LINK_FORMAT, MODEL_FORMAT, MODELS, PROFILE_FORMAT, Cited,
                                             Cluster, ClusterHost, HostInfo, LinkPreset, ModelDoc, PlanDefaults,
                                             Profile)
from gpucal.profiles.model.entries import (P2P, Bidirectional, CollectiveEntry, CopyFit, KernelEntry, LinkEntry,
                                           NetworkEntry)
from gpucal.profiles.model.fit import AlphaBeta, FitPiece, FitRecord, MeasuredFit
from gpucal.profiles.model.quantity import (BytesQuantity, FlagQuantity, FlopsQuantity, IntegerQuantity, Quantity,
                                            RateQuantity, TimeQuantity)
from gpucal.profiles.model.schema import json_schema, schema_text

__all__ = ["FLOPS_MODES", "FORMATS", "LINK_FORMAT", "MODEL_FORMAT", "MODELS", "PROFILE_FORMAT", "AlphaBeta",
           "Bidirectional", "BytesQuantity", "DecodeAttention", "DecodeGemmCurve", "DecodeGemmRow", "DecodeTerms",
           "LaunchCosts", "Cited", "Cluster", "ClusterHost", "CollectiveEntry", "CopyFit",
           "Device", "FitPiece", "FitRecord", "FlagQuantity", "FlopsQuantity", "HostInfo", "HostLink",
           "IntegerQuantity", "KernelEntry", "LinkEntry", "LinkPreset", "MeasuredFit", "ModelDoc", "NetworkEntry",
           "P2P", "PeerLink", "PlanDefaults", "Profile", "Quantity", "RateQuantity", "Strict", "TimeQuantity",
           "Typed", "json_schema", "schema_text", "validate", "walk"]

Typed = Profile | LinkPreset | ModelDoc  # a document as the model holds it


def validate(kind: str, data: Any) -> Typed:
    """The typed document of ``kind`` (profile, link, model) from parsed JSON; raises
    ``pydantic.ValidationError`` (``errors.describe`` words its first error)."""
    return MODELS[kind].model_validate(data)
