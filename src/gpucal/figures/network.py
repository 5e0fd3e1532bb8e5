"""``network.png``: the network between hosts and the collectives of a cluster profile (``gpucal calibrate --cluster``).

``network_figure(doc)`` returns a matplotlib ``Figure`` of two panels side by side: on the left, per
``network[]`` entry (a pair of hosts), the measured one-way time against the message size (log-log) with
its fit t = alpha + n/beta; on the right, per op of ``collectives[]`` over every rank, busbw against the
op's size S, and dashed, the all-reduce measured inside each host. A profile with only one of the two gets
that panel alone; one with neither raises ``PlotSkipped``.
"""

from __future__ import annotations

import numpy as np

from gpucal import profiles
from gpucal.figures.common import (BYTES_PER_GB, PlotSkipped, bounded_legend, canvas_figure, fit_curves, fit_label,
                                   title)
from gpucal.profiles.model import CollectiveEntry, FitRecord, NetworkEntry, Quantity

__all__ = ["NETWORK_SKIPPED", "network_figure"]

NETWORK_SKIPPED = "has no network[] or collectives[]: gpucal calibrate --cluster measures them"
_OP_ORDER = ("all-reduce", "all-gather", "reduce-scatter", "broadcast", "send-recv")
_OP_MARKERS = ("o", "s", "^", "D", "v")  # ops often coincide (all-gather's busbw is all-reduce's): tell them apart
_HOST_COLOURS = ("#636363", "#969696", "#252525", "#bdbdbd")  # the all-reduce inside each host, dashed
_HOST_DASHES = ((0, (6, 3)), (0, (2, 2)), (0, (6, 2, 2, 2)), (0, (10, 4)))

def _points(entry: FitRecord) -> np.ndarray:
    """The entry's [bytes, seconds] points with both positive, as an (n, 2) array (log axes)."""
    pts = [p[:2] for p in entry.points or [] if p[0] > 0 and p[1] > 0]
    return np.array(pts, dtype=float).reshape(-1, 2)


def _value(quantity: Quantity) -> float | None:
    """The quantity's value as a float, ``None`` where it is unknown."""
    return float(quantity.value) if quantity.value is not None else None


def _hostname(doc: profiles.Document, index: int, named: str | None = None) -> str:
    """The name of host ``index``: ``named`` where the entry gives one, else ``cluster.hosts``', else hostN."""
    if named:
        return named
    cluster = doc.profile.cluster
    hosts = cluster.hosts if cluster else []
    if 0 <= index < len(hosts) and hosts[index].hostname:
        return hosts[index].hostname
    return f"host{index}"


# -- left: the network between hosts -----------------------------------------------------------------------

def _network_labels(doc: profiles.Document, entries: list[NetworkEntry]) -> list[str]:
    """The legend's name of each pair of hosts; the ranks too where two pairs join the same hosts."""
    labels = []
    for e in entries:
        a = _hostname(doc, e.src_host, e.src_hostname)
        b = _hostname(doc, e.dst_host, e.dst_hostname)
        labels.append(f"{a}<->{b}" + (" (same host)" if e.same_host else ""))
    for i, e in enumerate(entries):  # two pairs of ranks between the same hosts: name the ranks too
        if labels.count(labels[i]) > 1:
            labels[i] += f" ranks {e.src_rank}-{e.dst_rank}"
    return labels


