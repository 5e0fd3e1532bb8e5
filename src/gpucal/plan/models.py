"""Model descriptions for the planner: presets, and the parameter count from an architecture.

Pure: no file I/O (reading a model file is the caller's job; this module takes the parsed dict).

Every number of a model is bounded (``MODEL_MAXIMA``, and ``gpucal.limits.RANGES["params"]`` for the
parameter count), generously past today's largest models, so that no file or flag reaches the planner with
a size it cannot hold; ``profiles/schema.json`` states the same bounds (``tests/unit/test_limits.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucal.limits import MODEL_MAXIMA, RANGES

__all__ = ["MODEL_MAXIMA", "PRESETS", "ModelSpec", "model_spec", "model_from_hf_config",
           "params_from_architecture"]

# The largest value of each integer field of a model (Llama-3.1-405B: 126 layers, hidden 16384, 128 heads,
# vocabulary 128256, FFN 53248).
PARAMS_RANGE = RANGES["params"]


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text):,} characters)"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        for field in ("layers", "hidden", "heads", "kv_heads", "head_dim", "vocab", "ffn"):
            value = getattr(self, field)
            if value is None and field in ("vocab", "ffn"):
                continue
            if not _is_int(value) or value < 1:
                raise ValueError(f"{field}: must be a positive integer, got {_shown(value)}")
            if value > MODEL_MAXIMA[field]:
                raise ValueError(f"{field}: {value:,} is above the largest accepted, {MODEL_MAXIMA[field]:,}")
        lo, hi = PARAMS_RANGE
        params = self.params
        # Compared, not converted: an integer of 400 digits has no float, and NaN fails every comparison.
        if not (isinstance(params, (int, float)) and not isinstance(params, bool) and lo <= params <= hi):
            raise ValueError(f"params: must be a number from {lo:g} to {hi:g}, got {_shown(params)}")
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


def model_spec(name: str, *, params: float, layers: int, hidden: int, heads: int, kv_heads: int,
               head_dim: int | None = None, vocab: int | None = None, ffn: int | None = None,
               source: str | None = None) -> ModelSpec:
    """A model description's figures (a ``gpucal.model/1`` document, already checked) as a ModelSpec;
    ``ValueError`` naming the field where the fields disagree (a hidden size below the head count). Without
    ``head_dim``, ``hidden // heads``; without ``source``, "model file"."""
    if not head_dim and hidden < heads:
        raise ValueError(f"hidden: {hidden:,} is smaller than heads ({heads:,}); give head_dim")
    return ModelSpec(
        name=name, params=float(params), layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
        head_dim=head_dim or hidden // heads, vocab=vocab, ffn=ffn, source=source or "model file",
    )


# model_type values of Hugging Face configs whose layers match params_from_architecture.
_GATED_DECODERS = {"llama", "mistral", "qwen2", "qwen3", "internlm2", "granite", "olmo2", "yi"}
_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")


def _int_field(config: dict, key: str, field: str) -> int:
    """The integer ``config[key]``, within the bound of ModelSpec's ``field``; ``ValueError`` naming ``key``."""
    value = config.get(key)
    if key not in config:
        raise ValueError(f"{key}: missing; a config.json of a decoder states it")
    if not _is_int(value) or value < 1:
        raise ValueError(f"{key}: expected a positive integer, got {_shown(value)}")
    if value > MODEL_MAXIMA[field]:
        raise ValueError(f"{key}: {value:,} is above the largest accepted, {MODEL_MAXIMA[field]:,}")
    return value


def _flag_field(config: dict, key: str) -> bool:
    value = config.get(key)
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {_shown(value)}")
    return bool(value)


def model_from_hf_config(config: dict, name: str) -> ModelSpec:
    """A Hugging Face ``config.json`` (parsed) of a dense Llama-style decoder as a ModelSpec.

    The parameter count comes from ``params_from_architecture``. Mixture-of-experts and other layer
    shapes are refused with the field that gave them away (their counts need other formulas).
    """
    model_type = config.get("model_type")
    known = ", ".join(sorted(_GATED_DECODERS))
    if not isinstance(model_type, str) or model_type not in _GATED_DECODERS:
        raise ValueError(f"model_type: {_shown(model_type)} is not a layer shape gpucal counts ({known}); "
                         "write a gpucal.model/1 file with its params instead")
    for key in _MOE_KEYS:
        if config.get(key):
            raise ValueError(f"{key}: mixture-of-experts models are not supported by the planner yet")
    layers = _int_field(config, "num_hidden_layers", "layers")
    hidden = _int_field(config, "hidden_size", "hidden")
    heads = _int_field(config, "num_attention_heads", "heads")
    kv_heads = _int_field(config, "num_key_value_heads", "kv_heads") \
        if config.get("num_key_value_heads") is not None else heads
    if config.get("head_dim") is not None:
        head_dim = _int_field(config, "head_dim", "head_dim")
    elif hidden < heads:
        raise ValueError(f"hidden_size: {hidden:,} is smaller than num_attention_heads ({heads:,}); "
                         "give head_dim")
    else:
        head_dim = hidden // heads
    if heads % kv_heads:
        raise ValueError(f"num_key_value_heads: {kv_heads:,} does not divide num_attention_heads ({heads:,}); "
                         "the KV heads (kv_heads) must divide the heads")
    vocab = _int_field(config, "vocab_size", "vocab")
    ffn = _int_field(config, "intermediate_size", "ffn")
    qkv_bias = model_type == "qwen2" or _flag_field(config, "attention_bias")
    tied = _flag_field(config, "tie_word_embeddings")
    params = params_from_architecture(layers, hidden, heads, kv_heads, head_dim, vocab, ffn,
                                      qkv_bias=qkv_bias, tied_embeddings=tied)
    if params > PARAMS_RANGE[1]:
        raise ValueError(f"num_hidden_layers, hidden_size, intermediate_size, vocab_size: the architecture counts "
                         f"{params:.3g} parameters, above the largest accepted, {PARAMS_RANGE[1]:g}")
    return ModelSpec(name, float(params), layers, hidden, heads, kv_heads, head_dim, vocab, ffn,
                     f"Hugging Face config.json ({model_type}); params counted from the architecture")
