"""``gpucal plan --sweep``: many configurations at once (batch x cards x strategy), one row each.

Configurations a strategy cannot run (a TP degree that does not divide the heads, more stages than
layers) are left out; configurations that do not fit in memory stay in, with ``fits`` false.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gpucal import limits, render
from gpucal.commands.plan.inputs import SWEEP_FORMAT, inputs_dict, measured_figures
from gpucal.errors import InputError
from gpucal.plan import sweep
from gpucal.plan.measured import measured_step
from gpucal.plan.spec import NO_LINK
from gpucal.profiles.decode_queries import has_decode_terms
from gpucal.units import format_time

__all__ = ["build_sweep", "show_sweep", "sweep_ranges", "MAX_TABLE_ROWS"]

MAX_TABLE_ROWS = 200


def sweep_ranges(specs) -> dict[str, list]:
    """The ``--sweep`` values per key (a key given twice: both ranges), refused before anything is built when
    their product passes ``limits.MAX_SWEEP_CONFIGURATIONS``."""
    sweeps: dict[str, list] = {}
    for key, values in specs or []:
        sweeps.setdefault(key, []).extend(values)
    total = 1
    for values in sweeps.values():
        total *= len(values)
    if total > limits.MAX_SWEEP_CONFIGURATIONS:
        product = " x ".join(f"{len(v)} {k}" for k, v in sweeps.items())
        raise InputError(f"--sweep: {product} = {total} configurations, more than the "
                         f"{limits.MAX_SWEEP_CONFIGURATIONS} a sweep evaluates (gpucal.limits.MAX_SWEEP_CONFIGURATIONS)")
    return sweeps


def build_sweep(args, r: dict, strategies: list[str], batches: list[int], cards: list[int]) -> dict[str, Any]:
    """Every configuration of ``strategies`` x ``batches`` x ``cards`` that can run (``SWEEP_FORMAT``)."""
    if "hybrid" in strategies and args.tp is None:
        raise InputError("--tp: a hybrid sweep needs the TP degree (--tp N); cards are then swept in multiples of it")
    per_host = args.cards_per_host
    if per_host is not None and max(cards) > per_host and r["net"] is None:
        raise InputError(f"--net: required when --cards ({max(cards)}) exceeds --cards-per-host ({per_host})")
    if r["link"] is None and max(cards) > 1 and (per_host is None or per_host > 1):
        raise InputError(f"--link: required: {r['gpu'].document.origin} has no measured link between cards and names no default link (plan_defaults.link)")
    inputs = inputs_dict(args, r, strategies, cards, args.tp, None, batches)
    inputs["cards_per_host"] = per_host
    doc = r["gpu"].document
    inputs["step"] = args.step or ("measured" if has_decode_terms(doc) else "seed")
    inputs["graphs"] = args.graphs
    options = dict(net=r["net"].spec if r["net"] else None, cards_per_host=per_host, comm=args.comm or "seed",
                   context_tokens=args.context, bytes_per_weight=inputs["bytes_per_weight"],
                   kv_bytes_per_value=inputs["kv_bytes_per_value"], act_bytes=inputs["act_bytes"],
                   kv_cache_bytes=args.kv_bytes)
    link = r["link"].spec if r["link"] else NO_LINK
    try:
        result = sweep(r["model"], r["gpu"].spec, batches=batches, cards=cards,
                       strategies=tuple(dict.fromkeys(strategies)), hybrid_tp=args.tp, link=link, **options)
    except ValueError as exc:
        raise InputError(f"--sweep: {exc}") from None
    if len(result) == 0:
        raise InputError("--sweep: no configuration can run: every TP degree fails to divide the heads, "
                         "or every pipeline has more stages than layers")
    rows = [result.row(i) for i in range(len(result))]
    if inputs["step"] == "measured":
        rows, inputs["fallbacks"] = _measured_rows(args, r, rows, link, options)
    return {"schema": SWEEP_FORMAT, "count": len(result), "rows": rows, "inputs": inputs}


def _measured_rows(args, r: dict, rows: list[dict], link, options: dict) -> tuple[list[dict], list[str]]:
    """Each configuration's measured step (``gpucal.plan.measured``), the article's latency beside it (the
    profile's figures per TP size: its all-reduce is the one measured over that many cards), and every term that
    fell back to the ideal one in some configuration."""
    figures, out, fallbacks = {}, [], {}
    for row in rows:
        per_host = options["cards_per_host"] or row["cards"]
        key = (row["tp"], per_host)
        if key not in figures:
            figures[key] = measured_figures(args, r, row["tp"], per_host)
        model = replace(r["model"], ffn=None) if r.get("reshaped") else r["model"]  # as a single plan's
        try:
            step = measured_step(model, r["gpu"].spec, figures[key], batch=row["batch"], tp=row["tp"],
                                 pp=row["pp"], link=link, **options)
        except ValueError as exc:
            raise InputError(f"--sweep: {exc}") from None
        head = {k: row[k] for k in ("strategy", "batch", "cards", "tp", "pp")}
        out.append(head | step.step.row() | {"seed_token_latency_s": row["token_latency_s"]})
        fallbacks.update(dict.fromkeys(step.fallbacks))
    return out, list(fallbacks)


def show_sweep(result: dict[str, Any]) -> None:
    rows = result["rows"]
    inputs = result["inputs"]
    step = "measured step" if inputs["step"] == "measured" else f"article's step, {inputs['comm_model']} comm"
    title = (f"{inputs['model']['name']} on {inputs['gpu']['name']} ({inputs['dtype']}, {step}): "
             f"{result['count']} configurations")
    body = [
        (row["strategy"], row["cards"], f"{row['tp']}x{row['pp']}", row["batch"], format_time(row["token_latency_s"]),
         render.number(row["tokens_per_s"]), render.number(row["aggregate_tokens_per_s"]), row["bound"],
         render.percent(row["comm_share_frac"]), "yes" if row["fits"] else "no")
        for row in rows[:MAX_TABLE_ROWS]
    ]
    render.print_table(
        ("strategy", "cards", "tp x pp", "batch", "latency", "tok/s/seq", "tok/s all", "bound", "comm", "fits"),
        body, title=title, right=(1, 3, 4, 5, 6, 8),
    )
    if len(rows) > MAX_TABLE_ROWS:
        render.line(f"... {len(rows) - MAX_TABLE_ROWS} more configurations; --json prints them all")
    for text in inputs.get("fallbacks") or []:
        render.line(f"  ideal  {text}")
