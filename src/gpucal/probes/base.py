"""What every probe shares: the result record, the probe record, and the verify-then-time step.

A probe is one module with a frozen config, ``applicable(backend) -> reason | None`` and
``run(backend, config) -> list[Result]``, described by a ``Probe`` its module exports (``PROBE``) and
listed by name in ``probes/registry.py``. Probes never print and never exit: the CLI renders their results.

Each measured case is verified outside the timed window first; a failed check gives status ``failed``
with the worst element and no number. Rates are derived once, here, from the declared work:
``bytes/s = bytes moved / median time`` and ``FLOP/s = flop / median time``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from gpucal.kernels.base import Backend
from gpucal.kernels.nvml import ClockState, read_clocks
from gpucal.kernels.reference import Check, Work
from gpucal.probes.timing import POLICY_GPU, POLICY_SIMULATOR, Policy, Timing, measure

__all__ = ["Result", "Probe", "Peak", "timed_case", "waived", "policy_for", "rates",
           "STATUSES", "source_of"]

STATUSES = ("passed", "waived", "failed", "error")


@dataclass(frozen=True)
class Peak:
    """What a rate is compared with: ``metric`` (``dram_Bps`` or ``flops``), its peak value, and where
    that value comes from."""

    metric: str
    value: float
    ref: str


@dataclass(frozen=True)
class Result:
    """One measured case. ``metrics`` holds the derived rates (``*_Bps``, ``*_flops``, ``*_frac``) under
    the named ``byte_convention``; ``source`` is ``measured`` on a GPU and ``simulated`` otherwise."""

    probe: str
    case: str
    status: str
    backend: str
    source: str
    device: str
    params: dict = field(default_factory=dict)
    work: Work | None = None
    timing: Timing | None = None
    check: Check | None = None
    metrics: dict = field(default_factory=dict)
    byte_convention: str | None = None
    library: str | None = None
    reason: str | None = None
    clocks_before: ClockState | None = None
    clocks_after: ClockState | None = None

    @property
    def throttled(self) -> bool:
        return any(c is not None and c.throttled for c in (self.clocks_before, self.clocks_after))

    @property
    def noisy(self) -> bool:
        return self.timing is not None and self.timing.noisy

    def to_dict(self) -> dict:
        out = asdict(self)
        out["timing"] = self.timing.summary() if self.timing else None
        out["throttled"] = self.throttled
        out["noisy"] = self.noisy
        return out


@dataclass(frozen=True)
class Probe:
    name: str
    description: str
    config_type: type
    applicable: Callable[[Backend], str | None]
    run: Callable[[Backend, object], list[Result]]
    # what its cases hold at their peak, for a config (``probes/memory.py``): checked before ``run``
    needs: Callable[[Backend, object], list] | None = None


def policy_for(backend: Backend, budget_s: float | None = None) -> Policy:
    # the Numba simulator runs on the host clock; a virtual clock is priced like a GPU, noise and all
    policy = POLICY_SIMULATOR if backend.simulated and backend.clock == "host" else POLICY_GPU
    return replace(policy, budget_s=budget_s) if budget_s is not None else policy


def source_of(backend: Backend) -> str:
    """``simulated`` for the simulator and virtual machines, ``measured`` on a GPU."""
    return "simulated" if backend.simulated else "measured"


def waived(backend: Backend, probe: str, case: str, reason: str, params: dict | None = None,
           device: int | None = None) -> Result:
    """A case this backend cannot run, with the reason (``device``: its index, default the backend's)."""
    name = backend.devices()[device].name if device is not None else backend.device().name
    return Result(probe, case, "waived", backend.name, source_of(backend), name, params=params or {}, reason=reason)


def rates(work: Work, seconds: float, peak: Peak | None, extra: dict | None = None) -> dict:
    """The rates of ``work`` done in ``seconds``: ``dram_Bps`` (bytes read + written over t), ``flops``
    (where the work has FLOP), any ``extra`` rates, and ``efficiency_frac`` against ``peak``."""
    out = {"dram_Bps": work.bytes_moved / seconds}
    if work.flop:
        out["flops"] = work.flop / seconds
    out.update(extra or {})
    out["efficiency_frac"] = out[peak.metric] / peak.value if peak else None
    out["peak_value"] = peak.value if peak else None
    out["peak_ref"] = peak.ref if peak else None
    return out


def timed_case(backend: Backend, probe: str, case: str, params: dict, work: Work, launch: Callable[[], None],
               verify: Callable[[], Check], byte_convention: str, policy: Policy, library: str | None = None,
               peak: Peak | None = None, extra: Callable[[float], dict] | None = None,
               ops_per_call: int = 1) -> Result:
    """Run ``launch`` once, ``verify`` its output, then time it (a failed check is never timed), and
    derive the rates from the declared ``work`` and the median time (``extra(t)`` adds named ones).
    ``ops_per_call``: how many of the operations ``work`` describes one call of ``launch`` does (a replayed
    graph of several copies): the samples are per operation."""
    device = backend.device()
    base = dict(probe=probe, case=case, backend=backend.name, source=source_of(backend), device=device.name,
                params=params, work=work, byte_convention=byte_convention, library=library)
    try:
        launch()
        backend.synchronize()
        check = verify()
    except Exception as exc:  # a device error: reported on the case, the run goes on
        return Result(status="error", reason=f"{type(exc).__name__}: {exc}", **base)
    if not check.ok:
        return Result(status="failed", check=check, reason="verification failed: "
                      f"at index {check.index} got {check.got!r}, expected {check.expected!r} "
                      f"(tolerance {check.tolerance!r})", **base)
    before = read_clocks(device.pci_bus_id) if not backend.simulated else None
    try:
        timing = measure(lambda k: backend.time_k(launch, k) / ops_per_call, policy, clock_name=backend.clock)
    except Exception as exc:  # TimingError, or a device error while timing
        return Result(status="error", check=check, reason=f"timing: {type(exc).__name__}: {exc}", **base)
    after = read_clocks(device.pci_bus_id) if not backend.simulated else None
    t = timing.median_s
    return Result(status="passed", check=check, timing=timing, metrics=rates(work, t, peak, extra(t) if extra else None),
                  clocks_before=before, clocks_after=after, **base)
