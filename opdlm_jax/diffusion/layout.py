"""The student's 2L training layout `[prompt | x0 | x_t]` (BD3-LM), and where its predictions sit.

One forward pass trains every block's chosen state: the noisy copy x_t of block j attends to the
prompt, to the clean x0 blocks before j, and bidirectionally to itself; clean tokens attend
block-causally among clean tokens (see `models.masks.training_layout`). Position ids of x_t repeat
those of x0. Blocks are aligned to the response start, as in the sampler.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from opdlm_jax.diffusion.rollout_batch import RolloutBatch
from opdlm_jax.models import masks


class TrainingLayout(NamedTuple):
    tokens: jnp.ndarray  # [B, P + 2L]
    positions: jnp.ndarray
    valid: jnp.ndarray
    mask: jnp.ndarray  # [B, T, T] bool


def build_layout(batch: RolloutBatch, masked: jnp.ndarray, mask_id: int, block_size: int) -> TrainingLayout:
    width, length = batch.prompt_tokens.shape[1], batch.response.shape[1]
    noisy_tokens = jnp.where(masked, mask_id, batch.response)
    tokens = jnp.concatenate([batch.prompt_tokens, batch.response, noisy_tokens], 1)
    resp_valid = batch.response_valid
    valid = jnp.concatenate([batch.prompt_valid, resp_valid, resp_valid], 1)
    prompt_pos = masks.positions_from_valid(batch.prompt_valid)
    resp_pos = batch.prompt_lengths[:, None] + jnp.arange(length)[None]
    positions = jnp.concatenate([prompt_pos, resp_pos, resp_pos], 1)
    # Block ids: the prompt counts backwards from the response start; x_t repeats x0's.
    prompt_blocks = masks.response_block_ids(jnp.arange(width), width, block_size)
    resp_blocks = jnp.arange(length) // block_size
    blocks = jnp.broadcast_to(jnp.concatenate([prompt_blocks, resp_blocks, resp_blocks]), tokens.shape)
    noisy = jnp.broadcast_to(jnp.arange(width + 2 * length) >= width + length, tokens.shape)
    mask = masks.with_valid_keys(masks.training_layout(blocks, noisy, blocks, noisy), valid)
    return TrainingLayout(tokens, positions, valid, mask)


def layout_structure(width: int, length: int, block_size: int) -> masks.StaticMask:
    """The static column pattern of `build_layout`'s mask (what splash attention compiles)."""
    return masks.StaticMask("training_layout", block_size, offset=width, length=length)


def student_prediction_columns(width: int, length: int, block_size: int, alignment: str) -> jnp.ndarray:
    """Column of the layout whose output predicts response token i, for i in [0, L).

    same_position: the noisy copy of i itself. shifted: the column before i in the state the
    sampler scored: inside a block that is the noisy copy of i - 1; at a block start it is the
    clean previous token (x0, or the last prompt token for i = 0), exactly the sampler's carry.
    """
    i = jnp.arange(length)
    noisy_col = width + length + i
    if alignment == "same_position":
        return noisy_col
    if alignment != "shifted":
        raise ValueError(f"unknown alignment {alignment!r}")
    return jnp.where(i % block_size == 0, width + i - 1, noisy_col - 1)
