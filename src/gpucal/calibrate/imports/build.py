"""Another tool's output (``ToolRun``s) into a gpucal profile: the links between devices with their P2P verdict,
the host copies, the local copy's memory bandwidth, and the collectives fitted over their size sweep, each
with source ``measured`` and a method naming the tool, its version and its byte convention; what the tools do
not measure (memory size, FLOP/s) comes from the card's datasheet profile, cited.

The P2P verdict from a tool's matrices (no NVML, no byte check: neither tool verifies the copied bytes):

| verdict | when |
|---|---|
| ``host-staged`` | the runtime cannot reach the peer (the tool says so, or prints no P2P figure) |
| ``p2p-slower-than-staged`` | a P2P rate below the same pair's rate with P2P off |
| ``nvlink`` | a P2P rate above PCIe Gen5 x16's line rate (no PCIe link reaches it) |
| ``p2p-pcie`` | any other P2P rate |

A link's alpha is the tool's latency for that path where it has one, else the alpha of the card's datasheet
link preset (cited as such): the planner needs both, and a rate measured at one size has no intercept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpucal import profiles
from gpucal.calibrate.build import LINK_CONVENTION
from gpucal.calibrate.entries import fit_quantity, quantity, reported
from gpucal.calibrate.fit import FitError, fit_pieces
from gpucal.calibrate.imports.figures import CollectiveRun, Matrix, ToolRun
from gpucal.errors import InputError
from gpucal.standards import PCIE_GT_S, pcie_Bps
from gpucal.units import format_bytes, format_rate

__all__ = ["NVLINK_ABOVE_BPS", "build_profile", "link_verdict", "pcie_limit"]

NVLINK_ABOVE_BPS = pcie_Bps(5, 16)  # where the card's PCIe link is unknown: no PCIe Gen5 link moves more one way
SAME_RATE_FRAC = 0.10  # P2P on and off this close, with no word on peer access: one path, through the host
BUSBW = {"all-reduce": lambda n: 2 * (n - 1) / n, "all-gather": lambda n: (n - 1) / n,
         "reduce-scatter": lambda n: (n - 1) / n, "broadcast": lambda n: 1.0, "send-recv": lambda n: 1.0}


def _gb(x: float | None) -> str:
    return format_rate(x) if x else "-"


def _of(run: ToolRun, matrix: Matrix) -> str:
    return f"{run.tool} {run.version or '(version not printed)'}: {matrix.method}"


def _figure(run: ToolRun, matrix: Matrix, value: float, convention: str | None = None) -> dict:
    return quantity(value, "measured", _of(run, matrix), matrix.statistic, matrix.n,
                    byte_convention=convention or matrix.byte_convention)


def link_verdict(can_access: bool | None, p2p_Bps: float | None, staged_Bps: float | None,
                 pcie_limit_Bps: float = NVLINK_ABOVE_BPS, pcie_what: str = "PCIe Gen5 x16") -> tuple[str, list[str]]:
    """The P2P verdict of one ordered pair from a tool's figures (see the module docstring), with its reasons;
    ``pcie_limit_Bps`` is the most the card's PCIe link moves one way (``pcie_what`` says which link that is)."""
    if can_access is False or (can_access is None and p2p_Bps is None):
        why = "the tool reports no peer access" if can_access is False else "the tool printed no P2P figure"
        return "host-staged", [f"no P2P: {why}; copies between these devices go through host memory"]
    if p2p_Bps is None:
        return "p2p-pcie", ["peer access possible, but the tool printed no P2P rate; the verdict rests on that word"]
    reasons = [f"P2P: {_gb(p2p_Bps)} one way" + (f", with P2P off {_gb(staged_Bps)}" if staged_Bps else "")]
    if can_access is None and staged_Bps and abs(p2p_Bps / staged_Bps - 1) < SAME_RATE_FRAC:
        reasons.append("the tool does not say whether the peer was reachable, and P2P on and off run at the same rate "
                       f"(within {SAME_RATE_FRAC:.0%}): the copies went through host memory")
        return "host-staged", reasons
    if staged_Bps and p2p_Bps < staged_Bps:
        reasons.append(f"P2P is slower than staging through the host ({_gb(p2p_Bps)} < {_gb(staged_Bps)})")
        return "p2p-slower-than-staged", reasons
    if p2p_Bps > pcie_limit_Bps:
        reasons.append(f"above {pcie_what}'s {_gb(pcie_limit_Bps)}: NVLink (the tool does not name the path)")
        return "nvlink", reasons
    reasons.append(f"at or below {pcie_what}'s {_gb(pcie_limit_Bps)}: P2P over PCIe")
    return "p2p-pcie", reasons


