"""Splash attention (the TPU block-sparse kernel, here in Pallas interpret mode) against the dense
path: the static mask patterns, the kernel, and the OPD loss with its gradient, on ragged
(left-padded prompts, right-padded responses) batches. Float32; max |diff| <= 1e-5 on every real
token's row (padding rows are read by nobody and may differ).

Kept small for CPU time: head_dim 16, sequence lengths at or just under one 128-wide kernel block.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opdlm_jax.diffusion.layout import build_layout, layout_structure
from opdlm_jax.diffusion.rollout_batch import RolloutBatch
from opdlm_jax.distill.opd_loss import LossConfig, opd_loss, rollout_batch_from_lists
from opdlm_jax.distill.teacher import teacher_hidden
from opdlm_jax.models import masks
from opdlm_jax.models.attention_choice import use_splash
from opdlm_jax.models.forward import forward
from opdlm_jax.models.splash import splash_attention
from opdlm_jax.sharding import make_mesh, rules_context
from tiny import tiny_model

TOL = 1e-5
MASK, STOP, BLOCK = 96, 1, 4


def ragged_valid(width: int, prompt_lens, total: int, response_lens) -> np.ndarray:
    """[B, total]: left-padded prompts in [0, width), then right-padded responses."""
    valid = np.zeros((len(prompt_lens), total), bool)
    for row, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        valid[row, width - p:width + r] = True
    return valid


# ---------------------------------------------------------------------------------------------
# Static patterns (no kernel): StaticMask AND key validity == the dense masks on real rows
# ---------------------------------------------------------------------------------------------

def test_causal_structure_equals_position_causal_on_real_rows():
    valid = ragged_valid(8, [8, 3, 0, 5], 20, [12, 4, 7, 0])
    pos = masks.positions_from_valid(jnp.asarray(valid))
    dense = np.asarray(masks.with_valid_keys(masks.causal(pos, pos), jnp.asarray(valid)))
    static = np.asarray(masks.StaticMask("causal").dense(jnp.asarray(valid)))
    np.testing.assert_array_equal(static[valid], dense[valid])


@pytest.mark.parametrize("block_size,width", [(1, 0), (4, 6), (3, 7)])
def test_block_causal_structure_equals_response_aligned_blocks(block_size, width):
    valid = jnp.asarray(ragged_valid(width, [width, width // 2], width + 13, [13, 5]))
    blocks = jnp.broadcast_to(masks.response_block_ids(jnp.arange(width + 13), width, block_size), valid.shape)
    dense = masks.with_valid_keys(masks.block_causal(blocks, blocks), valid)
    static = masks.StaticMask("block_causal", block_size, offset=width).dense(valid)
    np.testing.assert_array_equal(np.asarray(static), np.asarray(dense))


@pytest.mark.parametrize("block_size,width,length", [(4, 8, 12), (3, 3, 9), (2, 6, 6)])
def test_training_layout_structure_equals_build_layout(block_size, width, length):
    valid = ragged_valid(width, [width, 1], width + length, [length, length - 5])
    steps = np.where(valid[:, width:], 0, -1)
    batch = RolloutBatch(jnp.full((2, width), 5), jnp.asarray(valid[:, :width]), jnp.full((2, length), 7),
                         jnp.asarray(steps), jnp.asarray([length, length - 5]))
    layout = jax.jit(build_layout, static_argnums=(2, 3))(batch, jnp.zeros((2, length), bool), MASK, block_size)
    static = layout_structure(width, length, block_size).dense(layout.valid)
    np.testing.assert_array_equal(np.asarray(static), np.asarray(layout.mask))


def test_auto_is_dense_off_tpu_and_unchanged():
    config, params = tiny_model("qwen3")
    assert not use_splash(config) and use_splash(config.replace(attention="splash"))
    assert not use_splash(config.replace(attention="dense"))
    with rules_context(make_mesh(data=2, devices=jax.devices()[:2])):
        assert not use_splash(config)
    tokens = jnp.arange(12).reshape(2, 6) % 90
    valid = jnp.asarray(ragged_valid(3, [3, 1], 6, [3, 3]))
    auto = jax.jit(lambda p: forward(config, p, tokens, valid=valid))(params)
    dense = jax.jit(lambda p: forward(config.replace(attention="dense"), p, tokens, valid=valid))(params)
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(dense))  # bit for bit
    with pytest.raises(ValueError, match="attention"):
        config.replace(attention="flash")


# ---------------------------------------------------------------------------------------------
# The kernel: forward and gradients against dense softmax attention
# ---------------------------------------------------------------------------------------------

def dense_attention(q, k, v, mask):
    b, t, h, hd = q.shape
    kv = k.shape[2]
    scores = jnp.einsum("btkgd,bskd->bkgts", q.reshape(b, t, kv, h // kv, hd), k) * hd ** -0.5
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    return jnp.einsum("bkgts,bskd->btkgd", jax.nn.softmax(scores, -1), v).reshape(b, t, h, hd)


def test_block_causal_kernel_matches_dense_under_a_mesh():
    """Block-causal kernel, batch split over 2 devices (the shard_map path TPU takes)."""
    structure = masks.StaticMask("block_causal", BLOCK, offset=32)
    t, h, kv, hd = 128, 4, 2, 16
    q, k, v = (jax.random.normal(key, (2, t, n, hd))
               for key, n in zip(jax.random.split(jax.random.PRNGKey(0), 3), (h, kv, kv)))
    valid = jnp.asarray(ragged_valid(32, [32, 9], t, [96, 50]))
    weights = valid[:, :, None, None]

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)) * weights)

    dense = lambda q, k, v: dense_attention(q, k, v, structure.dense(valid))
    with rules_context(make_mesh(data=2, devices=jax.devices()[:2])):
        splash = jax.jit(lambda q, k, v: splash_attention(q, k, v, valid, structure, interpret=True))
        out = splash(q, k, v)
        grads = jax.jit(jax.grad(loss(splash), argnums=(0, 1, 2)))(q, k, v)
    want_grads = jax.grad(loss(dense), argnums=(0, 1, 2))(q, k, v)
    assert float(jnp.max(jnp.abs(out - dense(q, k, v)) * weights)) <= TOL
    for got, want in zip(grads, want_grads):
        assert float(jnp.max(jnp.abs(got - want))) <= TOL


# ---------------------------------------------------------------------------------------------
# The model: teacher (causal) and student (2L layout) hidden states, the OPD loss and its gradient
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ragged_batch():
    # Prompt width 32 (a block multiple), L = 48: the 2L layout is 128 columns (one kernel block),
    # the teacher's [prompt | x0] 80 (padded to 128 inside the wrapper).
    rng = np.random.default_rng(0)
    prompts = [rng.integers(2, 90, n).tolist() for n in (32, 11, 3)]
    lengths = (48, 30, 13)
    responses = [rng.integers(2, 90, 48).tolist() for _ in lengths]
    steps = [[int(i % BLOCK) if i < n else -1 for i in range(48)] for n in lengths]
    batch = rollout_batch_from_lists(prompts, responses, steps, block_size=BLOCK, pad_id=0,
                                     stop_ids=(STOP,), response_width=48)
    masked = jnp.asarray(rng.random((3, 48)) < 0.5) & batch.response_valid
    return batch, masked


def test_opd_loss_and_gradient_match_dense(ragged_batch):
    batch, masked = ragged_batch
    config, params = tiny_model("qwen3", seed=2, scan_layers=True)  # GQA: 4 query, 2 KV heads
    loss_cfg = LossConfig(block_size=BLOCK, alignment="shifted", chunk_size=16)

    def run(attention):
        cfg = config.replace(attention=attention)

        def value(p):
            return opd_loss(cfg, p, cfg, params, batch, masked, mask_id=MASK, stop_ids=(STOP,), loss=loss_cfg)

        (loss, aux), grads = jax.jit(jax.value_and_grad(value, has_aux=True))(params)
        return loss, aux, grads, jax.jit(lambda p: teacher_hidden(cfg, p, batch))(params)

    d_loss, d_aux, d_grads, d_teacher = run("dense")
    s_loss, s_aux, s_grads, s_teacher = run("splash")
    assert int(d_aux["loss_positions"]) > 40
    response_valid = np.asarray(batch.response_valid)
    assert np.max(np.abs(np.asarray(s_teacher - d_teacher))[response_valid]) <= TOL
    loss_mask = np.asarray(d_aux["loss_mask"])
    np.testing.assert_array_equal(np.asarray(s_aux["loss_mask"]), loss_mask)
    per_position = np.abs(np.asarray(s_aux["per_position"] - d_aux["per_position"]))
    assert np.max(per_position[loss_mask]) <= TOL
    assert abs(float(s_loss) - float(d_loss)) <= TOL
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), s_grads, d_grads))
    assert max(diffs) <= TOL, max(diffs)
