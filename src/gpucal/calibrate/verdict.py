"""The P2P verdict per ordered pair of devices, from the evidence: the runtime's word, NVML's topology and
P2P status, and the measured copies (their α/β and whether every byte arrived).

Verdicts, tried in this order:

| verdict                  | when                                                                          |
|--------------------------|-------------------------------------------------------------------------------|
| ``p2p-corrupt``          | peer access was enabled and a P2P copy's bytes differ from the source's       |
| ``p2p-slower-than-staged`` | P2P works but its bandwidth is below the best host-staged path's            |
| ``nvlink``               | P2P over NVLink (NVML reports NVLinks or NVLink P2P between the pair)         |
| ``p2p-pcie``             | P2P directly over PCIe                                                        |
| ``host-staged``          | no P2P: the runtime cannot reach the peer; copies go through host memory      |

plus the flag ``downtrained`` when either device's PCIe link, read by NVML right after traffic, runs below
its maximum generation or width. Bandwidths compared are the fits' β (the sweep's best rate where a fit
failed). A P2P path that could not run leaves the verdict to the capabilities, and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from gpucal.calibrate.links import SeriesFit, find
from gpucal.probes.topology import Topology

__all__ = ["PairVerdict", "VERDICTS", "pair_verdict", "pcie_load_of"]

VERDICTS = ("nvlink", "p2p-pcie", "host-staged", "p2p-slower-than-staged", "p2p-corrupt")
DOWNTRAINED = "downtrained"


@dataclass(frozen=True)
class PairVerdict:
    src: int
    dst: int
    verdict: str
    flags: tuple[str, ...]
    reasons: tuple[str, ...]  # the evidence, in words
    evidence: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "+".join((self.verdict,) + self.flags)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["flags"], out["reasons"] = list(self.flags), list(self.reasons)
        return out


def _gbps(x: float | None) -> str:
    return f"{x / 1e9:.1f} GB/s" if x else "-"


def pcie_load_of(results) -> dict[int, tuple[int | None, int | None]]:
    """Device -> (PCIe generation, width) read right after traffic, from the host-link results."""
    out = {}
    for r in results:
        load = (r.params or {}).get("pcie_under_load")
        if load:
            out[r.params["dst"] if r.params.get("path") == "h2d" else r.params["src"]] = (load["generation"],
                                                                                       load["width"])
    return out


def _downtrained(topology: Topology, pcie_load: dict, devices) -> list[str]:
    notes = []
    for d in devices:
        topo = topology.device(d)
        if topo is None or topo.pcie_generation_max is None or topo.pcie_width_max is None:
            continue
        gen, width = pcie_load.get(d, (None, None))
        if gen is None or width is None:
            continue
        if gen < topo.pcie_generation_max or width < topo.pcie_width_max:
            notes.append(f"device {d}: PCIe Gen{gen} x{width} under load, below its maximum "
                         f"Gen{topo.pcie_generation_max} x{topo.pcie_width_max}")
    return notes


def pair_verdict(src: int, dst: int, can_access: bool, topology: Topology, fits: list[SeriesFit],
                 pcie_load: dict | None = None) -> PairVerdict:
    """The verdict for copies from ``src`` to ``dst`` (see the module docstring)."""
    pcie_load = pcie_load or {}
    reasons = []
    pair = topology.pair(src, dst) if topology.available else None
    p2p = find(fits, "p2p", src, dst)
    p2p_ce = next((f for f in p2p if f.engine == "ce"), None)
    staged_all = find(fits, "driver-staged", src, dst) + find(fits, "host-staged", src, dst)
    best_staged = max((f for f in staged_all if f.verified), key=lambda f: f.beta_Bps or 0.0, default=None)
    evidence = {
        "runtime_can_access_peer": can_access,
        "nvml_p2p": pair.p2p if pair else None,
        "common_ancestor": pair.common_ancestor if pair else None,
        "nvlinks": pair.nvlinks if pair else None,
        "nvlink_via": pair.nvlink_via if pair else None,
        "paths": {f.series: {"alpha_s": f.fit.alpha_s if f.fit else None, "beta_Bps": f.beta_Bps,
                             "r2": f.fit.r2 if f.fit else None, "n": f.fit.n if f.fit else 0, "verified": f.verified,
                             "source": f.source}
                  for f in p2p + staged_all},
    }
    reasons.append(f"runtime: peer access {'possible' if can_access else 'not possible'} (cudaDeviceCanAccessPeer)")
    if pair:
        caps = ", ".join(f"{k} {v}" for k, v in pair.p2p.items() if v is not None)
        reasons.append(f"NVML: P2P {caps or 'not reported'}; common ancestor {pair.common_ancestor or 'unknown'}"
                       + (f"; {pair.nvlinks} NVLinks ({pair.nvlink_via})" if pair.nvlinks else "; no NVLink"))
    elif not topology.available:
        reasons.append(f"topology: {topology.reason}")
    if best_staged:
        reasons.append(f"staged: best {best_staged.series} at {_gbps(best_staged.beta_Bps)}, every byte verified")
    corrupt = [f for f in p2p if not f.verified]
    if can_access and corrupt:
        reasons.append("P2P: bytes differ on " + ", ".join(f.series for f in corrupt) + "; "
                       + (corrupt[0].failures[0] if corrupt[0].failures else ""))
        if best_staged:
            reasons.append("the staged copies of the same bytes were exact")
        verdict = "p2p-corrupt"
    elif can_access and p2p_ce and p2p_ce.beta_Bps:
        reasons.append(f"P2P: {p2p_ce.series} at {_gbps(p2p_ce.beta_Bps)}, every byte verified")
        if best_staged and best_staged.beta_Bps and p2p_ce.beta_Bps < best_staged.beta_Bps:
            reasons.append(f"P2P is slower than staging through the host ({_gbps(p2p_ce.beta_Bps)} < "
                           f"{_gbps(best_staged.beta_Bps)})")
            verdict = "p2p-slower-than-staged"
        else:
            verdict = "nvlink" if pair and pair.nvlink_ok else "p2p-pcie"
    elif can_access:
        why = p2p_ce.reason if p2p_ce else "not measured"
        reasons.append(f"P2P: no measured bandwidth ({why}); the verdict rests on the capabilities")
        verdict = "nvlink" if pair and pair.nvlink_ok else "p2p-pcie"
    else:
        reasons.append("no P2P: copies between these devices go through host memory")
        verdict = "host-staged"
    flags = []
    down = _downtrained(topology, pcie_load, (src, dst))
    if down:
        flags.append(DOWNTRAINED)
        reasons.extend(down)
    return PairVerdict(src, dst, verdict, tuple(flags), tuple(reasons), evidence)
