"""One ``gpucal plan`` configuration: the layout checked against the model and hosts, the TP exchange model
chosen, the memory checked, and (``--target-tps``) the batch, bandwidth and NICs a target needs."""

from __future__ import annotations

from typing import Any

from gpucal.commands.plan.inputs import (PLAN_FORMAT, chosen_row, flag_error, inputs_dict, measured, measured_figures,
                                        measured_row, resolve_nic, step)
from gpucal.errors import InputError
from gpucal.plan import Layout, LinkSpec, max_batch_for_target, nics_needed, required_beta_for_target
from gpucal.plan.sweep import valid_tp
from gpucal.profiles.decode_queries import has_decode_terms
from gpucal.profiles.queries import profile_collective

__all__ = ["build_plan"]


def _check_layout(args, r: dict, layout: Layout) -> None:
    model = r["model"]
    tp_flag = "--tp" if layout.strategy == "hybrid" else "--cards"
    if not valid_tp(model, layout.tp):
        degrees = [t for t in range(1, model.heads + 1) if valid_tp(model, t)]
        raise InputError(f"{tp_flag}: a TP degree of {layout.tp} does not divide {model.name}'s {model.heads} "
                         f"attention heads and {model.kv_heads} KV heads; valid TP degrees: "
                         + ", ".join(map(str, degrees)))
    if layout.pp > model.layers:
        raise InputError(f"{'--pp' if layout.strategy == 'hybrid' else '--cards'}: {layout.pp} pipeline stages "
                         f"for {model.layers} layers; at most one stage per layer")
    per_host = layout.per_host
    if per_host % layout.tp and layout.tp % per_host:
        raise InputError(f"--cards-per-host: {per_host} cards per host and TP groups of {layout.tp} cards do not "
                         "line up (one must divide the other)")
    if layout.cards > per_host and r["net"] is None:
        raise InputError(f"--net: required when --cards ({layout.cards}) exceeds --cards-per-host ({per_host})")
    if layout.cards > 1 and r["link"] is None and per_host > 1:
        raise InputError(f"--link: required: {r['gpu'].document.origin} has no measured link between cards and names no default link (plan_defaults.link)")


