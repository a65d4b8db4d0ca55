"""Teacher scoring: one causal forward of the frozen AR model over prompt + terminal response."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from opdlm_jax.distill.layout import teacher_target_columns
from opdlm_jax.distill.rollout_batch import RolloutBatch
from opdlm_jax.models import forward
from opdlm_jax.models.config import ModelConfig


def teacher_hidden(config: ModelConfig, params: dict, batch: RolloutBatch) -> jnp.ndarray:
    """Final hidden states [B, L, d] whose logits are p_AR(. | prompt, x0[<i]) for response token i.

    No gradient reaches the teacher. Logits are formed later, chunk by chunk, by the loss.
    """
    params = jax.lax.stop_gradient(params)
    tokens = jnp.concatenate([batch.prompt_tokens, batch.response], 1)
    valid = jnp.concatenate([batch.prompt_valid, batch.response_valid], 1)
    hidden = forward(config, params, tokens, mode="causal", valid=valid, return_hidden=True)
    cols = teacher_target_columns(batch.prompt_tokens.shape[1], batch.response.shape[1])
    return jax.lax.stop_gradient(hidden[:, cols])