def _network_panel(ax, doc: profiles.Document, entries: list[NetworkEntry]) -> None:
    """One-way time against message size per pair of hosts, with its fit; red crosses where unverified."""
    handles = []
    for i, (entry, label) in enumerate(zip(entries, _network_labels(doc, entries))):
        pts = _points(entry)
        n, t = pts[:, 0], pts[:, 1]
        if entry.verified is False:
            reason = (entry.reason or "byte check failed")[:50]
            handles.append(ax.plot(n, t, "x", color="red", markersize=7, mew=2,
                                   label=f"{label}: NOT verified ({reason})")[0])
            continue
        colour = f"C{i % 10}"
        ax.plot(n, t, "o", color=colour, markersize=4)
        alpha, beta = _value(entry.alpha_s), _value(entry.beta_Bps)
        curves = fit_curves(entry.pieces, alpha, beta, n)
        for grid, t_s in curves:
            ax.plot(grid, t_s, "-", color=colour, lw=1.2)
        label += fit_label(len(curves), alpha, beta)
        handles.append(ax.plot([], [], "o-", color=colour, markersize=4, label=label)[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("network between hosts: MPI ping-pong, t = α + n/β", fontsize=10)
    ax.set_xlabel("bytes per message")
    ax.set_ylabel("one-way time (s)")
    ax.grid(True, which="both", alpha=0.3)
    bounded_legend(ax, handles, loc="upper left", more="+{} more")


# -- right: the collectives ------------------------------------------------------------------------------------

def _busbw(entry: CollectiveEntry, pts: np.ndarray) -> np.ndarray:
    """busbw per point: the profile's ``busbw_Bps`` where it has one per point, else S/t x ``busbw_factor``."""
    given = entry.busbw_Bps or []
    points = entry.points or []
    raw = [p for p in points if p[0] > 0 and p[1] > 0]
    if len(given) == len(points) and len(raw) == len(given):
        return np.array(given, dtype=float)
    return pts[:, 0] / pts[:, 1] * float(1.0 if entry.busbw_factor is None else entry.busbw_factor)


def _op_key(entry: CollectiveEntry) -> tuple[int, str, bool]:
    """The collectives' order in the legend: by op (``_OP_ORDER``), then without CUDA graphs first."""
    op = entry.op
    return (_OP_ORDER.index(op) if op in _OP_ORDER else len(_OP_ORDER), op, bool(entry.graphs))


def _collectives_panel(ax, doc: profiles.Document, everyone: list[CollectiveEntry],
                       inside: list[CollectiveEntry]) -> None:
    """busbw against size per op over every rank, and dashed, the all-reduce inside each host."""
    handles = []
    for i, entry in enumerate(sorted(everyone, key=_op_key)):
        pts = _points(entry)
        hosts = entry.hosts
        label = f"{entry.op}: {entry.nranks} ranks" + (f" on {hosts} hosts" if hosts else "")
        label += ", CUDA graphs" if entry.graphs else ""
        busbw_GBps = _busbw(entry, pts) / BYTES_PER_GB
        if entry.verified is False:
            reason = (entry.reason or "check failed")[:50]
            handles.append(ax.plot(pts[:, 0], busbw_GBps, "x", color="red", markersize=7, mew=2,
                                   label=f"{label}: NOT verified ({reason})")[0])
            continue
        marker = _OP_MARKERS[_op_key(entry)[0] % len(_OP_MARKERS)]
        handles.append(ax.plot(pts[:, 0], busbw_GBps, "-", marker=marker, color=f"C{i % 10}",
                               markersize=7 - i % 3, markerfacecolor="none", lw=1.2, label=label)[0])
    for j, entry in enumerate(sorted(inside, key=lambda e: (e.host, bool(e.graphs)))):
        pts = _points(entry)
        label = (f"all-reduce inside {_hostname(doc, entry.host)}: {entry.nranks} ranks"
                 + (", CUDA graphs" if entry.graphs else ""))
        if entry.verified is False:
            label += " (NOT verified)"
        busbw_GBps = _busbw(entry, pts) / BYTES_PER_GB
        handles.append(ax.plot(pts[:, 0], busbw_GBps, color=_HOST_COLOURS[j % len(_HOST_COLOURS)],
                               ls=_HOST_DASHES[j % len(_HOST_DASHES)], lw=1.4, label=label,
                               marker="." if entry.verified is not False else "x")[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("collectives: busbw (nccl-tests' convention)", fontsize=10)
    ax.set_xlabel("bytes per op (S)")
    ax.set_ylabel("busbw (GB/s)")
    ax.grid(True, which="both", alpha=0.3)
    bounded_legend(ax, handles, loc="upper left", more="+{} more")


# -- the figure --------------------------------------------------------------------------------------------------

def network_figure(doc: profiles.Document):
    """The network between hosts (left) and the collectives (right) of a cluster profile; a panel only for what
    the profile has. ``PlotSkipped`` when it has neither (a single machine's or a datasheet profile)."""
    profile = doc.profile
    # a one-process all-reduce on one host (single_process) is allreduce.png's, not the cluster's
    cluster_collectives = [e for e in profile.collectives or [] if not e.single_process]
    measured: list[NetworkEntry | CollectiveEntry] = [*(profile.network or []), *cluster_collectives]
    network = [e for e in profile.network or [] if len(_points(e))]
    collectives = [e for e in cluster_collectives if len(_points(e))]
    everyone = [e for e in collectives if e.host is None]
    inside = [e for e in collectives if e.host is not None and e.op == "all-reduce"]
    if not network and not (everyone or inside):
        if measured:
            waived = [e.reason for e in measured if e.reason]
            raise PlotSkipped(f"{doc.name}: no measured points in network[] or collectives[]"
                              + (f" ({waived[0]})" if waived else ""))
        raise PlotSkipped(f"{doc.name} {NETWORK_SKIPPED}")
    panels = [p for p, has in (("network", network), ("collectives", everyone or inside)) if has]
    fig = canvas_figure((7.5 * len(panels), 5.6))
    what = {("network",): "the network between hosts", ("collectives",): "the collectives"}.get(
        tuple(panels), "the network between hosts and the collectives")
    fig.suptitle(title(doc, f"{doc.name}: {what}"))
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        if panel == "network":
            _network_panel(ax, doc, network)
        else:
            _collectives_panel(ax, doc, everyone, inside)
    return fig
