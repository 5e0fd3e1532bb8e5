"""From what a user types (names, files, ``alpha=30us,beta=32GB/s``) to the planner's inputs.

Every failure is an ``InputError`` whose message starts with the flag it came from, suggests close
matches for unknown names, and names the file and field for bad files.

Names and files: a bare name (no ``/``, no ``.json``) that is a built-in (a profile, a link preset, a model
preset) is the built-in, even where a file of that name lies in the current folder; ``ambiguity_note`` then
says which was taken, for the command to print (``gpucal.cli`` does, once). ``./NAME`` is
the file. A profile's own references (``plan_defaults.link``) name a built-in or a file in the profile's own
folder, never an absolute path or one that climbs out of it (``profile_reference``); an error about such a
file never repeats its content.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, replace
from typing import Any

from gpucal import profiles
from gpucal.errors import InputError, ProfileError
from gpucal.limits import check_range
from gpucal.plan.models import PRESETS, ModelSpec, model_from_dict, model_from_hf_config
from gpucal.plan.spec import GpuSpec, LinkPiece, LinkSpec
from gpucal.units import UnitError, parse_positive, parse_quantity

__all__ = [
    "DEFAULT_FLOPS_MODE",
    "DTYPES",
    "GpuChoice",
    "LinkChoice",
    "ambiguity_note",
    "flops_entry",
    "gpu_of",
    "link_of_document",
    "planner_link",
    "profile_cards_per_host",
    "profile_collective",
    "profile_link",
    "profile_network",
    "profile_reference",
    "resolve_document",
    "resolve_gpu",
    "resolve_link",
    "resolve_model",
    "suggest",
]

# Bytes per value of each weight dtype, and the FLOP/s entry used for it when nothing else is named.
DTYPES = {"fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "fp32": 4.0}
DEFAULT_FLOPS_MODE = {"fp16": "fp16_fp32acc", "bf16": "bf16_fp32acc", "fp8": "fp8_fp32acc", "fp32": "fp32"}


def suggest(name: str, names) -> str:
    """'; did you mean a, b?' for the names closest to ``name``, or ''."""
    close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _name(text: str) -> str:
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
            raise InputError(f"{flag}: unknown {kind} {_name(text)}{what}{suggest(text, names)} "
                             "(gpucal profiles list shows them all)")
        doc = profiles.load_builtin(kind, text)
    if doc.kind != kind:
        raise InputError(f"{flag}: {profiles.shown_name(text)} is a {doc.kind} document ({doc.data['schema']}), "
                         f"not a {kind}")
    return doc


def profile_reference(doc: profiles.Document, field: str, flag: str, kind: str) -> profiles.Document:
    """The document of ``kind`` that ``doc``'s ``field`` (``plan_defaults.link``) names: a built-in by its bare
    name, else a file in the folder of ``doc``'s own file (a built-in profile names only built-ins). Never a
    file elsewhere: an absolute path or a ``..`` is refused, and so is a link out of the folder. An error
    about the file names it and the field at fault, never its content. Errors start with ``flag (doc: field)``."""
    value: Any = doc.data
    for key in field.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    where = f"{flag} ({doc.origin}: {field})"
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: names no {kind}")
    if profiles.is_bare(value) and value in profiles.builtin_names(kind):
        return profiles.load_builtin(kind, value)
    parts = value.replace("\\", "/").split("/")
    if doc.folder is None:
        names = profiles.builtin_names(kind)
        raise InputError(f"{where}: unknown {kind} {_name(value)}{suggest(value, names)}; a built-in profile "
                         f"names only built-in {kind}s")
    if os.path.isabs(value) or ".." in parts:
        raise InputError(f"{where}: {_name(value)} is neither a built-in {kind} nor a file in the profile's own "
                         "folder (no absolute paths, no '..')")
    path = os.path.join(doc.folder, value)
    folder = os.path.realpath(doc.folder)
    if os.path.commonpath([folder, os.path.realpath(path)]) != folder:
        raise InputError(f"{where}: {_name(value)} leads out of the profile's own folder; a profile's references "
                         "name built-ins or files beside it")
    if not os.path.lexists(path):
        names = profiles.builtin_names(kind)
        raise InputError(f"{where}: {_name(value)} is neither a built-in {kind}{suggest(value, names)} nor a file "
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


@dataclass(frozen=True)
class GpuChoice:
    """The card the planner uses, and where each of its numbers came from."""

    spec: GpuSpec
    document: profiles.Document
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def default_link(self) -> str | None:
        return self.document.data.get("plan_defaults", {}).get("link")


def _provenance(quantity: dict, profile_name: str) -> str:
    text = f"{profile_name}: {quantity['source']}"
    return f"{text} ({quantity['ref']})" if quantity.get("ref") else text


def flops_entry(device: dict, doc: profiles.Document, dtype: str, mode: str | None) -> tuple[str, dict]:
    """The FLOP/s entry the planner uses for weights of ``dtype`` (or the named ``mode``): (mode, quantity).
    Refuses (naming --dtype or --flops-mode) an entry the profile lacks or knows no value for."""
    named = mode is not None
    if mode is None:
        mode = device.get("plan_flops_mode", {}).get(dtype, DEFAULT_FLOPS_MODE[dtype])
    sparse = mode.startswith("sparse:")
    key = mode.removeprefix("sparse:")
    table = device.get("sparse_flops" if sparse else "dense_flops", {})
    flag = "--flops-mode" if named else "--dtype"
    if key not in table:
        have = ", ".join(sorted(device.get("dense_flops", {}))) or "none"
        kind = "sparse " if sparse else ""
        raise InputError(f"{flag}: {doc.name} has no {kind}FLOP/s entry {key!r} (dense entries: {have}); "
                         "pick one with --flops-mode or give --flops")
    entry = table[key]
    if entry["value"] is None:
        raise InputError(f"{flag}: {doc.name} has no {key} rate: {entry.get('reason', 'unknown')}; give --flops")
    return mode, entry


def _slowest(doc: profiles.Document, pick) -> tuple[int, Any]:
    """(index, quantity) of the profile's device whose ``pick(device)`` quantity is the smallest known one; the
    first device where none is known. A calibrated profile lists its devices one by one, and a TP group or a
    pipeline runs at the pace of its slowest card."""
    devices = doc.data["devices"]
    known = [(i, pick(d)) for i, d in enumerate(devices)]
    known = [(i, q) for i, q in known if q is not None and q.get("value") is not None]
    if not known:
        return 0, pick(devices[0])
    return min(known, key=lambda iq: iq[1]["value"])


def _which(doc: profiles.Document, i: int) -> str:
    n = len(doc.data["devices"])
    return f", the slowest of {n} devices (devices[{i}])" if n > 1 else ""


def resolve_gpu(text: str, *, dtype: str = "fp16", flops_mode: str | None = None,
                overrides: dict[str, float] | None = None) -> GpuChoice:
    """The card of profile ``text`` at weight ``dtype``, with ``overrides`` (memory_bandwidth_Bps,
    flops, memory_bytes) taking precedence over the profile's values. Where the profile lists several
    devices (a calibrated machine), each figure is the slowest device's."""
    return gpu_of(resolve_document(text, "--gpu", "profile"), dtype=dtype, flops_mode=flops_mode, overrides=overrides)


