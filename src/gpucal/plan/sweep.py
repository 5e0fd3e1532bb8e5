"""Sweeps: many configurations (batch x cards x strategy) in one vectorised evaluation per strategy.

Configurations a strategy cannot run are left out, not reported as errors: a TP degree that does not
divide the attention and KV heads, more pipeline stages than layers, a hybrid whose cards are not a
multiple of its TP degree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from gpucal.plan.models import ModelSpec
from gpucal.plan.spec import STRATEGIES, GpuSpec, LinkSpec
from gpucal.plan.step import Step, evaluate

__all__ = ["Sweep", "valid_tp", "sweep"]


@dataclass(frozen=True)
class Sweep:
    """Flat arrays, one element per configuration, and the ``Step`` evaluated for them."""

    strategy: np.ndarray
    batch: np.ndarray
    cards: np.ndarray
    tp: np.ndarray
    pp: np.ndarray
    step: Step

    def __len__(self) -> int:
        return int(self.batch.size)

    def row(self, i: int) -> dict:
        """Configuration ``i``: its strategy, batch, cards, tp, pp and every term of its step."""
        head = {"strategy": str(self.strategy[i]), "batch": int(self.batch[i]), "cards": int(self.cards[i]),
                "tp": int(self.tp[i]), "pp": int(self.pp[i])}
        return head | self.step.row(i)


def valid_tp(model: ModelSpec, tp):
    """True where ``tp`` divides both the attention heads and the KV heads (each card owns whole heads)."""
    tp = np.asarray(tp)
    return (model.heads % tp == 0) & (model.kv_heads % tp == 0)


def _layout_arrays(model: ModelSpec, strategy: str, cards: np.ndarray, hybrid_tp: int | None):
    if strategy == "pp":
        tp, pp = np.ones_like(cards), cards
    elif strategy == "tp":
        tp, pp = cards, np.ones_like(cards)
    else:
        if hybrid_tp is None:
            raise ValueError("tp: a hybrid sweep needs the TP degree")
        keep = cards % hybrid_tp == 0
        cards = cards[keep]
        tp, pp = np.full_like(cards, hybrid_tp), cards // hybrid_tp
    ok = valid_tp(model, tp) & (pp <= model.layers)
    return cards[ok], tp[ok], pp[ok]


def sweep(model: ModelSpec, gpu: GpuSpec, *, batches, cards, strategies=("pp", "tp"), hybrid_tp: int | None = None,
          link: LinkSpec, **step_options) -> Sweep:
    """Every (strategy, cards, batch) combination that the strategy can run, evaluated at once.

    ``step_options`` are passed to ``step.evaluate`` (net, cards_per_host, comm, context_tokens, ...).
    """
    batches = np.asarray(batches, dtype=np.int64).ravel()
    cards = np.asarray(cards, dtype=np.int64).ravel()
    if batches.size == 0 or cards.size == 0 or np.any(batches < 1) or np.any(cards < 1):
        raise ValueError("batches and cards must be non-empty and positive")
    parts = []
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
        c, tp, pp = _layout_arrays(model, strategy, cards, hybrid_tp)
        b = np.repeat(batches[None, :], c.size, axis=0).ravel()
        tp_flat, pp_flat, c_flat = (np.repeat(x, batches.size) for x in (tp, pp, c))
        step = evaluate(model, gpu, batch=b, tp=tp_flat, pp=pp_flat, link=link, **step_options)
        parts.append((np.full(b.size, strategy), b, c_flat, tp_flat, pp_flat, step))
    columns = {name: np.concatenate([getattr(p[5], name) for p in parts]) for name in (f.name for f in fields(Step))}
    return Sweep(
        strategy=np.concatenate([p[0] for p in parts]),
        batch=np.concatenate([p[1] for p in parts]),
        cards=np.concatenate([p[2] for p in parts]),
        tp=np.concatenate([p[3] for p in parts]),
        pp=np.concatenate([p[4] for p in parts]),
        step=Step(**columns),
    )
