"""Model presets against their published parameter counts; Hugging Face configs; model files."""


import pytest

from gpucal.plan.models import PRESETS, ModelSpec, model_from_hf_config, params_from_architecture

# Exact counts published with the checkpoints (safetensors metadata / model cards).
PUBLISHED = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "mistral-7b": 7_241_732_096,
    "qwen2.5-72b": 72_706_203_648,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts_match_the_published_ones(name):
    assert PRESETS[name].params == PUBLISHED[name]


def test_seed_70b_is_the_articles_nominal_model():
    m = PRESETS["seed-70b"]
    assert (m.params, m.layers, m.hidden, m.heads, m.kv_heads, m.head_dim) == (70e9, 80, 8192, 64, 8, 128)


LLAMA_31_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


def test_a_hugging_face_config_gives_the_same_model_as_the_preset():
    m = model_from_hf_config(LLAMA_31_8B_CONFIG, "local")
    p = PRESETS["llama-3.1-8b"]
    assert (m.params, m.layers, m.hidden, m.heads, m.kv_heads, m.head_dim) == (
        p.params, p.layers, p.hidden, p.heads, p.kv_heads, p.head_dim)


def test_tied_embeddings_count_once():
    tied = dict(LLAMA_31_8B_CONFIG, tie_word_embeddings=True)
    assert model_from_hf_config(LLAMA_31_8B_CONFIG, "a").params - model_from_hf_config(tied, "b").params == 128256 * 4096


@pytest.mark.parametrize("change, field", [
    ({"num_local_experts": 8}, "num_local_experts"),
    ({"model_type": "gpt2"}, "model_type"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"hidden_size": "4096"}, "hidden_size"),
    ({"num_key_value_heads": 5}, "kv_heads"),
])
def test_configs_it_cannot_count_are_refused_naming_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        model_from_hf_config(dict(LLAMA_31_8B_CONFIG, **change), "x")


def test_model_spec_checks_its_fields():
    with pytest.raises(ValueError, match="params"):
        ModelSpec("x", 0.0, 1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="kv_heads"):
        ModelSpec("x", 1.0, 1, 64, 64, 7, 1)


def test_params_formula_by_hand_for_a_tiny_model():
    # 1 layer, h 4, 2 heads of 2, 1 KV head, vocab 10, ffn 8:
    # q, o: 2·4·4 = 32; k, v: 2·4·2 = 16; mlp 3·4·8 = 96; norms 8; embed + head 80; final norm 4.
    assert params_from_architecture(1, 4, 2, 1, 2, 10, 8) == 32 + 16 + 96 + 8 + 80 + 4
