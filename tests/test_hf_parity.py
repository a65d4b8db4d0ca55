"""HF checkpoints -> our params -> logits equal to transformers' PyTorch models, and back.

Tiny random Llama / Qwen2 / Qwen3 models (tied and untied, GQA, llama3 RoPE scaling, a Qwen3
head_dim != hidden / heads) are saved with `save_pretrained`, loaded with our loader and
compared with the torch logits; exports are reloaded with `from_pretrained`.
"""
import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers

from opdlm_jax.checkpoints import hf as hf_io
from opdlm_jax.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from opdlm_jax.checkpoints.hf_mapping import config_from_hf, entries, hf_config_from
from opdlm_jax.models import forward, init_params

TOL = 1e-4  # float32, different op order than torch
EXPORT_TOL = 1e-5
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 256}
COMMON = dict(vocab_size=151, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=[2, 5])

CASES = {
    "llama_gqa_llama3_untied": ("llama", dict(num_attention_heads=4, num_key_value_heads=2,
                                              tie_word_embeddings=False, max_position_embeddings=4096,
                                              rope_parameters={"rope_theta": 500000.0, **LLAMA3})),
    "llama_mha_tied": ("llama", dict(num_attention_heads=4, num_key_value_heads=4,
                                     tie_word_embeddings=True)),
    "qwen2_gqa_untied": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=False)),
    "qwen2_tied": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True)),
    "qwen3_headdim16_untied": ("qwen3", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                             tie_word_embeddings=False)),
    "qwen3_tied": ("qwen3", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                 head_dim=16, tie_word_embeddings=True)),
}
_CONFIGS = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
            "qwen3": transformers.Qwen3Config}
_jit_forward = jax.jit(forward, static_argnums=0, static_argnames=("mode",))


def make_torch_model(case: str, seed: int = 0):
    family, extra = CASES[case]
    hf_config = _CONFIGS[family](**{**COMMON, **extra})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager")
    with torch.no_grad():  # HF zero-initialises biases and ones norms: randomise everything
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.1 if name.endswith("norm.weight") else 0.2)
                    + (1.0 if name.endswith("norm.weight") else 0.0))
    return model.eval()


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens).long()).logits.float().numpy()


def tokens_for(vocab: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(2, 20))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """case -> (torch model, checkpoint dir, tokens, torch logits); built once per case."""
    cache = {}

    def get(case):
        if case not in cache:
            model = make_torch_model(case)
            path = tmp_path_factory.mktemp(case)
            model.save_pretrained(path)
            tokens = tokens_for(model.config.vocab_size)
            cache[case] = (model, path, tokens, torch_logits(model, tokens))
        return cache[case]
    return get


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, saved, tmp_path):
    model, path, tokens, expected = saved(case)
    config, params = load_hf_checkpoint(path)
    assert config.family == CASES[case][0]
    assert config.tie_word_embeddings == model.config.tie_word_embeddings
    assert config.eos_token_ids == (2, 5)
    got = np.asarray(_jit_forward(config, params, jnp.asarray(tokens), mode="causal"))
    diff = np.abs(got - expected).max()
    print(f"{case}: max |logit diff| = {diff:.2e}")
    assert diff <= TOL

    # Export -> transformers reloads it and reproduces the original torch logits.
    save_hf_checkpoint(config, params, tmp_path / "export")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "export", attn_implementation="eager").eval()
    export_diff = np.abs(torch_logits(reloaded, tokens) - expected).max()
    print(f"{case}: export max |logit diff| = {export_diff:.2e}")
    assert export_diff <= EXPORT_TOL
    assert config_from_hf(hf_config_from(config)) == config


@pytest.mark.parametrize("case", ["llama_gqa_llama3_untied", "qwen3_tied"])
def test_scan_layers_load(case, saved):
    _, path, tokens, expected = saved(case)
    config, params = load_hf_checkpoint(path, scan_layers=True, remat_policy="full")
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    assert jax.tree.structure(abstract) == jax.tree.structure(params)
    assert jax.tree.map(lambda a: a.shape, abstract) == jax.tree.map(lambda a: a.shape, params)
    got = np.asarray(_jit_forward(config, params, jnp.asarray(tokens), mode="causal"))
    assert np.abs(got - expected).max() <= TOL
    # Export from the scanned tree too.
    flat = dict(hf_io.hf_tensors_from_params(config, params))
    unscanned = dict(hf_io.hf_tensors_from_params(*load_hf_checkpoint(path)))
    assert flat.keys() == unscanned.keys()
    for name in flat:
        np.testing.assert_array_equal(flat[name], unscanned[name])


def test_llama3_rope_scaling_matters(saved):
    # Guards the llama3 case: dropping the scaling must change the logits well past TOL.
    _, path, tokens, expected = saved("llama_gqa_llama3_untied")
    config, params = load_hf_checkpoint(path)
    assert dict(config.rope_scaling)["rope_type"] == "llama3"
    plain = config.replace(rope_scaling=None)
    got = np.asarray(_jit_forward(plain, params, jnp.asarray(tokens), mode="causal"))
    assert np.abs(got - expected).max() > 100 * TOL