def pcie_limit(sheet: profiles.Document | None, run: ToolRun | None) -> tuple[float, str]:
    """The most the card's PCIe link moves one way: its datasheet's generation and width at line rate (or the
    faster of the measured host copies, where higher), else PCIe Gen5 x16's."""
    host = sheet.profile.devices[0].host_link if sheet else None
    gen = host.pcie_generation.value if host and host.pcie_generation.known else None
    width = host.pcie_width.value if host and host.pcie_width.known else None
    if gen is None or width is None or int(gen) not in PCIE_GT_S:
        limit, what = NVLINK_ABOVE_BPS, "PCIe Gen5 x16"
    else:
        limit, what = pcie_Bps(int(gen), int(width)), f"PCIe Gen{int(gen)} x{int(width)} (the card's datasheet)"
    measured = [v for m in ((run.h2d_Bps, run.d2h_Bps) if run else ()) if m for v in m.values.values() if v]
    if measured and max(measured) > limit:
        limit, what = max(measured), "the fastest measured host copy"
    return limit, what


def _preset_alpha(sheet: profiles.Document | None, path: str) -> tuple[dict, str] | None:
    """The alpha of the datasheet's link preset for ``path`` (its own for P2P; ``pcie*`` ones for host staging)."""
    name = sheet.profile.default_link if sheet else None
    try:
        preset = profiles.load_builtin("link", name).model if name else None
        if preset is None or (path == "host-staged" and preset.kind == "nvlink"):
            cc = sheet.profile.devices[0].cc if sheet else None
            name = "pcie5-x16" if cc and cc >= (9, 0) else "pcie4-x16"
            preset = profiles.load_builtin("link", name).model
    except KeyError:
        return None
    if not preset.alpha_s.known:
        return None
    q = preset.alpha_s.to_json()
    q["note"] = (f"the link preset {name}'s alpha: the tool timed no latency on this path "
                 + (f"({q['note']})" if q.get("note") else "")).strip()
    return q, name


