"""The human view of one plan: what went in, then the terms, the bound and the result."""

from __future__ import annotations

from typing import Any

from gpucal import render
from gpucal.units import format_bytes, format_flops, format_rate, format_time, size_label

__all__ = ["show_plan"]

_STRATEGY = {"pp": "pipeline parallel", "tp": "tensor parallel", "hybrid": "hybrid (TP inside PP stages)"}


def _link_line(link: dict | None, unused: bool = False) -> str:
    if link is None:
        return "none"
    text = f"{link['name']} ({link['source']}): alpha {format_time(link['alpha_s'])}, beta {format_rate(link['beta_Bps'])}"
    if link.get("pieces"):
        text += "; regimes: " + ", ".join(f"from {size_label(r['from_bytes'])} alpha {format_time(r['alpha_s'])} "
                                          f"beta {format_rate(r['beta_Bps'])}" for r in link["pieces"])
    return text + (" (unused: one card per host)" if unused else "")


def _inputs_lines(p: dict[str, Any]) -> list[str]:
    i = p["inputs"]
    m, g = i["model"], i["gpu"]
    hosts = f", {p['hosts']} hosts of {i['cards_per_host']}" if p["hosts"] > 1 else ""
    lines = [
        f"{m['name']} on {i['cards']} x {g['name']}, {_STRATEGY[i['strategy']]} (tp {i['tp']} x pp {i['pp']}{hosts}), "
        f"batch {i['batch']}, {i['dtype']}",
        f"  model  P {m['params'] / 1e9:.4g}e9 params, L {m['layers']}, h {m['hidden']}, {m['heads']} heads, "
        f"{m['kv_heads']} KV heads",
        f"  gpu    {g['name']} ({g['profile_source']} profile): {format_rate(g['memory_bandwidth_Bps'])}, "
        f"{format_flops(g['flops'])} ({g['flops_mode']}), {format_bytes(g['memory_bytes'])}",
        f"  link   {_link_line(i['link'], unused=i['cards_per_host'] == 1 and i['cards'] > 1)}",
    ]
    if i["net"] is not None:
        lines.append(f"  net    {_link_line(i['net'])}")
    if i.get("collective") is not None:
        lines.append(f"  comm   {_link_line(i['collective'])}")
    if g["flops_mode"].startswith("sparse:"):
        lines.append("  note   this FLOP/s is a 2:4-sparse rate (the profile's choice); dense matmuls get half of it")
    return lines


def _source_word(sources: dict, *keys: str) -> str:
    """Where a measured term's figure came from, in one or two words (the full text is in --json)."""
    for key in keys:
        text = sources.get(key)
        if text:
            for word in ("flag", "published", "simulated"):
                if word in text:
                    return word
            return "measured"
    return "ideal"