def gpu_of(doc: profiles.Document, *, dtype: str = "fp16", flops_mode: str | None = None,
           overrides: dict[str, float] | None = None) -> GpuChoice:
    """The planner's card from a loaded profile (``resolve_gpu`` without the lookup); refusals name --gpu,
    --dtype or --flops-mode."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    sources: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key in ("memory_bandwidth_Bps", "memory_bytes"):
        i, quantity = _slowest(doc, lambda d, key=key: d[key])
        if key in overrides:
            values[key], sources[key] = overrides[key], "flag"
        elif quantity["value"] is None:
            raise InputError(f"--gpu: {doc.origin}: devices[{i}].{key}: unknown ({quantity.get('reason')}); "
                             f"give --{'mem-bw' if key == 'memory_bandwidth_Bps' else 'mem-bytes'}")
        else:
            values[key] = float(quantity["value"])
            sources[key] = _provenance(quantity, doc.name) + _which(doc, i)
    if "flops" in overrides:
        mode, values["flops"], sources["flops"] = "flag", overrides["flops"], "flag"
    else:
        mode, _ = flops_entry(doc.data["devices"][0], doc, dtype, flops_mode)  # refuses what the profile lacks
        i, entry = _slowest(doc, lambda d: _mode_entry(d, doc, dtype, flops_mode))
        values["flops"], sources["flops"] = float(entry["value"]), _provenance(entry, doc.name) + _which(doc, i)
    spec = GpuSpec(name=doc.name, flops_mode=mode, **values)
    return GpuChoice(spec=spec, document=doc, sources=sources)


def _mode_entry(device: dict, doc: profiles.Document, dtype: str, flops_mode: str | None) -> dict | None:
    try:
        return flops_entry(device, doc, dtype, flops_mode)[1]
    except InputError:
        return None


@dataclass(frozen=True)
class LinkChoice:
    """A link for the planner and where its alpha and beta came from."""

    spec: LinkSpec
    source: str


def _inline_link(text: str, flag: str) -> LinkChoice:
    parts: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in ("alpha", "beta") or key in parts:
            raise InputError(f"{flag}: expected alpha=TIME,beta=RATE such as alpha=30us,beta=32GB/s, got {text!r}")
        parts[key] = value.strip()
    missing = [k for k in ("alpha", "beta") if k not in parts]
    if missing:
        raise InputError(f"{flag}: {missing[0]} is missing; expected alpha=TIME,beta=RATE such as alpha=30us,beta=32GB/s")
    try:
        alpha = parse_quantity(parts["alpha"], "time")
    except UnitError as exc:
        raise InputError(f"{flag}: alpha: {exc}") from None
    if alpha < 0:
        raise InputError(f"{flag}: alpha: must not be negative, got {parts['alpha']!r}")
    try:
        beta = parse_positive(parts["beta"], "rate")
    except UnitError as exc:
        raise InputError(f"{flag}: beta: {exc}") from None
    for key, value, kind in (("alpha", alpha, "time"), ("beta", beta, "rate")):
        why = check_range(value, kind)  # the ranges a profile's alpha_s and beta_Bps have (gpucal.limits)
        if why:
            raise InputError(f"{flag}: {key}: {parts[key]!r} is {why}")
    return LinkChoice(LinkSpec(text, alpha, beta), "flag")


def resolve_link(text: str, flag: str = "--link") -> LinkChoice:
    """A link preset name, a ``gpucal.link/1`` file, or ``alpha=...,beta=...``."""
    if "=" in text:
        return _inline_link(text, flag)
    return link_of_document(resolve_document(text, flag, "link"), flag)


def link_of_document(doc: profiles.Document, flag: str) -> LinkChoice:
    """The planner's link of a ``gpucal.link/1`` document; refuses (naming ``flag``) one without alpha."""
    alpha, beta = doc.data["alpha_s"], doc.data["beta_Bps"]
    if alpha["value"] is None:
        raise InputError(f"{flag}: {doc.origin}: alpha_s: unknown ({alpha.get('reason')}); give alpha=...,beta=...")
    source = " + ".join(sorted({alpha["source"], beta["source"]}))
    return LinkChoice(LinkSpec(doc.name, float(alpha["value"]), float(beta["value"])), source)


