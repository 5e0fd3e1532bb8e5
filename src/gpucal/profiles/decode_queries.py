"""A profile's figures for the decode step (``gpucal.plan.decode``, ``gpucal.plan.measured``): the measured
decode terms of a device, the one-host all-reduce, and the measured step's inputs with where each came from —
measured terms where the profile has them, else the published figures of the card's model, else none.

Every failure is an ``InputError`` naming ``--gpu`` and the profile's field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpucal import profiles
from gpucal.errors import InputError
from gpucal.plan import decode as decode_plan
from gpucal.plan import measured as decode_plan_measured
from gpucal.plan.spec import LinkSpec
from gpucal.profiles.model import Device, Profile
from gpucal.profiles.queries import profile_collective

__all__ = ["DecodeModel", "decode_terms", "host_allreduce", "has_decode_terms", "decode_inputs"]


@dataclass(frozen=True)
class DecodeModel:
    """A device's decode-step figures in the planner's types (``gpucal.plan.decode``): the decode-GEMM curve
    and the attention fit per dtype, and the host's launch costs (``None`` where the profile has none)."""

    gemm: dict[str, decode_plan.GemmCurve] = field(default_factory=dict)
    attention: dict[str, decode_plan.AttentionFit] = field(default_factory=dict)
    launch: decode_plan.LaunchCosts | None = None


def decode_terms(device: Device) -> DecodeModel:
    """``device.decode`` (a profile's ``devices[].decode``) as a ``DecodeModel``: every GEMM curve (its rows'
    alpha and beta); each attention fit whose alpha and beta are known; the launch costs where all three are
    known. What is absent or null is left out. ``ValueError`` (naming the field) for a figure the planner's
    types refuse, such as a launch cost of zero."""
    terms = device.decode
    if terms is None:
        return DecodeModel()
    gemm, attention, launch = {}, {}, None
    for dtype, curve in (terms.gemm or {}).items():
        gemm[dtype] = decode_plan.GemmCurve(dtype, tuple(decode_plan.GemmRow(r.m, float(r.alpha_s), float(r.beta_Bps))
                                                         for r in curve.rows))
    for dtype, fit in (terms.attention or {}).items():
        if fit.alpha_s.known and fit.beta_Bps.known:
            attention[dtype] = decode_plan.AttentionFit(float(fit.alpha_s.value), float(fit.beta_Bps.value))
    costs = terms.launch
    if costs is not None and all(q.known for q in (costs.eager_s, costs.graph_node_s, costs.sync_s)):
        try:
            launch = decode_plan.LaunchCosts(float(costs.eager_s.value), float(costs.graph_node_s.value),
                                             float(costs.sync_s.value))
        except ValueError as exc:
            raise ValueError(f"decode.launch.{exc}") from None
    return DecodeModel(gemm, attention, launch)


def host_allreduce(profile: Profile, nranks: int, graphs: bool) -> tuple[float, float] | None:
    """(alpha_s, beta_Bps) of the profile's all-reduce over ``nranks`` ranks of one host (``hosts`` absent or
    1), timed in CUDA graphs or not as ``graphs`` says (an entry without ``graphs`` was timed eagerly), with a
    known alpha and beta and not failed; ``None`` without one. Entries measured by one process over its
    devices (``single_process``: a server's TP group) are preferred; of several, the slowest (smallest beta,
    then larger alpha). alpha is clipped at zero (a fit's can come out a hair below)."""
    entries = [e for e in profile.collectives or [] if e.op == "all-reduce" and e.nranks == nranks
               and e.span_hosts == 1 and bool(e.graphs) == graphs and e.verified is not False and e.known]
    if not entries:
        return None
    single = [e for e in entries if e.single_process]
    entry = min(single or entries, key=lambda e: (e.beta_Bps.value, -e.alpha_s.value))
    return max(0.0, float(entry.alpha_s.value)), float(entry.beta_Bps.value)


def _decode_device(doc: profiles.Document) -> tuple[int, Device]:
    """The device whose decode terms the planner takes: the first with measured ones, else the first with
    published ones, else the first."""
    devices = doc.profile.devices
    for want in ("decode", "published"):
        for i, d in enumerate(devices):
            if getattr(d, want) is not None:
                return i, d
    return 0, devices[0]


def has_decode_terms(doc: profiles.Document) -> bool:
    """True where the profile holds a figure the measured step can use: measured decode terms, a measured memory
    bandwidth, a one-host all-reduce, or a usable published figure (a stream bandwidth, a decode-GEMM rate, all
    three launch costs, an all-reduce with both its alpha and its bus bandwidth); ``gpucal plan --step`` defaults
    to measured there."""
    i, device = _decode_device(doc)
    if device.decode is not None or device.memory_bandwidth_Bps.source in ("measured", "simulated"):
        return True
    if any(e.single_process for e in doc.profile.collectives or []):
        return True
    published = device.published
    if published is None:
        return False
    launch = published.launch
    return (published.stream_Bps.known or published.decode_gemm_weight_Bps.known
            or all(q.known for q in (launch.eager_s, launch.graph_node_s, launch.sync_s))
            or any(e.alpha_s.known and e.busbw_Bps.known for e in published.allreduce))