def _side_by_side(p: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The article's step beside the measured step, term by term (each over the whole step)."""
    seed, t, src = p["seed"], p["terms"], p["sources"]
    i = p["inputs"]
    weights_s = i["pp"] * max(seed["weights_bytes"] / i["cards"] / i["gpu"]["memory_bandwidth_Bps"],
                              seed["compute_time_s"])
    kv_s = i["pp"] * seed["card_time_s"] - weights_s
    exchanges = (f"{seed['tp_exchanges']} x {format_time(seed['tp_exchange_time_s'])}" if seed["tp_exchanges"]
                 else "-")
    measured_ar = f"{t['tp_allreduces']} x {format_time(p['tp_exchange_time_s'])}" if t["tp_allreduces"] else "-"
    mode = "CUDA graphs" if t["graphs"] else "eager launches"
    return [
        ("matrix products (weights)", format_time(weights_s), format_time(t["gemm_time_s"] + t["lm_head_time_s"]),
         f"{_source_word(src, 'gemm')}: decode GEMMs at m = {i['batch']}, LM head "
         f"{format_time(t['lm_head_time_s'])}"),
        ("KV cache (attention)", format_time(kv_s), format_time(t["attention_time_s"]),
         f"{_source_word(src, 'attention')}: {format_bytes(t['kv_bytes_per_layer_per_card'])} a layer"),
        ("norms, rotary, activations", "-", format_time(t["elementwise_time_s"]),
         f"{_source_word(src, 'stream')}: bytes over {format_rate(t['stream_Bps'])}"),
        ("launches and host sync", "-", format_time(t["launch_time_s"] + t["sync_time_s"]),
         f"{_source_word(src, 'launch')}: {t['kernels_per_step']} kernels, {mode}"),
        ("TP all-reduce", format_time(seed["tp_comm_time_s"]), format_time(t["tp_comm_time_s"]),
         f"{_source_word(src, 'allreduce')}: {measured_ar} (article: {exchanges})" if t["tp_allreduces"] else ""),
        ("PP hops", format_time(seed["pp_comm_time_s"]), format_time(t["pp_comm_time_s"]),
         f"{p['pp_hops']} hops" if p["pp_hops"] else ""),
        ("token latency", format_time(seed["token_latency_s"]), format_time(p["token_latency_s"]),
         f"measured / article: {p['token_latency_s'] / seed['token_latency_s']:.3g}x"),
        ("tokens/s per sequence", render.number(seed["tokens_per_s"]), render.number(p["tokens_per_s"]), ""),
        ("aggregate tokens/s", render.number(seed["aggregate_tokens_per_s"]),
         render.number(p["aggregate_tokens_per_s"]), f"{i['pp']} micro-batches in flight" if i["pp"] > 1 else ""),
    ]


def _memory_rows(p: dict[str, Any]) -> list[tuple[str, str, str]]:
    """What a card holds: weights, KV cache, their sum against its memory (both steps alike)."""
    fits = "fits" if p["fits"] else "does NOT fit"
    return [
        ("weights per card", format_bytes(p["weights_bytes_per_card"]), ""),
        ("KV cache per card", format_bytes(p["kv_bytes_per_card"]), f"{format_bytes(p['kv_bytes_per_token'])} per token"),
        ("memory per card", format_bytes(p["memory_bytes_per_card_needed"]),
         f"{fits} in {format_bytes(p['inputs']['gpu']['memory_bytes'])}; capacity needs {p['min_cards']} cards "
         f"({p['min_tp_degree'] or 'no valid'} with TP)"),
    ]


def _show_measured(p: dict[str, Any]) -> None:
    out = render.console()
    out.print(render.table(("term", "article's step", "measured step", "measured from"), _side_by_side(p),
                           right=(1, 2)))
    for text in p["fallbacks"]:
        render.line(f"  ideal  {text}")
    rows = [
        ("roofline", f"{p['bound']}-bound", f"balance batch {p['balance_batch']:.4g}; compute utilization "
                                           f"{render.percent(p['compute_utilization_frac'])} of the measured card time"),
        *_memory_rows(p),
    ]
    out.print(render.table(("term", "value", "note"), rows, right=(1,)))
    target = p.get("target")
    if target:
        out.print(render.table(("target", "value", "note"), _target_rows(target), right=(1,)))


def show_plan(p: dict[str, Any]) -> None:
    i = p["inputs"]
    out = render.console()
    for line in _inputs_lines(p):
        render.line(line)
    if p.get("step") == "measured":
        render.line("  step   measured: each term as the profile's figures price it; beside it the article's step "
                    "(--step seed: the article's alone)")
        _show_measured(p)
        return
    bound = f"{p['bound']}-bound; balance batch {p['balance_batch']:.4g}"
    model = "measured all-reduce" if i["comm_model"] == "measured" else f"{i['comm_model']} model"
    tp_note = (f"{p['tp_exchanges']} x {format_time(p['tp_exchange_time_s'])} ({model}, "
               f"{format_bytes(p['transfer_bytes'])} each)") if p["tp_exchanges"] else ""
    pp_note = ""
    if p["pp_hops"]:
        pp_note = f"{p['pp_hops']} hops of {format_bytes(p['transfer_bytes'])}"
        if p["pp_network_hops"]:
            pp_note += f", {p['pp_network_hops']} over the network"
    rows = [
        ("memory time per card", format_time(p["memory_time_s"]), "w·P/N / BW (+ KV cache)"),
        ("compute time per card", format_time(p["compute_time_s"]), "B·2·P/N / F"),
        ("card time", format_time(p["card_time_s"]), bound),
        ("TP comm", format_time(p["tp_comm_time_s"]), tp_note),
        ("PP comm", format_time(p["pp_comm_time_s"]), pp_note),
        ("token latency", format_time(p["token_latency_s"]), f"comm share {render.percent(p['comm_share_frac'])}"),
        ("tokens/s per sequence", render.number(p["tokens_per_s"]), ""),
        ("aggregate tokens/s", render.number(p["aggregate_tokens_per_s"]),
         f"{i['pp']} micro-batches in flight" if i["pp"] > 1 else ""),
        ("compute utilization", render.percent(p["compute_utilization_frac"]), "compute time / card time"),
        *_memory_rows(p),
    ]
    out.print(render.table(("term", "value", "note"), rows, right=(1,)))
    if "token_latency_s" in p.get("measured", {}):
        render.line(f"measured step: {format_time(p['measured']['token_latency_s'])} a token "
                    "(gpucal plan --step measured shows its terms)")
    target = p.get("target")
    if target:
        out.print(render.table(("target", "value", "note"), _target_rows(target), right=(1,)))


def _target_rows(t: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = [("tokens/s per sequence", render.number(t["tokens_per_s"]), "met" if t["met"] else "NOT met at this batch")]
    rows.append(("largest batch meeting it", "none" if t["max_batch"] is None else str(t["max_batch"]), ""))
    if t["solved_link"] is not None:
        need = "unreachable" if t["required_beta_Bps"] is None else format_rate(t["required_beta_Bps"])
        rows.append((f"{t['solved_link']} bandwidth needed", need, "at this batch, per direction"))
        if t["nics"] is not None:
            rows.append(("NICs needed", str(t["nics"]), f"of {format_rate(t['nic_beta_Bps'])} each"))
    return rows
