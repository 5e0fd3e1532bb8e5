"""The collectives of an MPI world into profile entries: ``run_collectives`` runs the collectives probe
(``probes/collectives.py``) and fits, per op (and per op in a CUDA graph), t = alpha + S/beta over the median
times of the sizes that passed (``fit_pieces``: weighted least squares, per regime; alpha the smallest sizes'
regime's, beta the largest sizes'), giving one ``collectives[]`` entry per op with a passed size.

Everything here is collective: every rank of the world calls ``run_collectives`` and gets the same report.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from gpucal.calibrate.entries import fit_quantity
from gpucal.calibrate.fit import FitError, fit_pieces, median_noise_frac
from gpucal.kernels.comm import World
from gpucal.probes.base import Result
from gpucal.probes.collectives import BUSBW_FACTOR, CollectivesConfig, CollectivesRun, measure_collectives
from gpucal.units import format_bytes

__all__ = ["CollectivesReport", "run_collectives", "collective_entry", "fitted_entry"]


@dataclass(frozen=True)
class CollectivesReport(CollectivesRun):
    """Every rank's copy of the run (``CollectivesRun``: its results, series, library, NCCL's version and
    transport, why the whole run was waived, its source) and its fits: one profile entry per op (and per op in a
    graph) that has a passed size."""

    entries: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.status in ("failed", "error") for r in self.results)

    def to_dict(self) -> dict:
        return {"entries": self.entries, "results": [r.to_dict() for r in self.results], "library": self.library,
                "nccl_version": self.nccl_version, "transport": self.transport,
                "transport_reason": self.transport_reason, "waived": self.waived, "source": self.source,
                "simulated": self.source == "simulated", "link": self.link}


def fitted_entry(op: str, nranks: int, results: list[Result], source: str) -> dict | None:
    """The fitted part of a collectives[] entry of ``op`` over ``nranks`` ranks: the alpha/beta fit over the sizes
    that passed (``params["bytes"]``, median times), the points and the rates; ``None`` where no size passed."""
    passed = [r for r in results if r.status == "passed"]
    if not passed:
        return None
    points = [[r.params["bytes"], r.timing.median_s] for r in passed]
    alpha = beta = r2 = fit_reason = reason = fit = None
    if len(passed) < len(results):
        bad = next(r for r in results if r.status != "passed")
        reason = f"{len(results) - len(passed)} of {len(results)} sizes did not pass ({bad.case}: {bad.reason})"
    try:
        fit = fit_pieces([p[0] for p in points], [p[1] for p in points],
                         median_noise_frac([r.timing.cv for r in passed], [r.timing.n for r in passed]))
        alpha, beta, r2 = fit.alpha_s, fit.beta_Bps, fit.r2
    except FitError as exc:
        fit_reason = f"no alpha/beta: {exc}"
        reason = f"{reason}; {fit_reason}" if reason else fit_reason
    method = (f"fit t = alpha + S/beta over S = {format_bytes(points[0][0])} - {format_bytes(points[-1][0])} "
              "per regime (S: nccl-tests' size of the op; median time per size, least squares weighted by 1/t)")
    if fit is not None and len(fit.pieces) > 1:
        method += f"; {len(fit.pieces)} regimes: alpha the smallest sizes', beta the largest sizes'"
    n = len(points)
    entry = {"op": op, "nranks": nranks, "dtype": "float32",
             "alpha_s": fit_quantity(alpha, source, method, fit.pieces[0].n if fit else n, fit_reason),
             "beta_Bps": fit_quantity(beta, source, method, fit.pieces[-1].n if fit else n, fit_reason,
                                      byte_convention="S/t, S as nccl-tests counts it"),
             "busbw_factor": BUSBW_FACTOR(op, nranks), "r2": r2, "points": points,
             "algbw_Bps": [r.metrics["algbw_Bps"] for r in passed], "busbw_Bps": [r.metrics["busbw_Bps"] for r in passed],
             "verified": len(passed) == len(results), "reason": reason}
    if fit is not None:
        entry.update(fit.profile_fields())
    return entry


def collective_entry(world: World, op: str, graph: bool, results: list[Result], library, transport, transport_reason,
                     source: str) -> dict | None:
    """One op's collectives[] entry over the ranks of ``world`` (``fitted_entry``, with the world's hosts, the
    library and the transport); ``None`` where no size passed (the results say why)."""
    entry = fitted_entry(op, world.size, results, source)
    if entry is None:
        return None
    head = {"op": op, "nranks": world.size, "hosts": len(world.hosts),
            "ranks_per_host": max(r.local_size for r in world.ranks), "graphs": graph, "library": library,
            "transport": transport, "transport_reason": transport_reason}
    return {**head, **entry}


def run_collectives(world: World, config: CollectivesConfig) -> CollectivesReport:
    """Run ``config`` over every rank of ``world`` (collective) and fit each op; every rank returns the same
    report."""
    run = measure_collectives(world, config)
    entries = [collective_entry(world, op, graph, series, run.library, run.transport, run.transport_reason,
                                run.source) for op, graph, series in run.series]
    return CollectivesReport(**{f.name: getattr(run, f.name) for f in fields(run)},
                             entries=[e for e in entries if e is not None])
