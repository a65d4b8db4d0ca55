"""The student's forward over the 2L training layout, and its output vocabulary.

Every training-side consumer of student predictions (the OPD loss, the BD3-LM loss, the ELBO
likelihood of evaluation) goes through `student_hidden`, so the layout, the alignment and the
columns that predict each response token are defined once.
"""
from __future__ import annotations

import jax.numpy as jnp

from opdlm_jax.diffusion.layout import build_layout, layout_structure, student_prediction_columns
from opdlm_jax.diffusion.rollout_batch import RolloutBatch
from opdlm_jax.models import forward, unembed
from opdlm_jax.models.config import ModelConfig


def output_logits_fn(config: ModelConfig, params: dict, vocab_limit: int | None):
    """hidden -> float32 logits over the real output vocabulary (the mask token's row excluded)."""
    def fn(hidden):
        logits = unembed(config, params, hidden)
        return logits if vocab_limit is None else logits[..., :vocab_limit]
    return fn


def output_vocab_limit(config: ModelConfig) -> int | None:
    """Where the mask token was appended as the last row, the outputs stop before it."""
    mask = config.mask_token_id
    return mask if mask is not None and mask == config.vocab_size - 1 else None


def student_hidden(config: ModelConfig, params: dict, batch: RolloutBatch, masked: jnp.ndarray,
                   mask_id: int, block_size: int, alignment: str) -> jnp.ndarray:
    """Hidden states [B, L, d] whose logits are the student's predictions of response tokens."""
    layout = build_layout(batch, masked, mask_id, block_size)
    width, length = batch.prompt_tokens.shape[1], batch.response.shape[1]
    hidden = forward(config, params, layout.tokens, positions=layout.positions, valid=layout.valid,
                     mask=layout.mask, structure=layout_structure(width, length, block_size),
                     return_hidden=True)
    cols = student_prediction_columns(width, length, block_size, alignment)
    return hidden[:, cols]
