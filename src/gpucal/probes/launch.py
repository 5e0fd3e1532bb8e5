"""``launch``: the host's fixed costs of a decode step: a small kernel launched back to back (eager), a node of
a replayed CUDA graph, and a small kernel launched and waited for (the synchronize a step ends with).

The kernel is ``tick`` (one thread adds 1 to a counter: ``kernels/decode_ref.py``), so each launch does work
that is checked: the counter starts at a poison value and must read poison + the launches made.
- ``eager``: k ticks back to back, device clock (CUDA events) over the k; per kernel = t/k. With CuPy this is
  the rate at which Python and the driver issue kernels (the GPU waits for the host), as a framework's eager
  decode pays it.
- ``graph``: a CUDA graph of ``graph_nodes`` ticks, replayed k times; per node = t/(k·nodes).
- ``sync``: k × (one tick, then the host waits for it), host clock; per step = t/k.
Statistic: the median of the samples (``probes/timing.py``), n in each result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpucal.kernels.base import Backend
from gpucal.kernels.decode_ref import TICK_POISON, check_tick, tick_work
from gpucal.probes.base import Probe, Result, policy_for, source_of, timed_case, waived
from gpucal.probes.timing import measure

__all__ = ["LaunchConfig", "run", "applicable", "KINDS"]

KINDS = ("eager", "graph", "sync")


@dataclass(frozen=True)
class LaunchConfig:
    kinds: tuple[str, ...] = KINDS
    graph_nodes: int = 64
    budget_s: float | None = None
    seed: int = 0


def applicable(backend: Backend) -> str | None:
    return backend.decode_reason()


def _library(backend: Backend) -> str:
    if backend.clock == "virtual":
        return "NumPy; timed on the virtual clock (the profile's launch costs)"
    return f"{backend.name}: tick kernel"


def _counter(backend: Backend):
    return backend.to_device(np.asarray([TICK_POISON], dtype=np.uint32))


def _eager(backend: Backend, config: LaunchConfig) -> Result:
    counter = _counter(backend)
    launch = backend.tick_launcher(counter)
    return timed_case(backend, "launch", "eager", {"kind": "eager"}, tick_work(), launch,
                      lambda: check_tick(backend.to_host(counter), 1),
                      "per kernel: device time of k launches back to back / k", policy_for(backend, config.budget_s),
                      library=_library(backend), extra=lambda t: {"per_kernel_s": t})


def _graph(backend: Backend, config: LaunchConfig) -> Result:
    reason = backend.graph_reason()
    if reason is not None:
        return waived(backend, "launch", "graph", reason, {"kind": "graph"})
    counter = _counter(backend)
    nodes = config.graph_nodes
    try:
        graph = backend.graph_launcher([backend.tick_launcher(counter)] * nodes)
    except Exception as exc:  # capture refused by the driver or the library
        return Result("launch", "graph", "error", backend.name, source_of(backend), backend.device().name,
                      params={"kind": "graph", "nodes": nodes}, reason=f"capture: {type(exc).__name__}: {exc}")
    backend.fill(counter, TICK_POISON)  # capture may have run the kernels once: start from the poison again
    return timed_case(backend, "launch", "graph", {"kind": "graph", "nodes": nodes}, tick_work(), graph,
                      lambda: check_tick(backend.to_host(counter), nodes),
                      f"per node: device time of k replays of a graph of {nodes} kernels / (k·{nodes})",
                      policy_for(backend, config.budget_s), library=_library(backend),
                      extra=lambda t: {"per_node_s": t}, ops_per_call=nodes)


def _sync(backend: Backend, config: LaunchConfig) -> Result:
    counter = _counter(backend)
    launch = backend.tick_launcher(counter)
    base = dict(probe="launch", case="sync", backend=backend.name, source=source_of(backend),
                device=backend.device().name, params={"kind": "sync"}, work=tick_work(),
                byte_convention="per step: host time of k × (launch, wait) / k", library=_library(backend))
    try:
        backend.host_roundtrip_s(launch, 1)
        check = check_tick(backend.to_host(counter), 1)
    except Exception as exc:
        return Result(status="error", reason=f"{type(exc).__name__}: {exc}", **base)
    if not check.ok:
        return Result(status="failed", check=check, reason=f"verification failed: got {check.got!r}, expected "
                      f"{check.expected!r}", **base)
    policy = policy_for(backend, config.budget_s)
    timing = measure(lambda k: backend.host_roundtrip_s(launch, k), policy,
                     clock_name="virtual" if backend.clock == "virtual" else "host")
    t = timing.median_s
    return Result(status="passed", check=check, timing=timing, metrics={"per_step_s": t}, **base)


def run(backend: Backend, config: LaunchConfig = LaunchConfig()) -> list[Result]:
    reason = applicable(backend)
    if reason is not None:
        return [waived(backend, "launch", kind, reason, {"kind": kind}) for kind in config.kinds]
    out = []
    for kind in config.kinds:
        out.append({"eager": _eager, "graph": _graph, "sync": _sync}[kind](backend, config))
    return out


def needs(backend: Backend, config: LaunchConfig = LaunchConfig()) -> list:
    return []


PROBE = Probe("launch", "fixed costs per kernel and per step: eager launch, CUDA graph node, launch + synchronize",
              LaunchConfig, applicable, run, needs)