def _choose_comm(args, r: dict, layout: Layout) -> None:
    """The TP exchange model: ``--comm``, or the measured all-reduce where the profile has one over this TP
    group (its size, and as many hosts as the group spans), else the seed model. A measured all-reduce ran
    on the profile's own network (a group across hosts) or links (inside a host): ``--net`` or ``--link``
    replacing those leaves it out (refused with ``--comm measured``)."""
    doc = r["gpu"].document
    span = -(-layout.tp // layout.per_host) if layout.tp > layout.per_host else 1
    found = profile_collective(doc, layout.tp, span) if layout.tp > 1 else None
    replaced = ("--net" if args.net is not None else None) if span > 1 else ("--link" if args.link is not None else None)
    if args.comm == "measured" and found is None:
        have = sorted({(e.nranks, e.span_hosts) for e in doc.profile.collectives or [] if e.op == "all-reduce"})
        listed = ", ".join(f"{n} ranks on {h} host(s)" for n, h in have) or "none"
        raise InputError(f"--comm: measured: {doc.origin} has no measured all-reduce over {layout.tp} ranks on "
                         f"{span} host(s) (it has: {listed})")
    if args.comm == "measured" and replaced:
        where = "network" if span > 1 else "links between its cards"
        raise InputError(f"--comm: measured: the all-reduce was measured on {doc.origin}'s own {where}, which "
                         f"{replaced} replaces; drop {replaced}, or use --comm seed or ring")
    r["comm"] = args.comm or ("measured" if found is not None and not replaced else "seed")
    r["collective"] = found if r["comm"] == "measured" else None


def _check_fit(r: dict, inputs: dict, row: dict) -> None:
    if row["fits"]:
        return
    memory = r["gpu"].spec.memory_bytes
    one, two = step(r, inputs, batch=1).row(), step(r, inputs, batch=2).row()
    per_seq = two["memory_bytes_per_card_needed"] - one["memory_bytes_per_card_needed"]
    fixed = one["memory_bytes_per_card_needed"] - per_seq
    gb = 1e9
    if fixed > memory or per_seq <= 0:
        raise InputError(
            f"--cards: {inputs['cards']} cards of {r['gpu'].spec.name} need {fixed / gb:.4g} GB each for weights"
            f"{' and KV cache' if inputs['kv_cache_bytes'] else ''}, more than their {memory / gb:.4g} GB; "
            f"at least {row['min_cards']} cards hold it ("
            + (f"{row['min_tp_degree']} with TP" if row['min_tp_degree'] else "no TP degree the model allows does")
            + "; or --ignore-memory)")
    largest = int((memory - fixed) // per_seq)
    raise InputError(
        f"--batch: batch {inputs['batch']} does not fit: it needs {row['memory_bytes_per_card_needed'] / gb:.4g} GB "
        f"per card of {memory / gb:.4g} GB (weights {row['weights_bytes_per_card'] / gb:.4g} GB, KV cache "
        f"{row['kv_bytes_per_card'] / gb:.4g} GB, activations {row['activation_bytes_per_card'] / gb:.4g} GB); "
        f"the largest batch that fits is {largest} (or --ignore-memory)")


def _target(args, r: dict, inputs: dict, row: dict) -> dict[str, Any]:
    target = args.target_tps

    def tokens_per_s_at(batch: int) -> float:
        row_at = chosen_row(r, inputs, batch=batch)
        return row_at["tokens_per_s"] if (row_at["fits"] or args.ignore_memory) else 0.0

    on_net = row["hosts"] > 1
    which = "net" if on_net else "link"
    solved: LinkSpec | None = r[which].spec if r[which] else None
    required = None
    if solved is not None and inputs["cards"] > 1:
        collective = r.get("collective")
        across = inputs["tp"] > inputs["cards_per_host"]
        # the measured all-reduce ran on this very network (across hosts) or these links (inside a host)
        scale_collective = collective is not None and (which == "net") == across

        def latency_at(beta: float) -> float:
            changes = {which: solved.with_beta(beta)}
            if scale_collective:  # its bandwidth is the link's: more NICs (or a faster link) scale its beta too
                c = collective.spec
                changes["collective"] = c.with_beta(c.beta_Bps * beta / solved.beta_Bps)
            return chosen_row(r, inputs, **changes)["token_latency_s"]

        required = required_beta_for_target(latency_at, target, solved.beta_Bps)
    if args.nic is not None:
        nic_Bps = resolve_nic(args.nic)
    else:
        nic_Bps = solved.beta_Bps if solved is not None else None
    return {
        "tokens_per_s": target,
        "met": row["tokens_per_s"] >= target * (1 - 1e-9),
        "max_batch": max_batch_for_target(tokens_per_s_at, target),
        "solved_link": which if solved is not None else None,
        "required_beta_Bps": required,
        "nic_beta_Bps": nic_Bps,
        "nics": nics_needed(required, nic_Bps) if (nic_Bps and solved is not None) else None,
    }


def build_plan(args, r: dict, strategy: str, cards: int, batch: int) -> dict[str, Any]:
    """One plan (``PLAN_FORMAT``) of ``strategy`` on ``cards`` at ``batch`` from the resolved inputs ``r``."""
    try:
        layout = Layout.of(strategy, cards, tp=args.tp, pp=args.pp, cards_per_host=args.cards_per_host)
    except ValueError as exc:
        raise flag_error(exc) from None
    _check_layout(args, r, layout)
    _choose_comm(args, r, layout)
    inputs = inputs_dict(args, r, layout.strategy, layout.cards, layout.tp, layout.pp, batch)
    doc = r["gpu"].document
    inputs["step"] = args.step or ("measured" if has_decode_terms(doc) else "seed")
    inputs["graphs"] = args.graphs
    try:
        rows = {"seed": step(r, inputs).row()}
    except ValueError as exc:
        raise flag_error(exc) from None
    try:
        r["decode"] = measured_figures(args, r, layout.tp, inputs["cards_per_host"])
        rows["measured"] = measured_row(measured(r, inputs))
    except (InputError, ValueError) as exc:
        if inputs["step"] == "measured":
            raise (exc if isinstance(exc, InputError) else flag_error(exc)) from None
        rows["measured"] = {"error": str(exc)}  # the article's step does not need the profile's decode figures
    row = rows[inputs["step"]]
    if not args.ignore_memory:
        _check_fit(r, inputs, row)
    other = "seed" if inputs["step"] == "measured" else "measured"
    result: dict[str, Any] = {"schema": PLAN_FORMAT, "step": inputs["step"]}
    result.update(row)
    result[other] = rows[other]
    if args.target_tps is not None:
        result["target"] = _target(args, r, inputs, row)
    result["inputs"] = inputs
    return result
