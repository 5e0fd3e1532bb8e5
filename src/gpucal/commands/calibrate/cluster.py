"""``mpiexec -n N gpucal calibrate --cluster -o FILE``: one profile of several hosts.

One rank per GPU (``mpiexec``, or ``srun`` under Slurm; gpucal launches nothing itself). Three phases,
each ended by every rank agreeing that it went well (``World.agree``), so that a rank that fails never
leaves the others waiting:

1. each host's first rank (its leader) calibrates its host as ``gpucal calibrate`` does (every device of
   the host); the other ranks wait without spinning;
2. the network between the hosts: MPI ping-pong between the leaders, one pair at a time (``probes/net.py``);
3. the collectives over every rank, one per GPU (``probes/collectives.py``: NCCL; waived with the reason
   where CuPy or a GPU is absent).

Rank 0 gathers the hosts' profiles and merges everything into one cluster profile
(``calibrate/cluster.py``), writes it atomically (an existing file is kept without ``--force``), and prints
the summary. ``--simulate PROFILE[:N] --simulate-net LINK`` makes every rank a simulated host of N cards
joined by a simulated network: the bytes really move over MPI and are checked; every figure says
``simulated``.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from gpucal import __version__, render
from gpucal.calibrate.build import default_name
from gpucal.calibrate.cluster import merge_cluster
from gpucal.calibrate.collectives import run_collectives
from gpucal.calibrate.health import summary_rows
from gpucal.calibrate.network import run_net
from gpucal.calibrate.provenance import iso
from gpucal.commands.calibrate.host import check_flags, measure_host, select_backend
from gpucal.commands.calibrate.outputs import (
    ANOMALIES_SHOWN,
    after_writing,
    report_outcome,
    check_output,
    check_outputs,
    print_figure_tables,
    name_of,
    print_anomalies,
    validated,
    write_outputs,
)
from gpucal.commands.options import checked, mpi_world, simulated_net
from gpucal.errors import GpucalError, InputError
from gpucal.kernels.comm import RankError, abort
from gpucal.kernels.virtual_machine import parse_spec
from gpucal.probes.collectives import CollectivesConfig
from gpucal.probes.net import NetConfig
from gpucal.profiles.model import Profile
from gpucal.units import format_rate, format_time

__all__ = ["run_cluster"]


def _options(args):
    """The simulated network of ``--simulate-net``, or None; the cluster's flags checked together."""
    net = simulated_net(args.simulate_net)
    if args.simulate and net is None:
        raise InputError("--simulate-net: required with --cluster --simulate: the link between the simulated hosts, "
                         "e.g. --simulate-net eth1g")
    if net is not None and not args.simulate:
        raise InputError("--simulate-net: only with --simulate (the network of real hosts is measured)")
    if net is not None and net.ranks_per_host > 1:
        _, count, _ = parse_spec(f"virtual:{args.simulate.removeprefix('virtual:')}")
        if count is not None and count < net.ranks_per_host:
            raise InputError(f"--simulate: {args.simulate}: {count} card(s) per host for {net.ranks_per_host} ranks "
                             "per host (+per-host): one rank per GPU")
    if args.backend not in ("auto", "cupy", "numba") and not args.simulate:
        raise InputError(f"--backend: {args.backend}: a cluster is calibrated on its GPUs (cupy, numba, auto); "
                         "to simulate one: --simulate PROFILE[:N] --simulate-net LINK")
    return net


def _phase(world, work):
    """Run ``work()`` on this rank (it may do nothing), then agree with every rank; its value or None."""
    value, error = None, None
    try:
        value = work()
    except GpucalError as exc:
        error = exc
    except Exception as exc:  # a device error on one host: every rank learns of it and stops together
        error = exc
    world.wait_quietly()
    world.agree(error)
    return value


def _on_root(world, work):
    """``work()`` on rank 0 alone (what only its file system or its gathered data can answer), its value
    broadcast to every rank; a failure there is raised on every rank with rank 0's text and exit code."""
    outcome = None
    if world.is_root:
        try:
            outcome = (work(), None, 0)
        except GpucalError as exc:
            outcome = (None, str(exc), exc.exit_code)
    value, text, code = world.comm.bcast(outcome, root=0)
    if text is not None:
        exc = RankError(text)
        exc.exit_code = code
        raise exc
    return value


