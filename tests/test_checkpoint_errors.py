"""Every bad checkpoint fails loudly, naming the tensor or file at fault."""
import json
import os
import re

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from opdlm_jax.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from opdlm_jax.checkpoints.hf_mapping import (CheckpointError, config_from_hf, hf_config_from,
                                              hf_tensors_from_params, params_from_hf_tensors)
from tiny import tiny_model

ST = "model.safetensors"


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen2")


@pytest.fixture
def ckpt(model, tmp_path):
    save_hf_checkpoint(*model, tmp_path)
    return tmp_path


def rewrite(path, edit):
    tensors = load_file(path / ST)
    edit(tensors)
    save_file(tensors, path / ST, metadata={"format": "pt"})


def test_good_checkpoint_loads(ckpt, model):
    config, params = load_hf_checkpoint(ckpt)
    assert config == model[0]
    jax.tree.map(np.testing.assert_array_equal, params, jax.tree.map(np.asarray, model[1]))


def test_missing_tensor(ckpt):
    rewrite(ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf_checkpoint(ckpt)


def test_unexpected_tensor(ckpt):
    rewrite(ckpt, lambda t: t.update({"model.layers.0.self_attn.o_proj.bias": np.zeros(32, np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*model\.layers\.0\.self_attn\.o_proj\.bias"):
        load_hf_checkpoint(ckpt)


def test_untied_lm_head_in_tied_model_is_only_ok_when_tied(model):
    config, params = model  # untied: lm_head.weight is required, so drop it -> missing
    tensors = dict(hf_tensors_from_params(config, params))
    del tensors["lm_head.weight"]
    with pytest.raises(CheckpointError, match=r"missing tensor.*lm_head\.weight"):
        params_from_hf_tensors(config, tensors.__getitem__, tensors)
    # Tied: lm_head.weight is accepted whether present or not.
    tied = config.replace(tie_word_embeddings=True)
    params_from_hf_tensors(tied, tensors.__getitem__, tensors)
    with_head = {**tensors, "lm_head.weight": tensors["model.embed_tokens.weight"]}
    params_from_hf_tensors(tied, with_head.__getitem__, with_head)


def test_shape_mismatch(ckpt):
    rewrite(ckpt, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": np.zeros((8, 32), np.float32)}))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*model\.layers\.0\.self_attn\.k_proj\.weight"
                                              r".*expected \(16, 32\), got \(8, 32\)"):
        load_hf_checkpoint(ckpt)


def test_tensor_errors_without_files(model):
    # The GGUF loader calls params_from_hf_tensors directly with its own getter.
    config, params = model
    tensors = dict(hf_tensors_from_params(config, params))
    tensors["model.norm.weight"] = np.zeros(31, np.float32)
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight: expected \(32,\), got \(31,\)"):
        params_from_hf_tensors(config, tensors.__getitem__, tensors)


def test_unsupported_architecture():
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        config_from_hf({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})


def test_unsupported_features(model):
    hf = hf_config_from(model[0])
    with pytest.raises(ValueError, match="yarn"):
        config_from_hf({**hf, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    llama = hf_config_from(model[0].replace(family="llama", attention_bias=False))
    with pytest.raises(ValueError, match="o_proj"):
        config_from_hf({**llama, "attention_bias": True})
    with pytest.raises(ValueError, match="sliding"):
        config_from_hf({**hf, "use_sliding_window": True})
    with pytest.raises(TypeError, match="mask_token"):
        config_from_hf(hf, mask_token=3)


def test_unsupported_architecture_in_checkpoint(ckpt):
    hf = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**hf, "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(ValueError, match="MambaForCausalLM"):
        load_hf_checkpoint(ckpt)


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_hf_checkpoint(missing)


def test_no_config_json(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_hf_checkpoint(ckpt)


def test_bad_config_json(ckpt):
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_hf_checkpoint(ckpt)


def test_no_weights_file(ckpt):
    (ckpt / ST).rename(ckpt / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"no weights file.*model\.safetensors.*pytorch_model\.bin"):
        load_hf_checkpoint(ckpt)


@pytest.mark.parametrize("keep", [0.5, 0.99, 20])
def test_corrupt_safetensors(ckpt, keep):
    data = (ckpt / ST).read_bytes()
    (ckpt / ST).write_bytes(data[:int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(CheckpointError, match=r"corrupt or truncated.*model\.safetensors"):
        load_hf_checkpoint(ckpt)


@pytest.fixture
def sharded(model, tmp_path):
    save_hf_checkpoint(*model, tmp_path, max_shard_bytes=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    return tmp_path, shards


def test_index_points_to_missing_shard(sharded):
    path, shards = sharded
    os.remove(path / shards[1])
    with pytest.raises(FileNotFoundError, match=re.escape(shards[1]) + r".*index\.json"):
        load_hf_checkpoint(path)


def test_truncated_shard(sharded):
    path, shards = sharded
    data = (path / shards[-1]).read_bytes()
    (path / shards[-1]).write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=re.escape(shards[-1])):
        load_hf_checkpoint(path)


def test_index_lists_tensor_absent_from_shards(sharded):
    path, shards = sharded
    index_file = path / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    index["weight_map"]["model.layers.7.mlp.up_proj.weight"] = shards[0]
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model\.layers\.7\.mlp\.up_proj\.weight"):
        load_hf_checkpoint(path)
