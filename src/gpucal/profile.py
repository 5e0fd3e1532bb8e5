"""The profile contract: load, validate and save gpucal's JSON documents.

Three kinds of document share one versioned format and one JSON Schema (``profiles/schema.json``):
hardware profiles (``gpucal.profile/1``, what ``calibrate`` writes and ``plan`` reads), link presets
(``gpucal.link/1``) and model descriptions (``gpucal.model/1``). Built-in documents ship as package
data under ``gpucal.profiles`` (``datasheet/``, ``article/``, ``measured/``, ``links/``) and are found
by name; anything else is a file path.

Every error names the file and the field (``ProfileError``). Writing is atomic (a temporary file in
the same folder, then a rename) and never replaces an existing file unless ``force`` is given.

Format history:
- 1 (gpucal 0.1): first version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from gpucal.errors import ProfileError

PROFILE_FORMAT = "gpucal.profile/1"
LINK_FORMAT = "gpucal.link/1"
MODEL_FORMAT = "gpucal.model/1"
FORMATS = {PROFILE_FORMAT: "profile", LINK_FORMAT: "link", MODEL_FORMAT: "model"}

# Package-data folders per document kind, in lookup order.
_FOLDERS = {"profile": ("article", "datasheet", "measured"), "link": ("links",)}
_MESSAGE_MAX_CHARS = 240


@dataclass(frozen=True)
class Document:
    """A validated document: its kind (profile, link, model), its name, where it came from."""

    kind: str
    name: str
    origin: str
    data: dict[str, Any]


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _field(path: Any) -> str | None:
    """A jsonschema path as ``devices[0].memory_bytes.value``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _short(message: str) -> str:
    message = " ".join(message.split())
    if len(message) > _MESSAGE_MAX_CHARS:
        message = message[: _MESSAGE_MAX_CHARS - 3] + "..."
    return message


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(resources.files("gpucal.profiles").joinpath("schema.json").read_text("utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema() -> dict[str, Any]:
    """The shipped JSON Schema, as a dict."""
    return _validator().schema


def parse(text: str | bytes, origin: str) -> Any:
    """JSON text to Python values; NaN and Infinity are refused. Errors name ``origin``."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ProfileError(origin, None, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(origin, None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise ProfileError(origin, None, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ProfileError(origin, None, "not valid JSON: nested too deeply") from None


def _walk_refs(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every (field, ref) of a quantity that cites a document."""
    if isinstance(node, dict):
        if isinstance(node.get("ref"), str) and "source" in node:
            yield path, node["ref"]
        for key, value in node.items():
            if key != "documents":
                yield from _walk_refs(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_refs(value, f"{path}[{i}]")


def validate(data: Any, origin: str) -> Document:
    """Check ``data`` against the schema and the rules a schema cannot state; return a Document.

    Raises ``ProfileError`` naming ``origin`` and the first offending field.
    """
    if not isinstance(data, dict):
        raise ProfileError(origin, None, f"expected a JSON object at the top level, got {type(data).__name__}")
    fmt = data.get("schema")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        known = ", ".join(FORMATS)
        raise ProfileError(origin, "schema", f"unknown document format {fmt!r}; this gpucal reads {known}")
    import jsonschema

    try:
        error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    except RecursionError:
        raise ProfileError(origin, None, "nested too deeply") from None
    if error is not None:
        raise ProfileError(origin, _field(error.absolute_path), _short(error.message))
    kind = FORMATS[fmt]
    documents = data.get("documents", {})
    for field, ref in _walk_refs(data, ""):
        if ref not in documents:
            raise ProfileError(origin, f"{field}.ref", f"cites {ref!r}, which is not in 'documents'")
    if kind == "model" and data["heads"] % data["kv_heads"]:
        raise ProfileError(origin, "kv_heads", f"{data['kv_heads']} does not divide heads ({data['heads']})")
    return Document(kind=kind, name=data["name"], origin=origin, data=data)


def read(path: str | os.PathLike) -> Any:
    """Read and parse the JSON file at ``path`` (not validated). Errors name the file."""
    origin = str(path)
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise ProfileError(origin, None, "is a folder, not a file") from None
    except OSError as exc:
        raise ProfileError(origin, None, f"cannot read: {exc.strerror or exc}") from None
    return parse(raw, origin)


def load(path: str | os.PathLike) -> Document:
    """Read, parse and validate the document at ``path``."""
    return validate(read(path), str(path))


def builtin_names(kind: str) -> dict[str, str]:
    """Built-in documents of ``kind`` (profile, link): name -> package-data folder."""
    root = resources.files("gpucal.profiles")
    names: dict[str, str] = {}
    for folder in _FOLDERS[kind]:
        directory = root.joinpath(folder)
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                names.setdefault(entry.name[: -len(".json")], folder)
    return names


def load_builtin(kind: str, name: str) -> Document:
    """The built-in document ``name`` of ``kind``; ``KeyError`` if there is none."""
    folder = builtin_names(kind)[name]
    entry = resources.files("gpucal.profiles").joinpath(folder, f"{name}.json")
    origin = f"{folder}/{name}.json"
    return validate(parse(entry.read_bytes(), origin), origin)


@lru_cache(maxsize=64)
def datasheet_for(device_name: str) -> Document | None:
    """The built-in datasheet profile whose device has this name (as the driver reports it), if any.
    (Cached: the probes ask once per case.)"""
    wanted = device_name.strip().lower()
    for name, folder in builtin_names("profile").items():
        if folder != "datasheet":
            continue
        doc = load_builtin("profile", name)
        if any(d.get("name", "").lower() == wanted for d in doc.data["devices"]):
            return doc
    return None


def looks_like_path(text: str) -> bool:
    """True when ``text`` names a file rather than a built-in: a path separator or a .json suffix."""
    return text.endswith(".json") or os.sep in text or "/" in text or Path(text).is_file()


def dumps(data: dict[str, Any]) -> str:
    """The canonical text of a document: two-space indent, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def save(data: dict[str, Any], path: str | os.PathLike, *, force: bool = False) -> Path:
    """Validate ``data`` and write it to ``path`` atomically (``write_atomic``)."""
    validate(data, str(path))
    return write_atomic(path, dumps(data), force=force)


def write_atomic(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    """``gpucal.files.write_atomic``: here too, for the callers that write documents."""
    from gpucal.files import write_atomic as write

    return write(path, text, force=force)
