"""The equations of the seed article, one function each, SI in and SI out.

Source: "Exploring Parallel Computing Strategies for GPU Inference" (the article gpucal's planner
started from; the case numbers below are those of the project's table of its numbers). Symbols: P
parameters, w bytes per weight, L layers, h hidden size, N cards, B batch, BW memory bandwidth (B/s),
F FLOP/s at the weight dtype; a transfer of S bytes costs alpha + S/beta.

Every function takes floats or NumPy arrays (they broadcast), so one implementation serves a single
plan and a sweep over many configurations.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "weights_bytes",
    "kv_bytes_per_token",
    "kv_cache_bytes",
    "activation_bytes",
    "memory_time_s",
    "compute_time_s",
    "card_time_s",
    "balance_batch",
    "transfer_bytes",
    "transfer_time_s",
    "pp_hops",
    "tp_exchanges",
    "seed_exchange_time_s",
    "COLLECTIVE_OPS",
    "ring_steps",
    "busbw_factor",
    "ring_collective_time_s",
    "ring_allreduce_time_s",
    "measured_allreduce_time_s",
    "min_cards_by_capacity",
    "smallest_tp_degree",
]


def weights_bytes(params, bytes_per_weight):
    """Bytes of the weights, ``w·P`` (article: "a 70B model with 140 GB parameters"; case 1)."""
    return params * bytes_per_weight


def kv_bytes_per_token(layers, kv_heads, head_dim, kv_bytes_per_value):
    """KV-cache bytes one token adds, ``2·L·kv_heads·head_dim·w_kv`` (K and V per layer; GQA-aware).

    Beyond the article, which gives no inputs for its 40 GB of KV cache (case 33).
    """
    return 2 * layers * kv_heads * head_dim * kv_bytes_per_value


def kv_cache_bytes(batch, context_tokens, kv_per_token_bytes):
    """KV-cache bytes of a batch of sequences, each ``context_tokens`` long."""
    return batch * context_tokens * kv_per_token_bytes


def activation_bytes(batch, tokens, hidden, act_bytes):
    """Intermediate results of the current layer, ``B·tokens·h·w`` (article: 8·4096·8192·2; case 4)."""
    return batch * tokens * hidden * act_bytes


def memory_time_s(bytes_per_card, memory_bandwidth_Bps):
    """Time to stream one card's share of the weights (and KV cache) once: ``w·P/N / BW``.

    Article: "2 bytes * parameter size / number of cards / memory bandwidth" (case 5).
    """
    return bytes_per_card / memory_bandwidth_Bps


def compute_time_s(batch, params_per_card, flops):
    """Time for one token step's matrix work on one card: ``B·2·P/N / F``.

    Article: "batch size * 2 * parameter size / number of cards / computational power" (case 7).
    """
    return batch * 2.0 * params_per_card / flops


def card_time_s(memory_s, compute_s):
    """Per-card time of one token step, ``max(memory, compute)``; the larger term is the bound."""
    return np.maximum(memory_s, compute_s)


def balance_batch(flops, memory_bandwidth_Bps, bytes_per_weight):
    """Batch at which the memory and compute terms are equal, ``B* = F·w / (2·BW)``.

    Article: "batch size = computational power / memory bandwidth" (w = 2; cases 8 and 9).
    """
    return flops * bytes_per_weight / (2.0 * memory_bandwidth_Bps)


def transfer_bytes(batch, hidden, act_bytes):
    """Activations sent per transfer, ``S = B·h·w`` (article: "batch size * embedding size"; case 10)."""
    return batch * hidden * act_bytes


def transfer_time_s(nbytes, alpha_s, beta_Bps):
    """One transfer of ``S`` bytes over a link, ``alpha + S/beta``."""
    return alpha_s + nbytes / beta_Bps


def pp_hops(stages):
    """Transfers per token through a pipeline of N stages: N (the article counts N hops, the last one
    returning the token to the first stage: "the time spent on communication for 8 cards is 4 ms");
    none for a single stage."""
    stages = np.asarray(stages)
    return np.where(stages > 1, stages, 0)


def tp_exchanges(layers):
    """Exchanges per token in tensor parallelism, ``2·L``: one after attention, one after the
    feed-forward network (article: "totaling 2 * number of layers")."""
    return 2 * layers


def seed_exchange_time_s(nbytes, alpha_s, beta_Bps, tp):
    """One TP exchange in the article's model: ``alpha + S/beta`` whatever the TP degree (the bytes
    do not shrink with N: "the total amount of data transmitted remains the same"); zero at tp = 1."""
    return np.where(np.asarray(tp) > 1, transfer_time_s(nbytes, alpha_s, beta_Bps), 0.0)


COLLECTIVE_OPS = ("all-reduce", "all-gather", "reduce-scatter", "broadcast", "send-recv")


def ring_steps(op, ranks):
    """Latency terms of the ring algorithm of ``op`` over N ranks: 2(N-1) for all-reduce, N-1 for
    all-gather, reduce-scatter and (pipelined) broadcast, 1 for send/recv."""
    if op == "all-reduce":
        return 2 * (ranks - 1)
    if op in ("all-gather", "reduce-scatter", "broadcast"):
        return ranks - 1
    if op == "send-recv":
        return 1
    raise ValueError(f"op: expected one of {', '.join(COLLECTIVE_OPS)}, got {op!r}")


def busbw_factor(op, ranks):
    """nccl-tests' bus-bandwidth factor of ``op`` over N ranks (busbw = algbw x factor): 2(N-1)/N for
    all-reduce, (N-1)/N for all-gather and reduce-scatter, 1 for broadcast and send/recv. It is also the
    share of S/beta the ring algorithm pays, so busbw tends to beta at large S."""
    if op == "all-reduce":
        return 2.0 * (ranks - 1) / ranks
    if op in ("all-gather", "reduce-scatter"):
        return (ranks - 1) / ranks
    if op in ("broadcast", "send-recv"):
        return 1.0
    raise ValueError(f"op: expected one of {', '.join(COLLECTIVE_OPS)}, got {op!r}")


def ring_collective_time_s(op, nbytes, alpha_s, beta_Bps, ranks):
    """The ring algorithm's time for ``op`` of S bytes (nccl-tests' size of the op) over N ranks joined by
    links of latency alpha and bandwidth beta: ``ring_steps·alpha + busbw_factor·S/beta``, so all-reduce
    ``2(N-1)·alpha + 2(N-1)/N·S/beta``; all-gather, reduce-scatter ``(N-1)·alpha + (N-1)/N·S/beta``;
    broadcast (pipelined ring) ``(N-1)·alpha + S/beta``; send/recv ``alpha + S/beta``. The planner's
    ring all-reduce and the virtual machine's collectives are both this function."""
    return ring_steps(op, ranks) * alpha_s + busbw_factor(op, ranks) * nbytes / beta_Bps


