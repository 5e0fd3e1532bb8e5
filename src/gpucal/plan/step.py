"""One decode step of a model on a layout of cards: the article's equations composed.

``evaluate`` takes scalars or NumPy arrays (batch, tp, pp broadcast together) and returns a ``Step``
whose fields are arrays of the same shape, so that one call plans one configuration or a sweep of a
few tens of thousands (``gpucal.limits.MAX_SWEEP_CONFIGURATIONS``).

Composition (the design's "hybrid: TP inside stages, PP across"):

- per-card time ``t_card = max(w·P/N / BW, B·2·P/N / F)`` with N = tp·pp (plus the card's share of
  the KV cache in the memory term, when the workload has one);
- TP: ``2·L`` exchanges per token of ``S = B·h·w_act`` bytes, each ``alpha + S/beta`` in the seed model
  or a ring all-reduce in the ring model, over the link (the network if a TP group spans hosts); in the
  measured model, the all-reduce a cluster profile measured over the TP group (``collective``); a
  measured link, network or all-reduce with regimes (``LinkSpec.pieces``) costs each transfer at the
  regime its size falls in (S; a ring step's S/N);
- PP: ``pp`` hops per token of S bytes (none for one stage), over the network where consecutive
  stages sit on different hosts and over the link otherwise;
- token latency ``pp·t_card + TP comm + PP comm``: with pp = 1 the article's TP equation
  ``t_card + 2·L·(alpha + S/beta)``, with tp = 1 its PP equation ``N·t_card + N·(alpha + S/beta)``;
- aggregate throughput with pp micro-batches in flight: ``B / (slowest stage + its hop)``, which is
  the article's ``N·B / t_token`` when the stages are equal.

Layers that do not divide evenly among stages are allowed: the latency is unchanged (every term is
linear in the layers) and the largest stage (ceil(L/pp) layers) sets memory per card and throughput.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from gpucal.plan import equations as eq
from gpucal.plan.models import ModelSpec
from gpucal.plan.spec import COMM_MODELS, GpuSpec, LinkSpec

__all__ = ["Step", "evaluate"]


@dataclass(frozen=True)
class Step:
    """The terms of one decode step (arrays for a sweep, 0-d arrays for a single plan); SI units."""

    memory_time_s: np.ndarray
    compute_time_s: np.ndarray
    card_time_s: np.ndarray
    bound: np.ndarray
    balance_batch: np.ndarray
    transfer_bytes: np.ndarray
    tp_exchanges: np.ndarray
    tp_exchange_time_s: np.ndarray
    tp_comm_time_s: np.ndarray
    pp_hops: np.ndarray
    pp_network_hops: np.ndarray
    pp_comm_time_s: np.ndarray
    comm_time_s: np.ndarray
    token_latency_s: np.ndarray
    tokens_per_s: np.ndarray
    aggregate_tokens_per_s: np.ndarray
    comm_share_frac: np.ndarray
    compute_utilization_frac: np.ndarray
    batch_over_balance: np.ndarray
    weights_bytes: np.ndarray
    weights_bytes_per_card: np.ndarray
    kv_bytes_per_token: np.ndarray
    kv_cache_bytes: np.ndarray
    kv_bytes_per_card: np.ndarray
    activation_bytes_per_card: np.ndarray
    memory_bytes_per_card_needed: np.ndarray
    fits: np.ndarray
    min_cards: np.ndarray
    min_tp_degree: np.ndarray
    hosts: np.ndarray

    def row(self, index=()) -> dict:
        """One configuration as a dict of Python numbers (``index`` into the arrays; () for 0-d)."""
        out = {}
        for f in fields(self):
            value = np.asarray(getattr(self, f.name))[index]
            out[f.name] = value.item() if hasattr(value, "item") else value
        return out


def _link_arrays(on_net, link: LinkSpec, net: LinkSpec | None, nbytes):
    """alpha and beta per element for transfers of ``nbytes``: the network where ``on_net``, the link
    elsewhere (each at the regime the transfer's size falls in)."""
    link_alpha, link_beta = link.at(nbytes)
    if net is None:
        if np.any(on_net):
            raise ValueError("net: the cards span several hosts; give the link between hosts")
        return link_alpha, link_beta
    net_alpha, net_beta = net.at(nbytes)
    return np.where(on_net, net_alpha, link_alpha), np.where(on_net, net_beta, link_beta)


def evaluate(
    model: ModelSpec,
    gpu: GpuSpec,
    *,
    batch,
    tp,
    pp,
    link: LinkSpec,
    net: LinkSpec | None = None,
    cards_per_host=None,
    comm: str = "seed",
    collective: LinkSpec | None = None,
    context_tokens=0,
    bytes_per_weight: float = 2.0,
    kv_bytes_per_value: float = 2.0,
    act_bytes: float = 2.0,
    kv_cache_bytes=None,
) -> Step:
    """The decode step of ``model`` on ``tp``·``pp`` cards of ``gpu`` at ``batch`` (see the module doc)."""
    if comm not in COMM_MODELS:
        raise ValueError(f"comm: expected one of {', '.join(COMM_MODELS)}, got {comm!r}")
    if comm == "measured" and collective is None:
        raise ValueError("comm: the measured model needs the measured all-reduce (collective)")
    batch = np.asarray(batch, dtype=float)
    tp = np.asarray(tp, dtype=np.int64)
    pp = np.asarray(pp, dtype=np.int64)
    if np.any(batch <= 0) or np.any(tp < 1) or np.any(pp < 1):
        raise ValueError("batch, tp and pp must be positive")
    cards = tp * pp
    per_host = cards if cards_per_host is None else np.asarray(cards_per_host, dtype=np.int64)
    layers = model.layers

    # Shares of the model per card: the even share sets the latency, the largest stage the memory.
    stage_layers_max = -(-layers // pp)
    share_even = 1.0 / cards
    share_max = stage_layers_max / layers / tp

    weights = eq.weights_bytes(model.params, bytes_per_weight)
    kv_token = eq.kv_bytes_per_token(layers, model.kv_heads, model.head_dim, kv_bytes_per_value)
    if kv_cache_bytes is None:
        kv_total = eq.kv_cache_bytes(batch, context_tokens, kv_token)
    else:
        kv_total = np.broadcast_to(np.asarray(kv_cache_bytes, dtype=float), batch.shape)
    act_card = eq.activation_bytes(batch, context_tokens, model.hidden, act_bytes)

    mem_t = eq.memory_time_s((weights + kv_total) * share_even, gpu.memory_bandwidth_Bps)
    comp_t = eq.compute_time_s(batch, model.params * share_even, gpu.flops)
    card_t = eq.card_time_s(mem_t, comp_t)
    balance = eq.balance_batch(gpu.flops, gpu.memory_bandwidth_Bps, bytes_per_weight)

    # Tensor-parallel exchanges: over the network when a TP group is wider than a host.
    nbytes = eq.transfer_bytes(batch, model.hidden, act_bytes)
    step_bytes = nbytes / tp if comm == "ring" else nbytes  # a ring's step moves S/N: its regime is that size's
    tp_alpha, tp_beta = _link_arrays(tp > per_host, link, net, step_bytes)
    if comm == "seed":
        exchange_t = eq.seed_exchange_time_s(nbytes, tp_alpha, tp_beta, tp)
    elif comm == "measured":
        exchange_t = eq.measured_allreduce_time_s(nbytes, *collective.at(nbytes), tp)
    else:
        exchange_t = eq.ring_allreduce_time_s(nbytes, tp_alpha, tp_beta, tp)
    exchanges = np.where(tp > 1, eq.tp_exchanges(layers), 0)
    tp_comm = exchanges * exchange_t

    # Pipeline hops: count those that cross a host boundary (stages are placed in order).
    hops = eq.pp_hops(pp)
    stages_per_host = np.maximum(per_host // tp, 1)
    hosts_used = -(-pp // stages_per_host)
    net_hops = np.where(tp >= per_host, hops, np.where(hosts_used > 1, hosts_used, 0))
    net_hops = np.minimum(net_hops, hops)
    hop_alpha, hop_beta = _link_arrays(net_hops > 0, link, net, nbytes)
    hop_link_t = eq.transfer_time_s(nbytes, *link.at(nbytes))
    hop_net_t = eq.transfer_time_s(nbytes, hop_alpha, hop_beta)
    pp_comm = (hops - net_hops) * hop_link_t + net_hops * hop_net_t

    comm_t = tp_comm + pp_comm
    latency = pp * card_t + comm_t
    slowest_hop = np.where(net_hops > 0, hop_net_t, np.where(hops > 0, hop_link_t, 0.0))
    stage_period = card_t * (stage_layers_max * pp / layers) + 2 * stage_layers_max * exchange_t
    aggregate = batch / (stage_period + slowest_hop)

    weights_card = weights * share_max
    kv_card = kv_total * share_max
    needed = weights_card + kv_card + act_card
    min_cards = np.maximum(eq.min_cards_by_capacity(weights + kv_total + act_card, gpu.memory_bytes), 1)

    terms = {
        "memory_time_s": mem_t,
        "compute_time_s": comp_t,
        "card_time_s": card_t,
        "bound": np.where(mem_t >= comp_t, "memory", "compute"),
        "balance_batch": balance,
        "transfer_bytes": nbytes,
        "tp_exchanges": exchanges,
        "tp_exchange_time_s": exchange_t,
        "tp_comm_time_s": tp_comm,
        "pp_hops": hops,
        "pp_network_hops": net_hops,
        "pp_comm_time_s": pp_comm,
        "comm_time_s": comm_t,
        "token_latency_s": latency,
        "tokens_per_s": 1.0 / latency,
        "aggregate_tokens_per_s": aggregate,
        "comm_share_frac": comm_t / latency,
        "compute_utilization_frac": comp_t / card_t,
        "batch_over_balance": batch / balance,
        "weights_bytes": weights,
        "weights_bytes_per_card": weights_card,
        "kv_bytes_per_token": kv_token,
        "kv_cache_bytes": kv_total,
        "kv_bytes_per_card": kv_card,
        "activation_bytes_per_card": act_card,
        "memory_bytes_per_card_needed": needed,
        "fits": needed <= gpu.memory_bytes,
        "min_cards": min_cards,
        "min_tp_degree": eq.smallest_tp_degree(min_cards, model.heads, model.kv_heads),
        "hosts": -(-cards // per_host),
    }
    shape = np.broadcast_shapes(batch.shape, tp.shape, pp.shape)
    return Step(**{name: np.broadcast_to(value, shape) for name, value in terms.items()})
