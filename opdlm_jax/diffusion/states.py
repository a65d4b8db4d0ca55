"""Choosing the training state x_t of each rollout from (terminal tokens, step map).

All selectors return `masked` [B, L] (positions that are masks in x_t) and `block_round`
[B, num_blocks] (the chosen round per block; -1 where the block keeps no mask). Only decoded
positions (step map >= 0) can be masked.

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

from opdlm_jax.diffusion.trajectory import realised_rounds

SELECTIONS = ("per_block", "global_round", "random")


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
    r = jnp.where(decoded.any(-1), 0, -1)
    return masked.reshape(step_map.shape), r


def select_states(selection: str, step_map: jnp.ndarray, key: jax.Array, block_size: int):
    fns = {"per_block": per_block, "global_round": global_round, "random": random_masking}
    if selection not in fns:
        raise ValueError(f"unknown state selection {selection!r}; expected one of {SELECTIONS}")
    return fns[selection](step_map, key, block_size)


def masked_from_rounds(step_map: jnp.ndarray, block_round: jnp.ndarray, block_size: int) -> jnp.ndarray:
    """The mask of given per-block rounds (-1 = no mask in that block)."""
    per_pos = jnp.repeat(block_round, block_size, axis=1)
    return (per_pos >= 0) & (step_map >= per_pos) & (step_map >= 0)


def block_mask_fraction(masked: jnp.ndarray, step_map: jnp.ndarray, block_size: int) -> jnp.ndarray:
    """Per position, the fraction of its block's decoded positions that are masked [B, L]."""
    m = _blocks(masked, block_size).sum(-1)
    d = jnp.maximum(_blocks(step_map >= 0, block_size).sum(-1), 1)
    return jnp.repeat(m / d, block_size, axis=1)