def ring_allreduce_time_s(nbytes, alpha_s, beta_Bps, tp):
    """One TP exchange as the ring all-reduce NCCL runs: ``2(N-1)`` steps, each moving ``S/N`` bytes,
    so ``2(N-1)·alpha + 2(N-1)/N·S/beta`` (``ring_collective_time_s``); zero at tp = 1."""
    return ring_collective_time_s("all-reduce", nbytes, alpha_s, beta_Bps, np.asarray(tp, dtype=float))


def measured_allreduce_time_s(nbytes, alpha_s, beta_Bps, tp):
    """One TP exchange as a measured all-reduce: ``alpha + S/beta`` with alpha and beta fitted to the
    all-reduce's time against its size S over the TP group's ranks (a cluster profile's ``collectives``,
    nccl-tests' size convention: S is the buffer each rank reduces); zero at tp = 1. It replaces both the
    seed and the ring model: the fit holds whatever algorithm and transport NCCL chose."""
    return np.where(np.asarray(tp) > 1, transfer_time_s(nbytes, alpha_s, beta_Bps), 0.0)


MAX_CARD_COUNT = 2 ** 53  # the most cards a count reports: a float counts whole numbers exactly up to here


def min_cards_by_capacity(total_bytes, memory_bytes_per_card):
    """Fewest cards whose memory holds ``total_bytes``: ``ceil(total / memory)`` (cases 2 and 3), at most
    ``MAX_CARD_COUNT`` (beyond it no machine holds the workload, and an int64 would overflow)."""
    ratio = np.asarray(total_bytes, dtype=float) / memory_bytes_per_card
    cards = np.ceil(ratio * (1.0 - 1e-12))  # 180e9/24e9 is 7.5 -> 8; 160e9/80e9 stays 2
    return np.minimum(cards, MAX_CARD_COUNT).astype(np.int64)


def smallest_tp_degree(min_cards, heads, kv_heads):
    """Smallest TP degree t >= ``min_cards`` that divides both ``heads`` and ``kv_heads`` (each card
    must own whole attention and KV heads), or 0 where none exists.

    Case 2: three H100 hold Llama-2-70B's weights and 40 GB of KV cache, but TP over 64 heads and
    8 KV heads needs 4.
    """
    degrees = np.array([t for t in range(1, min(heads, kv_heads) + 1) if heads % t == 0 and kv_heads % t == 0])
    index = np.searchsorted(degrees, np.asarray(min_cards), side="left")
    return np.where(index < degrees.size, degrees[np.minimum(index, degrees.size - 1)], 0)
