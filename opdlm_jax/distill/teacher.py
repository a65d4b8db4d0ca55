"""Teacher scoring: a causal forward of the frozen AR model over prompt + terminal response.

The whole rollout batch at once makes the attention scores of every sequence live together (on
TPU, at the recipe's 128 rollouts x 4.5k tokens, most of the step's temporaries). `slice_size`
scores the batch `slice_size` sequences at a time in a `lax.map`; each slice takes one sequence
from every equal share of the batch, so a batch sharded over devices stays spread over all of them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from opdlm_jax.diffusion.rollout_batch import RolloutBatch
from opdlm_jax.models import forward
from opdlm_jax.models.config import ModelConfig


def teacher_target_columns(width: int, length: int) -> jnp.ndarray:
    """In the causal teacher pass over [prompt | x0], column P + i - 1 predicts response token i."""
    return width + jnp.arange(length) - 1


def teacher_hidden(config: ModelConfig, params: dict, batch: RolloutBatch, slice_size: int = 0) -> jnp.ndarray:
    """Final hidden states [B, L, d] whose logits are p_AR(. | prompt, x0[<i]) for response token i.

    No gradient reaches the teacher. Logits are formed later, chunk by chunk, by the loss.
    slice_size: sequences per teacher forward (0 or >= B: the whole batch in one forward).
    """
    params = jax.lax.stop_gradient(params)
    tokens = jnp.concatenate([batch.prompt_tokens, batch.response], 1)
    valid = jnp.concatenate([batch.prompt_valid, batch.response_valid], 1)
    cols = teacher_target_columns(batch.prompt_tokens.shape[1], batch.response.shape[1])

    def score(tok, val):
        return forward(config, params, tok, mode="causal", valid=val, return_hidden=True)[:, cols]

    size = tokens.shape[0]
    if not slice_size or slice_size >= size:
        return jax.lax.stop_gradient(score(tokens, valid))
    if size % slice_size:
        raise ValueError(f"teacher slice_size={slice_size} does not divide the rollout batch {size}")
    slices = size // slice_size
    # Slice j holds sequences j, j + slices, j + 2 * slices, ...: one from every contiguous share.
    to_slices = lambda x: x.reshape(slice_size, slices, *x.shape[1:]).swapaxes(0, 1)
    hidden = jax.lax.map(lambda xs: score(*xs), (to_slices(tokens), to_slices(valid)))
    return jax.lax.stop_gradient(hidden.swapaxes(0, 1).reshape(size, *hidden.shape[2:]))
