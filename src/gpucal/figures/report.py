"""``gpucal report``: one self-contained HTML page of a profile, to look at and share.

The page needs nothing but itself: the figures are PNGs embedded as data URIs, the style is inline, there is no
script and no link to anything outside. Every text that comes from the profile (names, titles, notes, reasons,
host fields) is escaped (``html.escape``), so a crafted profile shows its text and runs nothing. Sections, each a
``<section id=...>``:

| id | what |
|---|---|
| ``machine`` | the devices, the host and the provenance: when and how it was measured; simulated or measured in the title |
| ``summary`` | the figures against the card's datasheet (``gpucal compare``'s rows: value, datasheet, ratio), and every anomaly |
| ``p2p`` | the P2P verdict per ordered pair, and each pair's evidence |
| ``figures`` | the figures of ``gpucal plot`` (bandwidth against size with fits, P2P, roofline, plan, network, decode GEMM, all-reduce), and why any is not drawn |
| ``decode`` | the measured decode step's terms for the model at batch 1, 8 and 64, with where each came from |
| ``plan`` | the plan: the measured step beside the article's, per batch |
| ``cluster`` | a cluster profile's network between hosts and its collectives |
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from gpucal import __version__, profiles
from gpucal.calibrate.compare import PlannerLink, compare
from gpucal.calibrate.health import condensed_rows, summary_rows
from gpucal.errors import InputError
from gpucal.figures import FIGURES
from gpucal.figures.common import PlotSkipped
from gpucal.figures.files import draw_figures
from gpucal.figures.plan import PLAN_STRATEGIES, plan_curves
from gpucal.files import check_output, make_folder, write_atomic
from gpucal.plan.models import PRESETS, ModelSpec
from gpucal.profiles.queries import planner_link, resolve_model
from gpucal.units import format_bytes, format_flops, format_rate, format_time

__all__ = ["SECTIONS", "check_report_output", "default_model", "report_html", "write_report"]

SECTIONS = ("machine", "summary", "p2p", "figures", "decode", "plan", "cluster")
TERM_BATCHES = (1, 8, 64)
# the measured step's terms -> the figures (``MeasuredStep.sources`` keys) each is priced from
TERM_SOURCES = {"gemm_time_s": ("gemm",), "lm_head_time_s": ("gemm",), "attention_time_s": ("attention",),
                "elementwise_time_s": ("stream", "launch"), "launch_time_s": ("launch",), "sync_time_s": ("launch",),
                "tp_comm_time_s": ("allreduce",), "pp_comm_time_s": ("link",)}
FIT_FRACTION = 0.9  # of the cards' memory the weights may take, for the default model
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.tag{display:inline-block;padding:.1em .5em;border-radius:.3em;font-size:.85em;color:#fff}
.simulated{background:#b35806}.measured{background:#1b7837}.datasheet,.article{background:#5e3c99}
.v-nvlink{background:#d9f0d3}.v-p2p-pcie{background:#e7f1fa}.v-host-staged{background:#f7f7f7}
.v-p2p-slower-than-staged{background:#fdd49e}.v-p2p-corrupt{background:#f4a582}
img{max-width:100%;border:1px solid #eee}pre{font-size:.8em;white-space:pre-wrap}summary{cursor:pointer}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
.note{color:#555;font-size:.9em}ul{margin:.3em 0}
"""


def _e(value: Any) -> str:
    """Text from the profile, escaped for HTML (quotes too: it may land in an attribute)."""
    return html.escape("" if value is None else str(value), quote=True)


