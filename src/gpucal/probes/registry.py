"""Every probe of ``gpucal probe`` by name: each probe module exports its ``Probe`` (``PROBE``, or ``PROBES`` for
the copy probes of ``probes/links.py``), and this module lists them. A new probe is one module beside the
others (``probes/base.py`` says what it holds) and one line here. Two probes of one name are refused.
"""

from __future__ import annotations

from gpucal.probes import allreduce, attention, decode_gemm, decode_layer, flops, latency, launch, links, membw
from gpucal.probes.base import Probe

__all__ = ["PROBES", "all_probes"]


def _by_name(probes: tuple[Probe, ...]) -> dict[str, Probe]:
    out: dict[str, Probe] = {}
    for probe in probes:
        if probe.name in out:
            raise ValueError(f"probe {probe.name!r} is registered twice")
        out[probe.name] = probe
    return out


PROBES: dict[str, Probe] = _by_name((flops.PROBE, *links.PROBES, latency.PROBE, membw.PROBE, decode_gemm.PROBE,
                                     attention.PROBE, launch.PROBE, allreduce.PROBE, decode_layer.PROBE))


def all_probes() -> dict[str, Probe]:
    """Every probe by name, in the order ``gpucal probe --list`` gives them."""
    return dict(PROBES)
