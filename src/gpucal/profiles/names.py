"""Names and files of documents: from what a user types (a built-in's name, a file path) to a loaded document.

Every failure is an ``InputError`` whose message starts with the flag it came from, suggests close matches
for unknown names, and names the file and field for bad files.

A bare name (no ``/``, no ``.json``) that is a built-in (a profile, a link preset, a model preset) is the
built-in, even where a file of that name lies in the current folder; ``ambiguity_note`` then says which was
taken, for the command to print (``gpucal.cli`` does, once). ``./NAME`` is the file. A profile's own
references (``plan_defaults.link``) name a built-in or a file in the profile's own folder, never an absolute
path or one that climbs out of it (``profile_reference``); an error about such a file never repeats its
content.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import replace
from typing import Any

from gpucal.errors import InputError, ProfileError
from gpucal.plan.models import PRESETS
from gpucal.profiles import io as profiles

__all__ = ["ambiguity_note", "profile_reference", "quoted", "resolve_document", "suggest"]


def suggest(name: str, names) -> str:
    """'; did you mean a, b?' for the names closest to ``name``, or ''."""
    close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def quoted(text: str) -> str:
    """``text`` quoted for a message, cut when very long."""
    return repr(text) if len(text) <= 100 else profiles.shown_name(text)


def ambiguity_note(text: str, kind: str | None = None) -> str | None:
    """Where the bare name ``text`` (given for a document of ``kind``: profile, link, model; any when
    ``None``) is a built-in and also names a file in the current folder: the line saying that the built-in was
    taken, for the command to print (to stderr, once); ``None`` otherwise."""
    if kind == "model" or (kind is None and text in PRESETS):
        if text in PRESETS and profiles.is_bare(text) and profiles.exists(text):
            return (f"{text} is the built-in model preset; the file {text} in this folder was not read "
                    f"(write ./{text} to use the file)")
        return None
    return profiles.ambiguity_note(text, kind)


def resolve_document(text: str, flag: str, kind: str) -> profiles.Document:
    """The document named ``text`` (a built-in name or a file path) that must be of ``kind``. A bare name
    that is a built-in is the built-in (``ambiguity_note``: the returned document's ``note``)."""
    if profiles.looks_like_path(text):
        try:
            doc = profiles.load(text)
        except ProfileError as exc:
            raise InputError(f"{flag}: {exc}") from None
    else:
        names = profiles.builtin_names(kind)
        if text not in names:
            other = profiles.builtin_kind(text)
            what = {"link": " (a built-in link preset)", "profile": " (a built-in profile)"}.get(other, "")
            raise InputError(f"{flag}: unknown {kind} {quoted(text)}{what}{suggest(text, names)} "
                             "(gpucal profiles list shows them all)")
        doc = profiles.load_builtin(kind, text)
    if doc.kind != kind:
        raise InputError(f"{flag}: {profiles.shown_name(text)} is a {doc.kind} document ({doc.model.schema_}), "
                         f"not a {kind}")
    return doc


def profile_reference(doc: profiles.Document, field: str, flag: str, kind: str) -> profiles.Document:
    """The document of ``kind`` that ``doc``'s ``field`` (``plan_defaults.link``) names: a built-in by its bare
    name, else a file in the folder of ``doc``'s own file (a built-in profile names only built-ins). Never a
    file elsewhere: an absolute path or a ``..`` is refused, and so is a link out of the folder. An error
    about the file names it and the field at fault, never its content. Errors start with ``flag (doc: field)``."""
    value: Any = doc.model
    for key in field.split("."):
        value = getattr(value, key, None)
    where = f"{flag} ({doc.origin}: {field})"
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: names no {kind}")
    if profiles.is_bare(value) and value in profiles.builtin_names(kind):
        return profiles.load_builtin(kind, value)
    parts = value.replace("\\", "/").split("/")
    if doc.folder is None:
        names = profiles.builtin_names(kind)
        raise InputError(f"{where}: unknown {kind} {quoted(value)}{suggest(value, names)}; a built-in profile "
                         f"names only built-in {kind}s")
    if os.path.isabs(value) or ".." in parts:
        raise InputError(f"{where}: {quoted(value)} is neither a built-in {kind} nor a file in the profile's own "
                         "folder (no absolute paths, no '..')")
    path = os.path.join(doc.folder, value)
    folder = os.path.realpath(doc.folder)
    if os.path.commonpath([folder, os.path.realpath(path)]) != folder:
        raise InputError(f"{where}: {quoted(value)} leads out of the profile's own folder; a profile's references "
                         "name built-ins or files beside it")
    if not os.path.lexists(path):
        names = profiles.builtin_names(kind)
        raise InputError(f"{where}: {quoted(value)} is neither a built-in {kind}{suggest(value, names)} nor a file "
                         "in the profile's own folder")
    try:
        data = profiles.read(path)  # its errors (not a file, not JSON) name the file, never its content
    except ProfileError as exc:
        raise InputError(f"{where}: {exc}") from None
    try:
        found = profiles.validate(data, path)
    except ProfileError as exc:  # the detail may quote the file's values: only the field is named
        at = f" ({exc.field} is at fault)" if exc.field else ""
        raise InputError(f"{where}: {profiles.shown_name(path)} is not a valid gpucal {kind} document{at}") from None
    if found.kind != kind:
        raise InputError(f"{where}: {profiles.shown_name(path)} is a {found.kind} document, not a {kind}")
    return replace(found, folder=os.path.dirname(os.path.abspath(path)))
