"""Intermediate states of a block-diffusion trajectory, rebuilt from (tokens, step map).

A token whose step-map value is r was unmasked in round r of its block, so the state that round r
of block j saw has every token of block j with step >= r masked, earlier blocks clean, and later
blocks not yet started.
"""
from __future__ import annotations

import jax.numpy as jnp


def block_round_state(tokens: jnp.ndarray, step_map: jnp.ndarray, block_round: jnp.ndarray,
                      block_size: int, mask_id: int) -> jnp.ndarray:
    """Mask, in every block j, the tokens with step >= block_round[:, j].

    tokens, step_map: [B, L]; block_round: [B, L // block_size]. Positions with step map -1
    (never decoded) are left as they are.
    """
    per_position = jnp.repeat(block_round, block_size, axis=1)
    masked = (step_map >= per_position) & (step_map >= 0)
    return jnp.where(masked, mask_id, tokens)


def realised_rounds(step_map: jnp.ndarray, block_size: int) -> jnp.ndarray:
    """Number of rounds each block actually used [B, L // b] (0 for blocks never decoded)."""
    b, length = step_map.shape
    return step_map.reshape(b, length // block_size, block_size).max(-1) + 1