class _Links:
    """The links[] entries and each device's peer_link of one run."""

    def __init__(self, run: ToolRun, sheet: profiles.Document | None):
        self.run, self.sheet = run, sheet
        self.pcie = pcie_limit(sheet, run)
        self.entries: list[dict] = []
        self.best_p2p: dict[int, tuple[float, dict]] = {}
        self.kinds: dict[int, set[str]] = {}
        self.can: dict[int, bool] = {}

    def pair(self, i: int, j: int) -> None:
        run = self.run
        p2p = run.p2p_Bps.get(i, j) if run.p2p_Bps else None
        staged = run.staged_Bps.get(i, j) if run.staged_Bps else None
        can = run.can_access.get((i, j))
        verdict, reasons = link_verdict(can, p2p, staged, *self.pcie)
        direct = verdict in ("nvlink", "p2p-pcie") and p2p is not None
        matrix, rate = (run.p2p_Bps, p2p) if direct else (run.staged_Bps, staged)
        if rate is None and not direct:
            rate, matrix = self._staged_from_host(i, j, reasons)
        if rate is None:
            return
        if matrix is None:
            beta = quantity(rate, "derived", note=reasons[-1])
        else:
            beta = _figure(run, matrix, rate, LINK_CONVENTION)
        lat = run.p2p_latency_s if direct else run.staged_latency_s
        alpha_s = lat.get(i, j) if lat else None
        if alpha_s is not None:
            alpha = _figure(run, lat, alpha_s)
        else:
            preset = _preset_alpha(self.sheet, "p2p" if direct else "host-staged")
            if preset is None:
                alpha = quantity(None, "estimate", reason="not measured: the tool timed no latency on this path")
            else:
                alpha, name = preset
                reasons.append(f"alpha: the link preset {name}'s (the tool timed no latency on this path)")
        entry: dict[str, Any] = {
            "src": i, "dst": j, "path": verdict if direct else "host-staged", "verdict": verdict, "flags": [],
            "series": f"{run.tool}:{'p2p' if direct else 'staged'}-dev{i}->dev{j}",
            "p2p": {"supported": can if can is not None else p2p is not None, "enabled": p2p is not None,
                    "verified": None},
            "alpha_s": alpha, "beta_Bps": beta, "r2": None,
            "bidirectional": self._bidirectional(i, j, direct),
            "reasons": [*reasons, f"{run.tool} does not check the copied bytes: P2P data is not verified"]}
        self.entries.append(entry)
        self.kinds.setdefault(i, set()).add(verdict)
        self.can[i] = self.can.get(i, False) or bool(entry["p2p"]["supported"])
        if verdict == "nvlink" and (i not in self.best_p2p or rate > self.best_p2p[i][0]):
            self.best_p2p[i] = (rate, beta)

    def _staged_from_host(self, i: int, j: int, reasons: list[str]) -> tuple[float | None, Matrix | None]:
        """Without a rate with P2P off: the driver stages a peer copy through host memory in pipelined chunks,
        so it moves at the slower of the source's device-to-host and the destination's host-to-device rate."""
        run = self.run
        d2h = run.d2h_Bps.get(i, i) if run.d2h_Bps else None
        h2d = run.h2d_Bps.get(j, j) if run.h2d_Bps else None
        if not d2h or not h2d:
            return None, None
        reasons.append(f"derived: the slower of device {i}'s device-to-host ({_gb(d2h)}) and device {j}'s "
                       f"host-to-device ({_gb(h2d)}) copies, as the driver stages a peer copy through host memory")
        return min(d2h, h2d), None

    def _bidirectional(self, i: int, j: int, direct: bool) -> dict | None:
        m = self.run.p2p_bidir_Bps if direct else self.run.staged_bidir_Bps
        there, back = (m.get(i, j), m.get(j, i)) if m else (None, None)
        if there is None or back is None:
            return None
        out = {"sum_Bps": there + back, "series": f"{self.run.tool}: {m.method} ({m.statistic} of {m.n})",
                "byte_convention": "the two directions' rates (n/t each, measured at once), summed"}
        if m.statistic == "median":
            out.update(statistic="median", n=m.n)
        return out

    def peer_link(self, d: int) -> dict | None:
        kinds = self.kinds.get(d)
        if not kinds:
            return None
        kind = "nvlink" if d in self.best_p2p else (
            "pcie" if kinds & {"p2p-pcie", "p2p-slower-than-staged"} else "none")
        peer: dict[str, Any] = {"kind": kind, "p2p_supported": quantity(
            self.can.get(d, False), "reported", note=f"{self.run.tool}: peer access to any other device")}
        if kind == "nvlink":
            peer["bandwidth_Bps"] = self.best_p2p[d][1]
        return peer


def _host_link(run: ToolRun | None, d: int, sheet: profiles.Document | None) -> dict | None:
    """The datasheet's PCIe generation and width (cited: the tools report neither) and the measured copies."""
    out: dict[str, Any] = {}
    for key, rates in (("h2d", run.h2d_Bps if run else None), ("d2h", run.d2h_Bps if run else None)):
        rate = rates.get(d, d) if rates else None
        if rate is None:
            continue
        alpha = quantity(None, "estimate", reason=f"not measured: {run.tool} times no latency of this copy")
        out[key] = {"alpha_s": alpha, "beta_Bps": _figure(run, rates, rate, LINK_CONVENTION)}
    host = sheet.profile.devices[0].host_link if sheet else None
    if host is not None:
        sheet_link = host.to_json()
        cited = {k: sheet_link[k] for k in ("pcie_generation", "pcie_width", "pcie_generation_max",
                                            "pcie_width_max") if k in sheet_link}
    else:
        why = "the tool does not report it"
        cited = {"pcie_generation": reported(None, reason=why), "pcie_width": reported(None, reason=why)}
    return {**cited, **out} if (out or host is not None) else None


