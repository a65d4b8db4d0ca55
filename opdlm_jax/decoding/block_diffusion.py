"""Jitted block-diffusion decoding with an exact block KV cache.

Layout: prompts are left-padded to a common width P (a multiple of the block size), the response
occupies columns [P, P + L). Blocks are aligned to the response start (see `models.masks`), so
column c belongs to block (c - P) // b for every sequence of the batch.

Per block (a `lax.scan` over blocks, an inner scan over a fixed number of rounds): the block
starts as b mask tokens; each round scores the block against the cache, samples every masked
position and unmasks the positions the strategy picks. With the cache, a finished block is
committed in the same forward pass as the first round of the next block (one pass over
[finished block | masked next block]); nothing before the active block is ever recomputed.
Tokens after a stop token inside its block stay in the output (the trajectory needs them), but
`lengths` ends at the stop token and later blocks are never decoded for that sequence.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from opdlm_jax.decoding.config import SamplerConfig
from opdlm_jax.decoding.strategies import choose_unmask
from opdlm_jax.decoding.sampling import ban_tokens, sample_tokens
from opdlm_jax.decoding.stopping import is_stop, response_lengths
from opdlm_jax.models import extend, forward, init_cache, unembed
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.layer_stack import decoding_layout

UNSET_STEP = -1  # step-map value of prompt and padding positions


class DiffusionOutput(NamedTuple):
    tokens: jnp.ndarray  # [B, L] response tokens (pad after the last decoded block)
    step_map: jnp.ndarray  # [B, L] round (within its block) at which each token was unmasked
    lengths: jnp.ndarray  # [B] tokens up to and including the first stop token
    nfe: jnp.ndarray  # scalar: model forward passes of the decode loop (prefill included)
    forward_tokens: jnp.ndarray  # scalar: token positions run through the model (FLOP accounting)
    rounds: jnp.ndarray  # [B] denoising rounds in which the sequence had a masked token
    states: jnp.ndarray | None  # [num_blocks, R, B, b] the active block each round saw (debug)


class _Carry(NamedTuple):
    tokens: jnp.ndarray  # [B, S] prompt + response buffer
    valid: jnp.ndarray  # [B, S] attended columns
    step_map: jnp.ndarray  # [B, L]
    finished: jnp.ndarray  # [B]
    cache: object
    block_logits: jnp.ndarray  # [B, b, V] logits of the active block from the commit pass
    prev_logits: jnp.ndarray  # [B, V] logits at the column before the active block
    nfe: jnp.ndarray
    forward_tokens: jnp.ndarray
    rounds: jnp.ndarray
    key: jax.Array


def _align(block_logits, prev_logits, alignment):
    """Predictions for the b block positions: same-position, or shifted by one as in AR."""
    if alignment == "same_position":
        return block_logits
    return jnp.concatenate([prev_logits[:, None], block_logits[:, :-1]], axis=1)


@functools.partial(jax.jit, static_argnames=("config", "sampler", "max_new_tokens", "stop_ids",
                                             "mask_id", "pad_id", "on_block"))
def block_diffusion_decode(config: ModelConfig, params: dict, prompt_tokens: jnp.ndarray,
                           prompt_valid: jnp.ndarray, key: jax.Array, *, sampler: SamplerConfig,
                           max_new_tokens: int, stop_ids: tuple[int, ...], mask_id: int,
                           pad_id: int, on_block=None,
                           max_lengths: jnp.ndarray | None = None) -> DiffusionOutput:
    """Decode a batch of left-padded prompts [B, P] (P % block_size == 0) for max_new_tokens.

    on_block: optional host callback `(block_index, block_tokens [B, b], was_active [B])`, called
    in order as each block finishes (streaming output).
    max_lengths: optional per-sequence budgets [B] (multiples of the block size, <= max_new_tokens),
    e.g. per-domain caps; a sequence stops after its budget like after a stop token.
    """
    config, params = decoding_layout(config, params)
    b, rounds_per_block = sampler.block_size, sampler.steps_per_block
    batch, width = prompt_tokens.shape
    if width % b or max_new_tokens % b:
        raise ValueError(f"prompt width {width} and max_new_tokens {max_new_tokens} must be multiples "
                         f"of block_size {b}")
    num_blocks, total = max_new_tokens // b, width + max_new_tokens + b
    budgets = jnp.full((batch,), max_new_tokens, jnp.int32) if max_lengths is None else max_lengths
    columns = jnp.arange(total)
    prompt_len = prompt_valid.sum(-1).astype(jnp.int32)
    positions = jnp.where(columns[None] < width, jnp.maximum(jnp.cumsum(
        jnp.pad(prompt_valid, ((0, 0), (0, total - width))), -1) - 1, 0),
        prompt_len[:, None] + columns[None] - width).astype(jnp.int32)
    block_ids = jnp.broadcast_to(jnp.floor_divide(columns - width, b), (batch, total)).astype(jnp.int32)
    masks_block = jnp.full((batch, b), mask_id, jnp.int32)

    def cols(x, start, n):
        return jax.lax.dynamic_slice_in_dim(x, start, n, axis=1)

    def logits_at(hidden):
        return ban_tokens(unembed(config, params, hidden), (mask_id,))

    def cached_pass(cache, tokens, valid, start, commit=True):
        """One cached forward over columns [start, start + n) -> (hidden, cache, written if commit)."""
        n = tokens.shape[1]
        return extend(config, params, cache, tokens, start, cols(positions, start, n), mode="block",
                      block_ids=cols(block_ids, start, n), valid=valid, return_hidden=True,
                      commit=commit)

    def score_uncached(tokens, valid, start):
        """Recompute the whole buffer; read logits at [start - 1, start + b)."""
        hidden = forward(config, params, tokens, mode="block", positions=positions, valid=valid,
                         block_ids=block_ids, return_hidden=True)
        logits = logits_at(cols(hidden, start - 1, b + 1))
        return logits[:, 1:], logits[:, 0]

    # Prefill: the prompt and block 0's masks in one pass (the prompt is never recomputed).
    tokens = jnp.concatenate([prompt_tokens, jnp.full((batch, total - width), pad_id, jnp.int32)], 1)
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, masks_block, width, axis=1)
    valid = jnp.pad(prompt_valid, ((0, 0), (0, total - width))).at[:, width:width + b].set(True)
    vocab = config.vocab_size
    if sampler.use_cache:
        cache = init_cache(config, batch, total)
        hidden, cache = cached_pass(cache, tokens[:, :width + b], valid[:, :width + b], 0)
        logits = logits_at(hidden[:, width - 1:])
        block_logits, prev_logits, nfe0 = logits[:, 1:], logits[:, 0], 1
    else:
        cache = None
        block_logits = jnp.zeros((batch, b, vocab), jnp.float32)
        prev_logits = jnp.zeros((batch, vocab), jnp.float32)
        nfe0 = 0

    def run_round(carry_and_block, round_index):
        carry, block, start = carry_and_block
        active = ~carry.finished
        masked = (block == mask_id) & active[:, None]
        live = masked.any()

        def model_logits():
            tokens_now = jax.lax.dynamic_update_slice_in_dim(carry.tokens, block, start, axis=1)
            if sampler.use_cache:
                valid_now = jnp.broadcast_to(active[:, None], block.shape)
                hidden, _ = cached_pass(carry.cache, block, valid_now, start, commit=False)
                return logits_at(hidden), carry.prev_logits
            return score_uncached(tokens_now, carry.valid, start)

        def reuse_commit_logits():
            return carry.block_logits, carry.prev_logits

        def skip():
            return jnp.zeros_like(carry.block_logits), carry.prev_logits

        branch = jnp.where(~live, 0, jnp.where((round_index == 0) & sampler.use_cache, 1, 2))
        block_logits_now, prev = jax.lax.switch(branch, [skip, reuse_commit_logits, model_logits])
        ran_forward = live & (branch == 2)
        key, sub_sample, sub_choose = jax.random.split(carry.key, 3)
        preds = _align(block_logits_now, prev, sampler.alignment)
        sampled, confidence, entropy = sample_tokens(preds, sub_sample, sampler.sampling)
        unmask = masked & choose_unmask(
            sampler.strategy, masked, confidence, entropy, sub_choose, round_index,
            steps_per_block=rounds_per_block, block_size=b, threshold=sampler.threshold,
            entropy_bound=sampler.entropy_bound)
        new_block = jnp.where(unmask, sampled, block)
        step_block = jnp.where(unmask, round_index, -1)
        carry = carry._replace(nfe=carry.nfe + ran_forward.astype(jnp.int32),
                               forward_tokens=carry.forward_tokens + ran_forward.astype(jnp.int32) * batch * (b if sampler.use_cache else total),
                               rounds=carry.rounds + masked.any(-1).astype(jnp.int32), key=key)
        seen = block if sampler.record_states else None
        return (carry, new_block, start), (step_block, seen)

    def run_block(carry: _Carry, block_index):
        start = width + block_index * b

        def decode(carry):
            active = ~carry.finished
            block = cols(carry.tokens, start, b)  # masks for running sequences, pad otherwise
            (carry, block, _), (steps, seen) = jax.lax.scan(
                run_round, (carry, block, start), jnp.arange(rounds_per_block))
            step_block = jnp.where(active[:, None], steps.max(0), UNSET_STEP)
            tokens = jax.lax.dynamic_update_slice_in_dim(carry.tokens, block, start, axis=1)
            step_map = jax.lax.dynamic_update_slice_in_dim(carry.step_map, step_block, start - width, axis=1)
            finished = carry.finished | (active & is_stop(block, stop_ids).any(-1))
            finished = finished | ((block_index + 1) * b >= budgets)
            if on_block is not None:
                jax.debug.callback(on_block, block_index, block, active, ordered=True)
            # The next block starts as masks for the sequences still running (the buffer has one
            # spare block at the end, so this write never clamps).
            next_valid = ~finished & (block_index + 1 < num_blocks)
            tokens = jax.lax.dynamic_update_slice_in_dim(
                tokens, jnp.where(next_valid[:, None], masks_block, pad_id), start + b, axis=1)
            valid = jax.lax.dynamic_update_slice_in_dim(
                carry.valid, jnp.broadcast_to(next_valid[:, None], (batch, b)), start + b, axis=1)
            carry = carry._replace(tokens=tokens, valid=valid, step_map=step_map, finished=finished)
            return commit(carry, start, next_valid), seen

        def skip(carry):
            seen = jnp.zeros((rounds_per_block, batch, b), jnp.int32) if sampler.record_states else None
            return carry, seen

        return jax.lax.cond(carry.finished.all(), skip, decode, carry)

    def commit(carry: _Carry, start, next_valid):
        """Write the finished block into the cache together with round 0 of the next block."""
        if not sampler.use_cache:
            return carry
        has_next = next_valid.any()

        def do_commit(carry):
            chunk = cols(carry.tokens, start, 2 * b)
            chunk_valid = cols(carry.valid, start, 2 * b)
            hidden, cache = cached_pass(carry.cache, chunk, chunk_valid, start)
            logits = logits_at(hidden[:, b - 1:])
            return carry._replace(cache=cache, block_logits=logits[:, 1:], prev_logits=logits[:, 0],
                                  nfe=carry.nfe + 1, forward_tokens=carry.forward_tokens + batch * 2 * b)

        return jax.lax.cond(has_next, do_commit, lambda c: c, carry)

    init = _Carry(tokens, valid, jnp.full((batch, max_new_tokens), UNSET_STEP, jnp.int32),
                  jnp.zeros((batch,), bool), cache, block_logits, prev_logits, jnp.int32(nfe0),
                  jnp.int32(nfe0 * batch * (width + b)),
                  jnp.zeros((batch,), jnp.int32), key)
    final, seen = jax.lax.scan(run_block, init, jnp.arange(num_blocks))
    response = final.tokens[:, width:width + max_new_tokens]
    lengths = jnp.minimum(response_lengths(response, stop_ids), budgets)
    return DiffusionOutput(response, final.step_map, lengths, final.nfe, final.forward_tokens,
                           final.rounds, seen)