def _published_allreduce(published, tp: int, graphs: bool):
    """The published all-reduce for ``tp`` ranks: the entry of that many ranks (timed as ``graphs`` says where
    there is one), else the nearest; (alpha_s, beta_Bps over the buffer, its text) or ``None``."""
    entries = [e for e in published.allreduce if e.alpha_s.known and e.busbw_Bps.known]
    if not entries:
        return None
    entry = min(entries, key=lambda e: (abs(e.nranks - tp), e.graphs != graphs, e.nranks))
    beta = float(entry.busbw_Bps.value) * tp / (2.0 * (tp - 1))  # nccl-tests: busbw = algbw · 2(n−1)/n
    refs = ", ".join(dict.fromkeys(q.ref for q in (entry.alpha_s, entry.busbw_Bps) if q.ref))
    ranks = "" if entry.nranks == tp else f", published for {entry.nranks} ranks"
    return float(entry.alpha_s.value), beta, f"published ({refs}): {entry.system}{ranks}"


def decode_inputs(doc: profiles.Document, *, dtype: str, tp: int, cards_per_host: int | None,
                  graphs: bool, kv_dtype: str | None = None) -> decode_plan_measured.DecodeInputs:
    """The measured step's figures from a profile (``gpucal.plan.measured.DecodeInputs``), each with where it came
    from in ``sources``: measured terms where the profile has them (``devices[].decode``, a measured memory
    bandwidth, the one-host all-reduce over ``tp`` ranks or, for a TP group across hosts, the cluster's), else
    the published figures of the card's model (``devices[].published``), else none (the ideal term). The
    attention fit is the KV cache's dtype's (``kv_dtype``, default ``dtype``)."""
    i, device = _decode_device(doc)
    where = f"{doc.name}: devices[{i}]"
    sources: dict[str, str] = {}
    published = device.published
    try:
        terms = decode_terms(device)
    except ValueError as exc:
        raise InputError(f"--gpu: {doc.origin}: {where}.{exc}") from None

    stream = None
    bandwidth = device.memory_bandwidth_Bps
    if bandwidth.known and bandwidth.source in ("measured", "simulated"):
        stream, sources["stream"] = float(bandwidth.value), f"{where}.memory_bandwidth_Bps, {bandwidth.cited}"
    elif published is not None and published.stream_Bps.known:
        stream = float(published.stream_Bps.value)
        sources["stream"] = f"{where}.published.stream_Bps, {published.stream_Bps.cited}"

    gemm = terms.gemm.get(dtype)
    gemm_rate = None
    if gemm is not None:
        sources["gemm"] = f"{where}.decode.gemm.{dtype}, {device.decode.gemm[dtype].source}"
    elif published is not None and published.decode_gemm_weight_Bps.known and dtype in ("fp16", "bf16"):
        gemm_rate = float(published.decode_gemm_weight_Bps.value)
        sources["gemm"] = f"{where}.published.decode_gemm_weight_Bps, {published.decode_gemm_weight_Bps.cited}"
    kv_dtype = kv_dtype or dtype
    attention = terms.attention.get(kv_dtype)
    if attention is not None:
        sources["attention"] = (f"{where}.decode.attention.{kv_dtype}, "
                                f"{device.decode.attention[kv_dtype].alpha_s.source}")

    launch = terms.launch
    if launch is not None:
        sources["launch"] = f"{where}.decode.launch, {device.decode.launch.eager_s.source}"
    elif published is not None:
        costs = published.launch
        if all(q.known for q in (costs.eager_s, costs.graph_node_s, costs.sync_s)):
            try:
                launch = decode_plan.LaunchCosts(float(costs.eager_s.value), float(costs.graph_node_s.value),
                                                 float(costs.sync_s.value))
            except ValueError as exc:
                raise InputError(f"--gpu: {doc.origin}: {where}.published.launch.{exc}") from None
            refs = ", ".join(dict.fromkeys(q.ref for q in (costs.eager_s, costs.graph_node_s, costs.sync_s)))
            sources["launch"] = f"{where}.published.launch, published ({refs})"

    allreduce, allreduce_note = None, None
    if tp > 1:
        across = cards_per_host is not None and tp > cards_per_host
        if across:
            choice = profile_collective(doc, tp, hosts=-(-tp // cards_per_host))
            if choice is not None:
                allreduce, sources["allreduce"] = choice.spec, f"{choice.spec.name}, {choice.source}"
        else:
            fit, how = host_allreduce(doc.profile, tp, graphs), "in CUDA graphs" if graphs else "eager"
            if fit is None and graphs:
                fit, how = host_allreduce(doc.profile, tp, False), "eager (none timed in CUDA graphs)"
            if fit is not None:
                allreduce = LinkSpec(f"all-reduce over {tp} cards", *fit)
                sources["allreduce"] = (f"{doc.name}: collectives, the one-host all-reduce over {tp} ranks, {how}, "
                                        f"{doc.profile.source}")
            elif published is not None:
                found = _published_allreduce(published, tp, graphs)
                if found is not None:
                    allreduce = LinkSpec(f"all-reduce over {tp} cards", found[0], found[1])
                    sources["allreduce"] = found[2]
                elif published.allreduce:
                    allreduce_note = ("the published ones give only their alpha or only their bus bandwidth "
                                      f"({where}.published.allreduce)")
    try:
        return decode_plan_measured.DecodeInputs(stream_Bps=stream, gemm=gemm, gemm_weight_Bps=gemm_rate,
                                                 attention=attention, launch=launch, allreduce=allreduce,
                                                 graphs=graphs, sources=sources, allreduce_note=allreduce_note)
    except ValueError as exc:
        raise InputError(f"--gpu: {doc.origin}: {where}: {exc}") from None