def _host_spec(spec: str, ranks: int) -> str:
    """The backend of one host's collectives: ``spec``, and for a virtual machine without a card count, one
    card per rank of the host (``virtual:rtx4090+noise=0.01`` -> ``virtual:rtx4090:2+noise=0.01``)."""
    if not spec.startswith("virtual:"):
        return spec
    head, plus, options = spec.partition("+")
    if head.count(":") == 1:  # virtual:PROFILE, no :N
        head = f"{head}:{ranks}"
    return head + plus + options


def _say(args, world):
    """A progress line on stderr from rank 0 (none with --json unless stderr is a terminal)."""
    def say(text: str) -> None:
        if world.is_root and (sys.stderr.isatty() or not args.json):
            print(render.escape(f"gpucal calibrate --cluster: {text}", layout=False), file=sys.stderr, flush=True)
    return say


def run_cluster(args) -> int:
    """``calibrate --cluster`` on this rank (see the module doc); anything but gpucal's own errors ends every
    rank (``MPI_Abort``) rather than leave the others waiting."""
    try:
        return _run_cluster(args)
    except (GpucalError, KeyboardInterrupt):
        raise
    except Exception as exc:
        print(render.escape(f"gpucal calibrate --cluster: {type(exc).__name__}: {exc}", layout=False), file=sys.stderr,
              flush=True)
        abort(1)
        raise


def _run_cluster(args) -> int:
    net = checked(lambda a: (check_flags(a), _options(a))[1], args)
    # one rank is allowed on real GPUs (a cluster profile of one host, its collectives NCCL's on one GPU: the
    # whole path checked on a one-GPU machine); simulated hosts need a network between two at least
    world = mpi_world("calibrate --cluster", simulate_hosts=net is not None, minimum=2 if net else 1,
                      ranks_per_host=net.ranks_per_host if net else 1)
    started = iso(time.time())

    _on_root(world, lambda: check_outputs(args))  # -o and --plots, before anything is measured

    leaders = world.leaders()
    my_host = world.me.host

    def calibrate_host():
        if world.rank not in leaders:
            return None
        backend = select_backend(args)
        count = backend.device_count() if backend.links_reason() is None else 1
        hostname = world.me.hostname
        name = default_name(hostname, backend.devices()[0].name, count, backend.simulated)
        cal, doc, found, failed = measure_host(args, backend, name, progress=world.is_root)
        doc["host"]["hostname"] = hostname
        return {"doc": doc, "failed": failed, "backend": backend.name}

    mine = _phase(world, calibrate_host)
    docs = world.comm.gather((my_host, mine), root=0)

    def name_and_path():  # the default file is known once the hosts are: refuse an existing one before measuring on
        by_host = {h: item["doc"] for h, item in docs if item is not None}
        return _output(args, world, [by_host[h] for h in range(len(world.hosts))], net is not None)

    name, path = _on_root(world, name_and_path)
    budget = args.budget
    say = _say(args, world)
    say(f"network between {len(leaders)} host(s), {len(leaders) * (len(leaders) - 1) // 2} pair(s) of leader ranks")
    network = run_net(world, NetConfig(pairs="leaders", simulate=net, budget_s=budget))
    spec = f"virtual:{args.simulate.removeprefix('virtual:')}" if args.simulate else args.backend
    say(f"collectives over {world.size} ranks")
    collectives = run_collectives(world, CollectivesConfig(simulate=net, backend=spec, budget_s=budget))
    host_collectives = None
    if len(world.hosts) > 1 and max(r.local_size for r in world.ranks) > 1:
        # TP inside a host runs its all-reduce over the host's own links: measure each host's ranks too, every
        # host at once (their traffic stays inside the host)
        say(f"collectives inside each host ({max(r.local_size for r in world.ranks)} ranks at most)")
        host = world.host_world()

        def inside_host():
            if host.size == 1:
                return None
            report = run_collectives(host, CollectivesConfig(backend=_host_spec(spec, host.size), budget_s=budget))
            failed = [r for r in report.results if r.status in ("failed", "error")]
            return (report.entries, failed) if host.is_root else None

        # a failure inside one host reaches that host's ranks only: every rank of the world agrees on it here
        host_collectives = _phase(world, inside_host)
    gathered = world.comm.gather((my_host, host_collectives), root=0)
    # e.g. a file that cannot be written: every rank ends with rank 0's exit code
    return _on_root(world, lambda: _write(args, world, docs, gathered, network, collectives, started, __version__,
                                          name, path))


