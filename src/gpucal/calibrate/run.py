"""Run every probe a profile needs, step by step, on one machine.

A calibration is a list of steps — the topology, then per device memory bandwidth and GEMV (``membw``),
matrix FLOP/s (``flops``) and the host links (``host-link``), the small-copy latencies (``latency``), and
per pair of devices every copy path (``peer``) — run in order. ``run`` reports each step to a progress
callback, and turns a failure (a device error, Ctrl-C) into ``CalibrationError`` naming the step and what
had been measured before it; nothing is written until every step is done (``build_profile`` then
``profile.save``, which writes atomically).

Modes: ``quick`` measures what the planner and the P2P verdict need (the planner's dtypes, pinned memory,
the copy engines, sizes a factor 8 apart, a short budget per case); ``full`` runs every probe in full
(every dtype and mode, pageable memory, the kernel engines, sizes a factor 2 apart).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gpucal.calibrate.links import series_fits
from gpucal.calibrate.verdict import pair_verdict, pcie_load_of
from gpucal.errors import GpucalError, InputError
from gpucal.kernels.backend import Backend, select, use_simulator
from gpucal.probes import allreduce, attention, decode_gemm, flops, latency, launch, links, membw
from gpucal.probes.allreduce import AllreduceConfig
from gpucal.probes.attention import AttentionConfig
from gpucal.probes.decode_gemm import DecodeGemmConfig
from gpucal.probes.flops import FlopsConfig
from gpucal.probes.launch import LaunchConfig
from gpucal.probes.links import LATENCY_SIZES, LinkConfig, default_sizes
from gpucal.probes.membw import MembwConfig
from gpucal.probes.topology import read_topology

__all__ = ["CalibrateConfig", "Calibration", "CalibrationError", "Step", "steps_for", "run", "MODES",
           "QUICK_FLOPS_MODES"]

MODES = ("quick", "full")
QUICK_FLOPS_MODES = ("fp16_fp32acc", "bf16_fp32acc", "fp16_fp16acc", "fp8_fp32acc")  # the planner's dtypes, and
# fp16 with fp16 accumulate (twice the rate on GeForce cards)
QUICK_GEMV_DTYPES = ("fp16", "bf16")
QUICK_BATCHES = (1, 4, 16)
QUICK_LATENCY_SIZES = (4, 64, 1024, 16384)
QUICK_BUDGET_S = {"membw": 0.3, "flops": 0.5, "links": 0.2, "latency": 0.05, "decode": 0.05, "allreduce": 0.05}
# quick: the decode grid the planner needs (every m, three weight shapes: 8, 48 and 224 MiB of fp16)
QUICK_GEMM_SHAPES = ((4096, 1024), (6144, 4096), (28672, 4096))
QUICK_ATTENTION = dict(heads=((32, 8), (8, 2)), batches=(1, 8, 32), contexts=(512, 4096))
QUICK_ALLREDUCE_BATCHES = (1, 4, 16, 64, 256, 1024)


@dataclass(frozen=True)
class CalibrateConfig:
    mode: str = "quick"
    budget_s: float | None = None  # per case; default by mode and probe
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode: expected quick or full, got {self.mode!r}")


@dataclass(frozen=True)
class Step:
    """One unit of work: probes on a device (``device``) or on a pair of devices (``pair``)."""

    name: str  # topology, membw, flops, host-link (with the host links' latency), pair (copies and latency)
    label: str  # what the progress bar shows
    device: int | None = None
    pair: tuple[int, int] | None = None


@dataclass
class Calibration:
    """What a calibration measured, as the objects (results, fits, verdicts); ``build_profile`` turns it into
    a profile."""

    backend: Backend
    config: CalibrateConfig
    started: float  # Unix time
    finished: float | None = None
    topology: object = None
    results: dict = field(default_factory=dict)  # step name -> list of Results
    fits: list = field(default_factory=list)
    verdicts: list = field(default_factory=list)
    done: list = field(default_factory=list)  # labels of the steps done
    simulator_check: dict | None = None

    def all_results(self) -> list:
        return [r for rs in self.results.values() for r in rs]


class CalibrationError(GpucalError):
    """A step failed (or was interrupted): names the step and what had been measured before it."""

    def __init__(self, step: Step, done: list[str], cause: BaseException):
        self.step, self.done, self.cause = step, list(done), cause
        if isinstance(cause, KeyboardInterrupt):
            self.exit_code = 130
        measured = ", ".join(done) if done else "nothing"
        what = "interrupted" if isinstance(cause, KeyboardInterrupt) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"step {step.label!r} failed ({what}); measured before it: {measured}; no profile written")


def _link_sizes(backend: Backend, quick: bool) -> tuple[int, ...] | None:
    sizes = default_sizes(backend)
    if not quick:
        return None
    return tuple(sorted({n for n in sizes if (n.bit_length() - 3) % 3 == 0} | {max(sizes)}))  # 4 B, 32 B, 256 B ...


def configs(backend: Backend, config: CalibrateConfig) -> dict:
    """The probe configurations of ``config``'s mode, by step name."""
    quick = config.mode == "quick"
    budget = (lambda probe: config.budget_s if config.budget_s is not None
              else (QUICK_BUDGET_S[probe] if quick else None))
    offered = backend.gemm_modes()
    if quick:
        modes = tuple(m for m in QUICK_FLOPS_MODES if m in offered) or tuple(offered)[:1]
        membw = MembwConfig(dtypes=tuple(d for d in QUICK_GEMV_DTYPES if d in backend.gemv_dtypes),
                            batches=QUICK_BATCHES, budget_s=budget("membw"), seed=config.seed)
        flops = FlopsConfig(modes=modes, decode_batches=(1, 16), budget_s=budget("flops"), seed=config.seed)
        links = LinkConfig(sizes=_link_sizes(backend, True), engines=("ce", "staged"), memory=("pinned",),
                           latency_sizes=QUICK_LATENCY_SIZES, latency_kinds=("oneshot",), budget_s=budget("links"),
                           seed=config.seed)
        latency = replace(links, budget_s=budget("latency"))
        on_gpu = not backend.simulated
        gemm = DecodeGemmConfig(dtypes=tuple(d for d in ("fp16", "bf16", "fp8") if d in backend.decode_gemm_dtypes()),
                                shapes=QUICK_GEMM_SHAPES if on_gpu else None, budget_s=budget("decode"),
                                seed=config.seed)
        attn = AttentionConfig(**(QUICK_ATTENTION if on_gpu else {}), budget_s=budget("decode"), seed=config.seed)
        ar = AllreduceConfig(batches=QUICK_ALLREDUCE_BATCHES, budget_s=budget("allreduce"), seed=config.seed)
    else:
        membw = MembwConfig(budget_s=budget("membw"), seed=config.seed)
        flops = FlopsConfig(budget_s=budget("flops"), seed=config.seed)
        links = LinkConfig(latency_sizes=LATENCY_SIZES, budget_s=budget("links"), seed=config.seed)
        latency = links
        gemm = DecodeGemmConfig(budget_s=budget("decode"), seed=config.seed)
        attn = AttentionConfig(budget_s=budget("decode"), seed=config.seed)
        ar = AllreduceConfig(budget_s=budget("allreduce"), seed=config.seed)
    return {"membw": membw, "flops": flops, "links": links, "latency": latency, "decode-gemm": gemm,
            "attention": attn, "launch": LaunchConfig(budget_s=budget("decode"), seed=config.seed), "allreduce": ar}


