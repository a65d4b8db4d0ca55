"""Intermediate states of a block-diffusion trajectory, and choosing the training state x_t.

Everything is rebuilt from (terminal tokens, step map). Two arrays carry the meaning of -1, and
it is the same in every function here:
- step map [B, L]: the round (within its block) at which a token was unmasked; -1 = never decoded
  (padding, or a block after the sequence stopped).
- block round [B, num_blocks]: a state given per block; round r masks the block's tokens with
  step >= r (r = 0: the whole decoded block masked, as round 0 saw it); -1 = no mask in that
  block (the block shown clean, or a block with nothing decoded).
Only decoded positions (step map >= 0) can ever be masked.

`select_states` returns `masked` [B, L] (positions that are masks in x_t). The trajectory
selectors `per_block` and `global_round` also return the chosen `block_round`; `random_masking`
draws masks that are no round of the trajectory, so it returns the mask only.

- `per_block` (reference default): in every decoded block, one of its realised rounds r uniformly;
  the block shows the tokens unmasked before round r. Never the terminal state; >= 1 mask per block.
- `global_round` (paper Alg. 1): one round of the whole trajectory, uniformly; its block is in
  that round's state, earlier blocks are clean and later blocks carry no loss.
- `random` (the OPDLM_off ablation): each block masked by Bernoulli(t), t ~ U(0, 1) per block, at
  least one mask per decoded block; the trajectory's rounds are ignored.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


SELECTIONS = ("per_block", "global_round", "random")


def realised_rounds(step_map: jnp.ndarray, block_size: int) -> jnp.ndarray:
    """Number of rounds each block actually used [B, L // b] (0 for blocks never decoded)."""
    b, length = step_map.shape
    return step_map.reshape(b, length // block_size, block_size).max(-1) + 1


def masked_from_rounds(step_map: jnp.ndarray, block_round: jnp.ndarray, block_size: int) -> jnp.ndarray:
    """The mask of given per-block rounds [B, L] (block round -1 = no mask in that block)."""
    per_pos = jnp.repeat(block_round, block_size, axis=1)
    return (per_pos >= 0) & (step_map >= per_pos) & (step_map >= 0)


def block_round_state(tokens: jnp.ndarray, step_map: jnp.ndarray, block_round: jnp.ndarray,
                      block_size: int, mask_id: int) -> jnp.ndarray:
    """The tokens of the state `block_round` [B, L // b]: masked positions replaced by mask_id."""
    return jnp.where(masked_from_rounds(step_map, block_round, block_size), mask_id, tokens)


def _blocks(x: jnp.ndarray, block_size: int) -> jnp.ndarray:
    return x.reshape(x.shape[0], -1, block_size)


def per_block(step_map: jnp.ndarray, key: jax.Array, block_size: int):
    n = realised_rounds(step_map, block_size)  # [B, nb]
    u = jax.random.uniform(key, n.shape)
    r = jnp.where(n > 0, jnp.minimum(jnp.floor(u * n), n - 1).astype(jnp.int32), -1)
    masked = (step_map >= jnp.repeat(r, block_size, axis=1)) & (step_map >= 0)
    return masked, r


def global_round(step_map: jnp.ndarray, key: jax.Array, block_size: int):
    n = realised_rounds(step_map, block_size)  # rounds per block, in decoding order
    total = n.sum(-1)  # [B]
    g = jnp.minimum(jnp.floor(jax.random.uniform(key, total.shape) * total), total - 1).astype(jnp.int32)
    ends = jnp.cumsum(n, -1)
    block = jnp.sum(ends <= g[:, None], -1)  # the block whose rounds contain round g
    r_in_block = g - jnp.take_along_axis(ends - n, block[:, None], -1)[:, 0]
    nb = n.shape[1]
    r = jnp.where(jnp.arange(nb)[None] == block[:, None], r_in_block[:, None], -1)
    r = jnp.where(total[:, None] > 0, r, -1)
    per_pos = jnp.repeat(r, block_size, axis=1)
    masked = (per_pos >= 0) & (step_map >= per_pos) & (step_map >= 0)
    return masked, r


def random_masking(step_map: jnp.ndarray, key: jax.Array, block_size: int):
    k_t, k_m, k_force = jax.random.split(key, 3)
    decoded = _blocks(step_map >= 0, block_size)  # [B, nb, b]
    t = jax.random.uniform(k_t, decoded.shape[:2])[..., None]
    masked = decoded & (jax.random.uniform(k_m, decoded.shape) < t)
    # At least one mask per decoded block: force a random decoded position when none was drawn.
    score = jnp.where(decoded, jax.random.uniform(k_force, decoded.shape), -1.0)
    forced = jax.nn.one_hot(jnp.argmax(score, -1), block_size, dtype=bool) & decoded
    need = decoded.any(-1, keepdims=True) & ~masked.any(-1, keepdims=True)
    masked = jnp.where(need, forced, masked)
    return masked.reshape(step_map.shape)


def select_states(selection: str, step_map: jnp.ndarray, key: jax.Array, block_size: int):
    fns = {"per_block": per_block, "global_round": global_round, "random": random_masking}
    if selection not in fns:
        raise ValueError(f"unknown state selection {selection!r}; expected one of {SELECTIONS}")
    out = fns[selection](step_map, key, block_size)
    return out if selection == "random" else out[0]


def block_mask_fraction(masked: jnp.ndarray, step_map: jnp.ndarray, block_size: int) -> jnp.ndarray:
    """Per position, the fraction of its block's decoded positions that are masked [B, L]."""
    m = _blocks(masked, block_size).sum(-1)
    d = jnp.maximum(_blocks(step_map >= 0, block_size).sum(-1), 1)
    return jnp.repeat(m / d, block_size, axis=1)