def _output(args, world, host_docs: list[dict], simulated: bool) -> tuple[str, str]:
    """The profile's name and file: --name, -o, or ``profiles/<host0>-cluster-<H>-<N>x<gpu>.json``; an
    existing file is refused without --force."""
    devices = sum(len(d["devices"]) for d in host_docs)
    simulated = simulated or any(d["source"] == "simulated" for d in host_docs)
    name = args.name or name_of(args.output) or default_name(
        f"{world.hosts[0]}-cluster-{len(world.hosts)}", host_docs[0]["devices"][0]["name"], devices, simulated)
    path = args.output or os.path.join("profiles", f"{name}.json")
    check_output(path, args.force)
    return name, path


def _write(args, world, docs, gathered, network, collectives, started, version, name, path) -> int:
    by_host = {host: item for host, item in docs if item is not None}
    inside: list[dict] = []
    inside_failed: list = []
    for host, found in gathered:
        if found is not None:
            entries, failed = found
            inside += [{**e, "host": host} for e in entries]
            inside_failed += failed
    host_docs = [by_host[h]["doc"] for h in range(len(world.hosts))]
    failed_hosts = [world.hosts[h] for h in range(len(world.hosts)) if by_host[h]["failed"]]
    net_note = None if network.entries else (
        "one host: no network between hosts was measured" if len(world.hosts) == 1 else "no pair of hosts measured")
    coll_note = collectives.waived if not collectives.entries else None
    typed = [validated(render.json_ready(d), f"{path}.host{h}", f"the profile of host {world.hosts[h]}")
             for h, d in enumerate(host_docs)]
    doc = merge_cluster(typed, world.to_dict(), network.entries, collectives.entries + inside, name=name,
                        created=iso(time.time()), version=version, command="gpucal " + " ".join(args.argv),
                        collectives_note=coll_note, network_note=net_note)
    doc["host"]["started"] = started
    doc["host"]["finished"] = iso(time.time())
    doc["host"].setdefault("hostname", socket.gethostname())
    doc = render.json_ready(doc)
    done: dict = {}
    try:
        written, plots, profile = write_outputs(args, doc, path, done)
        code = _report(args, world, doc, profile, network, collectives, inside_failed, failed_hosts, net_note,
                       coll_note, name, written, plots)
        return max(code, report_outcome(args, done, render.console()))
    except KeyboardInterrupt as exc:  # after the profile was written: say so
        if "profile" in done:
            exc.detail = after_writing(done["profile"], args.plots, done.get("plots"), args.report,
                                       done.get("report"))
        raise


def _report(args, world, doc: dict, profile: Profile, network, collectives, inside_failed, failed_hosts, net_note,
            coll_note, name, written, plots) -> int:
    """The summary of the cluster profile written (``profile``; ``doc``: the JSON it was written from)."""
    failed_cases = [r for r in [*network.results, *collectives.results] if r.status in ("failed", "error")]
    failed_cases += inside_failed
    failed = bool(failed_hosts or failed_cases)
    rows = summary_rows(profile)
    if args.json:
        render.print_json({
            "command": "calibrate", "cluster": True, "profile": str(written), "name": name, "source": profile.source,
            "ranks": world.size,
            "hosts": [{"hostname": h.hostname, "name": h.name, "ranks": h.ranks, "devices": h.devices}
                      for h in profile.cluster.hosts],
            # the entries as written, in the file's own key order (the JSON this command built)
            "mpi": world.library, "summary": rows, "network": doc["network"], "collectives": doc["collectives"],
            "collectives_waived": coll_note, "anomalies": doc["host"]["anomalies"], "failed_hosts": failed_hosts,
            "plots": [{"name": n, "path": str(p) if p else None, "skipped": why} for n, p, why in plots],
            "report": args.report})
        return 1 if failed else 0
    _print(profile, rows, world, net_note, coll_note, failed_hosts, failed_cases, str(written), plots)
    return 1 if failed else 0