def decode_devices(backend: Backend, devices, mode: str) -> list[int]:
    """The devices whose decode terms a calibration measures: every one in full mode; in quick mode the first
    device of each model (identical cards pay the same; the planner reads the first that has them)."""
    if mode == "full":
        return list(devices)
    infos, seen, out = backend.devices(), set(), []
    for d in devices:
        if infos[d].name not in seen:
            seen.add(infos[d].name)
            out.append(d)
    return out


def steps_for(backend: Backend, mode: str = "quick") -> list[Step]:
    """The steps of a calibration of ``backend``'s machine, in order: the topology; per device its memory,
    FLOP/s, decode terms (``decode_devices``) and host links; per pair of devices every copy path between them;
    the all-reduce over the host's devices from one process."""
    links = backend.links_reason() is None
    n = backend.device_count() if links else 1
    devices = range(n) if links else (backend.device_index,)
    decode = set(decode_devices(backend, devices, mode)) if backend.decode_reason() is None or \
        backend.decode_gemm_dtypes() else set()
    steps = [Step("topology", "topology")]
    for d in devices:
        steps += [Step("membw", f"memory bandwidth, dev{d}", d), Step("flops", f"FLOP/s, dev{d}", d)]
        if d in decode:
            steps.append(Step("decode", f"decode GEMMs, attention, launch, dev{d}", d))
        if links:
            steps.append(Step("host-link", f"host links, dev{d}", d))
    if links:
        steps += [Step("pair", f"copies dev{a}<->dev{b}", pair=(a, b)) for a in range(n) for b in range(a + 1, n)]
        if n >= 2:  # where it cannot run (no NCCL), its waiver and the reason go into the profile's notes
            steps.append(Step("allreduce", f"all-reduce over dev0-dev{n - 1} (one process)"))
    return steps


