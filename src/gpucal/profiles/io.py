"""The profile contract: load, validate and save gpucal's JSON documents.

Three kinds of document share one versioned format, defined by the typed model
(``gpucal.profiles.model``) and published as the JSON Schema generated from it (``profiles/schema.json``):
hardware profiles (``gpucal.profile/1``, what ``calibrate`` writes and ``plan`` reads), link presets
(``gpucal.link/1``) and model descriptions (``gpucal.model/1``). Built-in documents ship as package
data under ``gpucal.profiles`` (``datasheet/``, ``article/``, ``measured/``, ``links/``) and are found
by name; anything else is a file path. A loaded ``Document`` holds the typed document (``doc.model``) and
the JSON it came from (``doc.data``, for writing).

Every error names the file and the field (``ProfileError``). Reading takes only regular files, at most
``gpucal.limits.MAX_INPUT_FILE_BYTES`` of them, and never blocks (a FIFO, ``/dev/zero``: refused); parsing
refuses NaN, infinities (``1e999``) and absurdly long integers, naming the field. Writing is atomic (a
temporary file in the same folder, then a rename) and never replaces an existing file unless ``force`` is
given.

A bare name (no ``/``, no ``.json``) that is a built-in is the built-in, even where a file of that name
lies in the current folder (``ambiguity_note`` says so, for the command to print); ``./NAME`` is the file.

Format history (the ``schema`` field; a reader refuses a major version it does not know, by name):
- 1 (gpucal 0.1): first version; every later addition to it is optional, so every file that loaded before
  still loads (docs/profiles.md, "Format history").
A document of an older format is brought up to date before it is validated: ``MIGRATIONS`` maps an old
``schema`` value to a function from the old document (a dict) to the next format's; format 1 has none.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gpucal import limits
from gpucal.errors import ProfileError
from gpucal.files import write_atomic as _write_atomic
from gpucal.profiles.model import Profile, Typed
from gpucal.profiles.model import validate as validate_model
from gpucal.profiles.model.documents import FORMATS, LINK_FORMAT, MODEL_FORMAT, PROFILE_FORMAT
from gpucal.profiles.model.errors import CONTROL_CHARACTERS, describe, field_name

__all__ = ["CONTROL_CHARACTERS", "FORMATS", "LINK_FORMAT", "MIGRATIONS", "MODEL_FORMAT", "PROFILE_FORMAT", "Document",
           "ambiguity_note", "builtin_kind", "builtin_names", "datasheet_for", "dumps", "exists", "is_bare", "load",
           "load_builtin", "looks_like_path", "parse", "read", "read_bytes", "save", "schema", "shown_name",
           "validate", "write_atomic"]

# Package-data folders per document kind, in lookup order.
_FOLDERS = {"profile": ("article", "datasheet", "measured"), "link": ("links",)}
_MESSAGE_MAX_CHARS = 240
_NAME_SHOWN_CHARS = 120  # a longer file name is shown cut, with its length
# An old format's ``schema`` -> the function that turns such a document into the next format's (a dict to a
# dict, the input left as it was). Applied before validation, as often as the chain goes.
MIGRATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


@dataclass(frozen=True)
class Document:
    """A validated document: its kind (profile, link, model), its name, where it came from, the JSON it was
    read from (``data``) and the typed document (``model``).

    ``folder`` is the folder of the file it was read from (``None`` for a built-in), against which its
    references (``plan_defaults.link``) are resolved. ``typed`` is the model as validated; a Document built
    from a dict alone validates ``data`` the first time ``model`` is read (``ProfileError`` naming
    ``origin`` if it does not validate)."""

    kind: str
    name: str
    origin: str
    data: dict[str, Any]
    folder: str | None = dataclass_field(default=None, compare=False)
    typed: Typed | None = dataclass_field(default=None, compare=False, repr=False)

    @property
    def model(self) -> Typed:
        """The typed document: a ``Profile``, a ``LinkPreset`` or a ``ModelDoc``."""
        if self.typed is None:
            object.__setattr__(self, "typed", _typed(self.kind, self.data, self.origin))
        return self.typed

    @property
    def profile(self) -> Profile:
        """The typed hardware profile (``model``, for a document known to be a profile)."""
        found = self.model
        if not isinstance(found, Profile):
            raise ProfileError(self.origin, "schema", f"is a {self.kind} document, not a hardware profile")
        return found


def shown_name(path: str | os.PathLike) -> str:
    """``path`` as error messages show it: cut, with its length, when it is very long."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    if len(text) > _NAME_SHOWN_CHARS:
        return f"{text[:_NAME_SHOWN_CHARS // 2]}...({len(text):,} characters)"
    return text


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


