"""The OPD loss on given rollouts: student over the 2L layout vs. the frozen teacher's targets.

`opd_loss` is the jittable core used inside the training step. `opd_loss_from_rollouts` is the
bring-your-own-rollouts entry point: token-id lists from any engine in, loss out, no sampler.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from opdlm_jax.decoding.batching import bucket_width, left_pad
from opdlm_jax.decoding.stopping import response_lengths
from opdlm_jax.diffusion.loss import NORMALISATIONS, loss_positions, loss_sums
from opdlm_jax.diffusion.rollout_batch import RolloutBatch
from opdlm_jax.diffusion.states import masked_from_rounds, select_states
from opdlm_jax.diffusion.student import output_logits_fn, student_hidden
from opdlm_jax.distill.chunked import chunked_divergence, with_topk_mass
from opdlm_jax.distill.divergences import divergence_fn
from opdlm_jax.distill.teacher import teacher_hidden
from opdlm_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """divergence: a name of `distill.DIVERGENCES`; divergence_kwargs: its options as a tuple of
    (name, value) pairs (hashable), e.g. (("k", 16),). normalisation: one of
    `diffusion.loss.NORMALISATIONS`: "sequence" (the reference: mean of per-sequence means over
    all rows, an empty row counting 0), "sequence_nonempty" (over rows with a loss position only)
    or "token". chunk_size: sequence chunk of the vocabulary projection (None = all at once).
    topk_log: k of the logged teacher/student top-k masses. vocab_limit: the leading vocabulary
    columns that are real outputs (e.g. 49152 when SmolLM2's mask token was appended as row
    49152): teacher and student distributions are both taken over them only (None = all)."""
    block_size: int = 4
    alignment: str = "same_position"
    divergence: str = "forward_kl"
    divergence_kwargs: tuple = ()
    normalisation: str = "sequence"
    chunk_size: int | None = 64
    topk_log: int = 16
    vocab_limit: int | None = None

    def __post_init__(self):
        divergence_fn(self.divergence, **dict(self.divergence_kwargs))  # fail early on bad names
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {self.normalisation!r}; expected one of {NORMALISATIONS}")


def opd_loss(student_config: ModelConfig, student_params: dict, teacher_config: ModelConfig,
             teacher_params: dict, batch: RolloutBatch, masked: jnp.ndarray, *, mask_id: int,
             stop_ids: tuple[int, ...], loss: LossConfig, teacher_states: jnp.ndarray | None = None):
    """-> (scalar loss, aux) with aux: per_position [B, L], loss_mask [B, L], sums (LossSums),
    teacher_topk_mass / student_topk_mass (means over loss positions).

    teacher_states: precomputed `teacher_hidden` (the step computes it once per rollout batch).
    """
    if teacher_states is None:
        teacher_states = teacher_hidden(teacher_config, teacher_params, batch)
    s_hidden = student_hidden(student_config, student_params, batch, masked, mask_id,
                              loss.block_size, loss.alignment)
    div = with_topk_mass(divergence_fn(loss.divergence, **dict(loss.divergence_kwargs)), loss.topk_log)
    out = chunked_divergence(div, output_logits_fn(teacher_config, teacher_params, loss.vocab_limit),
                             output_logits_fn(student_config, student_params, loss.vocab_limit),
                             teacher_states, s_hidden, loss.chunk_size)
    mask = loss_positions(batch.response_valid, masked, batch.response, batch.lengths, stop_ids)
    sums = loss_sums(out["divergence"], mask, loss.normalisation)
    count = jnp.maximum(mask.sum(), 1)
    aux = {"per_position": out["divergence"], "loss_mask": mask, "sums": sums,
           "teacher_topk_mass": jnp.where(mask, out["teacher_topk_mass"], 0).sum() / count,
           "student_topk_mass": jnp.where(mask, out["student_topk_mass"], 0).sum() / count,
           "loss_positions": mask.sum()}
    return sums.value, aux


_jitted_opd_loss = jax.jit(opd_loss, static_argnames=("student_config", "teacher_config", "mask_id",
                                                     "stop_ids", "loss"))


def rollout_batch_from_lists(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                             step_maps: Sequence[Sequence[int]], *, block_size: int, pad_id: int,
                             stop_ids: Sequence[int], response_width: int | None = None) -> RolloutBatch:
    """Pad token-id lists into a RolloutBatch (prompts left-padded, responses right-padded).

    Each response must be as long as its step map; a response may extend past its stop token up
    to the end of that block (the tokens the sampler decoded there), as the sampler returns them.
    """
    if not (len(prompt_ids) == len(response_ids) == len(step_maps)):
        raise ValueError(f"got {len(prompt_ids)} prompts, {len(response_ids)} responses and "
                         f"{len(step_maps)} step maps; they must match")
    longest = max(len(r) for r in response_ids)
    width_l = response_width or -(-longest // block_size) * block_size
    if width_l % block_size:
        raise ValueError(f"response_width {width_l} is not a multiple of block_size {block_size}")
    prompts, valid = left_pad(prompt_ids, bucket_width(max(len(p) for p in prompt_ids), block_size), pad_id)
    response = np.full((len(response_ids), width_l), pad_id, np.int32)
    steps = np.full((len(response_ids), width_l), -1, np.int32)
    for i, (r, s) in enumerate(zip(response_ids, step_maps)):
        if len(r) != len(s):
            raise ValueError(f"response {i} has {len(r)} tokens but its step map has {len(s)}")
        if len(r) > width_l:
            raise ValueError(f"response {i} has {len(r)} tokens, more than response_width {width_l}")
        response[i, :len(r)], steps[i, :len(s)] = r, s
    lengths = np.minimum(np.asarray(response_lengths(jnp.asarray(response), tuple(stop_ids))),
                         [len(r) for r in response_ids])
    return RolloutBatch(jnp.asarray(prompts), jnp.asarray(valid), jnp.asarray(response),
                        jnp.asarray(steps), jnp.asarray(lengths, jnp.int32))


def opd_loss_from_rollouts(student_config: ModelConfig, student_params: dict, teacher_config: ModelConfig,
                           teacher_params: dict, prompt_ids: Sequence[Sequence[int]],
                           response_ids: Sequence[Sequence[int]], step_maps: Sequence[Sequence[int]], *,
                           mask_id: int, stop_ids: Sequence[int], pad_id: int = 0,
                           chosen_rounds: Sequence[Sequence[int]] | None = None,
                           loss: LossConfig = LossConfig(), selection: str = "per_block", seed: int = 0):
    """Bring-your-own-rollouts: the OPD loss for rollouts produced by another engine.

    prompt_ids / response_ids: token-id lists; step_maps: for each response token the round
    (within its block, blocks of loss.block_size counted from the response start) at which it was
    unmasked. chosen_rounds: optionally, per response, the round per block defining the training
    state (-1 = no mask in that block); otherwise states are drawn with `selection` and `seed`.
    Returns (loss, aux) as `opd_loss`; aux["masked"] is the chosen state's mask.
    """
    batch = rollout_batch_from_lists(prompt_ids, response_ids, step_maps, block_size=loss.block_size,
                                     pad_id=pad_id, stop_ids=stop_ids)
    if chosen_rounds is None:
        masked = select_states(selection, batch.step_map, jax.random.PRNGKey(seed), loss.block_size)
    else:
        num_blocks = batch.response.shape[1] // loss.block_size
        rounds = np.full((len(chosen_rounds), num_blocks), -1, np.int32)
        for i, r in enumerate(chosen_rounds):
            rounds[i, :len(r)] = r
        masked = masked_from_rounds(batch.step_map, jnp.asarray(rounds), loss.block_size)
    value, aux = _jitted_opd_loss(student_config, student_params, teacher_config, teacher_params, batch,
                                  masked, mask_id=mask_id, stop_ids=tuple(stop_ids), loss=loss)
    aux["masked"] = masked
    return value, aux