def _run_step(backend: Backend, step: Step, cfg: dict, siblings: dict) -> list:
    if step.name in ("membw", "flops", "decode"):
        if step.device not in siblings:
            siblings[step.device] = backend.on_device(step.device)
        other = siblings[step.device]
        other.activate()
        try:
            if step.name == "decode":
                results = [r for probe in (decode_gemm, attention, launch) if probe.applicable(other) is None
                           for r in probe.run(other, cfg[probe.PROBE.name])]
            else:
                results = (membw if step.name == "membw" else flops).run(other, cfg[step.name])
        finally:
            other.release_memory()
            backend.activate()
        for r in results:
            r.params["device_index"] = step.device
        return results
    if step.name == "allreduce":
        return allreduce.run(backend, cfg["allreduce"])
    if step.name == "host-link":
        one = dict(devices=(step.device,), pairs=())
        return (links.run_host_link(backend, replace(cfg["links"], **one))
                + latency.run_latency(backend, replace(cfg["latency"], **one)))
    if step.name == "pair":
        one = dict(devices=(), pairs=(step.pair,))
        return (links.run_peer(backend, replace(cfg["links"], **one))
                + latency.run_latency(backend, replace(cfg["latency"], **one)))
    raise ValueError(f"unknown step {step.name!r}")


def run(backend: Backend, config: CalibrateConfig = CalibrateConfig(),
        progress: Callable[[int, int, Step], None] | None = None,
        clock: Callable[[], float] = time.time) -> Calibration:
    """Every step of ``steps_for(backend)``; ``progress(i, total, step)`` before each. Raises
    ``CalibrationError`` when a step raises (a case that fails its check is a result, not an error)."""
    cal = Calibration(backend=backend, config=config, started=clock())
    cfg = configs(backend, config)
    steps = steps_for(backend, config.mode)
    siblings: dict = {}  # one backend per device, made once
    for i, step in enumerate(steps):
        if progress:
            progress(i, len(steps), step)
        try:
            if step.name == "topology":
                cal.topology = read_topology(backend)
            else:
                cal.results.setdefault(step.name, []).extend(_run_step(backend, step, cfg, siblings))
        except (Exception, KeyboardInterrupt) as exc:
            raise CalibrationError(step, cal.done, exc) from exc
        cal.done.append(step.label)
    if progress:
        progress(len(steps), len(steps), Step("done", "done"))
    results = cal.all_results()
    cal.fits = series_fits(results)
    load = pcie_load_of(results)
    for step in steps:
        if step.pair is not None:
            a, b = step.pair
            for s, d in ((a, b), (b, a)):
                can = backend.can_access_peer(s, d) and backend.can_access_peer(d, s)
                cal.verdicts.append(pair_verdict(s, d, can, cal.topology, cal.fits, load))
    cal.finished = clock()
    return cal


def simulator_check() -> dict:
    """The kernels on the Numba CUDA simulator, tiny and verified against their float64 references (not timed
    for real): that the device code a GPU would run computes the right thing. ``ran`` False with the reason
    where the simulator cannot run in this process (numba imported without its flag)."""
    try:
        use_simulator()
        backend = select("simulator")
    except (InputError, GpucalError) as exc:
        return {"ran": False, "reason": str(exc)}
    results = membw.run(backend, membw.MembwConfig(dtypes=("fp16",), batches=(1,), stream_sizes=(1024,),
                                                   gemv_shape=(5, 16)))
    results += flops.run(backend, flops.FlopsConfig(modes=("fp16_fp32acc",), sizes=(8,), decode_batches=()))
    return {"ran": True, "backend": "simulator",
            "method": "the Numba CUDA kernels on the CPU, each output checked against its float64 reference",
            "cases": [r.case for r in results], "passed": sum(r.status == "passed" for r in results),
            "failed": [f"{r.case}: {r.reason}" for r in results if r.status != "passed"]}
