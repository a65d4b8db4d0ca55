"""The BD3-LM masked-diffusion loss (the SFT and corpus baselines).

Per masked position: -log p_S(x0_i | x_t), weighted by 1/t with t the block's masking rate (the
ELBO weight of masked diffusion with a linear schedule). The student's predictions come from the
same 2L layout and alignment as the OPD loss; the vocabulary projection is chunked along the
sequence (rematerialised), so no [B, L, V] float32 array is stored for the backward pass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from opdlm_jax.diffusion.loss import loss_positions, loss_sums
from opdlm_jax.diffusion.rollout_batch import RolloutBatch
from opdlm_jax.diffusion.student import output_logits_fn, student_hidden
from opdlm_jax.models.config import ModelConfig


def _token_nll(logits_fn, hidden, targets):
    logits = logits_fn(hidden)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def chunked_token_nll(logits_fn, hidden: jnp.ndarray, targets: jnp.ndarray, chunk_size: int | None) -> jnp.ndarray:
    """-log p(targets) [B, L] from hidden [B, L, d], one sequence chunk of logits at a time."""
    batch, length = targets.shape
    if chunk_size is None or chunk_size >= length:
        return _token_nll(logits_fn, hidden, targets)
    n = -(-length // chunk_size)
    pad = n * chunk_size - length
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(batch, n, chunk_size, -1).swapaxes(0, 1)
    t = jnp.pad(targets, ((0, 0), (0, pad))).reshape(batch, n, chunk_size).swapaxes(0, 1)
    body = jax.checkpoint(lambda xs: _token_nll(logits_fn, *xs), prevent_cse=False)
    out = jax.lax.map(body, (h, t))
    return out.swapaxes(0, 1).reshape(batch, n * chunk_size)[:, :length]


def bd3lm_loss(config: ModelConfig, params: dict, batch: RolloutBatch, masked: jnp.ndarray,
               mask_rate: jnp.ndarray, *, mask_id: int, stop_ids: tuple[int, ...], block_size: int,
               alignment: str, normalisation: str = "sequence", chunk_size: int | None = 64,
               vocab_limit: int | None = None):
    """-> (scalar loss, aux). mask_rate [B, L]: the masking rate t of each position's block.

    block_size, alignment, normalisation, chunk_size, vocab_limit: as in `distill.LossConfig`.
    """
    hidden = student_hidden(config, params, batch, masked, mask_id, block_size, alignment)
    nll = chunked_token_nll(output_logits_fn(config, params, vocab_limit), hidden, batch.response, chunk_size)
    weighted = nll / jnp.maximum(mask_rate, 1e-3)
    mask = loss_positions(batch.response_valid, masked, batch.response, batch.lengths, stop_ids)
    sums = loss_sums(weighted, mask, normalisation)
    return sums.value, {"per_position": weighted, "loss_mask": mask, "sums": sums,
                        "loss_positions": mask.sum(),
                        "teacher_topk_mass": jnp.zeros(()), "student_topk_mass": jnp.zeros(())}
