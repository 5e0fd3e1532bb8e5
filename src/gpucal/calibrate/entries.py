"""The one builder of a profile quantity: ``{value, source, method, statistic, n, reason, ...}``.

Every number a profile holds says how it was obtained: its ``source`` (``measured``, ``simulated``,
``reported``, ``derived``, ...), the ``method`` and ``statistic`` that gave it and over how many points
(``n``); a null value carries its ``reason``. Every entry builder of ``gpucal.calibrate`` (devices and
links in ``build.py``, the network in ``network.py``, the collectives in ``collectives.py``, the cluster in
``cluster.py``) goes through ``quantity`` (and ``reported`` for a fact a device reports, ``fit_quantity``
for an alpha or a beta). Each is made by the profile model (``gpucal.profiles.model.Quantity``), which
checks its provenance, and written as the model writes it (``to_json()``).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gpucal.profiles.model import Quantity

__all__ = ["quantity", "reported", "fit_quantity"]


def quantity(value, source: str, method: str | None = None, statistic: str | None = None, n: int | None = None, *,
             reason: str | None = None, default_reason: str = "not measured", **extra) -> dict[str, Any]:
    """A quantity of ``value`` from ``source``: ``method``, ``statistic`` and ``n`` where given (``n`` only
    when at least 1), a ``reason`` where the value is null (``default_reason`` when none is given), then
    ``extra`` fields (``p10``, ``p90``, ``byte_convention``, ``note``, ...) that are not None; as the model
    writes it.

    An unknown value whose provenance the model refuses (a sampled source over no sample at all: no ``n``)
    is kept as built, for the profile's validation to name the file and the field when it is written."""
    provenance = {"method": method, "statistic": statistic, "n": n if n is not None and n >= 1 else None,
                  "reason": (reason or default_reason) if value is None else None, **extra}
    try:
        return Quantity.of(value, source, **provenance).to_json()
    except ValidationError:
        if value is not None:
            raise
        given = {k: v for k, v in provenance.items() if v is not None}
        return Quantity.model_construct(value=None, source=source, **given).to_json()


def reported(value, note: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """A fact the device or its runtime reports (memory size, PCIe link): source ``reported``."""
    return quantity(value, "reported", reason=reason, default_reason="not reported", note=note)


def fit_quantity(value, source: str, method: str, n: int, reason: str | None = None, **extra) -> dict[str, Any]:
    """A quantity of an alpha/beta fit (statistic ``fit``): a null value carries its reason (``no fit`` when
    none is given); a fitted value below zero (noise about a latency too small to resolve) is given as 0
    with the fitted value in a note."""
    note = None
    if value is not None and value < 0:
        note = f"the fit gave {value:.3g}, below zero (noise): the latency is under the fit's resolution"
        value = 0.0
    return quantity(value, source, method, "fit", n, reason=reason, default_reason="no fit", note=note, **extra)
