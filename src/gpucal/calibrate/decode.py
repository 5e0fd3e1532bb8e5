"""The decode probes' results into a profile's terms: ``devices[].decode`` (the decode-GEMM curve per dtype,
decode attention per dtype, the launch costs) and the one-host all-reduce per TP size (``collectives[]``
entries with ``single_process``). Pure functions of ``Result``s.

- **Decode-GEMM curve** (``probes/decode_gemm.py``): per dtype and m, t = alpha_m + W/beta_m fitted over the
  weight bytes W of the shapes measured (least squares on relative error, ``calibrate/fit.py``; with two shapes
  the line through them). ``holdout_max_error_frac`` is the largest |predicted/measured − 1| over every point,
  each predicted by the curve fitted without it: without its shape at its m where three or more shapes were
  measured there, and without its whole m (interpolated from the neighbouring m) where that m lies inside the grid.
- **Attention** (``probes/attention.py``): per dtype, t = alpha + KV/beta over every case.
- **Launch** (``probes/launch.py``): the medians of the eager, graph-node and sync cases.
- **All-reduce on one host** (``probes/allreduce.py``): per (TP size, graph) t = alpha + S/beta
  (``calibrate/collectives.py``'s fit per regime).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from gpucal.calibrate.collectives import fitted_entry
from gpucal.calibrate.entries import fit_quantity, quantity
from gpucal.calibrate.fit import FitError, fit_alpha_beta
from gpucal.plan.decode import GemmCurve, GemmRow
from gpucal.probes.attention import CONVENTION as ATTENTION_CONVENTION
from gpucal.probes.decode_gemm import CONVENTION as GEMM_CONVENTION

HOLDOUT_TARGET_FRAC = 0.05  # a point not used in the fit predicted within 5 % (docs/decode.md)

__all__ = ["HOLDOUT_TARGET_FRAC", "fit_line", "through_origin_Bps", "gemm_curves", "attention_terms", "launch_costs", "decode_terms", "host_allreduce_entries", "fit_row",
           "holdout_errors"]


def _how(kinds: set) -> str:
    """``graph``, ``eager`` or ``mixed``: how the cases of a fit were timed."""
    return next(iter(kinds)) if len(kinds) == 1 else "mixed"


def _passed(results, probe: str):
    return [r for r in results if r.probe == probe and r.status == "passed"]


def through_origin_Bps(sizes, times) -> float:
    """beta of t = n/beta (alpha held at 0), least squares on relative error: 1/beta = sum(n/t) / sum(n²/t²)."""
    n, t = np.asarray(sizes, dtype=float), np.asarray(times, dtype=float)
    return float(np.sum(n * n / (t * t)) / np.sum(n / t))


def fit_line(sizes, times) -> tuple[float, float, float | None]:
    """(alpha, beta, r2) of t = alpha + n/beta over the points, alpha at least 0: where the free fit (least squares
    on relative error; the line through two sizes) gives an alpha below 0, the fit through the origin. Raises
    ``FitError`` where the times do not grow with the size."""
    ns, ts = np.asarray(sizes, dtype=float), np.asarray(times, dtype=float)
    distinct = len(np.unique(ns))
    if distinct >= 3:
        fit = fit_alpha_beta(ns, ts)
        alpha, beta, r2 = fit.alpha_s, fit.beta_Bps, fit.r2
    elif distinct == 2:
        lo, hi = np.argmin(ns), np.argmax(ns)
        slope = (ts[hi] - ts[lo]) / (ns[hi] - ns[lo])
        if slope <= 0:
            raise FitError("the times do not grow with the size")
        alpha, beta, r2 = float(ts[lo] - slope * ns[lo]), float(1.0 / slope), None
    else:
        raise FitError(f"{distinct} distinct size(s): a line needs two at least")
    if alpha < 0:  # a fixed cost below zero is noise or a cache: no kernel takes less than nothing
        alpha, beta = 0.0, through_origin_Bps(ns, ts)
        resid = (ns / beta - ts) / ts
        r2 = None if distinct < 3 else float(1.0 - np.sum(resid ** 2) / max(np.sum(((ts - ts.mean()) / ts) ** 2), 1e-300))
    return alpha, beta, r2


def fit_row(m: int, points: list[tuple[float, float]]) -> tuple[GemmRow, float | None] | None:
    """The row t = alpha + W/beta through ``points`` [(W, t)] at ``m`` and its r2 (None with two points), alpha
    at least 0 (``fit_line``); None where no positive beta comes of them."""
    try:
        alpha, beta, r2 = fit_line([p[0] for p in points], [p[1] for p in points])
    except FitError:
        return None
    return GemmRow(m, alpha, beta), r2


def _rows(by_m: dict[int, list]) -> list[GemmRow]:
    rows = []
    for m in sorted(by_m):
        got = fit_row(m, by_m[m])
        if got is not None:
            rows.append(got[0])
    return rows


def holdout_errors(by_m: dict[int, list]) -> list[float]:
    """|predicted/measured − 1| of every point predicted without it (module docstring)."""
    errors = []
    ms = sorted(by_m)
    for m in ms:
        pts = by_m[m]
        if len({p[0] for p in pts}) >= 3:
            for i, (w, t) in enumerate(pts):
                got = fit_row(m, [p for j, p in enumerate(pts) if j != i])
                if got is not None:
                    errors.append(abs(got[0].time_s(w) / t - 1.0))
        if ms[0] < m < ms[-1]:
            rows = _rows({k: v for k, v in by_m.items() if k != m})
            if len(rows) >= 2:
                curve = GemmCurve("any", tuple(rows))
                errors += [abs(curve.time_s(m, w) / t - 1.0) for w, t in pts]
    return errors


def gemm_curves(results, source: str) -> dict[str, dict]:
    """The decode-GEMM curve per dtype (``DecodeGemmCurve``) from the passed decode-gemm results."""
    by_dtype: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    shapes: dict[str, set] = defaultdict(set)
    library: dict[str, str] = {}
    timed_as: dict[str, set] = defaultdict(set)
    for r in _passed(results, "decode-gemm"):
        p = r.params
        by_dtype[p["dtype"]][p["m"]].append((float(p["weight_bytes"]), r.timing.median_s))
        shapes[p["dtype"]].add((p["n"], p["k"]))
        library[p["dtype"]] = r.library or ""
        timed_as[p["dtype"]].add(p.get("timed_as", "eager"))
    out = {}
    for dtype, by_m in by_dtype.items():
        rows, dropped = [], []
        for m in sorted(by_m):
            pts = sorted(by_m[m])
            got = fit_row(m, pts)
            if got is None:
                dropped.append(f"m={m}: no line with a positive beta through its {len(pts)} point(s); the curve "
                               "interpolates across it")
                continue
            row, r2 = got
            rows.append({"m": m, "alpha_s": row.alpha_s, "beta_Bps": row.beta_Bps, "r2": r2, "n": len(pts),
                         "points": [[w, t] for w, t in pts]})
        if not rows:
            continue
        errors = holdout_errors({m: sorted(v) for m, v in by_m.items()})
        worst = max(errors) if errors else None
        out[dtype] = {"source": source, "method": f"per m, t = alpha_m + W/beta_m fitted over the weight bytes W of "
                      f"{len(shapes[dtype])} shapes (least squares on relative error); between measured m, log t "
                      f"interpolated in log m; median time per case ({library[dtype]})"[:2000],
                      "statistic": "median", "byte_convention": GEMM_CONVENTION,
                      "shapes": [list(s) for s in sorted(shapes[dtype])], "rows": rows,
                      "holdout_max_error_frac": worst,
                      "holdout": ((f"{len(errors)} points, each predicted without it (its shape at its m, or its "
                                   "whole m interpolated from the neighbours)"
                                   + (f"; {100 * worst:.1f} %, above the {100 * HOLDOUT_TARGET_FRAC:.0f} % target: "
                                      "more m or shapes would tighten it" if worst > HOLDOUT_TARGET_FRAC else ""))
                                  if errors else "too few shapes and m to hold any point out")}
        if dropped:
            out[dtype]["dropped"] = dropped
        out[dtype]["timed_as"] = _how(timed_as[dtype])
    return out


def attention_terms(results, source: str) -> dict[str, dict]:
    """Decode attention per dtype (``DecodeAttention``): t = alpha + KV/beta over every passed case."""
    by_dtype: dict[str, list] = defaultdict(list)
    for r in _passed(results, "attention"):
        by_dtype[r.params["dtype"]].append(r)
    out = {}
    for dtype, rs in by_dtype.items():
        pts = sorted((float(r.params["kv_bytes"]), r.timing.median_s) for r in rs)
        method = (f"fit t = alpha + KV/beta over {len(pts)} cases of batch x context x heads per card "
                  f"(least squares on relative error; median time per case; {rs[0].library})")[:2000]
        try:
            alpha, beta, r2 = fit_line([p[0] for p in pts], [p[1] for p in pts])
            resid, why = max(abs((alpha + w / beta) / t - 1.0) for w, t in pts), None
        except FitError as exc:
            alpha = beta = r2 = resid = None
            why = f"no fit: {exc}"
        out[dtype] = {"alpha_s": fit_quantity(alpha, source, method, len(pts), why),
                      "beta_Bps": fit_quantity(beta, source, method, len(pts), why,
                                               byte_convention=ATTENTION_CONVENTION),
                      "head_dim": rs[0].params["head_dim"], "r2": r2, "points": [[w, t] for w, t in pts],
                      "cases": [r.case for r in rs][:200], "max_abs_residual_frac": resid,
                      "timed_as": _how({r.params.get("timed_as", "eager") for r in rs})}
    return out


_LAUNCH_METHOD = {"eager": ("eager_s", "tick kernels launched back to back, device clock over k launches / k"),
                  "graph": ("graph_node_s", "a replayed CUDA graph of tick kernels, device clock / (k · nodes)"),
                  "sync": ("sync_s", "a tick kernel launched and waited for, host clock")}


def launch_costs(results, source: str) -> dict | None:
    """The launch costs (``LaunchCosts``); None unless every kind passed or says why not."""
    by_kind = {r.params.get("kind"): r for r in results if r.probe == "launch"}
    if not by_kind:
        return None
    out = {}
    for kind, (key, method) in _LAUNCH_METHOD.items():
        r = by_kind.get(kind)
        if r is not None and r.status == "passed":
            t = r.timing
            out[key] = quantity(t.median_s, source, f"{method} ({r.library})", "median", t.n, p10=t.p10_s, p90=t.p90_s)
        else:
            out[key] = quantity(None, source, method, "median", 1, reason=(f"{r.status}: {r.reason}" if r is not None
                                                              else "not measured")[:2000])
    return out


def decode_terms(results, source: str) -> dict | None:
    """``devices[].decode`` from one device's decode results (None where there are none)."""
    terms = {}
    gemm = gemm_curves(results, source)
    if gemm:
        terms["gemm"] = gemm
    attention = attention_terms(results, source)
    if attention:
        terms["attention"] = attention
    launch = launch_costs(results, source)
    if launch:
        terms["launch"] = launch
    return terms or None


def host_allreduce_entries(results, source: str, library: str | None) -> list[dict]:
    """One ``collectives[]`` entry per (TP size, graph) of the allreduce probe with a passed size."""
    series: dict[tuple, list] = defaultdict(list)
    for r in results:
        if r.probe == "allreduce" and "bytes" in r.params:
            series[(r.params["tp"], bool(r.params["graph"]))].append(r)
    out = []
    for (tp, graph), rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r.params["bytes"])
        entry = fitted_entry("all-reduce", tp, rs, source)
        if entry is None:
            continue
        entry.update({"hosts": 1, "ranks_per_host": tp, "graphs": graph, "library": library, "transport": None,
                      "transport_reason": "one process over the host's GPUs: NCCL's own choice, not logged",
                      "single_process": True, "devices": list(rs[0].params["devices"])})
        out.append(entry)
    return out