@pytest.mark.parametrize("case", ["llama_gqa_llama3_untied", "qwen3_headdim16_untied"])
def test_transformers4_config_gives_same_model_config(case, saved, tmp_path):
    _, path, _, _ = saved(case)
    v5 = json.loads((path / "config.json").read_text())
    assert "rope_parameters" in v5 and "rope_theta" not in v5
    v4 = {k: v for k, v in v5.items() if k not in ("rope_parameters", "dtype")}
    rope = dict(v5["rope_parameters"])
    v4["rope_theta"] = rope.pop("rope_theta")
    v4["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    v4["torch_dtype"] = "float32"
    assert config_from_hf(v4) == config_from_hf(v5)
    # Older configs spell the scaling type "type".
    if v4["rope_scaling"]:
        old = dict(v4, rope_scaling={("type" if k == "rope_type" else k): v
                                     for k, v in v4["rope_scaling"].items()})
        assert config_from_hf(old) == config_from_hf(v5)
    # The whole checkpoint with a 4.x config.json loads to the same config.
    (tmp_path / "config.json").write_text(json.dumps(v4))
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    assert load_hf_checkpoint(tmp_path)[0] == load_hf_checkpoint(path)[0]


def test_sharded_checkpoints(saved, tmp_path):
    model, path, tokens, expected = saved("qwen2_gqa_untied")
    model.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "hf").glob("model-*.safetensors"))) > 1
    config, params = load_hf_checkpoint(tmp_path / "hf")
    reference = load_hf_checkpoint(path)[1]
    jax.tree.map(np.testing.assert_array_equal, params, reference)

    # Our own sharded export: an index that both loaders read.
    save_hf_checkpoint(config, params, tmp_path / "ours", max_shard_bytes=30_000)
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    jax.tree.map(np.testing.assert_array_equal, load_hf_checkpoint(tmp_path / "ours")[1], reference)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "ours", attn_implementation="eager").eval()
    assert np.abs(torch_logits(reloaded, tokens) - expected).max() <= EXPORT_TOL


def test_bfloat16_checkpoint(tmp_path, monkeypatch):
    model = make_torch_model("qwen3_tied").to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    expected = {k: v.float().numpy() for k, v in model.state_dict().items()}
    config, params = load_hf_checkpoint(tmp_path, param_dtype="bfloat16", dtype="bfloat16")
    assert params["embedding"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(params["embedding"].astype(np.float32),
                                  expected["model.embed_tokens.weight"])
    # The raw-bytes fallback (for safetensors builds whose numpy backend rejects bf16).
    monkeypatch.setattr(hf_io._SafetensorsReader, "get", lambda self, name: hf_io._raw_tensor(
        self.location[name], name))
    _, raw = load_hf_checkpoint(tmp_path, param_dtype="bfloat16")
    jax.tree.map(np.testing.assert_array_equal, raw, params)
    # Export keeps bf16 and transformers reads it back.
    save_hf_checkpoint(config, params, tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    got = {k: v.float().numpy() for k, v in reloaded.state_dict().items()}
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.o_proj.weight"):
        np.testing.assert_array_equal(got[name], expected[name])


def test_tied_file_with_lm_head_and_inv_freq_buffers_loads(saved, tmp_path):
    from safetensors.numpy import load_file, save_file
    _, path, tokens, expected = saved("llama_mha_tied")
    tensors = load_file(path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    config, params = load_hf_checkpoint(tmp_path)
    got = np.asarray(_jit_forward(config, params, jnp.asarray(tokens), mode="causal"))
    assert np.abs(got - expected).max() <= TOL


def test_export_writes_generation_config_and_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "<mask>": 5}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>",
                                                     bos_token="<s>", eos_token="</s>")
    family, extra = CASES["qwen3_tied"]
    config = config_from_hf(hf_config_from_torch(family, extra))
    config = config.replace(mask_token_id=5)
    params = init_params(config, jax.random.PRNGKey(0))
    save_hf_checkpoint(config, params, tmp_path)
    save_hf_checkpoint(config, params, tmp_path, tokenizer=tokenizer)
    generation = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert generation.eos_token_id == [2, 5] and generation.bos_token_id == 1
    assert transformers.AutoTokenizer.from_pretrained(tmp_path)("a b")["input_ids"] == [3, 4]
    loaded, _ = load_hf_checkpoint(tmp_path)
    assert loaded == config  # mask_token_id survives through our extra config.json field


def hf_config_from_torch(family, extra) -> dict:
    return _CONFIGS[family](**{**COMMON, **extra}).to_dict()


def test_table_covers_every_parameter():
    # `entries` raises if the model has a parameter the table does not map.
    for case, (family, extra) in CASES.items():
        config = config_from_hf(hf_config_from_torch(family, extra))
        names = [e.hf_name for e in entries(config)]
        assert len(names) == len(set(names)), case
