"""From link-probe results to one α/β fit per copy series.

A series is one path, engine, memory and pair of endpoints swept over sizes (``params["series"]``, e.g.
``h2d-ce-pinned-dev0``). Its fit takes the median time of each verified size, one line per regime
(``fit_pieces``: one line where one fits). A series with a failed
case is ``verified=False``: its bytes cannot be trusted, and the P2P verdict says so. The one-shot
latency of a series (issue one copy, wait for it) comes from the ``latency`` probe, as the median over
the small sizes of ``t - n/β``: the α a program pays for one transfer it waits on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gpucal.calibrate.fit import FitError, PiecewiseFit, fit_pieces, median_noise_frac

__all__ = ["SeriesFit", "series_fits", "oneshot_alpha", "find", "noise_of"]


@dataclass(frozen=True)
class SeriesFit:
    series: str
    path: str
    engine: str
    memory: str | None
    src: int
    dst: int
    source: str  # measured or simulated
    fit: PiecewiseFit | None
    reason: str | None  # why there is no fit
    verified: bool  # every case's bytes compared equal
    failures: tuple[str, ...] = ()
    cases: int = 0
    peak_Bps: float | None = None  # the best one-way rate of the sweep
    extra: dict = field(default_factory=dict)

    @property
    def beta_Bps(self) -> float | None:
        return self.fit.beta_Bps if self.fit else self.peak_Bps

    @property
    def first_beta_Bps(self) -> float | None:
        """The bandwidth of the smallest sizes' regime (the one latency cases fall in)."""
        return self.fit.pieces[0].beta_Bps if self.fit else self.peak_Bps

    @property
    def noisy_sizes(self) -> tuple[int, ...]:
        return tuple(self.extra.get("noisy_sizes", ()))

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("series", "path", "engine", "memory", "src", "dst", "source", "reason",
                                             "verified", "cases", "peak_Bps")}
        out["failures"] = list(self.failures)
        out["fit"] = self.fit.to_dict() if self.fit else None
        out.update(self.extra)
        return out


def series_fits(results) -> list[SeriesFit]:
    """One ``SeriesFit`` per one-way copy series in ``results`` (other results are ignored)."""
    groups: dict[str, list] = {}
    for r in results:
        p = r.params or {}
        if p.get("direction") == "one-way" and "series" in p:
            groups.setdefault(p["series"], []).append(r)
    out = []
    for series, rs in groups.items():
        p = rs[0].params
        passed = [r for r in rs if r.status == "passed"]
        failures = tuple(f"{r.case}: {r.reason}" for r in rs if r.status in ("failed", "error"))
        verified = not any(r.status == "failed" for r in rs)
        fit, reason = None, None
        sizes = [r.params["bytes"] for r in passed]
        times = [r.timing.median_s for r in passed]
        if not passed:
            reason = "no case passed"
        elif len(set(sizes)) < 3:
            reason = f"{len(set(sizes))} size(s): the best rate, no fit"
        else:
            try:
                fit = fit_pieces(sizes, times, noise_of(passed))
            except FitError as exc:
                reason = str(exc)
        rates = [r.metrics.get("link_Bps") or r.metrics.get("copy_Bps") for r in passed]
        noisy = sorted(r.params["bytes"] for r in passed if r.noisy)
        out.append(SeriesFit(series, p["path"], p["engine"], p.get("memory"), p["src"], p["dst"], rs[0].source, fit,
                             reason, verified, failures, len(rs), max((x for x in rates if x), default=None),
                             {"noisy_sizes": noisy} if noisy else {}))
    return out


def noise_of(results) -> float | None:
    """The relative noise of the median times of ``results`` (``calibrate.fit.median_noise_frac``)."""
    return median_noise_frac([r.timing.cv for r in results], [r.timing.n for r in results])


def find(fits: list[SeriesFit], path: str, src: int, dst: int, engine: str | None = None,
         memory: str | None = None) -> list[SeriesFit]:
    return [f for f in fits if f.path == path and f.src == src and f.dst == dst
            and (engine is None or f.engine == engine) and (memory is None or f.memory == memory)]


def oneshot_alpha(results, series: str, beta_Bps: float) -> float | None:
    """Median over the series' one-shot latency cases of ``t - n/β`` (``None`` without such cases); ``β``:
    the bandwidth of the regime of small sizes (``SeriesFit.first_beta_Bps``)."""
    values = [r.timing.median_s - r.params["bytes"] / beta_Bps for r in results
              if r.status == "passed" and r.params.get("latency") == "oneshot" and r.params.get("series") == series]
    return float(np.median(values)) if values else None
