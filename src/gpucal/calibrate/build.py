"""From a ``Calibration`` (results, fits, verdicts) to a ``gpucal.profile/1`` document.

Every number written is a quantity that says how it was obtained: ``measured`` on a GPU, ``simulated`` on
a virtual machine (never a measurement), with its method, statistic, n, p10/p90 and byte convention;
facts the device reports (memory size, PCIe link) are ``reported``. What each field holds:

- ``devices[d].memory_bandwidth_Bps``: the stream ``read`` kernel (the weights' access pattern in decode),
  median; ``gemv_Bps``: the decode GEMV at batch 1 per dtype; ``dense_flops``: the square GEMM per mode;
- ``devices[d].host_link``: the PCIe link NVML read right after traffic; ``h2d``/``d2h``: α is the one-shot
  latency (one copy issued and waited for: the median over the latency sizes of t − n/β), β the fit of the
  pinned copy-engine sweep;
- ``links[]``: per ordered pair, the path the runtime will use as the P2P verdict says — P2P where it is
  ``nvlink`` or ``p2p-pcie``, else the best verified staged path (host staging when P2P is absent, slower
  than staging, or corrupt) — with α (one-shot) and β (fit) of that path, the sweep's pipelined α, its points,
  the bidirectional rates and the verdict's reasons;
- ``fits[]``: every copy series with its fit and points; ``kernels[]``: every timed kernel (roofline points);
- ``devices[d].decode``: the decode terms of the device (``calibrate/decode.py``: the decode-GEMM curve,
  attention, the launch costs); ``collectives[]``: the all-reduce over the host's devices from one process, per
  TP size, eager and in CUDA graphs (``single_process``).
"""

from __future__ import annotations

import re

from gpucal.calibrate.decode import decode_terms, host_allreduce_entries
from gpucal.calibrate.entries import quantity, reported
from gpucal.calibrate.fit import piece_dict
from gpucal.calibrate.links import SeriesFit, find, oneshot_alpha
from gpucal.calibrate.verdict import pcie_load_of
from gpucal.profiles import datasheet_for
from gpucal.profiles.model import AlphaBeta

__all__ = ["build_profile", "default_name", "planner_series", "link_pieces"]

STAGED_PATHS = ("driver-staged", "host-staged")
LINK_CONVENTION = "link_Bps = n/t (n bytes one way)"


def _slug(text: str) -> str:
    text = re.sub(r"^(nvidia\s+)?(geforce\s+)?", "", text.strip().lower())
    return re.sub(r"[^a-z0-9._-]+", "-", text).strip("-._") or "gpu"


def default_name(hostname: str, device_name: str, count: int, simulated: bool) -> str:
    """``<host>-<gpu>`` (``-<N>x`` before the GPU for several, ``-simulated`` after a simulation), as a
    profile name: lowercase letters, digits, dots, dashes."""
    gpu = f"{count}x{_slug(device_name)}" if count > 1 else _slug(device_name)
    name = f"{_slug(hostname)}-{gpu}" + ("-simulated" if simulated else "")
    return name[:100]


def _rate_quantity(result, metric: str, method: str, source: str, note: str | None = None) -> dict:
    """A rate (bytes/s or FLOP/s) of ``result``: median, with p10/p90 of the rate (from p90/p10 of time)."""
    t = result.timing
    value = result.metrics[metric]
    return quantity(value, source, method, "median", t.n, p10=value * t.median_s / t.p90_s,
                    p90=value * t.median_s / t.p10_s, byte_convention=result.byte_convention or None,
                    note=note or None)


def _efficiency(value: float, peak: float | None, what: str) -> str | None:
    return f"{100 * value / peak:.1f} % of {what}" if peak else None


def _passed(results, **params):
    return [r for r in results if r.status == "passed" and all(r.params.get(k) == v for k, v in params.items())]