class _Refused:
    """A number the parser refused (``1e999``, a 400-digit integer), kept in place so that the walk that
    follows the parse can name its field."""

    __slots__ = ("token", "why")

    def __init__(self, token: str, why: str):
        self.token, self.why = token, why


def _parse_float(token: str) -> Any:
    value = float(token)
    if math.isfinite(value):
        return value
    return _Refused(token, "is not a finite number (too large for a float)")


def _parse_int(token: str) -> Any:
    digits = len(token.lstrip("-"))
    if digits > limits.MAX_JSON_INT_DIGITS:
        return _Refused(token, f"is an integer of {digits:,} digits, out of any range gpucal reads")
    return int(token)


def _first_refused(value: Any) -> tuple[str | None, _Refused] | None:
    """(field, number) of the first refused number in ``value``, in document order; ``None`` if none.
    (Iterative: the parser has already refused what is nested too deeply for the stack.)"""
    stack: list[tuple[tuple, Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Refused):
            return field_name(path), node
        if isinstance(node, dict):
            stack.extend(((*path, k), v) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(node))))
    return None


def _short(message: str) -> str:
    message = " ".join(message.split())
    if len(message) > _MESSAGE_MAX_CHARS:
        message = message[: _MESSAGE_MAX_CHARS - 3] + "..."
    return message


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The shipped JSON Schema (``profiles/schema.json``, generated from the model), as a dict."""
    return json.loads(resources.files("gpucal.profiles").joinpath("schema.json").read_text("utf-8"))


def parse(text: str | bytes, origin: str) -> Any:
    """JSON text to Python values; NaN, Infinity, numbers that overflow a float (``1e999``) and integers of
    more than 40 digits are refused, naming the field. Errors name ``origin``."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float, parse_int=_parse_int)
    except UnicodeDecodeError:
        raise ProfileError(origin, None, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(origin, None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise ProfileError(origin, None, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ProfileError(origin, None, "not valid JSON: nested too deeply") from None
    refused = _first_refused(value)
    if refused is not None:
        where, number = refused
        token = number.token if len(number.token) <= 24 else number.token[:12] + "..."
        raise ProfileError(origin, where, f"the number {token} {number.why}")
    return value


def _typed(kind: str, data: Any, origin: str) -> Typed:
    """The typed document of ``kind``; ``ProfileError`` naming ``origin`` and the first field at fault."""
    try:
        return validate_model(kind, data)
    except ValidationError as exc:
        field, detail = describe(exc.errors(include_url=False)[0])
        raise ProfileError(origin, field, _short(detail)) from None
    except RecursionError:
        raise ProfileError(origin, None, "nested too deeply") from None


def _migrated(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` brought to a format this gpucal reads, through ``MIGRATIONS`` (unchanged if none applies)."""
    for _ in range(len(MIGRATIONS)):
        fmt = data.get("schema")
        if not isinstance(fmt, str) or fmt not in MIGRATIONS:
            break
        data = MIGRATIONS[fmt](data)
    return data


def validate(data: Any, origin: str) -> Document:
    """Check ``data`` against the model (the schema and the rules a schema cannot state); return a Document.

    A document of an older format is migrated first (``MIGRATIONS``). Raises ``ProfileError`` naming
    ``origin`` and the first offending field.
    """
    if not isinstance(data, dict):
        raise ProfileError(origin, None, f"expected a JSON object at the top level, got {type(data).__name__}")
    data = _migrated(data)
    fmt = data.get("schema")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        known = ", ".join(FORMATS)
        raise ProfileError(origin, "schema", f"unknown document format {fmt!r}; this gpucal reads {known}")
    kind = FORMATS[fmt]
    document = _typed(kind, data, origin)
    return Document(kind=kind, name=document.name, origin=origin, data=data, typed=document)


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_O_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def read_bytes(path: str | os.PathLike, limit: int = limits.MAX_INPUT_FILE_BYTES) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    Never blocks and never reads without end: the file is opened without blocking (a FIFO with no writer
    opens at once), and anything but a regular file (a folder, a FIFO, ``/dev/zero``, a socket) is refused
    before a byte is read; at most ``limit`` + 1 bytes are read, whatever the file claims its size is.
    Errors are ``ProfileError`` naming the file (cut when very long)."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    origin = shown_name(text)
    if not text:
        raise ProfileError("''", None, "an empty file name")
    if len(text) > limits.MAX_PATH_CHARS:
        raise ProfileError(origin, None, f"the name is {len(text):,} characters long; a path may have at most "
                           f"{limits.MAX_PATH_CHARS:,}")
    def refuse_kind(mode: int) -> None:
        if stat.S_ISDIR(mode):
            raise ProfileError(origin, None, "is a folder, not a file")
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise ProfileError(origin, None, f"is {what}; gpucal reads documents only from regular files")

    try:  # what it is, before opening: opening a device may act (a tape rewinds, a watchdog arms)
        before = os.stat(text)
        refuse_kind(before.st_mode)
        fd = os.open(text, _O_FLAGS)
    except ProfileError:
        raise
    except ValueError:  # an embedded NUL
        raise ProfileError(origin, None, "the name contains a NUL character") from None
    except OSError as exc:
        raise ProfileError(origin, None, f"cannot read: {_why(exc)}") from None
    try:
        info = os.fstat(fd)
        refuse_kind(info.st_mode)
        if (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino):
            raise ProfileError(origin, None, "changed while it was being opened; try again")
        too_big = ProfileError(origin, None, f"is larger than {limits.MAX_INPUT_FILE_BYTES:,} bytes, the most "
                               "gpucal reads of a profile, link, model or config.json")
        if info.st_size > limit:
            raise too_big
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(limit + 1 - total, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise too_big
        return b"".join(chunks)
    except OSError as exc:
        raise ProfileError(origin, None, f"cannot read: {_why(exc)}") from None
    finally:
        os.close(fd)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long for the file system"
    return exc.strerror or str(exc)


def read(path: str | os.PathLike) -> Any:
    """Read and parse the JSON file at ``path`` (not validated): a regular file of at most
    ``MAX_INPUT_FILE_BYTES`` (``read_bytes``). Errors name the file."""
    return parse(read_bytes(path), shown_name(path))


def load(path: str | os.PathLike) -> Document:
    """Read, parse and validate the document at ``path``."""
    doc = validate(read(path), shown_name(path))
    return replace(doc, folder=os.path.dirname(os.path.abspath(os.fspath(path))))


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
        if any(d.name.lower() == wanted for d in doc.profile.devices):
            return doc
    return None


def exists(text: str) -> bool:
    """True when something (a file, a folder, a FIFO) is called ``text``; never raises (a name too long,
    a NUL character: nothing is)."""
    try:
        os.lstat(text)
    except (OSError, ValueError):
        return False
    return True


def is_bare(text: str) -> bool:
    """True when ``text`` could be a built-in's name: no path separator, no .json suffix."""
    return not (text.endswith(".json") or os.sep in text or "/" in text or (os.altsep and os.altsep in text))


def builtin_kind(text: str, kind: str | None = None) -> str | None:
    """The kind (profile, link) of the built-in named ``text`` (of ``kind`` only, when given), or ``None``."""
    for each in (kind,) if kind else tuple(_FOLDERS):
        if each in _FOLDERS and text in builtin_names(each):
            return each
    return None


def looks_like_path(text: str) -> bool:
    """True when ``text`` names a file rather than a built-in: a path separator or a .json suffix; or a bare
    name that is no built-in profile or link preset but names something in the current folder. A bare name
    that is a built-in is the built-in (``ambiguity_note`` says when a file of that name lies here too);
    ``./NAME`` is the file."""
    if not is_bare(text):
        return True
    return builtin_kind(text) is None and exists(text)


def ambiguity_note(text: str, kind: str | None = None) -> str | None:
    """Where the bare name ``text`` is a built-in and also names something in the current folder: one line
    saying that the built-in was taken, for the command to print; ``None`` otherwise."""
    if not is_bare(text) or not exists(text):
        return None
    found = builtin_kind(text, kind) or builtin_kind(text)
    if found is None:
        return None
    what = "link preset" if found == "link" else "profile"
    return (f"{text} is the built-in {what}; the file {text} in this folder was not read "
            f"(write ./{text} to use the file)")


def dumps(data: dict[str, Any]) -> str:
    """The canonical text of a document: two-space indent, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def save(data: dict[str, Any], path: str | os.PathLike, *, force: bool = False) -> Path:
    """Validate ``data`` and write it to ``path`` atomically (``write_atomic``)."""
    validate(data, str(path))
    return write_atomic(path, dumps(data), force=force)


def write_atomic(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    """``gpucal.files.write_atomic``: here too, for the callers that write documents."""
    return _write_atomic(path, text, force=force)
