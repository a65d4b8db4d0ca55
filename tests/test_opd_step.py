"""The OPD loss on fixed rollouts (alignment, loss positions) and the fused, sharded OPD step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opdlm_jax import opd_loss_from_rollouts
from opdlm_jax.decoding import SamplerConfig
from opdlm_jax.decoding.batching import left_pad
from opdlm_jax.diffusion.layout import student_prediction_columns
from opdlm_jax.distill.opd_loss import LossConfig, rollout_batch_from_lists
from opdlm_jax.distill.teacher import teacher_hidden, teacher_target_columns
from opdlm_jax.train.optimizer import OptimizerConfig, make_optimizer
from opdlm_jax.train.state import init_train_state, train_state_shardings
from opdlm_jax.train.step import StepConfig, full_budget_inputs, make_opd_step
from tiny import tiny_model

MASK, STOP = 96, 1
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12]]
RESPONSES = [[20, 21, 22, 23, 24, 25, 26, 27], [30, 31, 32, 33, 34, 35, 36, 37]]
STEPS = [[0, 1, 2, 3, 1, 0, 1, 0], [2, 0, 1, 3, 0, 0, 0, 0]]


@pytest.fixture(scope="module")
def model():
    config, params = tiny_model("llama", seed=1)
    # Peaked output distributions, so that wrong alignments cost a clearly non-zero KL.
    return config, dict(params, lm_head=params["lm_head"] * 20.0)


def test_prediction_and_target_columns():
    # P=4, L=8, b=4: x0 at columns 4..11, x_t at 12..19.
    assert teacher_target_columns(4, 8).tolist() == [3, 4, 5, 6, 7, 8, 9, 10]
    assert student_prediction_columns(4, 8, 4, "same_position").tolist() == list(range(12, 20))
    # shifted: block starts read the clean previous token, other positions the noisy one before.
    assert student_prediction_columns(4, 8, 4, "shifted").tolist() == [3, 12, 13, 14, 7, 16, 17, 18]


def test_student_equal_to_aligned_teacher_has_zero_loss(model):
    # Shifted alignment with blocks of 1: every position is a block start, so the student's
    # prediction of token i is its clean pass at i-1 = the causal teacher's aligned target.
    config, params = model
    steps = [[0] * 8, [0] * 8]
    loss = LossConfig(block_size=1, alignment="shifted", chunk_size=3)
    value, aux = opd_loss_from_rollouts(config, params, config, params, PROMPTS, RESPONSES, steps,
                                        mask_id=MASK, stop_ids=(STOP,), loss=loss)
    assert int(aux["loss_positions"]) == 16
    assert abs(float(value)) < 1e-5
    # The same student against the target one position off is far from zero.
    batch = rollout_batch_from_lists(PROMPTS, RESPONSES, steps, block_size=1, pad_id=0, stop_ids=(STOP,))
    t_hidden = teacher_hidden(config, params, batch)
    off_by_one = jnp.roll(t_hidden, 1, axis=1)
    from opdlm_jax.distill.opd_loss import opd_loss

    off_value, _ = opd_loss(config, params, config, params, batch, aux["masked"], mask_id=MASK,
                            stop_ids=(STOP,), loss=loss, teacher_states=off_by_one)
    assert float(off_value) > 0.1


def test_same_position_student_is_not_the_teacher(model):
    config, params = model
    value, aux = opd_loss_from_rollouts(config, params, config, params, PROMPTS, RESPONSES, STEPS,
                                        mask_id=MASK, stop_ids=(STOP,), loss=LossConfig(chunk_size=4),
                                        chosen_rounds=[[0, 0], [0, 0]])
    assert float(value) > 0.1 and int(aux["loss_positions"]) == 16


def test_chosen_rounds_define_the_masks_and_stop_in_mid_block_is_excluded(model):
    config, params = model
    responses = [[20, 21, STOP, 23, 24, 25, 26, 27], RESPONSES[1]]  # stop at position 2 of block 0
    value, aux = opd_loss_from_rollouts(config, params, config, params, PROMPTS, responses, STEPS,
                                        mask_id=MASK, stop_ids=(STOP,), loss=LossConfig(chunk_size=4),
                                        chosen_rounds=[[1, 0], [2, 0]])
    masked = np.asarray(aux["masked"])
    # Sequence 0, block 0 at round 1: steps [0,1,2,3] -> positions 1,2,3 masked; block 1 all.
    assert masked[0].tolist() == [False, True, True, True, True, True, True, True]
    assert masked[1, :4].tolist() == [True, False, False, True]
    mask = np.asarray(aux["loss_mask"])
    # Only position 1 of sequence 0 precedes the stop token; the stop and everything after are out.
    assert mask[0].tolist() == [False, True] + [False] * 6
    assert mask[1].tolist() == [True, False, False, True] + [True] * 4
    per_pos = np.asarray(aux["per_position"])
    expected = (per_pos[0, 1] + per_pos[1][mask[1]].mean()) / 2  # per-sequence mean, then batch mean
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)


def test_empty_row_counts_as_zero_in_the_reference_normalisation(model):
    """The reference's "sequence" mode is loss_unreduced.mean() over ALL rows: a response that
    starts with the stop token has no loss position and adds 0 to the sum while still counting
    in the denominator. The same-position values are fixed by the chosen states, so the expected
    loss is computed by hand from the per-position divergences."""
    config, params = model
    responses = [[STOP, 21, 22, 23, 24, 25, 26, 27], RESPONSES[1]]  # row 0: stop first, nothing to learn
    common = dict(mask_id=MASK, stop_ids=(STOP,), chosen_rounds=[[0, 0], [0, 0]])
    value, aux = opd_loss_from_rollouts(config, params, config, params, PROMPTS, responses, STEPS,
                                        loss=LossConfig(chunk_size=4), **common)
    mask, per_pos = np.asarray(aux["loss_mask"]), np.asarray(aux["per_position"], np.float64)
    assert not mask[0].any() and mask[1].sum() == 8
    row1 = per_pos[1][mask[1]].sum() / 8
    np.testing.assert_allclose(float(value), (0.0 + row1) / 2, rtol=1e-6)  # two rows, one empty
    nonempty, _ = opd_loss_from_rollouts(config, params, config, params, PROMPTS, responses, STEPS,
                                         loss=LossConfig(chunk_size=4, normalisation="sequence_nonempty"),
                                         **common)
    np.testing.assert_allclose(float(nonempty), row1, rtol=1e-6)  # our former default: 2x here
    assert LossConfig().normalisation == "sequence"


def _step_setup(config, batch_size=8, minibatch=4):
    cfg = StepConfig(sampler=SamplerConfig(strategy="low_confidence_dynamic", threshold=0.5),
                     loss=LossConfig(chunk_size=8), max_new_tokens=8, minibatch_size=minibatch,
                     mask_id=MASK, pad_id=0, stop_ids=(STOP,))
    optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-2, warmup_steps=1, total_steps=10))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(2, 90, n).tolist() for n in rng.integers(1, 8, batch_size)]
    tokens, valid = left_pad(prompts, 8, 0)
    return cfg, optimizer, full_budget_inputs(tokens, valid, cfg.max_new_tokens)


def test_step_trains_and_is_deterministic(model):
    config, params = model
    cfg, optimizer, inputs = _step_setup(config)
    step = make_opd_step(config, config, cfg, optimizer)
    teacher = jax.tree.map(jnp.copy, params)
    results = []
    for _ in range(2):
        state = init_train_state(jax.tree.map(jnp.copy, params), optimizer)
        state, m = step(state, teacher, inputs, jax.random.PRNGKey(0))
        results.append((state, m))
    assert int(results[0][0].step) == 2  # K = 8 / 4 updates
    assert np.isfinite(float(results[0][1]["loss"])) and float(results[0][1]["loss"]) > 0
    for a, b in zip(jax.tree.leaves(results[0][0].params), jax.tree.leaves(results[1][0].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(results[0][0].params),
                                                             jax.tree.leaves(params)))
    assert moved > 1e-4


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 4, 2)])
def test_sharded_step_equals_single_device(model, mesh_shape):
    from opdlm_jax.sharding import make_mesh, param_shardings
    from opdlm_jax.train.step import step_inputs_shardings

    config, params = model
    cfg, optimizer, inputs = _step_setup(config)
    teacher = jax.tree.map(jnp.copy, params)

    single = make_opd_step(config, config, cfg, optimizer)
    state = init_train_state(jax.tree.map(jnp.copy, params), optimizer)
    for i in range(2):
        state, _ = single(state, teacher, inputs, jax.random.PRNGKey(i))
    reference = jax.tree.map(np.asarray, state.params)

    mesh = make_mesh(*mesh_shape)
    p_shard = param_shardings(config, mesh)
    abstract = jax.eval_shape(lambda p: init_train_state(p, optimizer), params)
    s_shard = train_state_shardings(abstract, p_shard, optimizer, mesh)
    sharded = make_opd_step(config, config, cfg, optimizer, state_shardings=s_shard,
                            teacher_shardings=p_shard, mesh=mesh)
    state = jax.device_put(init_train_state(jax.tree.map(jnp.copy, params), optimizer), s_shard)
    teacher_sharded = jax.device_put(teacher, p_shard)
    sharded_inputs = jax.device_put(inputs, step_inputs_shardings(mesh))
    for i in range(2):
        state, _ = sharded(state, teacher_sharded, sharded_inputs, jax.random.PRNGKey(i))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference)):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-5)
