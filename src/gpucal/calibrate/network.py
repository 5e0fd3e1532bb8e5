"""The network between MPI ranks into profile entries: ``run_net`` runs the network probe
(``probes/net.py``: ping-pong per pair, swept over sizes) and fits, per pair, ``t = alpha + n/beta`` over the
sizes that passed, per regime (``calibrate.fit.fit_pieces``: least squares on relative errors; MPI libraries
switch from eager to rendezvous near 8 KiB, and one line over both would misstate beta by tens of percent):
``alpha_s`` is the smallest sizes' regime's, ``beta_Bps`` the largest sizes', ``pieces`` every regime's, for
the planner to take the one its message falls in; the latency is the median one-way time of the smallest
size that passed. One ``network[]`` entry per pair (``docs/network.md``).

Everything here is collective: every rank of the world calls ``run_net`` and gets the same report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gpucal.calibrate.entries import quantity
from gpucal.calibrate.fit import FitError, fit_pieces, median_noise_frac
from gpucal.kernels.comm import World
from gpucal.probes.base import Result
from gpucal.probes.net import QUANTITY_CONVENTION, NetConfig, measure_net
from gpucal.probes.timing import Timing
from gpucal.profiles.model import NetworkEntry, RateQuantity
from gpucal.units import size_label

__all__ = ["NetReport", "run_net", "entry_for", "host_matrix"]


@dataclass
class NetReport:
    """What ``run_net`` returns on every rank: one ``Result`` per (pair, size), the profile's
    ``network[]`` entries (one per pair), the world (``World.to_dict()``) and the source of the figures
    (``measured`` or ``simulated``)."""

    results: list[Result]
    entries: list[dict]
    world: dict
    source: str
    simulated_net: dict | None = None
    pairs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.status in ("failed", "error") for r in self.results)

    def matrix(self) -> list[list[float | None]]:
        """Host by host (host indexes of the world), the fitted beta in B/s of the pair between them; where
        several rank pairs join two hosts, the slowest; None on the diagonal and where nothing was fitted.

        It reads the entries as built, through the model but not validated (an unknown figure over no sample
        stays as built, for the profile's validation to name it)."""
        return _slowest(len(self.world["hosts"]), ((e["src_host"], e["dst_host"], _built(e["beta_Bps"]).value)
                                                   for e in self.entries))

    def to_dict(self) -> dict:
        return {"world": self.world, "source": self.source, "simulated_net": self.simulated_net,
                "entries": self.entries, "matrix_Bps": self.matrix(), "results": [r.to_dict() for r in self.results]}


def _built(quantity: dict) -> RateQuantity:
    """A quantity this module built (its JSON), as the model's quantity, unvalidated."""
    return RateQuantity.model_construct(**quantity)


def host_matrix(n_hosts: int, entries: Iterable[NetworkEntry]) -> list[list[float | None]]:
    """The host-by-host matrix of the ``beta_Bps`` values of a profile's ``network[]`` entries (the slowest
    per pair of hosts; None on the diagonal and where nothing was fitted)."""
    return _slowest(n_hosts, ((e.src_host, e.dst_host, e.beta_Bps.value) for e in entries))


def _slowest(n_hosts: int, betas: Iterable[tuple[int, int, float | None]]) -> list[list[float | None]]:
    """The host-by-host matrix of (src host, dst host, beta in B/s) triples: the slowest per pair of hosts."""
    out: list[list[float | None]] = [[None] * n_hosts for _ in range(n_hosts)]
    for a, b, beta in betas:
        if a == b or beta is None:
            continue
        old = out[a][b]
        out[a][b] = out[b][a] = beta if old is None else min(old, beta)
    return out


def entry_for(results: list[Result], world_dict: dict, transport: str, source: str,
              simulated: str | None = None) -> dict:
    """The ``network[]`` entry of one pair from its results (one per size): the alpha-beta fit over the sizes
    that passed, the latency (median one-way time of the smallest passed size), the points and whether
    every case compared equal."""
    first = results[0].params
    i, j = first["src_rank"], first["dst_rank"]
    ranks = world_dict["ranks"]
    passed = sorted((r for r in results if r.status == "passed"), key=lambda r: r.params["bytes"])
    points = [[r.params["bytes"], r.timing.median_s] for r in passed]
    sizes = sorted(r.params["bytes"] for r in results)
    span = f"{size_label(sizes[0])} - {size_label(sizes[-1])}"
    method = (f"fit t = alpha + n/beta over {span} per regime (MPI ping-pong through mpi4py, t = half the round "
              "trip; alpha includes mpi4py's cost per call)")
    if simulated:
        method += f"; times priced by {simulated}"
    fit, reason = None, None
    try:
        fit = fit_pieces([p[0] for p in points], [p[1] for p in points],
                         median_noise_frac([r.timing.cv for r in passed], [r.timing.n for r in passed]))
    except FitError as exc:
        reason = str(exc)
    if fit is not None and len(fit.pieces) > 1:
        method += (f"; {len(fit.pieces)} regimes (from " + ", ".join(size_label(int(b)) for b in fit.breakpoints_bytes)
                   + "): alpha the smallest sizes', beta the largest sizes'")
    if passed:
        t: Timing = passed[0].timing
        lat_method = f"half the round trip of the smallest message ({size_label(passed[0].params['bytes'])})"
        latency = quantity(t.median_s, source, lat_method, "median", t.n, p10=t.p10_s, p90=t.p90_s)
    else:
        latency = quantity(None, source, "half the round trip of the smallest message", "median", 0,
                           reason="no size passed")
    entry = {
        "src_rank": i, "dst_rank": j, "src_host": ranks[i]["host"], "dst_host": ranks[j]["host"],
        "src_hostname": ranks[i]["hostname"], "dst_hostname": ranks[j]["hostname"],
        "same_host": ranks[i]["host"] == ranks[j]["host"], "transport": transport,
        "alpha_s": quantity(fit.alpha_s if fit else None, source, method, "fit",
                            fit.pieces[0].n if fit else len(points), reason=reason),
        "beta_Bps": quantity(fit.beta_Bps if fit else None, source, method, "fit",
                             fit.pieces[-1].n if fit else len(points), reason=reason,
                             byte_convention=QUANTITY_CONVENTION),
        "latency_s": latency,
        "r2": fit.r2 if fit else None,
        "points": points,
        "verified": all(r.status == "passed" for r in results),
        "reason": reason,
    }
    if fit is not None:
        entry.update(fit.profile_fields())
    return entry


def run_net(world: World, config: NetConfig = NetConfig()) -> NetReport:
    """Measure every pair of ``config`` one after the other and fit each (collective: every rank calls it and
    every rank returns the same report). See ``probes/net.py`` for the method, statistic and byte convention."""
    run = measure_net(world, config)
    entries = [entry_for(results, run.world, run.transport, run.source, run.priced_by) for results in run.per_pair]
    return NetReport(run.results, entries, run.world, run.source, run.simulated_net, run.pairs)
