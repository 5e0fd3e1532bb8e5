"""The ``virtual:PROFILE[:N][+OPTION...]`` spec of a virtual machine, and the faults its options ask for
(noise, outliers, warm-up, seed, P2P mode, downtrained links, NUMA placement): see ``kernels/virtual.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucal import limits
from gpucal.errors import InputError
from gpucal.standards import PCIE_GT_S
from gpucal.units import parse_quantity

__all__ = ["Faults", "parse_spec", "P2P_MODES", "NUMA_MODES"]

P2P_MODES = ("on", "off", "corrupt", "slow")
NUMA_MODES = ("local", "remote")  # numa=: where pinned host memory lands, the device's node or the other one


@dataclass(frozen=True)
class Faults:
    noise_frac: float = 0.0
    outlier_frac: float = 0.0
    outlier_factor: float = 3.0
    warmup_runs: int = 0
    warmup_factor: float = 2.0
    seed: int = 0
    p2p: str | None = None
    downtrain: tuple[tuple[int, int, int], ...] = ()
    numa: str = "local"


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` and ``int`` also take ``٣`` and ``³``)."""
    return text.isascii() and text.isdigit()


def _int(text: str) -> int:
    if not _digits(text):
        raise ValueError(text)
    return int(text)


def parse_spec(text: str) -> tuple[str, int | None, Faults]:
    """``virtual:PROFILE[:N][+OPTION...]`` as (profile, N or None, faults); bad input names --backend."""
    flag = "--backend"
    body = text.split(":", 1)[1] if ":" in text else ""
    head, *options = body.split("+")
    count = None
    if ":" in head and _digits(head.rsplit(":", 1)[1]):
        head, n = head.rsplit(":", 1)
        count = int(n)
        if count < 1:
            raise InputError(f"{flag}: {text}: the device count must be at least 1")
        if count > limits.MAX_DEVICES:
            raise InputError(f"{flag}: {text}: {count} devices, more than the {limits.MAX_DEVICES} a virtual machine "
                             "holds (gpucal.limits.MAX_DEVICES)")
    if not head:
        raise InputError(f"{flag}: {text}: expected virtual:PROFILE[:N][+OPTION...], e.g. virtual:rtx4090:8")
    kw: dict = {}
    downtrain = []
    for opt in options:
        name, _, value = opt.partition("=")
        try:
            if name in ("noise", "outliers"):
                v = parse_quantity(value, "number")  # ASCII digits, finite (float() takes '٠.٥' and '0.0_1')
                if not 0 <= v < 1:
                    raise ValueError
                kw["noise_frac" if name == "noise" else "outlier_frac"] = v
            elif name in ("warmup", "seed"):
                v = _int(value)
                if v < 0:
                    raise ValueError
                kw["warmup_runs" if name == "warmup" else "seed"] = v
            elif name == "p2p":
                if value not in P2P_MODES:
                    raise ValueError
                kw["p2p"] = value
            elif name == "numa":
                if value not in NUMA_MODES:
                    raise ValueError
                kw["numa"] = value
            elif name == "downtrain":
                dev, gen, width = (_int(x) for x in value.split(":"))
                if gen not in PCIE_GT_S or width not in (1, 2, 4, 8, 16) or dev < 0:
                    raise ValueError
                downtrain.append((dev, gen, width))
            else:
                raise InputError(f"{flag}: {text}: unknown option {name!r} (noise, outliers, warmup, seed, p2p, "
                                 "downtrain, numa)")
        except InputError:
            raise
        except ValueError:
            hint = {"p2p": "on, off, corrupt or slow", "downtrain": "DEV:GEN:WIDTH, e.g. 1:3:8",
                    "numa": "local or remote",
                    "noise": "a fraction in [0, 1)", "outliers": "a fraction in [0, 1)"}.get(name, "a whole number")
            raise InputError(f"{flag}: {text}: option {name}={value!r}: expected {hint}") from None
    return head, count, Faults(downtrain=tuple(downtrain), **kw)
