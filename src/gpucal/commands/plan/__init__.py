"""``gpucal plan``: the article's PP/TP equations from a GPU profile, a model and a link.

``build(args)`` turns parsed flags into the planner's inputs and result (a dict, SI units, the keys
of ``--json``): one configuration (``single``) or a sweep over many (``sweep``); ``run(args)`` renders it
(``show`` for one plan). Bad input raises ``InputError`` naming the flag.
"""

from __future__ import annotations

import argparse
from typing import Any

from gpucal import limits, render
from gpucal.commands.options import int_in, nonempty, quantity, sweep_spec
from gpucal.commands.plan.inputs import STEPS, SWEEP_FORMAT, resolve_inputs, resolve_nic
from gpucal.commands.plan.show import show_plan
from gpucal.commands.plan.single import build_plan
from gpucal.commands.plan.sweep import build_sweep, show_sweep, sweep_ranges
from gpucal.errors import InputError
from gpucal.limits import MODEL_MAXIMA
from gpucal.plan.spec import COMM_MODELS, STRATEGIES
from gpucal.profiles.queries import DTYPES, profile_cards_per_host

__all__ = ["DESCRIPTION", "add_arguments", "build", "run", "sweep_ranges"]

DESCRIPTION = ("Token latency and throughput of a model on N cards, from the article's PP/TP equations. Quantities "
               "accept units: 32GB/s, 1Gbit/s, 30us, 24GB, 330TFLOP/s, 1.5e12 (SI; 1 GB = 1e9 B).")

_CARDS = int_in(1, limits.MAX_CARDS)


def add_arguments(p) -> None:
    """``gpucal plan``'s flags (the overrides of the profile's and the model's values in their own group)."""
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
    p.add_argument("--step", choices=STEPS,
                   help="seed: the article's equations on ideal inputs; measured: every term of the decode step as "
                        "the profile's figures price it (the default where the profile has them, else seed)")
    p.add_argument("--graphs", action=argparse.BooleanOptionalAction, default=True,
                   help="the measured step runs as CUDA graphs, as servers decode (default); --no-graphs: every "
                        "kernel launched eagerly")
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


def build(args) -> dict[str, Any]:
    """The plan (or sweep) for parsed ``args``, as the dict that ``--json`` prints."""
    sweeps = sweep_ranges(args.sweep)
    r = resolve_inputs(args)
    if args.nic is not None:
        resolve_nic(args.nic)  # a bad --nic is named whatever else is missing
    if args.cards_per_host is None:
        cluster = r["gpu"].document.profile.cluster
        if cluster is not None and len(cluster.hosts) > 1:  # a cluster profile: its hosts' size, unless the flag says otherwise
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
        if args.comm == "measured":
            raise InputError("--comm: measured plans one configuration (the all-reduce was measured over one group "
                             "size); sweeps use seed or ring")
        return build_sweep(args, r, strategies, batches, cards)
    return build_plan(args, r, strategies[0], cards[0], batches[0])


def run(args) -> int:
    """Print the plan or sweep: one JSON object (``--json``) or tables."""
    result = build(args)
    if args.json:
        render.print_json(result)
    elif result["schema"] == SWEEP_FORMAT:
        show_sweep(result)
    else:
        show_plan(result)
    return 0