def _collective(run: ToolRun, c: CollectiveRun) -> dict:
    good = [(s, t) for s, t, w in zip(c.sizes_bytes, c.times_s, c.wrong) if t > 0 and not w]
    bad = [s for s, w in zip(c.sizes_bytes, c.wrong) if w]
    alpha = beta = r2 = fit = reason = None
    try:
        fit = fit_pieces([s for s, _ in good], [t for _, t in good])
        alpha, beta, r2 = fit.alpha_s, fit.beta_Bps, fit.r2
    except FitError as exc:
        reason = f"no alpha/beta: {exc}"
    lo, hi = (format_bytes(good[0][0]), format_bytes(good[-1][0])) if good else ("-", "-")
    method = (f"{run.tool} {run.version or '(version not printed)'}: {c.method}; fit t = alpha + S/beta over "
              f"S = {lo} - {hi} per regime (S: nccl-tests' size of the op; least squares weighted by 1/t)")
    n_first = fit.pieces[0].n if fit else max(1, len(good))
    n_last = fit.pieces[-1].n if fit else max(1, len(good))
    entry: dict[str, Any] = {
        "op": c.op, "nranks": c.nranks, "hosts": c.hosts, "ranks_per_host": c.ranks_per_host, "graphs": c.graphs,
        "library": c.library, "transport": None, "transport_reason": f"{run.tool} does not print it",
        "dtype": c.dtype, "busbw_factor": BUSBW[c.op](c.nranks),
        "alpha_s": fit_quantity(alpha, "measured", method, n_first, reason),
        "beta_Bps": fit_quantity(beta, "measured", method, n_last, reason,
                                 byte_convention="S/t, S as nccl-tests counts it (algbw)"),
        "r2": r2, "points": [[s, t] for s, t in good],
        "algbw_Bps": [a for a, t, w in zip(c.algbw_Bps, c.times_s, c.wrong) if t > 0 and not w],
        "busbw_Bps": [b for b, t, w in zip(c.busbw_Bps, c.times_s, c.wrong) if t > 0 and not w],
        "verified": not bad and all(w is not None for w in c.wrong),
        "reason": (f"{len(bad)} sizes with wrong elements ({format_bytes(bad[0])} first)" if bad else
                   "nccl-tests ran without checking the results (-c 0)" if any(w is None for w in c.wrong) else None)}
    if c.single_process is not None:
        entry["single_process"] = c.single_process
    if fit is not None:
        entry.update(fit.profile_fields())
    return {k: v for k, v in entry.items() if v is not None or k in ("alpha_s", "beta_Bps", "r2", "library",
                                                                       "transport", "reason")}


def _device(run: ToolRun | None, d: int, name: str, sheet: profiles.Document | None, links: _Links | None) -> dict:
    base = sheet.profile.devices[0].to_json() if sheet else {}
    entry: dict[str, Any] = {"index": d, "name": name, "uuid": None, "count": 1}
    for key in ("architecture", "compute_capability", "memory_bytes", "memory_bandwidth_Bps", "dense_flops",
                "sparse_flops", "plan_flops_mode", "published"):
        if key in base:
            entry[key] = base[key]
    local = run.local_dram_Bps.get(d, d) if run and run.local_dram_Bps else None
    if local is not None:
        entry["memory_bandwidth_Bps"] = _figure(run, run.local_dram_Bps, local)
        sheet_Bps = sheet.profile.devices[0].memory_bandwidth_Bps.value if sheet else None
        if sheet_Bps:
            entry["memory_bandwidth_Bps"]["note"] = (f"{100 * local / sheet_Bps:.0f} % of the datasheet's "
                                                     f"{format_rate(sheet_Bps)}; a copy's read and write traffic")
    host = _host_link(run, d, sheet)
    if host:
        entry["host_link"] = host
    peer = links.peer_link(d) if links else None
    if peer:
        entry["peer_link"] = peer
    elif "peer_link" in base and links is None:
        entry["peer_link"] = base["peer_link"]
    return entry


