"""``gpucal profiles list|show|validate|export``: the shipped profiles, link presets and model presets, and
exports of a profile to other planners' formats (``gpucal.profiles.export``)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from gpucal import __version__, limits, profiles, render
from gpucal.calibrate import imports
from gpucal.calibrate.imports.nccltests import OPS as _NCCL_OPS
from gpucal.calibrate.provenance import command_text, iso
from gpucal.commands.options import int_in, nonempty
from gpucal.errors import InputError, ProfileError
from gpucal.files import check_output, make_folder
from gpucal.plan.models import PRESETS
from gpucal.profiles import export as exporters
from gpucal.profiles.model import AlphaBeta, LinkPreset, Profile, Quantity
from gpucal.profiles.names import ambiguity_note, profile_reference, resolve_document, suggest
from gpucal.profiles.queries import resolve_link
from gpucal.units import format_bytes, format_flops, format_rate, format_time

__all__ = ["DESCRIPTION", "add_arguments", "run_export", "run_import", "run_list", "run_show", "run_validate"]

DESCRIPTION = "Built-in GPU profiles (datasheet, the article's), link presets and model presets."


def add_arguments(p) -> None:
    """``gpucal profiles``'s flags."""
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    ls = verbs.add_parser("list", help="every built-in profile, link preset and model preset")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", help="one profile or link preset, by name or file")
    show.add_argument("name", metavar="NAME|FILE")
    show.add_argument("--json", action="store_true", help="print the document itself")
    show.set_defaults(run=run_show)
    val = verbs.add_parser("validate", help="check a file against the schema (exit 2 with the first error)")
    val.add_argument("file", metavar="FILE")
    val.add_argument("--json", action="store_true", help="print the verdict as JSON")
    val.set_defaults(run=run_validate)
    exp = verbs.add_parser("export", help="a profile in another planner's format (llm-analysis, aiconfigurator)",
                           description="Write a hardware profile as an llm-analysis GPU config (JSON) or an "
                           "aiconfigurator system file (YAML); docs/exports.md gives the mapping field by field.")
    exp.add_argument("name", metavar="NAME|FILE", help="a built-in profile or a profile file")
    exp.add_argument("--format", required=True, choices=tuple(exporters.FORMATS), help="the other planner's format")
    exp.add_argument("-o", "--output-dir", metavar="DIR", type=nonempty,
                     help="write DIR/<profile name>.json or .yaml (created if missing); default: print the file")
    exp.add_argument("--force", action="store_true", help="overwrite an existing file")
    exp.add_argument("--link", metavar="NAME|FILE|alpha=..,beta=..", type=nonempty,
                     help="link between cards (default: the profile's measured link, else its plan_defaults.link)")
    exp.add_argument("--net", metavar="NAME|FILE|alpha=..,beta=..", type=nonempty,
                     help=f"link between hosts (default: the profile's network entry, else {exporters.DEFAULT_NET})")
    exp.add_argument("--gpus-per-node", type=int_in(1, limits.MAX_DEVICES), metavar="N",
                     help="aiconfigurator: GPUs per node (default: the profile's devices; 8 for a datasheet profile)")
    exp.add_argument("--nics-per-node", type=int_in(1, limits.MAX_DEVICES), metavar="N",
                     help="aiconfigurator: NICs per node, shared by its GPUs (default: one per GPU)")
    exp.add_argument("--flops-mode", type=nonempty, metavar="MODE",
                     help="the FLOP/s entry exported, as gpucal plan --flops-mode (default: the profile's "
                          "plan_flops_mode, else fp16_fp32acc / bf16_fp32acc)")
    exp.add_argument("--json", action="store_true", help="print a JSON object describing the export")
    exp.set_defaults(run=run_export)
    imp = verbs.add_parser("import", help="another tool's output as a profile (nvbandwidth, nccl-tests, "
                                          "p2pBandwidthLatencyTest)",
                           description="Turn nvbandwidth's JSON (-j) or text, cuda-samples' p2pBandwidthLatencyTest "
                           "text, or nccl-tests' text into a gpucal profile for gpucal plan --gpu; docs/imports.md "
                           "says what is taken from each and how it is converted.")
    imp.add_argument("files", nargs="+", metavar="FILE", help="the tool's output, one run per file")
    imp.add_argument("--from", dest="tools", action="append", required=True, metavar="TOOL",
                     choices=tuple(imports.TOOLS), help="the tool that wrote FILE: once for all files, or once per "
                     "file in order (" + ", ".join(imports.TOOLS) + ")")
    imp.add_argument("-o", "--output", required=True, metavar="FILE", type=nonempty, help="the profile to write")
    imp.add_argument("--force", action="store_true", help="overwrite an existing file")
    imp.add_argument("--card", metavar="NAME|FILE", type=nonempty,
                     help="the card's datasheet profile, for its memory and FLOP/s (default: by the name in FILE)")
    imp.add_argument("--op", choices=tuple(nccltests_ops()), help="nccl-tests: the collective, where the output "
                     "does not name it")
    imp.add_argument("--name", type=nonempty, metavar="NAME", help="the profile's name (default: from -o)")
    imp.add_argument("--json", action="store_true", help="print a JSON object describing the profile written")
    imp.set_defaults(run=run_import)


