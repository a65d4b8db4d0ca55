"""KV-cached chunked decoding and left padding reproduce one full forward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opdlm_jax.models import extend, forward, init_cache
from opdlm_jax.models.layer_stack import stack_layers, unstack_layers
from tiny import tiny_model

TOL = 1e-5  # float32, same math in a different order


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("mode,chunk", [("causal", 1), ("block", 4), ("causal", 3)])
def test_chunked_cache_equals_full_forward(family, mode, chunk):
    config, params = tiny_model(family)
    t = 12
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, t), 0, config.vocab_size)
    full = forward(config, params, tokens, mode=mode, block_size=4)
    cache = init_cache(config, 2, 16)
    pieces = []
    for start in range(0, t, chunk):
        pos = jnp.broadcast_to(jnp.arange(start, start + chunk), (2, chunk))
        logits, cache = extend(config, params, cache, tokens[:, start:start + chunk], start, pos,
                               mode=mode, block_size=4)
        pieces.append(logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(pieces, 1)), np.asarray(full), atol=TOL)


def test_unstack_layers_inverts_stack_layers():
    config, params = tiny_model("qwen3")
    back_config, back = unstack_layers(*stack_layers(config, params))
    assert back_config == config
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_scan_layers_and_remat_equal_unrolled():
    config, params = tiny_model("qwen3")
    scanned_config, stacked = stack_layers(config.replace(remat_policy="dots"), params)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 10), 0, config.vocab_size)
    for mode in ("causal", "block"):
        np.testing.assert_allclose(np.asarray(forward(scanned_config, stacked, tokens, mode=mode)),
                                   np.asarray(forward(config, params, tokens, mode=mode)), atol=TOL)
    cache = init_cache(scanned_config, 2, 10)
    pos = jnp.broadcast_to(jnp.arange(10), (2, 10))
    cached, _ = extend(scanned_config, stacked, cache, tokens, 0, pos, mode="block")
    np.testing.assert_allclose(np.asarray(cached), np.asarray(forward(config, params, tokens, mode="block")),
                               atol=TOL)


@pytest.mark.parametrize("mode", ["causal", "block"])
def test_left_padding_is_transparent(mode):
    config, params = tiny_model("qwen2")
    lengths = [9, 5, 2]
    width = 12
    rng = np.random.default_rng(0)
    seqs = [rng.integers(2, config.vocab_size - 1, n) for n in lengths]
    batch = np.zeros((3, width), np.int32)
    valid = np.zeros((3, width), bool)
    for b, s in enumerate(seqs):
        batch[b, width - len(s):] = s
        valid[b, width - len(s):] = True
    padded = forward(config, params, batch, mode=mode, block_size=4, valid=valid)
    for b, s in enumerate(seqs):
        single = forward(config, params, s[None], mode=mode, block_size=4)
        np.testing.assert_allclose(np.asarray(padded[b, width - len(s):]), np.asarray(single[0]), atol=TOL)
        assert np.isfinite(np.asarray(padded[b])).all()


def test_bfloat16_compute_is_close_to_float32():
    config, params = tiny_model("llama")
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 8), 0, config.vocab_size)
    ref = forward(config, params, tokens)
    bf16 = forward(config.replace(dtype="bfloat16"), params, tokens)
    assert bf16.dtype == jnp.float32
    # bfloat16 has an 8-bit mantissa: logits of a random tiny model agree to a few 1e-2.
    np.testing.assert_allclose(np.asarray(bf16), np.asarray(ref), atol=5e-2)


@pytest.mark.parametrize("scan", [False, True])
def test_uncommitted_pass_equals_written_pass_and_leaves_cache(scan):
    """extend(commit=False) (a diffusion round) gives the logits of writing the chunk and
    attending over the cache, also when the chunk's slots hold stale keys from an earlier
    commit, and returns the cache unchanged."""
    config, params = tiny_model("qwen3")
    if scan:
        config, params = stack_layers(config, params)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 12), 0, config.vocab_size)
    pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
    cache = init_cache(config, 2, 16)
    # Commit columns [0, 8): the last 4 play the stale mask block of the diffusion loop.
    _, cache = extend(config, params, cache, tokens[:, :8], 0, pos[:, :8], mode="block")
    chunk, chunk_pos = tokens[:, 8:12][:, ::-1], pos[:, 4:8]
    valid = jnp.array([[True] * 4, [True, True, False, False]])
    written, _ = extend(config, params, cache, chunk, 4, chunk_pos, mode="block", valid=valid)
    peeked, same = extend(config, params, cache, chunk, 4, chunk_pos, mode="block", valid=valid,
                          commit=False)
    np.testing.assert_allclose(np.asarray(peeked), np.asarray(written), atol=TOL)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(cache)):
        assert a is b
