"""Teacher scoring in slices: the same hidden states as one whole-batch forward (and as one forward
per sequence), on one device and sharded over 8 fake devices, with smaller compiled temporaries."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opdlm_jax.decoding import SamplerConfig
from opdlm_jax.distill.teacher import teacher_target_columns
from opdlm_jax.distill.opd_loss import LossConfig, rollout_batch_from_lists
from opdlm_jax.distill.teacher import teacher_hidden
from opdlm_jax.models import forward
from opdlm_jax.train.step import StepConfig
from opdlm_jax.train.config import ConfigError, default_config, validate_config
from tests_configs_loader import load_config
from tiny import tiny_model

STOP = 1


def _batch(size, prompt_max=7, length=8, seed=0):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(2, 90, n).tolist() for n in rng.integers(1, prompt_max + 1, size)]
    responses = [rng.integers(2, 90, length).tolist() for _ in range(size)]
    steps = [[0] * length for _ in range(size)]
    return rollout_batch_from_lists(prompts, responses, steps, block_size=4, pad_id=0, stop_ids=(STOP,))


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", seed=3)


@pytest.mark.parametrize("slice_size", [1, 2, 4])
def test_slices_equal_the_whole_batch_and_each_sequence(model, slice_size):
    config, params = model
    batch = _batch(8)
    whole = np.asarray(teacher_hidden(config, params, batch))
    sliced = np.asarray(teacher_hidden(config, params, batch, slice_size))
    np.testing.assert_allclose(sliced, whole, atol=1e-5)  # float32; only the matmul batch differs
    # Row i is sequence i: one forward per sequence, no batching at all.
    cols = teacher_target_columns(batch.prompt_tokens.shape[1], batch.response.shape[1])
    for i in range(8):
        tokens = jnp.concatenate([batch.prompt_tokens[i:i + 1], batch.response[i:i + 1]], 1)
        valid = jnp.concatenate([batch.prompt_valid[i:i + 1], batch.response_valid[i:i + 1]], 1)
        alone = forward(config, params, tokens, mode="causal", valid=valid, return_hidden=True)[0, cols]
        np.testing.assert_allclose(sliced[i], np.asarray(alone), atol=1e-5)


def test_slice_size_must_divide_the_batch(model):
    config, params = model
    with pytest.raises(ValueError, match="teacher slice_size=3 does not divide the rollout batch 8"):
        teacher_hidden(config, params, _batch(8), 3)
    assert teacher_hidden(config, params, _batch(4), 16).shape[0] == 4  # >= batch: one forward


def test_step_config_slice_default_and_validation():
    base = dict(sampler=SamplerConfig(), loss=LossConfig(), max_new_tokens=8, minibatch_size=4, mask_id=96,
                pad_id=0, stop_ids=(STOP,))
    assert StepConfig(**base).teacher_slice_size == 4
    assert StepConfig(**base, teacher_slice=0).teacher_slice_size == 0
    with pytest.raises(ValueError, match="teacher_slice must be >= 0"):
        StepConfig(**base, teacher_slice=-1)


def test_slices_shrink_the_compiled_temporaries(model):
    config, params = model
    batch = _batch(16, prompt_max=60, length=64)

    def temp_bytes(slice_size):
        compiled = jax.jit(lambda p, b: teacher_hidden(config, p, b, slice_size)).lower(params, batch).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    whole, sliced = temp_bytes(0), temp_bytes(2)
    # Attention scores and activations of 2 sequences instead of 16 (the [16, L, d] output is the
    # same for both and is not a temporary).
    assert sliced < 0.35 * whole, (sliced, whole)


def test_sharded_slices_equal_single_device(model):
    from opdlm_jax.sharding import batch_sharding, make_mesh, param_shardings, rules_context

    config, params = model
    batch = _batch(16)
    reference = np.asarray(teacher_hidden(config, params, batch))
    mesh = make_mesh(4, 1, 2)
    sharded_batch = type(batch)(*(jax.device_put(x, batch_sharding(mesh, x.ndim)) for x in batch))
    p = jax.device_put(params, param_shardings(config, mesh))
    with rules_context(mesh):
        out = jax.jit(lambda p, b: teacher_hidden(config, p, b, 4))(p, sharded_batch)
    assert out.sharding.spec[0] is not None  # the output stays sharded over the batch
    np.testing.assert_allclose(np.asarray(out), reference, atol=1e-5)


def test_trainer_config_teacher_slice():
    config = load_config(Path(__file__).resolve().parents[1] / "experiments/configs/table1.py", "qwen3-4b")
    assert config.teacher_slice is None  # the minibatch (8 of the recipe's 128 rollouts)
    for bad in (-1, 48):
        config.teacher_slice = bad
        with pytest.raises(ConfigError, match=f"teacher_slice={bad} must be None"):
            validate_config(config)
    config.teacher_slice = 32
    validate_config(config)
    config.teacher_slice = None  # a placeholder: None and ints both allowed
    validate_config(config)
    assert default_config().teacher_slice is None