def _catalog() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"profiles": [], "links": [], "models": []}
    for name, folder in profiles.builtin_names("profile").items():
        profile = profiles.load_builtin("profile", name).profile
        device = profile.devices[0]
        out["profiles"].append({"name": name, "folder": folder, "source": profile.source, "title": profile.title,
                                "memory_bandwidth_Bps": device.memory_bandwidth_Bps.value,
                                "memory_bytes": device.memory_bytes.value})
    for name in profiles.builtin_names("link"):
        preset = profiles.load_builtin("link", name).model
        out["links"].append({"name": name, "kind": preset.kind, "title": preset.title,
                             "alpha_s": preset.alpha_s.value, "beta_Bps": preset.beta_Bps.value,
                             "sources": sorted({preset.alpha_s.source, preset.beta_Bps.source})})
    for model in PRESETS.values():
        out["models"].append({"name": model.name, "params": model.params, "layers": model.layers,
                              "hidden": model.hidden, "heads": model.heads, "kv_heads": model.kv_heads})
    return out


def run_list(args) -> int:
    catalog = _catalog()
    if args.json:
        render.print_json(catalog)
        return 0
    out = render.console()
    out.print(render.table(
        ("GPU profile", "source", "memory bandwidth", "memory", "title"),
        [(p["name"], p["source"], format_rate(p["memory_bandwidth_Bps"]), format_bytes(p["memory_bytes"]), p["title"])
         for p in catalog["profiles"]], right=(2, 3)))
    out.print(render.table(
        ("link preset", "kind", "alpha", "beta", "sources"),
        [(l["name"], l["kind"], format_time(l["alpha_s"]), format_rate(l["beta_Bps"]), " + ".join(l["sources"]))
         for l in catalog["links"]], right=(2, 3)))
    out.print(render.table(
        ("model preset", "params", "layers", "hidden", "heads / KV heads"),
        [(m["name"], f"{m['params'] / 1e9:.4g}e9", m["layers"], m["hidden"], f"{m['heads']} / {m['kv_heads']}")
         for m in catalog["models"]], right=(1, 2, 3)))
    return 0


def _note(text: str, kind: str | None = None) -> None:
    """Say on stderr which was taken where ``text`` is both a built-in and a file here."""
    note = ambiguity_note(text, kind)
    if note:
        render.line(f"gpucal profiles: note: {note}", render.console(stderr=True))


def _load_any(text: str) -> profiles.Document:
    if profiles.looks_like_path(text):
        try:
            return profiles.load(text)
        except ProfileError as exc:
            raise InputError(str(exc)) from None
    for kind in ("profile", "link"):
        if text in profiles.builtin_names(kind):
            _note(text, kind)
            return resolve_document(text, "NAME", kind)
    names = list(profiles.builtin_names("profile")) + list(profiles.builtin_names("link"))
    shown = repr(text) if len(text) <= 100 else profiles.shown_name(text)
    raise InputError(f"NAME: unknown profile or link preset {shown}{suggest(text, names)} "
                     "(gpucal profiles list shows them all)")


def _value(q: Quantity | None, fmt) -> str:
    if q is None:
        return "-"
    if q.value is None:
        return f"unknown: {q.reason or ''}"
    return fmt(q.value)


def _cite(q: Quantity | None) -> str:
    return "" if q is None else q.cited


