"""``gpucal plan``: the article's PP/TP equations from a GPU profile, a model and a link.

``build(args)`` turns parsed flags into the planner's inputs and result (a dict, SI units, the keys
of ``--json``); ``run(args)`` renders it. Bad input raises ``InputError`` naming the flag.
"""

from __future__ import annotations

from typing import Any

from gpucal import limits
from gpucal.commands.args import int_in, nonempty, quantity, sweep_spec
from gpucal.errors import InputError
from gpucal.profiles.queries import (DTYPES, LinkChoice, planner_link, profile_cards_per_host, profile_collective,
                           profile_network, resolve_gpu, resolve_link, resolve_model)
from gpucal.limits import MODEL_MAXIMA
from gpucal.plan import Layout, LinkSpec, evaluate, max_batch_for_target, nics_needed, required_beta_for_target
from gpucal.plan.spec import COMM_MODELS, NO_LINK, STRATEGIES
from gpucal.plan.sweep import valid_tp
from gpucal.units import UnitError, parse_positive

__all__ = ["add_parser", "build", "run"]

_CARDS = int_in(1, limits.MAX_CARDS)
PLAN_FORMAT = "gpucal.plan/1"
SWEEP_FORMAT = "gpucal.plan-sweep/1"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="plan LLM inference (pipeline/tensor parallel) from a GPU profile",
        description="Token latency and throughput of a model on N cards, from the article's PP/TP equations. "
        "Quantities accept units: 32GB/s, 1Gbit/s, 30us, 24GB, 330TFLOP/s, 1.5e12 (SI; 1 GB = 1e9 B).",
    )
    p.add_argument("--gpu", required=True, type=nonempty, metavar="NAME|FILE", help="GPU profile (gpucal profiles list)")
    p.add_argument("--model", required=True, type=nonempty, metavar="NAME|FILE", help="model preset, gpucal.model/1 file or config.json")
    p.add_argument("--cards", type=_CARDS, metavar="N", help="number of cards N")
    p.add_argument("--strategy", choices=STRATEGIES, help="pp: pipeline; tp: tensor; hybrid: TP inside PP stages")
    p.add_argument("--tp", type=_CARDS, metavar="N", help="TP degree (hybrid)")
    p.add_argument("--pp", type=_CARDS, metavar="N", help="pipeline stages (hybrid)")
    p.add_argument("--batch", type=int_in(1, limits.MAX_BATCH), metavar="B", help="sequences decoded together")
    p.add_argument("--link", type=nonempty, metavar="NAME|FILE|alpha=..,beta=..",
                   help="link between stages and within a TP group (default: the profile's plan_defaults.link)")
    p.add_argument("--net", type=nonempty, metavar="NAME|FILE|alpha=..,beta=..", help="link between hosts")
    p.add_argument("--cards-per-host", type=_CARDS, metavar="N", help="cards per host (default: all on one)")
    p.add_argument("--comm", choices=COMM_MODELS,
                   help="seed: the article's alpha + S/beta per exchange; ring: ring all-reduce; measured: the "
                        "all-reduce a cluster profile measured over the TP group (the default where there is one, "
                        "else seed)")
    p.add_argument("--context", type=int_in(0, limits.MAX_CONTEXT_TOKENS), default=0, metavar="TOKENS",
                   help="tokens of context per sequence (KV cache and activations; default 0, as the article)")
    p.add_argument("--kv-bytes", type=quantity("bytes"), metavar="SIZE",
                   help="KV cache in total, instead of batch x context (the article's 40GB)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp16", help="weight dtype (default fp16)")
    p.add_argument("--kv-dtype", choices=tuple(DTYPES), help="KV-cache dtype (default: --dtype)")
    p.add_argument("--flops-mode", type=nonempty, metavar="MODE", help="FLOP/s entry of the profile, e.g. fp16_fp16acc, sparse:fp16_fp32acc")
    p.add_argument("--target-tps", type=quantity("number", range_kind="tokens_per_s"), metavar="X",
                   help="tokens/s per sequence to meet: the largest batch, the link bandwidth and NICs it needs")
    p.add_argument("--nic", type=nonempty, metavar="NAME|RATE", help="NIC speed for the NIC count (default: the solved link's own)")
    p.add_argument("--sweep", type=sweep_spec, action="append", metavar="KEY=RANGE",
                   help="batch=1:1024 (doubling), cards=1:64:1 (steps), strategy=pp,tp; repeatable")
    p.add_argument("--ignore-memory", action="store_true", help="plan even when the batch does not fit in memory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    over = p.add_argument_group("overrides (replace the profile's or the model's value)")
    over.add_argument("--params", type=quantity("number", range_kind="params"), metavar="P", help="parameters, e.g. 70e9")
    over.add_argument("--layers", type=int_in(1, MODEL_MAXIMA["layers"]), metavar="L")
    over.add_argument("--hidden", type=int_in(1, MODEL_MAXIMA["hidden"]), metavar="H")
    over.add_argument("--mem-bw", type=quantity("rate"), metavar="RATE", help="memory bandwidth, e.g. 1TB/s")
    over.add_argument("--flops", type=quantity("flops"), metavar="RATE", help="FLOP/s at the weight dtype, e.g. 330e12")
    over.add_argument("--mem-bytes", type=quantity("bytes"), metavar="SIZE", help="memory per card, e.g. 24GB")
    p.set_defaults(run=run)


def _flag_error(exc: ValueError) -> InputError:
    """A planner ValueError ('tp: ...') as an InputError naming the flag ('--tp: ...')."""
    text = str(exc)
    name = text.split(":", 1)[0]
    flag = {"tp": "--tp", "pp": "--pp", "strategy": "--strategy", "net": "--net"}.get(name, "--cards")
    return InputError(f"{flag}: {text.split(':', 1)[1].strip()}" if ":" in text else f"{flag}: {text}")


def resolve_inputs(args) -> dict[str, Any]:
    model = resolve_model(args.model, {"params": args.params, "layers": args.layers, "hidden": args.hidden})
    gpu = resolve_gpu(args.gpu, dtype=args.dtype, flops_mode=args.flops_mode,
                      overrides={"memory_bandwidth_Bps": args.mem_bw, "flops": args.flops, "memory_bytes": args.mem_bytes})
    if args.link is not None:
        link = resolve_link(args.link, "--link")
    else:
        link = planner_link(gpu.document)
    net = resolve_link(args.net, "--net") if args.net is not None else profile_network(gpu.document)
    return {"model": model, "gpu": gpu, "link": link, "net": net, "collective": None}


def inputs_dict(args, r: dict, strategy, cards, tp, pp, batch) -> dict[str, Any]:
    model, gpu, link, net = r["model"], r["gpu"], r["link"], r["net"]

    def link_dict(choice: LinkChoice | None):
        if choice is None:
            return None
        out = {"name": choice.spec.name, "alpha_s": choice.spec.alpha_s, "beta_Bps": choice.spec.beta_Bps,
               "source": choice.source}
        if len(choice.spec.pieces) > 1:
            out["pieces"] = [{"from_bytes": p.from_bytes, "alpha_s": p.alpha_s, "beta_Bps": p.beta_Bps}
                             for p in choice.spec.pieces]
        return out

    kv_dtype = args.kv_dtype or args.dtype
    return {
        "model": {"name": model.name, "params": model.params, "layers": model.layers, "hidden": model.hidden,
                  "heads": model.heads, "kv_heads": model.kv_heads, "head_dim": model.head_dim, "source": model.source},
        "gpu": {"name": gpu.spec.name, "profile": gpu.document.origin, "profile_source": gpu.document.data["source"],
                "memory_bandwidth_Bps": gpu.spec.memory_bandwidth_Bps, "flops": gpu.spec.flops,
                "flops_mode": gpu.spec.flops_mode, "memory_bytes": gpu.spec.memory_bytes, "sources": gpu.sources},
        "link": link_dict(link),
        "net": link_dict(net),
        "strategy": strategy, "cards": cards, "tp": tp, "pp": pp,
        "cards_per_host": args.cards_per_host or cards,
        "batch": batch, "context_tokens": args.context, "kv_cache_bytes": args.kv_bytes,
        "dtype": args.dtype, "bytes_per_weight": DTYPES[args.dtype], "kv_dtype": kv_dtype,
        "kv_bytes_per_value": DTYPES[kv_dtype], "act_bytes": 4.0 if args.dtype == "fp32" else 2.0,
        "comm_model": r.get("comm") or args.comm or "seed",
        "collective": link_dict(r.get("collective")),
    }


def _step(r: dict, inputs: dict, **changes):
    """``evaluate`` with the resolved inputs; ``changes`` replace batch, link or net."""
    kw = dict(batch=inputs["batch"], tp=inputs["tp"], pp=inputs["pp"], link=r["link"].spec if r["link"] else None,
              net=r["net"].spec if r["net"] else None,
              collective=r["collective"].spec if r.get("collective") else None)
    kw.update(changes)
    if kw["link"] is None:
        kw["link"] = NO_LINK
    return evaluate(r["model"], r["gpu"].spec, cards_per_host=inputs["cards_per_host"], comm=inputs["comm_model"],
                    context_tokens=inputs["context_tokens"], bytes_per_weight=inputs["bytes_per_weight"],
                    kv_bytes_per_value=inputs["kv_bytes_per_value"], act_bytes=inputs["act_bytes"],
                    kv_cache_bytes=inputs["kv_cache_bytes"], **kw)


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
        have = sorted({(e.get("nranks"), e.get("hosts", 1)) for e in doc.data.get("collectives") or []
                       if e.get("op") == "all-reduce"})
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
    one, two = _step(r, inputs, batch=1).row(), _step(r, inputs, batch=2).row()
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
        step = _step(r, inputs, batch=batch).row()
        return step["tokens_per_s"] if (step["fits"] or args.ignore_memory) else 0.0

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
            return _step(r, inputs, **changes).row()["token_latency_s"]

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


def resolve_nic(text: str) -> float:
    """A NIC speed: a link preset's beta, or a rate such as 100Gbit/s."""
    try:
        value = parse_positive(text, "rate")
    except UnitError:
        return resolve_link(text, "--nic").spec.beta_Bps
    why = limits.check_range(value, "rate")
    if why:
        raise InputError(f"--nic: {text}: {why}")
    return value


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


def build(args) -> dict[str, Any]:
    """The plan (or sweep) for parsed ``args``, as the dict that ``--json`` prints."""
    sweeps = sweep_ranges(args.sweep)
    r = resolve_inputs(args)
    if args.nic is not None:
        resolve_nic(args.nic)  # a bad --nic is named whatever else is missing
    if args.cards_per_host is None:
        hosts = len((r["gpu"].document.data.get("cluster") or {}).get("hosts") or [])
        if hosts > 1:  # a cluster profile: its hosts' size, unless the flag says otherwise
            args.cards_per_host = profile_cards_per_host(r["gpu"].document)
    strategies = sweeps.get("strategy") or ([args.strategy] if args.strategy else None)
    batches = sweeps.get("batch") or ([args.batch] if args.batch else None)
    cards = sweeps.get("cards") or ([args.cards] if args.cards else None)
    for flag, value in (("--strategy", strategies), ("--batch", batches), ("--cards", cards)):
        if value is None:
            raise InputError(f"{flag}: required (or sweep it with --sweep {flag[2:]}=...)")
    if "hybrid" not in strategies and (args.tp or args.pp):
        raise InputError(f"{'--tp' if args.tp else '--pp'}: only with --strategy hybrid (pp and tp use all --cards)")
    if args.nic is not None and args.target_tps is None:
        raise InputError("--nic: only with --target-tps (it sizes the NICs a target needs)")
    if sweeps and args.target_tps is not None:
        raise InputError("--target-tps: plans one configuration; drop --sweep to use it")
    if sweeps:
        from gpucal.commands.plan_sweep import build_sweep

        if args.comm == "measured":
            raise InputError("--comm: measured plans one configuration (the all-reduce was measured over one group "
                             "size); sweeps use seed or ring")

        return build_sweep(args, r, strategies, batches, cards)
    try:
        layout = Layout.of(strategies[0], cards[0], tp=args.tp, pp=args.pp, cards_per_host=args.cards_per_host)
    except ValueError as exc:
        raise _flag_error(exc) from None
    _check_layout(args, r, layout)
    _choose_comm(args, r, layout)
    inputs = inputs_dict(args, r, layout.strategy, layout.cards, layout.tp, layout.pp, batches[0])
    try:
        row = _step(r, inputs).row()
    except ValueError as exc:
        raise _flag_error(exc) from None
    if not args.ignore_memory:
        _check_fit(r, inputs, row)
    result: dict[str, Any] = {"schema": PLAN_FORMAT}
    result.update(row)
    if args.target_tps is not None:
        result["target"] = _target(args, r, inputs, row)
    result["inputs"] = inputs
    return result


def run(args) -> int:
    result = build(args)
    from gpucal import render

    if args.json:
        render.print_json(result)
    elif result["schema"] == SWEEP_FORMAT:
        from gpucal.commands.plan_sweep import show_sweep

        show_sweep(result)
    else:
        from gpucal.commands.plan_show import show_plan

        show_plan(result)
    return 0