def _measured_spec(doc: profiles.Document, where: str, entry: dict, name: str, alpha_s: float) -> LinkSpec:
    """The planner's link of a measured entry (``links[i]``, ``network[i]``, ``collectives[i]``): its headline
    alpha and beta, and its regimes where the fit found several (``pieces``: each transfer then costs the
    piece its size falls in)."""
    pieces = entry.get("pieces") or []
    try:
        regimes = tuple(LinkPiece(float(p["lo_bytes"]) if i else 0.0, max(0.0, float(p["alpha_s"])),
                                  float(p["beta_Bps"])) for i, p in enumerate(pieces)) if len(pieces) > 1 else ()
        return LinkSpec(name, alpha_s, float(entry["beta_Bps"]["value"]), regimes)
    except ValueError as exc:
        raise InputError(f"--gpu: {doc.origin}: {where}.pieces: {exc}") from None


def profile_link(doc: profiles.Document) -> LinkChoice | None:
    """The link between cards that a calibrated profile measured, for the planner; ``None`` without one.

    A profile from ``gpucal calibrate`` has one entry per ordered pair of devices in ``links``, each the
    path the runtime will use between them (P2P, or host staging where the P2P verdict says so). The
    planner takes the slowest of them (the smallest beta; the larger alpha on a tie): a TP group or a
    pipeline moves at the pace of its slowest hop.
    """
    links = [item for item in doc.data.get("links") or [] if item.get("beta_Bps", {}).get("value")
             and item.get("alpha_s", {}).get("value") is not None]
    if not links:
        return None
    slowest = min(links, key=lambda item: (item["beta_Bps"]["value"], -item["alpha_s"]["value"]))
    name = f"{doc.name}: dev{slowest['src']}->dev{slowest['dst']} {slowest['path']}"
    if len(links) > 1:
        name += f", the slowest of {len(links)}"
    source = " + ".join(sorted({slowest["alpha_s"]["source"], slowest["beta_Bps"]["source"]}))
    where = f"links[{doc.data['links'].index(slowest)}]"
    return LinkChoice(_measured_spec(doc, where, slowest, name, float(slowest["alpha_s"]["value"])), source)


