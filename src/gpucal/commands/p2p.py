"""``gpucal p2p``: is P2P there, and does it work? A verdict per ordered pair of devices, with its evidence.

It reads the topology (NVML), measures the host links (H2D/D2H, pinned, copy engine), and for each pair
the driver's staging, explicit host staging and, where the runtime allows it, P2P (copy engine swept over
sizes; kernel read and write at the largest size), verifying every byte; then fits α/β per path and
decides (``gpucal.calibrate.verdict``). ``--full`` runs the complete ``host-link`` and ``peer`` probes.
Exit code 1 when a copy failed its check (a ``p2p-corrupt`` pair included) or a device errored.
"""

from __future__ import annotations

import sys

from gpucal import render
from gpucal.calibrate.links import series_fits
from gpucal.calibrate.verdict import pair_verdict, pcie_load_of
from gpucal.commands.options import backend_arg, budget, check_memory, check_pairs, device_pairs, link_sizes, nonempty
from gpucal.errors import InputError
from gpucal.kernels.backend import select
from gpucal.probes.links import MAX_SWEEP_BYTES, VIRTUAL_MAX_BYTES, LinkConfig, needs, pairs_of, run_host_link, run_peer
from gpucal.probes.topology import read_topology
from gpucal.profiles.model import FitRecord
from gpucal.units import format_rate, format_time

__all__ = ["DESCRIPTION", "add_arguments", "run", "quick_config", "collect"]

DESCRIPTION = ("Is peer-to-peer there, and does it work? Measures every path between each pair of devices, verifies "
               "every byte, and gives a verdict per ordered pair with its evidence. On one device it reports the host "
               "links.")


