"""``gpucal probe decode --model NAME|FILE --tp N --batch LIST --context LIST [--graph]``: one decoder layer of
the model's shard timed whole, beside its parts as priced (``probes/decode_layer.py``)."""

from __future__ import annotations

from gpucal import render
from gpucal.commands.options import check_memory
from gpucal.errors import InputError
from gpucal.kernels.backend import select
from gpucal.probes import decode_layer
from gpucal.probes.decode_layer import DecodeLayerConfig, LayerShape
from gpucal.profiles.queries import resolve_model
from gpucal.units import format_time

__all__ = ["run", "config_of", "FLAGS"]

# the flags this probe takes beyond --backend, --device, --budget, --json
FLAGS = ("model", "tp", "batches", "context", "graph", "dtype")


# flags of gpucal probe that the decode probe does not take (attribute names)
_OTHER_FLAGS = ("sizes", "kernels", "gemv_shape", "pairs", "shapes", "hidden", "graphs", "simulate_net", "ops")


def config_of(args) -> DecodeLayerConfig:
    for flag in _OTHER_FLAGS:
        if getattr(args, flag, None) not in (None, False):
            raise InputError(f"--{flag.replace('_', '-')}: the decode probe does not take it")
    if args.model is None:
        raise InputError("--model: the decode probe needs a model (a preset such as llama-3.1-8b, a gpucal.model/1 "
                         "file or a config.json)")
    model = resolve_model(args.model)
    tp = args.tp or 1
    try:
        LayerShape.of(model, tp)
    except ValueError as exc:
        flag = "--tp" if f"tp {tp}" in str(exc) else "--model"
        raise InputError(f"{flag}: {exc}") from None
    extra = {}
    if args.batches:
        extra["batches"] = args.batches
    if args.context:
        extra["contexts"] = args.context
    if args.budget is not None:
        extra["budget_s"] = args.budget
    if args.dtype:
        if len(args.dtype) != 1 or args.dtype[0] not in ("fp16", "bf16", "fp32"):
            raise InputError(f"--dtype: the decode layer takes one of fp16, bf16, fp32 (got {','.join(args.dtype)})")
        extra["dtype"] = args.dtype[0]
    return DecodeLayerConfig(model=model, tp=tp, graph=bool(args.graph), **extra)


def _case_row(r) -> dict:
    m, p = r.metrics, r.params
    return {"case": r.case, "status": r.status, "batch": p.get("batch"), "context": p.get("context"),
            "mode": p.get("mode"), "layer_s": m.get("layer_s"), "parts_s": m.get("parts_s"),
            "layer_over_parts": m.get("layer_over_parts"), "sum_of_parts_s": m.get("sum_of_parts_s"),
            "launch_eager_s": m.get("launch_eager_s"), "parts_model": p.get("parts_model"), "parts": p.get("parts"),
            "allreduce": p.get("allreduce"),
            "reason": r.reason}


def run(args) -> int:
    config = config_of(args)
    backend = select(args.backend, args.device)
    reason = decode_layer.applicable(backend)
    if reason:
        raise InputError(f"--backend: the decode probe cannot run on {backend.name}: {reason}")
    dtype = decode_layer.layer_dtype(backend, config)
    if dtype not in backend.decode_dtypes or dtype not in backend.decode_gemm_dtypes():
        raise InputError(f"--dtype: the {backend.name} backend has no {dtype} decode layer (it has "
                         f"{', '.join(d for d in backend.decode_dtypes if d in backend.decode_gemm_dtypes())})")
    check_memory(backend, decode_layer.needs(backend, config), args)
    results = decode_layer.run(backend, config)
    failed = any(r.status in ("failed", "error") for r in results)
    if args.json:
        render.print_json({"probe": "decode", "backend": backend.name, "simulated": backend.simulated,
                           "device": backend.device().name, "model": config.model.name, "tp": config.tp,
                           "dtype": dtype, "versions": backend.versions(),
                           "cases": [_case_row(r) for r in results], "results": [r.to_dict() for r in results]})
        return 1 if failed else 0
    out = render.console()
    render.line(f"gpucal probe decode: {config.model.name}, tp {config.tp}, {dtype}; backend {backend.name}, "
                f"device {backend.device().name}", out)
    rows = []
    for r in results:
        m = r.metrics
        rows.append((r.case, r.status, format_time(m["layer_s"]) if "layer_s" in m else "-",
                     format_time(m["parts_s"]) if "parts_s" in m else "-",
                     f"{m['layer_over_parts']:.3f}" if "layer_over_parts" in m else "-",
                     r.reason or r.params.get("allreduce", "")))
    out.print(render.table(("case", "status", "layer", "sum of parts", "layer/parts", "notes"), rows, right=(2, 3, 4)))
    for r in results:
        if r.params.get("parts"):
            parts = ", ".join(f"{p['name']} {format_time(p['seconds'])}" for p in r.params["parts"])
            render.line(f"{r.case}: {parts}", out)
    render.line("layer: the whole layer timed (median of n samples, each k back-to-back layers); parts: each kernel "
                "alone as a graph node (over copies of its weights or KV), priced as the layer runs them "
                "(max(launches x eager launch, sum)); every part's output verified against its float64 reference "
                "first", out)
    if backend.simulated:
        render.line("simulated: no figure here is a measurement", out)
    return 1 if failed else 0
