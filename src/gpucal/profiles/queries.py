"""From what a user types (``alpha=30us,beta=32GB/s``, a profile's name or file) to the planner's inputs: a card,
a link, the network, a collective, a model, with the flags that override them.

Every failure is an ``InputError`` whose message starts with the flag it came from. Names and files are
resolved by ``gpucal.profiles.names``. Everything here reads a document through its typed model
(``doc.model``, ``doc.profile``: ``gpucal.profiles.model``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from gpucal import profiles
from gpucal.errors import InputError, ProfileError
from gpucal.limits import check_range
from gpucal.plan.models import PRESETS, ModelSpec, model_from_hf_config, model_spec
from gpucal.profiles.model import Device, LinkPreset, MeasuredFit, ModelDoc, Profile, Quantity
from gpucal.profiles.names import profile_reference, quoted, resolve_document, suggest
from gpucal.plan.spec import GpuSpec, LinkPiece, LinkSpec
from gpucal.units import UnitError, parse_positive, parse_quantity

__all__ = [
    "DEFAULT_FLOPS_MODE",
    "DTYPES",
    "GpuChoice",
    "LinkChoice",
    "flops_quantity",
    "gpu_of",
    "link_of_document",
    "plan_flops_mode",
    "planner_link",
    "cards_per_host",
    "profile_cards_per_host",
    "profile_collective",
    "profile_link",
    "profile_network",
    "resolve_gpu",
    "resolve_link",
    "resolve_model",
]

# Bytes per value of each weight dtype, and the FLOP/s entry used for it when nothing else is named.
DTYPES = {"fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "fp32": 4.0}
DEFAULT_FLOPS_MODE = {"fp16": "fp16_fp32acc", "bf16": "bf16_fp32acc", "fp8": "fp8_fp32acc", "fp32": "fp32"}


@dataclass(frozen=True)
class GpuChoice:
    """The card the planner uses, and where each of its numbers came from."""

    spec: GpuSpec
    document: profiles.Document
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def default_link(self) -> str | None:
        return self.document.profile.default_link


def _provenance(quantity: Quantity, profile_name: str) -> str:
    return f"{profile_name}: {quantity.cited}"


def plan_flops_mode(device: Device, dtype: str) -> str:
    """The FLOP/s entry the planner uses for weights of ``dtype`` on ``device``: its ``plan_flops_mode`` entry,
    else ``DEFAULT_FLOPS_MODE``."""
    return (device.plan_flops_mode or {}).get(dtype, DEFAULT_FLOPS_MODE[dtype])


def flops_quantity(device: Device, doc: profiles.Document, dtype: str,
                   mode: str | None) -> tuple[str, Quantity]:
    """The FLOP/s entry the planner uses for weights of ``dtype`` (or the named ``mode``): (mode, quantity).
    Refuses (naming --dtype or --flops-mode) an entry the profile lacks or knows no value for."""
    named = mode is not None
    if mode is None:
        mode = plan_flops_mode(device, dtype)
    sparse = mode.startswith("sparse:")
    key = mode.removeprefix("sparse:")
    flag = "--flops-mode" if named else "--dtype"
    entry = device.flops(mode)
    if entry is None:
        have = ", ".join(sorted(device.dense_flops)) or "none"
        kind = "sparse " if sparse else ""
        raise InputError(f"{flag}: {doc.name} has no {kind}FLOP/s entry {key!r} (dense entries: {have}); "
                         "pick one with --flops-mode or give --flops")
    if not entry.known:
        raise InputError(f"{flag}: {doc.name} has no {key} rate: {entry.reason or 'unknown'}; give --flops")
    return mode, entry


def _slowest(doc: profiles.Document, pick) -> tuple[int, Any]:
    """(index, quantity) of the profile's device whose ``pick(device)`` quantity is the smallest known one; the
    first device where none is known. A calibrated profile lists its devices one by one, and a TP group or a
    pipeline runs at the pace of its slowest card."""
    devices = doc.profile.devices
    known = [(i, pick(d)) for i, d in enumerate(devices)]
    known = [(i, q) for i, q in known if q is not None and q.known]
    if not known:
        return 0, pick(devices[0])
    return min(known, key=lambda iq: iq[1].value)


def _which(doc: profiles.Document, i: int) -> str:
    n = len(doc.profile.devices)
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
        i, quantity = _slowest(doc, lambda d, key=key: getattr(d, key))
        if key in overrides:
            values[key], sources[key] = overrides[key], "flag"
        elif not quantity.known:
            raise InputError(f"--gpu: {doc.origin}: devices[{i}].{key}: unknown ({quantity.reason}); "
                             f"give --{'mem-bw' if key == 'memory_bandwidth_Bps' else 'mem-bytes'}")
        else:
            values[key] = float(quantity.value)
            sources[key] = _provenance(quantity, doc.name) + _which(doc, i)
    if "flops" in overrides:
        mode, values["flops"], sources["flops"] = "flag", overrides["flops"], "flag"
    else:
        mode, _ = flops_quantity(doc.profile.devices[0], doc, dtype, flops_mode)  # refuses what the profile lacks
        i, entry = _slowest(doc, lambda d: _mode_entry(d, doc, dtype, flops_mode))
        values["flops"], sources["flops"] = float(entry.value), _provenance(entry, doc.name) + _which(doc, i)
    spec = GpuSpec(name=doc.name, flops_mode=mode, **values)
    return GpuChoice(spec=spec, document=doc, sources=sources)


def _mode_entry(device: Device, doc: profiles.Document, dtype: str, flops_mode: str | None) -> Quantity | None:
    try:
        return flops_quantity(device, doc, dtype, flops_mode)[1]
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
    preset = doc.model
    assert isinstance(preset, LinkPreset), doc.kind
    if not preset.alpha_s.known:
        raise InputError(f"{flag}: {doc.origin}: alpha_s: unknown ({preset.alpha_s.reason}); give alpha=...,beta=...")
    return LinkChoice(LinkSpec(doc.name, float(preset.alpha_s.value), float(preset.beta_Bps.value)), preset.sources)


def _measured_spec(doc: profiles.Document, where: str, entry: MeasuredFit, name: str, alpha_s: float) -> LinkSpec:
    """The planner's link of a measured entry (``links[i]``, ``network[i]``, ``collectives[i]``): its headline
    alpha and beta, and its regimes where the fit found several (``pieces``: each transfer then costs the
    piece its size falls in)."""
    pieces = entry.pieces or []
    try:
        regimes = tuple(LinkPiece(float(p.lo_bytes) if i else 0.0, max(0.0, float(p.alpha_s)),
                                  float(p.beta_Bps)) for i, p in enumerate(pieces)) if len(pieces) > 1 else ()
        return LinkSpec(name, alpha_s, float(entry.beta_Bps.value), regimes)
    except ValueError as exc:
        raise InputError(f"--gpu: {doc.origin}: {where}.pieces: {exc}") from None


def _slowest_fit(indexed: list) -> tuple:
    """The (index, entry) of the slowest fit: the smallest beta, the larger alpha on a tie."""
    return min(indexed, key=lambda item: (item[1].beta_Bps.value, -item[1].alpha_s.value))


def _of(indexed: list) -> str:
    return f", the slowest of {len(indexed)}" if len(indexed) > 1 else ""


def profile_link(doc: profiles.Document) -> LinkChoice | None:
    """The link between cards that a calibrated profile measured, for the planner; ``None`` without one.

    A profile from ``gpucal calibrate`` has one entry per ordered pair of devices in ``links``, each the
    path the runtime will use between them (P2P, or host staging where the P2P verdict says so). The
    planner takes the slowest of them (the smallest beta; the larger alpha on a tie): a TP group or a
    pipeline moves at the pace of its slowest hop.
    """
    links = [(i, item) for i, item in enumerate(doc.profile.links or []) if item.known]
    if not links:
        return None
    i, slowest = _slowest_fit(links)
    name = f"{doc.name}: dev{slowest.src}->dev{slowest.dst} {slowest.path}{_of(links)}"
    return LinkChoice(_measured_spec(doc, f"links[{i}]", slowest, name, float(slowest.alpha_s.value)),
                      slowest.sources)


def planner_link(doc: profiles.Document, flag: str = "--gpu") -> LinkChoice | None:
    """The link the planner uses between a profile's cards when none is named: the measured one
    (``profile_link``), else the preset in ``plan_defaults.link``, else ``None``."""
    measured = profile_link(doc)
    if measured is not None:
        return measured
    if not doc.profile.default_link:
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
                raise InputError(f"--model: {shown} is a {doc.kind} document ({doc.model.schema_}), not a model")
            try:
                model = _model_of(doc)
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
        raise InputError(f"--model: unknown model {quoted(text)}{suggest(text, PRESETS)} "
                         "(presets: " + ", ".join(PRESETS) + "; or a gpucal.model/1 file or a config.json)")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if overrides:
        try:
            model = replace(model, **overrides)
        except ValueError as exc:
            raise InputError(f"--{str(exc).split(':')[0]}: {exc}") from None
    return model


def _model_of(doc: profiles.Document) -> ModelSpec:
    """The planner's model of a ``gpucal.model/1`` document; ``ValueError`` naming the field where its figures
    disagree."""
    found = doc.model
    assert isinstance(found, ModelDoc), doc.kind
    return model_spec(doc.name, params=found.params, layers=found.layers, hidden=found.hidden, heads=found.heads,
                      kv_heads=found.kv_heads, head_dim=found.head_dim, vocab=found.vocab, ffn=found.ffn,
                      source=found.source)


def profile_network(doc: profiles.Document) -> LinkChoice | None:
    """The network between hosts that a cluster profile measured, for the planner; ``None`` without one.

    ``network[]`` holds MPI ping-pong fits between hosts (``gpucal calibrate --cluster``). Pairs of ranks on
    one host (``same_host``) are shared memory, not the network, and are left out. The planner takes the
    slowest pair (the smallest beta; the larger alpha on a tie): a pipeline moves at its slowest hop.
    """
    entries = [(i, e) for i, e in enumerate(doc.profile.network or []) if not e.same_host and e.known]
    if not entries:
        return None
    i, slowest = _slowest_fit(entries)
    name = f"{doc.name}: host{slowest.src_host}<->host{slowest.dst_host} network{_of(entries)}"
    alpha = max(0.0, float(slowest.alpha_s.value))  # a fit's alpha can come out a hair below zero
    return LinkChoice(_measured_spec(doc, f"network[{i}]", slowest, name, alpha), slowest.sources)


def profile_collective(doc: profiles.Document, nranks: int, hosts: int | None = None,
                       op: str = "all-reduce") -> LinkChoice | None:
    """The measured ``op`` over ``nranks`` ranks (spanning ``hosts`` hosts, when given) of a cluster profile,
    as alpha + S/beta for the planner; ``None`` when the profile has no such entry. Entries timed in CUDA
    graphs are used only where no plain entry exists (a program that does not capture pays the launch);
    of several (one per host, measured inside each), the slowest (smallest beta, then larger alpha). The
    one-host all-reduce measured by one process (``single_process``, written by a plain ``gpucal calibrate``)
    is a decode term (``host_allreduce``), not taken here: the article's step keeps its link model."""
    entries = [(i, e) for i, e in enumerate(doc.profile.collectives or []) if e.op == op and e.nranks == nranks
               and (hosts is None or e.span_hosts == hosts) and e.verified is not False and e.known
               and not e.single_process]
    if not entries:
        return None
    i, entry = min(entries, key=lambda ie: (bool(ie[1].graphs), ie[1].beta_Bps.value, -ie[1].alpha_s.value))
    span = f" inside host{entry.host}" if entry.host is not None else \
        f", {entry.hosts} host(s)" if entry.hosts else ""
    name = f"{doc.name}: {op} over {nranks} ranks{span} ({entry.library or 'measured'})"
    alpha = max(0.0, float(entry.alpha_s.value))
    return LinkChoice(_measured_spec(doc, f"collectives[{i}]", entry, name, alpha), entry.sources)


def profile_cards_per_host(doc: profiles.Document) -> int | None:
    """The fewest cards on one host of a cluster profile; ``None`` for a profile of one machine."""
    return doc.profile.cards_per_host


def cards_per_host(profile: Profile | dict) -> int | None:
    """The fewest cards on one host of a cluster profile (None for a profile of one machine): a layout
    must fit the smallest host. ``profile``: the typed profile, or its JSON (validated here)."""
    if not isinstance(profile, Profile):
        profile = Profile.model_validate(profile)
    return profile.cards_per_host
