"""Model descriptions for the planner: presets, and the parameter count from an architecture.

Pure: no file I/O (reading a model file is the caller's job; this module takes the parsed dict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ModelSpec", "PRESETS", "params_from_architecture", "model_from_dict", "model_from_hf_config"]


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer as the planner sees it.

    ``params`` is the parameter count P of the equations; the rest is the architecture: layers L,
    hidden size h, attention heads, KV heads (GQA), head dimension, vocabulary and FFN sizes.
    """

    name: str
    params: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int | None = None
    ffn: int | None = None
    source: str = ""

    def __post_init__(self):
        for field in ("layers", "hidden", "heads", "kv_heads", "head_dim"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field}: must be a positive integer, got {value!r}")
        if not (isinstance(self.params, (int, float)) and math.isfinite(self.params) and self.params > 0):
            raise ValueError(f"params: must be a positive number, got {self.params!r}")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads: {self.kv_heads} does not divide heads ({self.heads})")


def params_from_architecture(
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    vocab: int,
    ffn: int,
    *,
    qkv_bias: bool = False,
    tied_embeddings: bool = False,
) -> int:
    """Parameters of a Llama-style decoder (gated MLP, RMSNorm, no other biases).

    Per layer: Q and O projections ``2·h·heads·head_dim``, K and V ``2·h·kv_heads·head_dim``, the
    gated MLP ``3·h·ffn``, two norms ``2·h``; plus the embedding ``vocab·h``, the final norm ``h``,
    and the output head ``vocab·h`` unless tied. Checked against the published counts of the presets.
    """
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    if qkv_bias:
        attention += heads * head_dim + 2 * kv_heads * head_dim
    per_layer = attention + 3 * hidden * ffn + 2 * hidden
    embeddings = vocab * hidden * (1 if tied_embeddings else 2)
    return layers * per_layer + embeddings + hidden


def _llama(name, layers, hidden, heads, kv_heads, vocab, ffn, source, head_dim=128, qkv_bias=False):
    params = params_from_architecture(layers, hidden, heads, kv_heads, head_dim, vocab, ffn, qkv_bias=qkv_bias)
    return ModelSpec(name, float(params), layers, hidden, heads, kv_heads, head_dim, vocab, ffn, source)


_HF = "Hugging Face config.json of "
PRESETS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _llama("llama-2-7b", 32, 4096, 32, 32, 32000, 11008, _HF + "meta-llama/Llama-2-7b-hf"),
        _llama("llama-2-13b", 40, 5120, 40, 40, 32000, 13824, _HF + "meta-llama/Llama-2-13b-hf"),
        _llama("llama-2-70b", 80, 8192, 64, 8, 32000, 28672, _HF + "meta-llama/Llama-2-70b-hf"),
        _llama("llama-3.1-8b", 32, 4096, 32, 8, 128256, 14336, _HF + "meta-llama/Llama-3.1-8B"),
        _llama("llama-3.1-70b", 80, 8192, 64, 8, 128256, 28672, _HF + "meta-llama/Llama-3.1-70B"),
        _llama("llama-3.1-405b", 126, 16384, 128, 8, 128256, 53248, _HF + "meta-llama/Llama-3.1-405B"),
        _llama("mistral-7b", 32, 4096, 32, 8, 32000, 14336, _HF + "mistralai/Mistral-7B-v0.1"),
        _llama("qwen2.5-72b", 80, 8192, 64, 8, 152064, 29568, _HF + "Qwen/Qwen2.5-72B", qkv_bias=True),
        ModelSpec(
            "seed-70b", 70e9, 80, 8192, 64, 8, 128, 32000, 28672,
            "the article's nominal 70e9 parameters with Llama-2-70B's shape (which really has 68.98e9)",
        ),
    )
}


def model_from_dict(data: dict, name: str) -> ModelSpec:
    """A ``gpucal.model/1`` document (already schema-checked) as a ModelSpec."""
    head_dim = data.get("head_dim") or data["hidden"] // data["heads"]
    return ModelSpec(
        name=name, params=float(data["params"]), layers=data["layers"], hidden=data["hidden"],
        heads=data["heads"], kv_heads=data["kv_heads"], head_dim=head_dim, vocab=data.get("vocab"),
        ffn=data.get("ffn"), source=data.get("source", "model file"),
    )


# model_type values of Hugging Face configs whose layers match params_from_architecture.
_GATED_DECODERS = {"llama", "mistral", "qwen2", "qwen3", "internlm2", "granite", "olmo2", "yi"}
_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")


def _int_field(config: dict, key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key}: expected a positive integer, got {value!r}")
    return value


def model_from_hf_config(config: dict, name: str) -> ModelSpec:
    """A Hugging Face ``config.json`` (parsed) of a dense Llama-style decoder as a ModelSpec.

    The parameter count comes from ``params_from_architecture``. Mixture-of-experts and other layer
    shapes are refused with the field that gave them away (their counts need other formulas).
    """
    model_type = config.get("model_type")
    if model_type not in _GATED_DECODERS:
        known = ", ".join(sorted(_GATED_DECODERS))
        raise ValueError(f"model_type: {model_type!r} is not a layer shape gpucal counts ({known}); "
                         "write a gpucal.model/1 file with its params instead")
    for key in _MOE_KEYS:
        if config.get(key):
            raise ValueError(f"{key}: mixture-of-experts models are not supported by the planner yet")
    layers = _int_field(config, "num_hidden_layers")
    hidden = _int_field(config, "hidden_size")
    heads = _int_field(config, "num_attention_heads")
    kv_heads = _int_field(config, "num_key_value_heads") if "num_key_value_heads" in config else heads
    head_dim = _int_field(config, "head_dim") if config.get("head_dim") else hidden // heads
    vocab = _int_field(config, "vocab_size")
    ffn = _int_field(config, "intermediate_size")
    qkv_bias = model_type == "qwen2" or bool(config.get("attention_bias", False))
    tied = bool(config.get("tie_word_embeddings", False))
    params = params_from_architecture(layers, hidden, heads, kv_heads, head_dim, vocab, ffn,
                                      qkv_bias=qkv_bias, tied_embeddings=tied)
    return ModelSpec(name, float(params), layers, hidden, heads, kv_heads, head_dim, vocab, ffn,
                     f"Hugging Face config.json ({model_type}); params counted from the architecture")
