"""What moves first when a student is distilled: held-out KL and the teacher's NLL of its output.

- `fixed_state_kl`: forward KL(teacher || student) on FIXED states: the teacher's own greedy answers
  with random masks per block (same seed every evaluation), so numbers compare across checkpoints.
- `on_policy_kl`: the same loss on the student's own greedy rollouts, per-block trajectory states.
- `teacher_nll`: mean negative log-likelihood, under the teacher, of the student's generations
  (per token, stop token included). Low NLL also rewards repetition: show samples beside it.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from opdlm_jax.distill.opd_loss import LossConfig, opd_loss_from_rollouts
from opdlm_jax.models import forward
from opdlm_jax.models.config import ModelConfig


def fixed_state_kl(student_config: ModelConfig, student_params, teacher_config: ModelConfig, teacher_params,
                   prompt_ids: Sequence[Sequence[int]], teacher_responses: Sequence[Sequence[int]], *,
                   mask_id: int, stop_ids: Sequence[int], loss: LossConfig, seed: int = 1234) -> float:
    """KL on the teacher's responses with Bernoulli(t) masks per block (fixed seed)."""
    b = loss.block_size
    responses = [list(r) + [stop_ids[0]] * (-len(r) % b) for r in teacher_responses]  # whole blocks
    steps = [[0] * len(r) for r in responses]
    value, _ = opd_loss_from_rollouts(student_config, student_params, teacher_config, teacher_params,
                                      prompt_ids, responses, steps, mask_id=mask_id, stop_ids=stop_ids,
                                      loss=loss, selection="random", seed=seed)
    return float(value)


def on_policy_kl(student_config: ModelConfig, student_params, teacher_config: ModelConfig, teacher_params,
                 prompt_ids: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                 step_maps: Sequence[Sequence[int]], *, mask_id: int, stop_ids: Sequence[int],
                 loss: LossConfig, seed: int = 1234) -> float:
    """KL on the student's own trajectories (per-block states, fixed seed)."""
    b = loss.block_size
    # Whole blocks, as the sampler decoded them: the tail after a stop token inside its block.
    padded = [(list(r) + [stop_ids[0]] * (-len(r) % b), list(s) + [0] * (-len(s) % b))
              for r, s in zip(responses, step_maps)]
    keep = [i for i, (r, _) in enumerate(padded) if r]
    if not keep:
        return float("nan")
    value, _ = opd_loss_from_rollouts(student_config, student_params, teacher_config, teacher_params,
                                      [prompt_ids[i] for i in keep], [padded[i][0] for i in keep],
                                      [padded[i][1] for i in keep], mask_id=mask_id, stop_ids=stop_ids,
                                      loss=loss, seed=seed)
    return float(value)


def teacher_nll(teacher_config: ModelConfig, teacher_params, prompt_ids: Sequence[Sequence[int]],
                responses: Sequence[Sequence[int]], pad_id: int = 0) -> float:
    """Mean per-token NLL of the responses under the teacher (empty responses are skipped)."""
    pairs = [(list(p), list(r)) for p, r in zip(prompt_ids, responses) if len(r)]
    if not pairs:
        return float("nan")
    width = max(len(p) + len(r) for p, r in pairs)
    tokens = np.full((len(pairs), width), pad_id, np.int32)
    valid = np.zeros((len(pairs), width), bool)
    targets = np.zeros((len(pairs), width), bool)
    for i, (p, r) in enumerate(pairs):
        seq = p + r
        tokens[i, width - len(seq):] = seq  # left padded: the positions stay contiguous
        valid[i, width - len(seq):] = True
        targets[i, width - len(r):] = True
    logits = _causal_logits(teacher_config, teacher_params, jnp.asarray(tokens), jnp.asarray(valid))
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.asarray(tokens)[:, 1:, None], axis=-1)[..., 0]
    mask = jnp.asarray(targets)[:, 1:]
    return float(jnp.where(mask, nll, 0.0).sum() / mask.sum())


_causal_forward = jax.jit(forward, static_argnames=("config", "mode", "block_size", "return_hidden"))


def _causal_logits(config, params, tokens, valid):
    return _causal_forward(config, params, tokens, mode="causal", valid=valid)