def add_arguments(p) -> None:
    """``gpucal p2p``'s flags."""
    backend_arg(p)
    p.add_argument("--sizes", type=nonempty, metavar="LIST|A..B",
                   help="copy sizes: a list (4B,1MiB,256MiB) or a range of powers of 2 (4B..256MiB); default powers "
                        "of 4 from 4 B to 256 MiB (16 MiB on a virtual machine)")
    p.add_argument("--pairs", type=nonempty, metavar="LIST", help="pairs to measure, e.g. 0-1,2-3 (default every pair)")
    p.add_argument("--budget", type=budget, metavar="S",
                   help="seconds of sampling per case at most, e.g. 0.5 or 200ms (default 0.5)")
    p.add_argument("--full", action="store_true", help="run the full host-link and peer probes (every engine, "
                                                       "pageable memory, every size)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def quick_config(backend, sizes=None, pairs=None, budget_s=None, full: bool = False):
    """The copy probes' config: the quick sweep ``gpucal p2p`` runs, or (``full``) the probes' own defaults."""
    if full:
        return LinkConfig(sizes=sizes, pairs=pairs, budget_s=budget_s)
    hi = VIRTUAL_MAX_BYTES if backend.clock == "virtual" else MAX_SWEEP_BYTES
    sizes = sizes or tuple(4 ** i for i in range(1, 15) if 4 ** i <= hi)
    return LinkConfig(sizes=sizes, sm_sizes=(max(sizes),), engines=("ce", "sm-read", "sm-write", "staged"),
                      memory=("pinned",), pairs=pairs, budget_s=0.5 if budget_s is None else budget_s)


def collect(backend, config, progress=None) -> dict:
    """Topology, results, fits and verdicts (the objects, not yet JSON)."""
    def say(text):
        if progress:
            progress(text)

    say("topology")
    topology = read_topology(backend)
    say("host links")
    results = run_host_link(backend, config)
    pairs = pairs_of(backend, config) if backend.device_count() > 1 else []
    if pairs:
        say(f"{len(pairs)} pair(s) of devices")
        results += run_peer(backend, config)
    fits = series_fits(results)
    load = pcie_load_of(results)
    verdicts = []
    for a, b in pairs:
        for s, d in ((a, b), (b, a)):
            can = backend.can_access_peer(s, d) and backend.can_access_peer(d, s)
            verdicts.append(pair_verdict(s, d, can, topology, fits, load))
    return {"topology": topology, "results": results, "fits": fits, "verdicts": verdicts}


def run(args) -> int:
    sizes = None if args.sizes is None else link_sizes(args.sizes)
    pairs = device_pairs(args.pairs)
    backend = select(args.backend, args.device)
    reason = backend.links_reason()
    if reason:
        raise InputError(f"--backend: {reason}")
    check_pairs(backend, pairs)
    config = quick_config(backend, sizes, pairs, args.budget, args.full)
    check_memory(backend, needs(backend, config, "host-link") + needs(backend, config, "peer"), args)
    show = sys.stderr.isatty() and not args.json
    if show:
        with render.console(stderr=True).status("gpucal p2p ...") as status:
            out = collect(backend, config, lambda text: status.update(f"gpucal p2p: {text} ..."))
    else:
        out = collect(backend, config)
    failed = any(r.status in ("failed", "error") for r in out["results"])
    names = [d.name for d in backend.devices()]
    if args.json:
        render.print_json({"command": "p2p", "backend": backend.name, "simulated": backend.simulated,
                           "devices": names, "versions": backend.versions(),
                           "applicable": len(names) > 1, "topology": out["topology"].to_dict(),
                           "verdicts": [v.to_dict() for v in out["verdicts"]],
                           "fits": [f.to_dict() for f in out["fits"]],
                           "results": [r.to_dict() for r in out["results"]]})
        return 1 if failed else 0
    _print(backend, names, out)
    return 1 if failed else 0


def fit_notes(f) -> str:
    """What a series' row says besides its numbers, as its JSON does: why it has no fit, its regimes, a poor
    fit, the sizes that stopped sampling noisy."""
    record = FitRecord.model_validate(render.json_ready(f.fit.profile_fields())) if f.fit else None
    flags = render.fit_note(record, len(f.noisy_sizes), f.cases)
    return "; ".join(x for x in ("" if f.fit else (f.reason or ""), flags) if x)


def _print_fits(fits, console) -> None:
    rows, notes = [], []
    for f in fits:
        fit = f.fit
        rows.append((f.series, format_time(fit.alpha_s) if fit else "-", format_rate(f.beta_Bps) if f.beta_Bps else "-",
                     f"{fit.r2:.4f}" if fit else "-", fit.n if fit else f.cases, "yes" if f.verified else "NO"))
        note = fit_notes(f)
        if note:
            notes.append(f"{f.series}: {note}")
    console.print(render.table(("path", "α", "β", "R²", "n", "verified"), rows, right=(1, 2, 3, 4), no_wrap=(0,)))
    for note in notes:
        render.line(f"    {note}", console)


def _print(backend, names, out) -> None:
    console = render.console()
    n = len(names)
    render.line(f"gpucal p2p: backend {backend.name}, {n} device(s): {', '.join(sorted(set(names)))}", console)
    topology = out["topology"]
    if not topology.available:
        render.line(f"topology: {topology.reason}", console)
    if n < 2:
        render.line("one device: P2P is not applicable; the host links:", console)
    else:
        verdict = {(v.src, v.dst): v.label for v in out["verdicts"]}
        rows = [[f"dev{a}"] + ["-" if a == b else verdict.get((a, b), "not measured") for b in range(n)]
                for a in range(n)]
        console.print(render.table(["from \\ to"] + [f"dev{b}" for b in range(n)], rows,
                                   title="P2P verdict per ordered pair"))
        for v in out["verdicts"]:
            render.line(f"dev{v.src} -> dev{v.dst}: {v.label}", console)
            for reason in v.reasons:
                render.line(f"    {reason}", console)
            pair_fits = [f for f in out["fits"] if (f.src, f.dst) == (v.src, v.dst)]
            if pair_fits:
                _print_fits(pair_fits, console)
    host = [f for f in out["fits"] if f.path in ("h2d", "d2h")]
    if host:
        _print_fits(host, console)
    render.line("fit: t(n) = α + n/β per regime (breakpoints from the data; one line where one fits) by least "
                "squares weighted by relative error, over the median time of each size; α of the smallest sizes' "
                "regime, β of the largest sizes'; times per copy from CUDA events behind a blocked start; every "
                "copied byte compared before and after timing; β per direction (n/t)", console)
    if backend.simulated:
        render.line("simulated: a virtual machine priced by its profile; no figure here is a measurement", console)
