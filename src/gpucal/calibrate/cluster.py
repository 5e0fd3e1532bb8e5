"""From every host's profile, the network between hosts and the collectives to one cluster profile.

``gpucal calibrate --cluster`` (under ``mpiexec``) calibrates each host on its leader rank, exactly as
``gpucal calibrate`` does, measures the network between the hosts' leaders (``probes/net.py``) and the
collectives over every rank (``probes/collectives.py``), and rank 0 merges them here. The merge is pure
(no MPI, no GPU), so it is tested on its own.

What the cluster profile holds (schema ``gpucal.profile/1``, additions only):

- ``devices[]``: every host's devices, numbered across the cluster (``index``), each with its ``host``
  (the index into ``cluster.hosts``) and its ``local_index`` on that host; the planner takes each figure
  from the slowest device, as for one machine;
- ``links[]``, ``fits[]``, ``kernels[]``: every host's, with device numbers made cluster-wide, in the
  fields and in the series names (``dev0`` of the second host of two cards is ``dev2``; a link also names
  its ``host``): links between cards never cross hosts; anomalies' device numbers too;
- ``network[]``: the links between hosts (MPI ping-pong between the hosts' leader ranks);
- ``collectives[]``: each host's all-reduce over its own GPUs from one process (``single_process``, plain
  calibrate's, with its ``host`` and device numbers made cluster-wide), then NCCL's (or the simulated ring's)
  cost per operation over all ranks;
- ``cluster``: the MPI world (library, ranks, hosts), and per host its name, ranks, devices and its own
  provenance (``host`` of the host's profile);
- ``host``: the provenance of rank 0's host and the cluster command, with every host's anomalies (each
  text prefixed with its host name);
- ``plan_defaults``: the hosts' own, where they all agree (hosts of one card each measure no link between
  cards, and name the datasheet's link preset).
"""

from __future__ import annotations

import re

from gpucal.profiles.model import Profile

__all__ = ["merge_cluster"]


def _source(parts: list[str]) -> str:
    """``simulated`` as soon as any part is simulated: a cluster profile never passes a simulated figure
    off as a measurement."""
    return "simulated" if "simulated" in parts else "measured"


_DEV = re.compile(r"\bdev(\d+)\b")


def _renumber(text, offset: int):
    """``dev<N>`` in a series name or label made cluster-wide (``h2d-ce-pinned-dev0`` on the second host of
    two cards is ``h2d-ce-pinned-dev2``)."""
    if not isinstance(text, str) or not offset:
        return text
    return _DEV.sub(lambda m: f"dev{int(m.group(1)) + offset}", text)


def merge_cluster(host_docs: list[Profile], world: dict, network: list[dict], collectives: list[dict], *,
                  name: str, created: str, version: str, command: str | None = None,
                  collectives_note: str | None = None, network_note: str | None = None) -> dict:
    """The cluster profile (a JSON-ready dict) of ``host_docs`` (one calibrated, validated profile per host,
    in host order), the MPI ``world`` (``World.to_dict()``), the ``network`` entries between hosts and the
    ``collectives`` entries, as built. ``*_note`` explain an empty network or collectives list (why none)."""
    if not host_docs:
        raise ValueError("host_docs: a cluster needs at least one host's profile")
    devices, links, fits, kernels, notes, anomalies, hosts = [], [], [], [], [], [], []
    host_collectives = []  # each host's one-process all-reduce (plain calibrate's), renumbered
    offset = 0
    for h, doc in enumerate(host_docs):
        provenance = doc.host.to_json() if doc.host is not None else None
        hostname = (doc.host.hostname if doc.host is not None else None) or f"host{h}"
        for i, dev in enumerate(doc.devices):
            devices.append({**dev.to_json(), "index": offset + i, "local_index": i, "host": h})
        for link in doc.links or []:
            item = {**link.to_json(), "src": link.src + offset, "dst": link.dst + offset, "host": h}
            if link.series is not None:
                item["series"] = _renumber(link.series, offset)
            if link.bidirectional is not None and link.bidirectional.series is not None:
                item["bidirectional"] = {**link.bidirectional.to_json(),
                                         "series": _renumber(link.bidirectional.series, offset)}
            links.append(item)
        for fit in doc.fits or []:
            fits.append({**fit.to_json(), "src": fit.src + offset, "dst": fit.dst + offset,
                         "series": _renumber(fit.series, offset)})
        for kernel in doc.kernels or []:
            kernels.append({**kernel.to_json(), "device": kernel.device + offset})
        for entry in doc.collectives or []:
            if entry.single_process:
                host_collectives.append({**entry.to_json(), "host": h,
                                         "devices": [d + offset for d in entry.devices or []]})
        for note in doc.notes or []:
            notes.append(f"{hostname}: {note}"[:2000])
        for found in (doc.host.anomalies if doc.host is not None else None) or []:
            a = {**found.to_json(), "text": f"{hostname}: {_renumber(found.text, offset)}", "host": h}
            for key in ("device", "src", "dst"):  # device numbers made cluster-wide, as in devices[]
                if isinstance(a.get(key), int):
                    a[key] += offset
            anomalies.append(a)
        ranks = [r["rank"] for r in world["ranks"] if r["host"] == h]
        hosts.append({"hostname": hostname, "name": doc.name, "source": doc.source, "ranks": ranks,
                      "devices": list(range(offset, offset + len(doc.devices))), "host": provenance})
        offset += len(doc.devices)

    sources = [d.source for d in host_docs]
    sources += [e["beta_Bps"]["source"] for e in network if e.get("beta_Bps")]
    sources += [e["beta_Bps"]["source"] for e in collectives if e.get("beta_Bps")]
    source = _source(sources)
    first = host_docs[0]
    provenance = first.host.to_json() if first.host is not None else {}
    if command is not None:
        provenance["command"] = command
    provenance["anomalies"] = anomalies
    cards = [len(d.devices) for d in host_docs]
    gpu_names = sorted({d["name"] for d in devices})
    title = (f"{len(host_docs)} host(s) of {'/'.join(map(str, sorted(set(cards))))} x {', '.join(gpu_names)}"
             f" ({source}), {world['size']} MPI ranks")
    if network_note:
        notes.append(f"network: {network_note}")
    if collectives_note:
        notes.append(f"collectives: {collectives_note}")
    doc = {
        "schema": first.schema_, "name": name, "title": title, "source": source, "created": created,
        "gpucal_version": version, "notes": notes, "host": provenance, "devices": devices, "links": links,
        "fits": fits, "kernels": kernels, "collectives": host_collectives + list(collectives),
        "network": list(network),
        "cluster": {"ranks": world["size"], "simulated_hosts": bool(world.get("simulated_hosts")),
                    "mpi": {"library": world.get("library"), "version": world.get("mpi_version")},
                    "hosts": hosts},
    }
    defaults = [d.plan_defaults.to_json() if d.plan_defaults is not None else None for d in host_docs]
    if defaults[0] and all(x == defaults[0] for x in defaults):  # the hosts agree on the planner's default link
        doc["plan_defaults"] = defaults[0]
    documents: dict = {}
    for d in host_docs:
        documents.update({key: cited.to_json() for key, cited in (d.documents or {}).items()})
    if documents:
        doc["documents"] = documents
    return doc