def build_profile(runs: list[ToolRun], *, sheet: profiles.Document | None, name: str, created: str, version: str,
                  command: str) -> dict:
    """The profile of what ``runs`` measured (one tool's output each); ``sheet`` the card's datasheet profile
    (memory, FLOP/s, and the link preset's alpha where a tool timed no latency). Raises ``InputError`` where
    the runs disagree or say nothing a profile can hold."""
    for r in runs:
        if len(set(r.devices)) > 1:
            raise InputError(f"{r.origin}: the devices are different cards ({', '.join(sorted(set(r.devices)))}): "
                             "gpucal imports one card model")
    link_runs = [r for r in runs if r.p2p_Bps or r.staged_Bps or r.h2d_Bps or r.d2h_Bps or r.local_dram_Bps]
    if len(link_runs) > 1:
        raise InputError(f"{link_runs[0].origin} and {link_runs[1].origin} both measure copies: import one of "
                         "them (collectives from nccl-tests can go with either)")
    link_run = link_runs[0] if link_runs else None
    cards = {r.devices[0] for r in runs if r.devices}
    if len(cards) > 1:
        raise InputError(f"the files name different cards ({', '.join(sorted(cards))}): import one machine's")
    count = max(r.device_count for r in runs)
    names = next((r.devices for r in ([link_run] if link_run else []) + runs if r.devices), [])
    card = names[0] if names else (sheet.profile.devices[0].name if sheet else None)
    if card is None:
        raise InputError(f"{runs[0].origin}: names no device; give --card NAME (a datasheet profile)")
    if sheet is None:
        raise InputError(f"{runs[0].origin}: no datasheet profile describes {card!r}; give --card NAME "
                         "(a datasheet profile: memory and FLOP/s come from it)")
    if count < 1:
        raise InputError(f"{runs[0].origin}: holds no figure gpucal can import")
    links = _Links(link_run, sheet) if link_run and not link_run.no_links else None
    if links:
        for i in range(count):
            for j in range(count):
                if i != j:
                    links.pair(i, j)
    devices = [_device(link_run, d, names[d] if d < len(names) else card, sheet, links) for d in range(count)]
    imported = [{"tool": r.tool, "version": r.version, "file": r.origin, "sha256": r.sha256} for r in runs]
    what = ", ".join(f"{r.tool} {r.version or ''}".strip() + f" ({Path(r.origin).name})" for r in runs)
    notes = [f"imported from {what}: every figure marked measured is the tool's, converted to gpucal's units and "
             "byte conventions (each method says how)",
             f"memory size and FLOP/s are the datasheet profile {sheet.name}'s: the tools measure neither"]
    if link_run and not link_run.local_dram_Bps:
        notes.append(f"memory bandwidth is the datasheet profile {sheet.name}'s: {link_run.tool} timed no local copy")
    if links is None and sheet.profile.default_link:
        notes.append(f"no link between devices was imported: the planner uses the link preset "
                     f"{sheet.profile.default_link} of the datasheet profile {sheet.name}")
    sheet_card = sheet.profile.devices[0].name
    if card != sheet_card:
        notes.append(f"the files name {card}; memory size and FLOP/s are those of {sheet_card}, as --card gives")
    for r in runs:
        notes.extend(r.notes)
    hostnames = sorted({h for r in runs for h in r.hostnames})
    doc: dict[str, Any] = {
        "schema": "gpucal.profile/1", "name": name,
        "title": f"{count} x {card} (imported: {what})"[:2000], "source": "measured", "created": created,
        "gpucal_version": version, "documents": sheet.profile.to_json().get("documents", {}),
        "notes": [n[:2000] for n in notes],
        "host": {**({"hostname": hostnames[0]} if len(hostnames) == 1 else {}), "command": command,
                 "imported": imported, "anomalies": []},
        "devices": devices, "links": links.entries if links else [],
        "collectives": [_collective(r, c) for r in runs for c in r.collectives], "network": []}
    if links is None or not links.entries:
        if sheet.profile.default_link:
            doc["plan_defaults"] = {"link": sheet.profile.default_link}
    if not doc["documents"]:
        doc.pop("documents")
    return doc