def _memory_bandwidth(results, source: str, datasheet: float | None, theoretical: float | None) -> dict:
    stream = [r for r in results if r.status == "passed" and r.probe == "membw" and "bytes_per_buffer" in r.params]
    read = [r for r in stream if r.case.startswith("read-")] or stream
    if not read:
        why = "; ".join(f"{r.case}: {r.reason}" for r in results if r.probe == "membw" and r.reason)[:300]
        return quantity(None, source, "stream kernels", "median", 1,
                        reason=f"no stream kernel passed ({why or 'none ran'})")
    best = max(read, key=lambda r: r.metrics["dram_Bps"])
    kind = best.case.split("-")[0]
    notes = [x for x in (_efficiency(best.metrics["dram_Bps"], datasheet, "the datasheet"),
                         _efficiency(best.metrics["dram_Bps"], theoretical, "memory clock x bus width x 2")) if x]
    return _rate_quantity(best, "dram_Bps", f"stream {kind} kernel over {best.params['bytes_per_buffer']} B "
                          f"({best.library})", source, "; ".join(notes) or None)


def _gemv(results, source: str) -> dict:
    out = {}
    for r in results:
        if r.status == "passed" and r.probe == "membw" and r.params.get("batch") == 1:
            p = r.params
            out[p["dtype"]] = _rate_quantity(r, "dram_Bps", f"GEMV y = W x, batch 1, W {p['m']} x {p['k']} "
                                             f"({r.library})", source)
    return out


def _flops(results, source: str) -> dict:
    out: dict = {}
    best: dict = {}
    for r in results:
        if r.probe != "flops" or "mode" not in r.params or r.params.get("m") != r.params.get("n"):
            continue
        mode = r.params["mode"]
        if r.status == "passed" and (mode not in best or r.params["m"] > best[mode].params["m"]):
            best[mode] = r
        elif r.status in ("failed", "error") and mode not in best:
            out[mode] = quantity(None, source, "GEMM", "median", 1, reason=f"{r.case}: {r.reason}"[:300])
    for mode, r in best.items():
        p = r.params
        frac = r.metrics.get("efficiency_frac")
        note = f"{100 * frac:.1f} % of {r.metrics.get('peak_ref')}" if frac else None
        out[mode] = _rate_quantity(r, "flops", f"GEMM {p['m']} x {p['n']} x {p['k']} ({r.library})", source, note)
    return out


def _series_points(results, series: str) -> list[list]:
    pts = sorted((r.params["bytes"], r.timing.median_s) for r in results
                 if r.status == "passed" and r.params.get("series") == series and r.params.get("direction") == "one-way")
    return [[n, t] for n, t in pts]


def _alpha_beta(results, fit: SeriesFit, source: str, what: str) -> AlphaBeta | None:
    """α (one-shot, from the latency probe; the sweep's α where there is none) and β (the fit) of ``fit``, as
    the model's alpha/beta pair."""
    if fit is None or not fit.beta_Bps:
        return None
    sizes = sorted(r.params["bytes"] for r in _passed(results, series=fit.series, latency="oneshot"))
    alpha = oneshot_alpha(results, fit.series, fit.first_beta_Bps)
    if alpha is not None:
        alpha_q = quantity(max(alpha, 0.0), source, f"one copy issued and waited for (host clock), {sizes[0]}-"
                           f"{sizes[-1]} B: median of t - n/beta", "median", len(sizes))
    elif fit.fit:
        alpha_q = quantity(max(fit.fit.alpha_s, 0.0), source, "the sweep's fit (copies back to back, its smallest "
                           "sizes' regime): no one-shot latency was measured", "fit", fit.fit.pieces[0].n)
    else:
        return None
    if fit.fit:
        last = fit.fit.pieces[-1]  # the largest sizes' regime: the whole sweep where one line fits
        lo, hi = int(min(last.sizes_bytes)), int(max(last.sizes_bytes))
        clocks = sorted({r.params.get("clock") for r in _passed(results, series=fit.series, direction="one-way")} - {None})
        pieces = len(fit.fit.pieces)
        regime = "" if pieces == 1 else f"; the largest sizes' of {pieces} regimes of the sweep " \
                                        f"{int(min(fit.fit.sizes_bytes))}-{int(max(fit.fit.sizes_bytes))} B"
        beta_q = quantity(fit.fit.beta_Bps, source, f"fit t = alpha + n/beta over {lo}-{hi} B, {what}, copies back to "
                          f"back ({'; '.join(clocks) or 'timed'}); R2 {last.r2:.5f}{regime}", "fit", last.n,
                          byte_convention=LINK_CONVENTION)
    else:
        beta_q = quantity(fit.beta_Bps, source, f"the best rate of the sweep, {what} ({fit.reason})", "max", fit.cases,
                          byte_convention=LINK_CONVENTION)
    return AlphaBeta.model_validate({"alpha_s": alpha_q, "beta_Bps": beta_q})


