"""``gpucal plan``'s inputs: the model, GPU, links and network resolved from the flags, the inputs as
``--json`` reports them, and one evaluation of the planner's equations over them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gpucal import limits
from gpucal.errors import InputError
from gpucal.plan import evaluate
from gpucal.plan.measured import MeasuredStep, measured_step
from gpucal.plan.spec import NO_LINK
from gpucal.profiles.decode_queries import decode_inputs
from gpucal.profiles.queries import (
    DTYPES,
    LinkChoice,
    planner_link,
    profile_network,
    resolve_gpu,
    resolve_link,
    resolve_model,
)
from gpucal.units import UnitError, parse_positive

__all__ = ["PLAN_FORMAT", "SWEEP_FORMAT", "STEPS", "flag_error", "inputs_dict", "resolve_inputs", "resolve_nic", "step",
           "measured", "measured_figures", "chosen_row", "measured_row"]

STEPS = ("seed", "measured")

PLAN_FORMAT = "gpucal.plan/1"
SWEEP_FORMAT = "gpucal.plan-sweep/1"


def flag_error(exc: ValueError) -> InputError:
    """A planner ValueError ('tp: ...') as an InputError naming the flag ('--tp: ...')."""
    text = str(exc)
    name = text.split(":", 1)[0]
    flag = {"tp": "--tp", "pp": "--pp", "strategy": "--strategy", "net": "--net", "batch": "--batch"}.get(name, "--cards")
    return InputError(f"{flag}: {text.split(':', 1)[1].strip()}" if ":" in text else f"{flag}: {text}")


def resolve_inputs(args) -> dict[str, Any]:
    """The model, GPU, link and network the flags name (``collective`` is chosen later, per layout)."""
    model = resolve_model(args.model, {"params": args.params, "layers": args.layers, "hidden": args.hidden})
    gpu = resolve_gpu(args.gpu, dtype=args.dtype, flops_mode=args.flops_mode,
                      overrides={"memory_bandwidth_Bps": args.mem_bw, "flops": args.flops, "memory_bytes": args.mem_bytes})
    if args.link is not None:
        link = resolve_link(args.link, "--link")
    else:
        link = planner_link(gpu.document)
    net = resolve_link(args.net, "--net") if args.net is not None else profile_network(gpu.document)
    reshaped = any(v is not None for v in (args.params, args.layers, args.hidden))
    return {"model": model, "gpu": gpu, "link": link, "net": net, "collective": None, "reshaped": reshaped}


def inputs_dict(args, r: dict, strategy, cards, tp, pp, batch) -> dict[str, Any]:
    """What went into a plan or sweep, as ``--json`` reports it under ``inputs``."""
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
        "gpu": {"name": gpu.spec.name, "profile": gpu.document.origin, "profile_source": gpu.document.profile.source,
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


def _step_kw(r: dict, inputs: dict, changes: dict) -> dict:
    kw = dict(batch=inputs["batch"], tp=inputs["tp"], pp=inputs["pp"], link=r["link"].spec if r["link"] else None,
              net=r["net"].spec if r["net"] else None,
              collective=r["collective"].spec if r.get("collective") else None)
    kw.update(changes)
    if kw["link"] is None:
        kw["link"] = NO_LINK
    return dict(cards_per_host=inputs["cards_per_host"], comm=inputs["comm_model"],
                context_tokens=inputs["context_tokens"], bytes_per_weight=inputs["bytes_per_weight"],
                kv_bytes_per_value=inputs["kv_bytes_per_value"], act_bytes=inputs["act_bytes"],
                kv_cache_bytes=inputs["kv_cache_bytes"], **kw)


def step(r: dict, inputs: dict, **changes):
    """The article's step (``evaluate``) with the resolved inputs; ``changes`` replace batch, link, net or
    collective."""
    return evaluate(r["model"], r["gpu"].spec, **_step_kw(r, inputs, changes))


def measured(r: dict, inputs: dict, **changes) -> MeasuredStep:
    """The measured step (``gpucal.plan.measured``) with the resolved inputs and the profile's decode figures
    (``r["decode"]``); ``changes`` as ``step``'s. The TP all-reduce ran on the links inside a host (or, for a
    group across hosts, on the network): a changed link (or network) bandwidth — the solvers' — scales its beta
    alike, as more NICs or a faster link would."""
    decode = r["decode"]
    which = "net" if inputs["tp"] > inputs["cards_per_host"] else "link"
    if decode.allreduce is not None and changes.get(which) is not None and r.get(which) is not None:
        ratio = changes[which].beta_Bps / r[which].spec.beta_Bps
        decode = replace(decode, allreduce=decode.allreduce.with_beta(decode.allreduce.beta_Bps * ratio))
    model = r["model"]
    if r.get("reshaped"):  # --params, --layers or --hidden: the FFN is what the parameter count leaves
        model = replace(model, ffn=None)
    return measured_step(model, r["gpu"].spec, decode, **_step_kw(r, inputs, changes))


def measured_figures(args, r: dict, tp: int, per_host: int):
    """The profile's figures for the measured step at TP size ``tp`` (``decode_inputs``), with the flags applied:
    ``--mem-bw`` is the stream bandwidth; an all-reduce measured on the network (a group across hosts) or the
    links inside a host is left out where ``--net`` or ``--link`` replaces them, as the article's step does."""
    decode = decode_inputs(r["gpu"].document, dtype=args.dtype, kv_dtype=args.kv_dtype, tp=tp,
                           cards_per_host=per_host, graphs=args.graphs)
    if args.mem_bw is not None:
        decode = replace(decode, stream_Bps=args.mem_bw, sources=dict(decode.sources, stream="flag (--mem-bw)"))
    across = tp > per_host
    flag = ("--net" if args.net is not None else None) if across else ("--link" if args.link is not None else None)
    if tp == 1 or decode.allreduce is None or flag is None:
        return decode
    where = "network" if across else "links between its cards"
    sources = {k: v for k, v in decode.sources.items() if k != "allreduce"}
    return replace(decode, allreduce=None, sources=sources,
                   allreduce_note=f"the profile's was measured on its own {where}, which {flag} replaces")


def measured_row(result: MeasuredStep) -> dict[str, Any]:
    """A measured step as ``--json`` gives it: the step's fields, then its ``terms``, ``sources`` and
    ``fallbacks``."""
    return result.step.row() | {"terms": result.terms, "sources": result.sources, "fallbacks": result.fallbacks}


def chosen_row(r: dict, inputs: dict, **changes) -> dict[str, Any]:
    """The row of the step the plan uses (``inputs["step"]``)."""
    if inputs["step"] == "measured":
        return measured(r, inputs, **changes).step.row()
    return step(r, inputs, **changes).row()


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