def _profile_rows(profile: Profile) -> list[tuple[str, str, str]]:
    rows = []
    for i, d in enumerate(profile.devices):
        prefix = f"[{i}] " if len(profile.devices) > 1 else ""
        rows.append((f"{prefix}memory", _value(d.memory_bytes, format_bytes), _cite(d.memory_bytes)))
        rows.append((f"{prefix}memory bandwidth", _value(d.memory_bandwidth_Bps, format_rate),
                     _cite(d.memory_bandwidth_Bps)))
        for table, label in ((d.dense_flops, ""), (d.sparse_flops, "sparse ")):
            for mode, q in (table or {}).items():
                rows.append((f"{prefix}{label}{mode}", _value(q, format_flops), _cite(q)))
        host = d.host_link
        if host:
            link = f"PCIe Gen{host.pcie_generation.value} x{host.pcie_width.value}"
            rows.append((f"{prefix}host link", link, _cite(host.pcie_generation)))
        peer = d.peer_link
        if peer:
            p2p = peer.p2p_supported
            text = {True: "P2P", False: "no P2P", None: "P2P unknown"}[p2p.value]
            if peer.bandwidth_Bps:
                text += f", {format_rate(peer.bandwidth_Bps.value)} per direction"
            rows.append((f"{prefix}peer link", f"{peer.kind}: {text}", _cite(p2p)))
    if profile.default_link:
        rows.append(("planner's default link", profile.default_link, "plan_defaults.link"))
    for e in profile.network or []:
        where = f"network host{e.src_host}<->host{e.dst_host}" + (" (same host)" if e.same_host else "")
        rows.append((where, _alpha_beta(e), _cite(e.beta_Bps)))
    for e in profile.collectives or []:
        what = f"{e.op} over {e.nranks} ranks" + (f" inside host{e.host}" if e.host is not None else "") + \
            (" (graph)" if e.graphs else "")
        rows.append((what, _alpha_beta(e), _cite(e.beta_Bps)))
    return rows


def _alpha_beta(entry: AlphaBeta) -> str:
    """``alpha A, beta B`` of a network or collectives entry (the fit t = alpha + n/beta)."""
    return f"alpha {_value(entry.alpha_s, format_time)}, beta {_value(entry.beta_Bps, format_rate)}"


def _model_rows(doc: profiles.Document) -> list[tuple[str, str, str]]:
    """A model description's fields as given, in the document's order (its name and notes are shown apart)."""
    model = doc.model
    by_key = {field.alias or name: name for name, field in type(model).model_fields.items()}
    return [(key, str(getattr(model, by_key[key])), "") for key in doc.data if key not in ("schema", "name", "notes")]


def _schema(doc: profiles.Document) -> str:
    """The document's format (its ``schema`` field, e.g. ``gpucal.profile/1``)."""
    return doc.model.schema_


def run_show(args) -> int:
    doc = _load_any(args.name)
    if args.json:
        render.print_json(doc.data)
        return 0
    model = doc.model
    out = render.console()
    render.line(f"{doc.name}: {model.title or ''} [{_schema(doc)}, from {doc.origin}]")
    if isinstance(model, Profile):
        rows = _profile_rows(model)
    elif isinstance(model, LinkPreset):
        rows = [("alpha", _value(model.alpha_s, format_time), _cite(model.alpha_s)),
                ("beta", _value(model.beta_Bps, format_rate), _cite(model.beta_Bps))]
    else:
        rows = _model_rows(doc)
    out.print(render.table(("field", "value", "source"), rows, right=(1,)))
    for note in model.notes or []:
        render.line(f"note: {note}")
    for key, ref in (getattr(model, "documents", None) or {}).items():
        render.line(f"[{key}] {ref.title}" + (f", {ref.section}" if ref.section else "")
                  + (f" <{ref.url}>" if ref.url else ""))
    return 0


def run_validate(args) -> int:
    """FILE is always a file (``profiles show`` takes built-ins by name). A profile's ``plan_defaults.link``
    must name a built-in or a valid link file beside it."""
    try:
        doc = profiles.load(args.file)
    except ProfileError as exc:
        raise InputError(str(exc)) from None
    if isinstance(doc.model, Profile) and doc.model.default_link:
        profile_reference(doc, "plan_defaults.link", "FILE", "link")
    if args.json:
        render.print_json({"file": args.file, "valid": True, "schema": _schema(doc), "name": doc.name})
    else:
        render.line(f"{doc.origin}: valid {_schema(doc)} ({doc.kind} {doc.name})")
    return 0


def _load_profile(text: str) -> profiles.Document:
    """A hardware profile by built-in name or file; other documents are refused by name."""
    if profiles.looks_like_path(text):
        try:
            doc = profiles.load(text)
        except ProfileError as exc:
            raise InputError(str(exc)) from None
        if doc.kind != "profile":
            raise InputError(f"{doc.origin}: is a {doc.kind} document ({_schema(doc)}), not a hardware profile")
        return doc
    _note(text, "profile")
    return resolve_document(text, "NAME", "profile")


