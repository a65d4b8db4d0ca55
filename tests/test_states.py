"""State selection from step maps: never terminal, >= 1 mask per block, every round reachable."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opdlm_jax.diffusion.states import global_round, masked_from_rounds, per_block, random_masking, select_states

# Two sequences, blocks of 4. Sequence 0: block 0 took 4 rounds, block 1 took 2 rounds (dynamic),
# block 2 one round. Sequence 1: block 0 three rounds, then stopped (blocks 1-2 never decoded).
STEPS = np.array([[3, 0, 2, 1, 0, 1, 1, 0, 0, 0, 0, 0],
                  [0, 2, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1]])


def test_per_block_never_terminal_and_keeps_a_mask():
    for seed in range(50):
        masked, r = per_block(jnp.asarray(STEPS), jax.random.PRNGKey(seed), 4)
        masked, r = np.asarray(masked), np.asarray(r)
        blocks = masked.reshape(2, 3, 4)
        decoded = (STEPS >= 0).reshape(2, 3, 4).any(-1)
        assert (blocks.any(-1) == decoded).all()  # >= 1 mask in every decoded block, none elsewhere
        assert (r[~decoded] == -1).all()
        np.testing.assert_array_equal(masked, np.asarray(masked_from_rounds(jnp.asarray(STEPS), jnp.asarray(r), 4)))


def test_per_block_picks_every_realised_round_uniformly():
    counts = collections.Counter()
    n = 2000
    for seed in range(n // 100):
        keys = jax.random.split(jax.random.PRNGKey(seed), 100)
        rs = jax.vmap(lambda k: per_block(jnp.asarray(STEPS), k, 4)[1])(keys)
        for r in np.asarray(rs)[:, 0, 0]:
            counts[int(r)] += 1
    assert set(counts) == {0, 1, 2, 3}  # 4 realised rounds in block 0 of sequence 0
    for r in range(4):  # uniform: each about n/4 (binomial sd ~19; allow 5 sd)
        assert abs(counts[r] - n / 4) < 100, counts


def test_global_round_masks_exactly_one_block_and_covers_all_rounds():
    seen = collections.Counter()
    for seed in range(300):
        masked, r = global_round(jnp.asarray(STEPS), jax.random.PRNGKey(seed), 4)
        masked, r = np.asarray(masked), np.asarray(r)
        assert ((r >= 0).sum(-1) == 1).all()
        blocks_with_masks = masked.reshape(2, 3, 4).any(-1)
        assert (blocks_with_masks.sum(-1) == 1).all()
        j = int(np.argmax(r[0] >= 0))
        seen[(j, int(r[0, j]))] += 1
    # Sequence 0 has 4 + 2 + 1 = 7 rounds in all: every one is picked.
    assert set(seen) == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (2, 0)}


def test_random_masking_keeps_a_mask_and_varies():
    fractions = []
    for seed in range(100):
        masked = random_masking(jnp.asarray(STEPS), jax.random.PRNGKey(seed), 4)
        masked = np.asarray(masked)
        assert (masked.reshape(2, 3, 4).any(-1) == (STEPS >= 0).reshape(2, 3, 4).any(-1)).all()
        assert not masked[STEPS < 0].any()
        fractions.append(masked[0].mean())
    assert 0.3 < np.mean(fractions) < 0.8 and np.std(fractions) > 0.05


def test_unknown_selection_is_rejected():
    with pytest.raises(ValueError, match="unknown state selection 'all'"):
        select_states("all", jnp.asarray(STEPS), jax.random.PRNGKey(0), 4)