def planner_link(doc: profiles.Document, flag: str = "--gpu") -> LinkChoice | None:
    """The link the planner uses between a profile's cards when none is named: the measured one
    (``profile_link``), else the preset in ``plan_defaults.link``, else ``None``."""
    measured = profile_link(doc)
    if measured is not None:
        return measured
    if not doc.data.get("plan_defaults", {}).get("link"):
        return None
    preset = profile_reference(doc, "plan_defaults.link", flag, "link")
    return link_of_document(preset, f"{flag} ({doc.origin}: plan_defaults.link)")


def resolve_model(text: str, overrides: dict[str, Any] | None = None) -> ModelSpec:
    """A preset name, a ``gpucal.model/1`` file, or a Hugging Face ``config.json``; then ``overrides``
    (params, layers, hidden)."""
    shown = profiles.shown_name(text)
    if text in PRESETS:  # a preset's name is the preset, whatever the current folder holds (ambiguity_note)
        model = PRESETS[text]
    elif os.path.isdir(text):  # never raises: a name too long for the file system is no folder
        config = os.path.join(text, "config.json")
        if not os.path.lexists(config):
            raise InputError(f"--model: {shown}: a folder without a config.json")
        return resolve_model(config, overrides)
    elif profiles.looks_like_path(text):
        try:
            data = profiles.read(text)
        except ProfileError as exc:
            raise InputError(f"--model: {exc}") from None
        if isinstance(data, dict) and "schema" in data:
            try:
                doc = profiles.validate(data, shown)
            except ProfileError as exc:
                raise InputError(f"--model: {exc}") from None
            if doc.kind != "model":
                raise InputError(f"--model: {shown} is a {doc.kind} document ({data['schema']}), not a model")
            try:
                model = model_from_dict(doc.data, doc.name)
            except ValueError as exc:
                raise InputError(f"--model: {shown}: {exc}") from None
        elif isinstance(data, dict):
            stem = os.path.basename(os.path.dirname(os.path.abspath(text))) if text.endswith("config.json") else \
                os.path.basename(text).removesuffix(".json")
            try:
                model = model_from_hf_config(data, stem)
            except ValueError as exc:
                raise InputError(f"--model: {shown}: {exc}") from None
        else:
            raise InputError(f"--model: {shown}: expected a JSON object at the top level")
    else:
        raise InputError(f"--model: unknown model {_name(text)}{suggest(text, PRESETS)} "
                         "(presets: " + ", ".join(PRESETS) + "; or a gpucal.model/1 file or a config.json)")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if overrides:
        try:
            model = replace(model, **overrides)
        except ValueError as exc:
            raise InputError(f"--{str(exc).split(':')[0]}: {exc}") from None
    return model