def run_export(args) -> int:
    """The profile in another planner's format: on stdout, or written atomically into ``-o DIR``."""
    doc = _load_profile(args.name)
    link = resolve_link(args.link, "--link") if args.link else None
    net = resolve_link(args.net, "--net") if args.net else None
    if args.gpus_per_node is not None and args.format != "aiconfigurator":
        raise InputError("--gpus-per-node: only with --format aiconfigurator (llm-analysis has no node size)")
    if args.nics_per_node is not None and args.format != "aiconfigurator":
        raise InputError("--nics-per-node: only with --format aiconfigurator (llm-analysis takes one link's "
                         "bandwidth between hosts)")
    if args.flops_mode is not None:
        device = doc.profile.devices[0]
        entry = device.flops(args.flops_mode)
        if entry is None or not entry.known:
            have = ", ".join(sorted(device.dense_flops)) or "none"
            raise InputError(f"--flops-mode: {doc.origin} has no known FLOP/s entry {args.flops_mode!r} "
                             f"(dense entries: {have})")
    result = exporters.export(doc, args.format, link=link, net=net, gpus_per_node=args.gpus_per_node,
                              flops_mode=args.flops_mode, nics_per_node=args.nics_per_node)
    text = result.text
    written: list[Path] = []
    if args.output_dir is not None:
        written = exporters.write(result, args.output_dir, force=args.force)
    if args.json:
        render.print_json({"format": result.format, "profile": doc.name, "from": doc.origin,
                           "file": str(written[0]) if written else None, "bytes": len(text.encode("utf-8")),
                           "tables": [str(p) for p in written[1:]], "data": result.data, "sources": result.sources})
    elif not written:
        sys.stdout.write(text)
    else:
        render.line(f"wrote {written[0]} ({result.format}, from the {doc.profile.source} profile {doc.name})")
        if result.tables:
            rows = sum(t.rows for t in result.tables)
            render.line(f"wrote {len(result.tables)} performance tables ({rows:,} rows) under "
                        f"{Path(args.output_dir) / result.data_dir}: "
                        + ", ".join(t.stem for t in result.tables))
    return 0


def nccltests_ops() -> list[str]:
    return list(_NCCL_OPS.values())


def _profile_name(args) -> str:
    if args.name:
        return args.name
    stem = re.sub(r"[^a-z0-9._-]+", "-", os.path.basename(args.output).removesuffix(".json").lower()).strip("-._")
    return stem[:100] or "imported"


def run_import(args) -> int:
    """Other tools' outputs as one profile, validated and written atomically to ``-o``."""
    if len(args.tools) not in (1, len(args.files)):
        raise InputError(f"--from: given {len(args.tools)} times for {len(args.files)} files (once for all, or once "
                         "per file)")
    check_output(args.output, force=args.force, flag="-o")
    tools = args.tools * len(args.files) if len(args.tools) == 1 else args.tools
    if args.op is not None and "nccl-tests" not in tools:
        raise InputError("--op: only with --from nccl-tests")
    runs = [imports.read_run(path, tool, args.op if tool == "nccl-tests" else None)
            for path, tool in zip(args.files, tools)]
    if args.card is not None:
        sheet = _load_profile(args.card)
    else:
        named = next((r.devices[0] for r in runs if r.devices), None)
        sheet = profiles.datasheet_for(named) if named else None
    data = imports.build_profile(runs, sheet=sheet, name=_profile_name(args), created=iso(time.time()),
                                 version=__version__, command=command_text(args.argv))
    make_folder(Path(args.output).parent, flag="-o")
    path = profiles.save(data, args.output, force=args.force)
    doc = profiles.load(str(path))
    links = doc.profile.links or []
    summary = {"file": str(path), "name": doc.name, "devices": doc.profile.device_count,
               "links": len(links), "verdicts": sorted({l.verdict for l in links}),
               "collectives": len(doc.profile.collectives or []), "card": sheet.name if sheet else None,
               "from": [{"tool": r.tool, "version": r.version, "file": r.origin} for r in runs]}
    if args.json:
        render.print_json(summary)
    else:
        what = ", ".join(f"{n} {w}" for n, w in ((summary["links"], "links"), (summary["collectives"], "collectives"))
                         if n)
        render.line(f"wrote {path} ({summary['devices']} x {doc.profile.devices[0].name}; {what or 'devices only'}"
                    + (f"; verdicts {', '.join(summary['verdicts'])}" if summary["verdicts"] else "")
                    + f"; memory and FLOP/s from {summary['card']})")
    return 0
