"""Attention masks as pure functions of per-token metadata.

Every mask answers "may query q attend to key k?" from small per-token arrays, never from the
token values, so the same functions serve a full forward, a KV-cached step and the 2L training
layout. Shapes: per-token arrays are [B, T]; masks are boolean [B, Tq, Tk].

Block convention (shared by rollout and training): a token's block id is supplied by the caller.
`forward` defaults to `position // block_size`; the sampler and the OPD step align blocks to the
*response start* (the prompt is split into blocks counting backwards from its end), which they
realise by left-padding every prompt to a common width that is a multiple of the block size, so
that a column's block is simply `(column - prompt_width) // block_size`.
"""
from __future__ import annotations

import jax.numpy as jnp


def causal(q_pos: jnp.ndarray, k_pos: jnp.ndarray) -> jnp.ndarray:
    """Autoregressive: a key is visible when its position is not after the query's."""
    return k_pos[:, None, :] <= q_pos[:, :, None]


def block_causal(q_block: jnp.ndarray, k_block: jnp.ndarray) -> jnp.ndarray:
    """Bidirectional inside a block, causal across blocks."""
    return k_block[:, None, :] <= q_block[:, :, None]


def training_layout(q_block: jnp.ndarray, q_noisy: jnp.ndarray,
                    k_block: jnp.ndarray, k_noisy: jnp.ndarray) -> jnp.ndarray:
    """The 2L `[prompt | x0 | x_t]` layout (BD3-LM).

    Clean tokens (prompt and x0) attend block-causally among clean tokens. A noisy token of block
    j attends to the clean tokens of blocks < j and bidirectionally to the noisy tokens of block
    j. Clean tokens never see noisy ones.
    """
    qb, kb = q_block[:, :, None], k_block[:, None, :]
    qn, kn = q_noisy[:, :, None], k_noisy[:, None, :]
    clean_query = ~qn & ~kn & (kb <= qb)
    noisy_query = qn & ((kn & (kb == qb)) | (~kn & (kb < qb)))
    return clean_query | noisy_query


def with_valid_keys(mask: jnp.ndarray, k_valid: jnp.ndarray) -> jnp.ndarray:
    """Hide padding (and empty cache slots) from every query."""
    return mask & k_valid[:, None, :]


def positions_from_valid(valid: jnp.ndarray) -> jnp.ndarray:
    """Position ids that count real tokens only (left padding gets position 0, never attended)."""
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)


def response_block_ids(columns: jnp.ndarray, prompt_width: int, block_size: int) -> jnp.ndarray:
    """Block id of each column when blocks are aligned to the response start at `prompt_width`."""
    return jnp.floor_divide(columns - prompt_width, block_size)