def _known(q) -> bool:
    return isinstance(q, dict) and q.get("value") is not None


def profile_network(doc: profiles.Document) -> LinkChoice | None:
    """The network between hosts that a cluster profile measured, for the planner; ``None`` without one.

    ``network[]`` holds MPI ping-pong fits between hosts (``gpucal calibrate --cluster``). Pairs of ranks on
    one host (``same_host``) are shared memory, not the network, and are left out. The planner takes the
    slowest pair (the smallest beta; the larger alpha on a tie): a pipeline moves at its slowest hop.
    """
    entries = [e for e in doc.data.get("network") or [] if not e.get("same_host")
               and _known(e.get("alpha_s")) and _known(e.get("beta_Bps")) and e["beta_Bps"]["value"] > 0]
    if not entries:
        return None
    slowest = min(entries, key=lambda e: (e["beta_Bps"]["value"], -e["alpha_s"]["value"]))
    name = f"{doc.name}: host{slowest['src_host']}<->host{slowest['dst_host']} network"
    if len(entries) > 1:
        name += f", the slowest of {len(entries)}"
    source = " + ".join(sorted({slowest["alpha_s"]["source"], slowest["beta_Bps"]["source"]}))
    alpha = max(0.0, float(slowest["alpha_s"]["value"]))  # a fit's alpha can come out a hair below zero
    where = f"network[{doc.data['network'].index(slowest)}]"
    return LinkChoice(_measured_spec(doc, where, slowest, name, alpha), source)


def profile_collective(doc: profiles.Document, nranks: int, hosts: int | None = None,
                       op: str = "all-reduce") -> LinkChoice | None:
    """The measured ``op`` over ``nranks`` ranks (spanning ``hosts`` hosts, when given) of a cluster profile,
    as alpha + S/beta for the planner; ``None`` when the profile has no such entry. Entries timed in CUDA
    graphs are used only where no plain entry exists (a program that does not capture pays the launch);
    of several (one per host, measured inside each), the slowest (smallest beta, then larger alpha)."""
    entries = [e for e in doc.data.get("collectives") or [] if e.get("op") == op and e.get("nranks") == nranks
               and (hosts is None or e.get("hosts", 1) == hosts) and e.get("verified") is not False
               and _known(e.get("alpha_s")) and _known(e.get("beta_Bps")) and e["beta_Bps"]["value"] > 0]
    if not entries:
        return None
    entry = min(entries, key=lambda e: (bool(e.get("graphs")), e["beta_Bps"]["value"], -e["alpha_s"]["value"]))
    span = f" inside host{entry['host']}" if "host" in entry else \
        f", {entry.get('hosts', 1)} host(s)" if entry.get("hosts") else ""
    name = f"{doc.name}: {op} over {nranks} ranks{span} ({entry.get('library') or 'measured'})"
    source = " + ".join(sorted({entry["alpha_s"]["source"], entry["beta_Bps"]["source"]}))
    alpha = max(0.0, float(entry["alpha_s"]["value"]))
    where = f"collectives[{doc.data['collectives'].index(entry)}]"
    return LinkChoice(_measured_spec(doc, where, entry, name, alpha), source)


def profile_cards_per_host(doc: profiles.Document) -> int | None:
    """The fewest cards on one host of a cluster profile; ``None`` for a profile of one machine."""
    return cards_per_host(doc.data)


def cards_per_host(doc: dict) -> int | None:
    """The fewest cards on one host of a cluster profile (None for a profile of one machine): a layout
    must fit the smallest host."""
    hosts = (doc.get("cluster") or {}).get("hosts") or []
    counts = [len(h.get("devices") or []) for h in hosts]
    return min(counts) if counts else None
