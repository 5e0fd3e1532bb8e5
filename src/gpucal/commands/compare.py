"""``gpucal compare A [B]``: two profiles side by side (measured vs datasheet, or two machines), with
the ratio B/A per field. Without B, A is compared with the datasheet profile of its first device."""

from __future__ import annotations

from typing import Any

from gpucal import profiles, render
from gpucal.calibrate.compare import Comparison, PlannerLink, Row, compare
from gpucal.errors import InputError
from gpucal.profiles.names import ambiguity_note, profile_reference, resolve_document
from gpucal.profiles.queries import planner_link, profile_link
from gpucal.units import format_bytes, format_flops, format_rate, format_time

__all__ = ["DESCRIPTION", "add_arguments", "comparison", "default_b", "link_of", "resolve_profile", "run"]

DESCRIPTION = ("Compare two hardware profiles (measured vs datasheet, or two machines) field by field: memory, "
               "bandwidths, FLOP/s per mode, host and peer links, the planner's link, device count; with the ratio "
               "B/A and each value's source. Without B, A is compared with the datasheet profile of its first device.")


def add_arguments(p) -> None:
    """``gpucal compare``'s flags."""
    p.add_argument("a", metavar="A", help="a profile: a built-in name (gpucal profiles list) or a file")
    p.add_argument("b", metavar="B", nargs="?", default=None,
                   help="the profile to compare A with (default: the datasheet profile of A's first device)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def resolve_profile(text: str, flag: str) -> profiles.Document:
    """The profile named ``text``; a link preset's name gets its own message. A bare name that is a built-in
    is the built-in (the document's ``note`` says so where a file of that name lies here too)."""
    if not profiles.looks_like_path(text) and text not in profiles.builtin_names("profile") \
            and text in profiles.builtin_names("link"):
        raise InputError(f"{flag}: {text!r} is a link preset, not a profile (gpucal profiles list shows the profiles)")
    return resolve_document(text, flag, "profile")


def default_b(a: profiles.Document) -> profiles.Document:
    """The built-in datasheet profile of A's first device, or an ``InputError`` saying that B is needed."""
    device = a.profile.devices[0].name
    doc = profiles.datasheet_for(device)
    if doc is None:
        raise InputError(f"B: no datasheet profile for {device!r} (A's first device); "
                         "name B, a profile or file, to compare A with")
    return doc


def link_of(doc: profiles.Document, flag: str) -> PlannerLink | None:
    """The link the planner uses between ``doc``'s cards (``planner_link``), with the provenance of its
    alpha and beta: the measured link's, or the preset's own quantities."""
    choice = planner_link(doc, flag)
    if choice is None:
        return None
    if profile_link(doc) is None:  # the preset of plan_defaults.link: its quantities say where each came from
        preset = profile_reference(doc, "plan_defaults.link", flag, "link").model
        return PlannerLink(choice.spec.name, preset.alpha_s.to_json(), preset.beta_Bps.to_json())
    return PlannerLink(choice.spec.name, {"value": choice.spec.alpha_s, "source": choice.source},
                       {"value": choice.spec.beta_Bps, "source": choice.source})


def comparison(a_text: str, b_text: str | None) -> Comparison:
    """Resolve A and B (B defaults to A's datasheet) and compare them."""
    a = resolve_profile(a_text, "A")
    b = default_b(a) if b_text is None else resolve_profile(b_text, "B")
    return compare(a, b, link_of(a, "A"), link_of(b, "B"))


_FORMAT = {
    "bytes": format_bytes,
    "Bps": format_rate,
    "flops": format_flops,
    "s": format_time,
    "generation": lambda v: f"Gen{v}",
    "lanes": lambda v: f"x{v}",
    "devices": str,
}


def _text(row: Row, side: str) -> str:
    value, source, reason = getattr(row, side), getattr(row, f"{side}_source"), getattr(row, f"{side}_reason")
    if source is None:
        return "-"
    if value is None:
        return f"unknown: {reason}" if reason else "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _FORMAT.get(row.unit, str)(value)


def _ratio_text(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if 0.01 <= abs(value) < 1000 else f"{value:.3g}"


def _side_line(key: str, side: Any) -> str:
    return f"{key}: {side.name} ({side.source}, {side.origin}): {side.device}"


def run(args) -> int:
    for text in (args.a, args.b):
        note = ambiguity_note(text, "profile") if text is not None else None
        if note:
            render.line(f"gpucal compare: note: {note}", render.console(stderr=True))
    result = comparison(args.a, args.b)
    if args.json:
        render.print_json(result.to_dict())
        return 0
    out = render.console()
    render.line(_side_line("A", result.a), out)
    render.line(_side_line("B", result.b), out)
    rows = [(r.label, _text(r, "a"), _text(r, "b"), _ratio_text(r.ratio), r.a_source or "", r.b_source or "")
            for r in result.rows]
    out.print(render.table(("field", "A", "B", "B/A", "A source", "B source"), rows, right=(1, 2, 3)))
    for note in result.notes:
        render.line(f"note: {note}", out)
    return 0