def _table(head: tuple[str, ...], rows: list[tuple], numeric: tuple[int, ...] = ()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = "".join(f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                        for i, c in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    return "".join(out) + "</table>"


def _section(key: str, heading: str, body: str) -> str:
    return f'<section id="{key}"><h2>{_e(heading)}</h2>{body}</section>'


_FORMAT = {"Bps": format_rate, "bytes": format_bytes, "flops": format_flops, "s": format_time}


def _value(value: Any, unit: str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    formatter = _FORMAT.get(unit or "")
    return formatter(value) if formatter and isinstance(value, (int, float)) else str(value)


def _q(quantity) -> str:
    return "-" if quantity is None or not quantity.known else str(quantity.value)


def default_model(doc: profiles.Document, cards: int | None = None) -> ModelSpec:
    """The largest model preset whose fp16 weights take at most 90 % of the memory of ``cards`` of the profile's
    cards (default: all of them); the smallest preset where none does."""
    device = doc.profile.devices[0]
    memory = (device.memory_bytes.value or 0) * max(1, cards or doc.profile.device_count)
    fitting = [m for m in PRESETS.values() if 2 * m.params <= FIT_FRACTION * memory]
    pool = fitting or [min(PRESETS.values(), key=lambda m: m.params)]
    return max(pool, key=lambda m: m.params)


def _machine(doc: profiles.Document) -> str:
    p = doc.profile
    rows = []
    for i, d in enumerate(p.devices):
        host = d.host_link
        pcie = (f"Gen{_q(host.pcie_generation)} x{_q(host.pcie_width)}" if host else "-")
        rows.append((d.index if d.index is not None else i, d.name, d.units, _value(d.memory_bytes.value, "bytes"),
                     _value(d.memory_bandwidth_Bps.value, "Bps") + f" ({d.memory_bandwidth_Bps.cited})",
                     d.compute_capability or "-", pcie, d.peer_link.kind if d.peer_link else "-"))
    devices = _table(("device", "name", "count", "memory", "memory bandwidth (source)", "compute capability",
                      "PCIe", "peer link"), rows)
    info = p.host.model_dump(exclude_none=True) if p.host else {}
    info.pop("anomalies", None)
    topology = info.pop("topology", None)
    scalars = [(k, v) for k, v in info.items() if isinstance(v, (str, int, float, bool))]
    nested = [(k, v) for k, v in info.items() if not isinstance(v, (str, int, float, bool))]
    prov = [("profile", doc.name), ("title", p.title), ("source", p.source), ("created", p.created),
            ("gpucal", p.gpucal_version), ("file", doc.origin)]
    notes = "".join(f"<li>{_e(n)}</li>" for n in p.notes or [])
    details = "".join(f"<details><summary>{_e(k)}</summary><pre>{_e(json.dumps(v, indent=1, ensure_ascii=False))}"
                      "</pre></details>" for k, v in nested)
    return (devices + "<h3>Provenance</h3>" + _table(("field", "value"), prov) + "<h3>Host</h3>"
            + (_table(("field", "value"), scalars) if scalars else '<p class="note">no host recorded</p>')
            + details + _topology(topology) + (f"<h3>Notes</h3><ul>{notes}</ul>" if notes else ""))


def _topology(topology) -> str:
    """The host's topology as the run read it (NVML): its devices and its pairs."""
    if not isinstance(topology, dict):
        return ""
    head = f"<h3>Topology</h3><p>{_e(topology.get('source', ''))}: {_e(topology.get('reason', ''))}</p>"
    devices = [d for d in topology.get("devices") or [] if isinstance(d, dict)]
    pairs = [q for q in topology.get("pairs") or [] if isinstance(q, dict)]
    keys = ("index", "name", "pci_bus_id", "numa_node", "cpu_affinity", "pcie_generation_max", "pcie_width_max",
            "nvlinks_active")
    out = head + (_table(keys, [tuple(d.get(k, "-") for k in keys) for d in devices]) if devices else "")
    if pairs:
        out += _table(("pair", "common ancestor", "NVLinks", "via", "P2P (NVML)"), [
            (f"{q.get('src')} -> {q.get('dst')}", q.get("common_ancestor", "-"), q.get("nvlinks", "-"),
             q.get("nvlink_via", "-"), ", ".join(f"{k} {v}" for k, v in (q.get("p2p") or {}).items()))
            for q in pairs])
    return out


def _link_of(doc: profiles.Document) -> PlannerLink | None:
    try:
        choice = planner_link(doc)
    except InputError:
        return None
    if choice is None:
        return None
    return PlannerLink(choice.spec.name, {"value": choice.spec.alpha_s, "source": choice.source},
                       {"value": choice.spec.beta_Bps, "source": choice.source})


def _peaks(rows: list[dict], group: str | None) -> str:
    """``gpucal calibrate``'s summary rows (``calibrate.health``), one per figure over the devices, against
    their peaks."""
    table = []
    for r in condensed_rows([r for r in rows if r.get("group") == group]):
        unit = {"FLOP/s": "flops", "s": "s"}.get(r["unit"], "Bps")
        value = _value(r["value"], unit) if r["value"] else "-"
        if r["low"] is not None:
            value += f" ({_value(r['low'], unit)} - {_value(r['high'], unit)})"
        table.append((r["figure"], r["where"], value, _value(r.get("alpha_s"), "s") if r.get("alpha_s") else "",
                      _value(r["peak"], unit) if r["peak"] else "-", r["peak_ref"] or "",
                      f"{100 * r['efficiency_frac']:.1f} %" if r["efficiency_frac"] else "-"))
    head = ("decode term" if group == "decode" else "figure", "where", "median", "alpha", "peak", "peak from",
            "share")
    return _table(head, table, numeric=(2, 3, 4, 6))


def _summary(doc: profiles.Document) -> str:
    rows = summary_rows(doc.profile)
    parts = [_peaks(rows, None)]
    if any(r.get("group") == "decode" for r in rows):
        parts.append("<h3>The decode step's figures</h3>" + _peaks(rows, "decode"))
    sheet = profiles.datasheet_for(doc.profile.devices[0].name)
    if sheet is None or sheet.name == doc.name:
        parts.append(f'<p class="note">no datasheet profile for {_e(doc.profile.devices[0].name)} to set the '
                     "figures beside</p>" if sheet is None else "")
    else:
        result = compare(sheet, doc, _link_of(sheet), _link_of(doc))
        table = [(r.label, _value(r.b, r.unit), r.b_source or (r.b_reason or "-"), _value(r.a, r.unit),
                  "-" if r.ratio is None else f"{r.ratio:.3f}") for r in result.rows]
        parts.append(f"<h3>Against the datasheet profile {_e(sheet.name)} (gpucal compare)</h3>"
                     + _table(("figure", "this profile", "source", "datasheet", "ratio"), table, numeric=(1, 3, 4)))
    anomalies = doc.profile.host.anomalies if doc.profile.host and doc.profile.host.anomalies else []
    items = "".join(f"<li><b>{_e(a.kind)}</b>: {_e(a.text)}</li>" for a in anomalies)
    parts.append(f"<h3>Anomalies</h3><ul>{items}</ul>" if items else
                 '<h3>Anomalies</h3><p class="note">none recorded</p>')
    return "".join(parts)


def _p2p(doc: profiles.Document) -> str:
    links = doc.profile.links or []
    if not links:
        return '<p class="note">no link between devices in this profile (one device, or a datasheet profile)</p>'
    n = max(max(l.src, l.dst) for l in links) + 1
    by_pair = {(l.src, l.dst): l for l in links}
    head = "<tr><th>src \\ dst</th>" + "".join(f"<th>{j}</th>" for j in range(n)) + "</tr>"
    body = []
    for i in range(n):
        cells = []
        for j in range(n):
            link = by_pair.get((i, j))
            if i == j or link is None:
                cells.append("<td>-</td>")
            else:
                label = link.verdict + ("+" + "+".join(link.flags) if link.flags else "")
                beta = _value(link.beta_Bps.value, "Bps") if link.beta_Bps.known else "-"
                cells.append(f'<td class="v-{_e(link.verdict)}">{_e(label)}<br>{_e(beta)}</td>')
        body.append(f"<tr><th>{i}</th>{''.join(cells)}</tr>")
    evidence = []
    for link in links:
        reasons = "".join(f"<li>{_e(r)}</li>" for r in link.reasons or [])
        evidence.append(f"<li>dev{link.src} &rarr; dev{link.dst}: <b>{_e(link.verdict)}</b>, path {_e(link.path)}, "
                        f"alpha {_e(_value(link.alpha_s.value, 's'))}, beta {_e(_value(link.beta_Bps.value, 'Bps'))}"
                        f"<ul>{reasons}</ul></li>")
    return f"<table>{head}{''.join(body)}</table><h3>Evidence per pair</h3><ul>{''.join(evidence)}</ul>"


def _figures(doc: profiles.Document, model: ModelSpec, cards, strategy) -> str:
    try:
        drawn = draw_figures(doc, FIGURES, model=model, cards=cards, strategy=strategy)
    except InputError as exc:
        if "matplotlib" not in str(exc):
            raise
        return f'<p class="note">{_e(exc)}</p>'
    parts = []
    for name, png, why in drawn:
        if png is None:
            parts.append(f'<p class="note">{_e(name)}: not drawn ({_e(why)})</p>')
            continue
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure id="fig-{_e(name)}"><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_e(name)}.png (gpucal plot)</figcaption></figure>")
    return "".join(parts)


def _plan(doc: profiles.Document, model: ModelSpec, cards, strategy) -> tuple[str, str]:
    try:
        curves = plan_curves(doc, model=model, cards=cards, strategy=strategy)
    except PlotSkipped as skipped:
        note = f'<p class="note">no plan: {_e(skipped.reason)}</p>'
        return note, note
    layout = f"{curves.strategy} over {curves.cards} card(s) (TP {curves.tp}, PP {curves.pp})"
    head = (f"<p>{_e(curves.model)} on {_e(curves.gpu)} ({_e(curves.flops_mode)}), {_e(layout)}"
            + (f", link {_e(curves.link)}" if curves.link else "")
            + f", context {_e(curves.context_tokens)} tokens per sequence (as gpucal plan's default)</p>")
    fits = ["yes" if f else "no: does not fit in memory" for f in curves.fits]
    if curves.step == "measured":
        rows = [(int(b), _value(float(t), "s"), _rate(a), _value(float(st), "s"), _rate(sa),
                 f"{float(t) / float(st):.2f}", bound, fit)
                for b, t, a, st, sa, bound, fit in zip(curves.batch, curves.token_latency_s,
                                                       curves.aggregate_tokens_per_s, curves.seed_token_latency_s,
                                                       curves.seed_aggregate_tokens_per_s, curves.bound, fits)]
        plan = head + _table(("batch", "measured step: token latency", "tokens/s", "the article's step: token "
                              "latency", "tokens/s", "measured / article", "bound (article)", "fits"), rows,
                             numeric=(0, 1, 2, 3, 4, 5))
        decode = _decode(curves)
    else:
        rows = [(int(b), _value(float(t), "s"), _rate(a), bound, fit) for b, t, a, bound, fit in
                zip(curves.batch, curves.token_latency_s, curves.aggregate_tokens_per_s, curves.bound, fits)]
        plan = (head + '<p class="note">the profile holds no decode figures: the article\'s step alone</p>'
                + _table(("batch", "the article's step: token latency", "tokens/s", "bound", "fits"), rows,
                         numeric=(0, 1, 2)))
        decode = '<p class="note">no measured decode terms or published figures in this profile</p>'
    return plan, decode


def _rate(tokens_per_s) -> str:
    value = float(tokens_per_s)
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _decode(curves) -> str:
    wanted = [i for i, b in enumerate(curves.batch) if int(b) in TERM_BATCHES]
    sources = curves.measured_sources or {}
    keys = [k for k, v in curves.measured_terms[0].items() if k.endswith("_s") and isinstance(v, (int, float))]
    rows = [(k.removesuffix("_s").replace("_", " "), *[_value(curves.measured_terms[i][k], "s") for i in wanted],
             "; ".join(f"{what}: {sources[what]}" for what in TERM_SOURCES.get(k, ()) if what in sources)
             or ("the sum of the terms" if k in ("token_latency_s", "layer_time_s") else
                 "the ideal term (no figure: see below)" if TERM_SOURCES.get(k) else ""))
            for k in keys]
    table = _table(("term", *[f"batch {int(curves.batch[i])}" for i in wanted], "source"), rows,
                   numeric=tuple(range(1, len(wanted) + 1)))
    fallbacks = "".join(f"<li>{_e(f)}</li>" for f in curves.measured_fallbacks or [])
    return table + (f"<p>priced ideally, for want of a figure:</p><ul>{fallbacks}</ul>" if fallbacks else "")


def _cluster(doc: profiles.Document) -> str:
    p = doc.profile
    network = list(p.network or [])
    collectives = list(p.collectives or [])
    if not network and not collectives:
        return '<p class="note">no network between hosts and no collective in this profile</p>'
    parts = []
    if p.cluster is not None:
        hosts = [(i, h.hostname if hasattr(h, "hostname") else "", len(h.devices)) for i, h in enumerate(p.cluster.hosts)]
        parts.append(_table(("host", "hostname", "devices"), hosts))
    if network:
        parts.append(_table(("ranks", "hosts", "same host", "alpha", "beta", "transport", "note"), [
            (f"{e.src_rank} - {e.dst_rank}", f"{e.src_host} - {e.dst_host}", _value(e.same_host, None),
             _value(e.alpha_s.value, "s"), _value(e.beta_Bps.value, "Bps"), e.transport or "-",
             e.reason or e.alpha_s.reason or e.beta_Bps.reason or "") for e in network], numeric=(3, 4)))
    if collectives:
        parts.append(_table(("op", "ranks", "hosts", "graphs", "one process", "alpha", "beta", "library", "note"), [
            (c.op, c.nranks, c.span_hosts, _value(bool(c.graphs), None), _value(bool(c.single_process), None),
             _value(c.alpha_s.value, "s"), _value(c.beta_Bps.value, "Bps"), c.library or "-",
             c.reason or c.alpha_s.reason or c.beta_Bps.reason or "") for c in collectives],
            numeric=(1, 2, 5, 6)))
    return "".join(parts)


def report_html(doc: profiles.Document, *, model: str | ModelSpec | None = None, cards: int | None = None,
                strategy: str | None = None) -> str:
    """The page of ``doc`` (see the module docstring); ``model`` (default: ``default_model``), ``cards`` and
    ``strategy`` as ``gpucal plot``'s."""
    p = doc.profile
    spec = default_model(doc, cards) if model is None else (resolve_model(model) if isinstance(model, str) else model)
    plan, decode = _plan(doc, spec, cards, strategy)
    sections = {
        "machine": ("The machine", _machine(doc)),
        "summary": ("Figures against their peaks", _summary(doc)),
        "p2p": ("P2P verdicts", _p2p(doc)),
        "figures": ("Figures", _figures(doc, spec, cards, strategy)),
        "decode": (f"The decode step's terms ({spec.name})", decode),
        "plan": (f"The plan ({spec.name})", plan),
        "cluster": ("Network and collectives", _cluster(doc)),
    }
    count = p.device_count
    names = ", ".join(sorted({d.name for d in p.devices}))
    title = f"{p.source}: {doc.name}, {count} x {names}"
    body = "".join(_section(key, *sections[key]) for key in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>gpucal report, {_e(title)}</title><style>{_STYLE}</style></head><body>"
            f'<h1>gpucal report: {_e(doc.name)} <span class="tag {_e(p.source)}">{_e(p.source)}</span></h1>'
            f"<p>{_e(p.title)}</p>"
            + ('<p class="note"><b>simulated</b>: a virtual machine priced by a profile; no figure here is a '
               "measurement</p>" if p.source == "simulated" else "")
            + body + f'<p class="note">written by gpucal {_e(__version__)}</p></body></html>\n')


def check_report_output(path, *, force: bool, flag: str = "-o") -> Path:
    """Check, before anything is measured or drawn, that the page can be written to ``path``: a new name, or
    (with ``force``) a regular file, in a folder that is or can be made. ``InputError`` naming ``flag``."""
    if not str(path).lower().endswith((".html", ".htm")):
        raise InputError(f"{flag}: {path}: a report is an HTML file: name it FILE.html")
    return check_output(path, force=force, flag=flag)


def write_report(doc: profiles.Document, path, *, model=None, cards: int | None = None, strategy: str | None = None,
                 force: bool = False, flag: str = "-o") -> Path:
    """Write ``report_html(doc, ...)`` to ``path`` atomically (an existing file only with ``force``, and only a
    regular file); the folder is made. Returns the path."""
    if cards is not None and (isinstance(cards, bool) or not isinstance(cards, int) or cards < 1):
        raise InputError(f"--cards: must be a whole number of at least 1, got {cards!r}")
    if strategy is not None and strategy not in PLAN_STRATEGIES:
        raise InputError(f"--strategy: expected one of {', '.join(PLAN_STRATEGIES)}, got {strategy!r}")
    check_report_output(path, force=force, flag=flag)
    text = report_html(doc, model=model, cards=cards, strategy=strategy)
    target = Path(path)
    make_folder(target.parent if str(target.parent) else Path("."), flag=flag)
    return write_atomic(target, text, force=force, flag=flag)