def planner_series(verdict, fits: list[SeriesFit]) -> SeriesFit | None:
    """The series whose α/β the runtime will see from ``verdict.src`` to ``verdict.dst``: P2P by copy engine
    for ``nvlink`` and ``p2p-pcie``; otherwise the best verified staged path."""
    pair = [f for f in fits if (f.src, f.dst) == (verdict.src, verdict.dst)]
    if verdict.verdict in ("nvlink", "p2p-pcie"):
        p2p = next((f for f in pair if f.path == "p2p" and f.engine == "ce" and f.beta_Bps), None)
        if p2p:
            return p2p
    staged = [f for f in pair if f.path in STAGED_PATHS and f.verified and f.beta_Bps]
    return max(staged, key=lambda f: f.beta_Bps, default=None)


def _bidirectional(results, series: str) -> dict | None:
    bi = [r for r in results if r.status == "passed" and r.params.get("direction") == "bi"
          and series in (r.params.get("series"), r.params.get("reverse"))]
    if not bi:
        return None
    r = max(bi, key=lambda r: r.params["bytes"])
    return {"bytes": r.params["bytes"], "sum_Bps": r.metrics["sum_Bps"], "union_Bps": r.metrics["union_Bps"],
            "statistic": "median", "n": r.timing.n, "series": f"{r.params['series']} with {r.params['reverse']}",
            "byte_convention": r.byte_convention}


def _links(cal, results, source: str) -> list[dict]:
    out = []
    for v in cal.verdicts:
        chosen = planner_series(v, cal.fits)
        ab = _alpha_beta(results, chosen, source, f"{chosen.path}, {chosen.engine}" if chosen else "")
        if ab is None:
            continue
        p2p = [r for r in results if r.params.get("path") == "p2p" and (r.params.get("src"), r.params.get("dst"))
               == (v.src, v.dst) and r.status in ("passed", "failed")]  # the P2P copies that ran
        item = {"src": v.src, "dst": v.dst, "path": v.verdict if chosen.path == "p2p" else "host-staged",
                "verdict": v.verdict, "flags": list(v.flags), "series": chosen.series,
                "p2p": {"supported": bool(v.evidence.get("runtime_can_access_peer")), "enabled": bool(p2p),
                        "verified": all(r.status == "passed" for r in p2p) if p2p else None},
                **ab.to_json(), "r2": chosen.fit.r2 if chosen.fit else None,
                "bidirectional": _bidirectional(results, chosen.series),
                "points": _series_points(results, chosen.series), "reasons": list(v.reasons)}
        if chosen.fit:
            item["alpha_pipelined_s"] = quantity(max(chosen.fit.alpha_s, 0.0), source,
                                                 "the sweep's fit: copies back to back", "fit", chosen.fit.n)
            item["pieces"] = link_pieces(chosen.fit, ab.alpha_s.value)
            item["poor_fit"] = chosen.fit.poor
        out.append(item)
    return out