def _network_rows(profile: Profile) -> list[tuple]:
    """One row per measured pair of hosts: alpha, beta, R², the smallest size's time, whether it was checked."""
    rows = []
    for e in profile.network or []:
        a, b = e.alpha_s.value, e.beta_Bps.value
        lat = e.latency_s.value if e.latency_s else None
        rows.append((f"host{e.src_host}<->host{e.dst_host}", f"rank {e.src_rank}-{e.dst_rank}",
                     format_time(a) if a is not None else "-", format_rate(b) if b else "-",
                     f"{e.r2:.4f}" if e.r2 is not None else "-", format_time(lat) if lat is not None else "-",
                     "yes" if e.verified else "NO"))
    return rows


def _collective_rows(profile: Profile) -> list[tuple]:
    """One row per measured collective: over which hosts, alpha, beta, the largest size's busbw, the factor."""
    rows = []
    for e in profile.collectives or []:
        a, b = e.alpha_s.value, e.beta_Bps.value
        busbw = e.busbw_Bps[-1] if e.busbw_Bps else None
        group = f"host{e.host}" if e.host is not None else f"{e.span_hosts} host(s)"
        rows.append((e.op + (" (graph)" if e.graphs else ""), group, str(e.nranks),
                     format_time(a) if a is not None else "-", format_rate(b) if b else "-",
                     format_rate(busbw) if busbw else "-", f"{e.busbw_factor:.3g}", "yes" if e.verified else "NO"))
    return rows


def _print(profile: Profile, rows, world, net_note, coll_note, failed_hosts, failed_cases, path, plots) -> None:
    console = render.console()
    hosts = profile.cluster.hosts
    names = ", ".join(sorted({d.name for d in profile.devices}))
    render.line(f"gpucal calibrate --cluster: {len(hosts)} host(s), {len(profile.devices)} x {names}, "
                f"{world.size} MPI ranks ({world.library}); {profile.source}", console)
    for h, host in enumerate(hosts):
        render.line(f"  host {h}: {host.hostname} (ranks {', '.join(map(str, host.ranks))}; devices "
                    f"{', '.join(map(str, host.devices))})", console)
    print_figure_tables(rows, console)
    if profile.network:
        render.line("network between hosts (MPI ping-pong; t = half the round trip, beta = n/t one way):", console)
        console.print(render.table(("hosts", "ranks", "alpha", "beta", "R²", "smallest", "checked"),
                                   _network_rows(profile), right=(2, 3, 4, 5)))
    else:
        render.line(f"network: {net_note}", console)
    if profile.collectives:
        first = profile.collectives[0]
        transport = ", ".join(first.transport or []) or "unknown"
        render.line(f"collectives over all {first.nranks} ranks, and inside each host of several "
                    f"({first.library}; transport {transport}); t = alpha + S/beta, S as nccl-tests counts it:",
                    console)
        console.print(render.table(("op", "over", "ranks", "alpha", "beta", "busbw (largest)", "factor", "checked"),
                                   _collective_rows(profile), right=(2, 3, 4, 5, 6)))
    else:
        render.line(f"collectives: waived: {coll_note}", console)
    print_anomalies(profile.host.anomalies or [], console)
    if failed_hosts:
        render.line(f"FAILED: a case failed its check or errored on {', '.join(failed_hosts)} (exit code 1)", console)
    for r in failed_cases[:ANOMALIES_SHOWN]:
        render.line(f"FAILED: {r.probe} {r.case}: {r.reason}", console)
    for name, p, why in plots:
        render.line(f"plot {name}: {p}" if p else f"plot {name}: skipped ({why})", console)
    render.line("statistic: medians after warm-up (p10/p90 and n in the profile); every output and copied byte "
                "verified outside the timed windows", console)
    if profile.source == "simulated":
        render.line("simulated: virtual hosts priced by their profiles and a network priced by its link; no figure "
                    "here is a measurement", console)
    render.line(f"wrote {path}", console)