def link_pieces(fit, alpha_s: float) -> list[dict]:
    """The regimes of a link's sweep for the planner: each piece's beta, and as its alpha the link's ``alpha_s``
    (one copy issued and waited for) plus the piece's intercept above the first piece's (what a later regime's
    protocol adds to every transfer), never below 0."""
    first = fit.pieces[0].alpha_s
    return [dict(piece_dict(p), alpha_s=max(0.0, alpha_s + p.alpha_s - first)) for p in fit.pieces]


def _fits(cal, results) -> list[dict]:
    out = []
    for f in cal.fits:
        one = oneshot_alpha(results, f.series, f.first_beta_Bps) if f.beta_Bps else None
        item = {"series": f.series, "path": f.path, "engine": f.engine, "memory": f.memory, "src": f.src,
                "dst": f.dst, "source": f.source, "alpha_s": f.fit.alpha_s if f.fit else None,
                "beta_Bps": f.beta_Bps, "oneshot_alpha_s": one, "r2": f.fit.r2 if f.fit else None,
                "n": f.fit.n if f.fit else 0, "verified": f.verified, "reason": f.reason,
                "points": _series_points(results, f.series)}
        if f.fit:
            item.update(f.fit.profile_fields())
        out.append(item)
    return out


def _kernels(results, device: int) -> list[dict]:
    out = []
    for r in results:
        if r.status != "passed" or r.probe not in ("membw", "flops") or r.work is None:
            continue
        kind = "gemm" if r.probe == "flops" else ("gemv" if "batch" in r.params else "stream")
        out.append({"device": device, "kind": kind, "case": r.case,
                    "dtype": r.params.get("mode") or r.params.get("dtype"),
                    "bytes": r.work.bytes_read + r.work.bytes_written, "flop": r.work.flop,
                    "median_s": r.timing.median_s, "n": r.timing.n, "source": r.source})
    return out


def _device(cal, info, d: int, source: str) -> dict:
    all_results = cal.all_results()
    per_dev = [r for r in cal.results.get("membw", []) + cal.results.get("flops", []) if r.params.get("device_index") == d]
    sheet = datasheet_for(info.name)
    sheet_bw = sheet.profile.devices[0].memory_bandwidth_Bps.value if sheet else None
    theoretical = info.theoretical_memory_Bps
    virtual = cal.backend.clock == "virtual"
    entry: dict = {"index": d, "name": info.name, "uuid": info.uuid, "count": 1}
    if info.compute_capability:
        entry["compute_capability"] = info.compute_capability
    entry["memory_bytes"] = reported(info.memory_bytes, "total device memory" + (" (virtual device)" if virtual else ""))
    entry["memory_bandwidth_Bps"] = _memory_bandwidth(per_dev, source, sheet_bw, theoretical)
    if theoretical:
        entry["theoretical_memory_bandwidth_Bps"] = quantity(theoretical, "derived",
                                                             note="maximum memory clock x bus width x 2 (reported)")
    gemv = _gemv(per_dev, source)
    if gemv:
        entry["gemv_Bps"] = gemv
    entry["dense_flops"] = _flops(per_dev, source)
    topo = cal.topology.device(d) if cal.topology is not None and cal.topology.available else None
    load = pcie_load_of(cal.results.get("host-link", []))
    gen, width = load.get(d, (None, None))
    after = "read by NVML right after the largest pinned H2D copy"
    host: dict = {"pcie_generation": reported(gen, after, "not read under load"),
                  "pcie_width": reported(width, after, "not read under load")}
    gen_max = (topo.pcie_generation_max if topo else None) or info.pcie_generation_max
    width_max = (topo.pcie_width_max if topo else None) or info.pcie_width_max
    if gen_max:
        host["pcie_generation_max"] = reported(gen_max)
    if width_max:
        host["pcie_width_max"] = reported(width_max)
    for path in ("h2d", "d2h"):
        fit = next(iter(find(cal.fits, path, d, d, engine="ce", memory="pinned")), None)
        ab = _alpha_beta(all_results, fit, source, "pinned host memory, copy engine")
        if ab:
            host[path] = ab.to_json()
    entry["host_link"] = host
    mine = [v for v in cal.verdicts if v.src == d]
    if mine:
        kinds = {v.verdict for v in mine}
        kind = "nvlink" if "nvlink" in kinds else ("pcie" if kinds & {"p2p-pcie", "p2p-slower-than-staged",
                                                                      "p2p-corrupt"} else "none")
        can = any(v.evidence.get("runtime_can_access_peer") for v in mine)
        peer: dict = {"kind": kind, "p2p_supported": reported(can, "cudaDeviceCanAccessPeer, to any other device")}
        if kind == "nvlink":
            nv = [f for v in mine if v.verdict == "nvlink" for f in [planner_series(v, cal.fits)]
                  if f and f.path == "p2p" and f.beta_Bps]
            if nv:
                best = max(nv, key=lambda f: f.beta_Bps)
                peer["bandwidth_Bps"] = quantity(
                    best.beta_Bps, source, f"P2P copy-engine sweep {best.series}"
                    + ("" if best.fit else f" (no fit: {best.reason}; its best rate)"), "fit" if best.fit else "max",
                    best.fit.n if best.fit else best.cases, byte_convention=LINK_CONVENTION)
            else:
                peer["kind"] = "pcie"
        entry["peer_link"] = peer
    if topo and topo.numa_node is not None:
        entry["numa_node"] = topo.numa_node
    decode = decode_terms([r for r in cal.results.get("decode", []) if r.params.get("device_index") == d], source)
    if decode:
        entry["decode"] = decode
    return entry


def build_profile(cal, name: str, provenance: dict, anomalies: list[dict], created: str, version: str) -> dict:
    """The profile document of ``cal`` (not yet validated or written)."""
    backend = cal.backend
    source = "simulated" if backend.simulated else "measured"
    infos = backend.devices()
    count = len(infos) if backend.links_reason() is None else 1
    devices = [_device(cal, infos[d], d, source) for d in range(count)]
    results = cal.all_results()
    names = sorted({i.name for i in infos[:count]})
    host = provenance.get("hostname", "this host")
    title = f"{count} x {', '.join(names)} on {host} ({source}{', ' + backend.name if backend.simulated else ''})"
    notes = [a["text"] for a in anomalies]
    if backend.simulated:
        notes.insert(0, f"simulated: {backend.name} is a virtual machine priced by a profile; no figure here is a "
                        "measurement")
    kernels = [k for d in range(count) for k in _kernels(
        [r for r in cal.results.get("membw", []) + cal.results.get("flops", []) if r.params.get("device_index") == d], d)]
    links = _links(cal, results, source)
    doc = {"schema": "gpucal.profile/1", "name": name, "title": title[:2000], "source": source, "created": created,
           "gpucal_version": version, "notes": [n[:2000] for n in notes], "host": {**provenance, "anomalies": anomalies},
           "devices": devices, "links": links, "fits": _fits(cal, results), "kernels": kernels,
           "collectives": host_allreduce_entries(cal.results.get("allreduce", []), source, backend.allreduce_library()),
           "network": []}
    waived = [r for r in cal.results.get("allreduce", []) if r.status == "waived"]
    if waived:
        doc["notes"].append(f"all-reduce over the host's devices not measured: {waived[0].reason}"[:2000])
    if count == 1:  # one device: plan across cards with the datasheet's link preset, and say so
        sheet = datasheet_for(infos[0].name)
        preset = sheet.profile.default_link if sheet else None
        if preset:
            doc["plan_defaults"] = {"link": preset}
            doc["notes"].append(f"no link between devices was measured (one device): the planner uses the link "
                                f"preset {preset} of the datasheet profile {sheet.name}")
    return doc
