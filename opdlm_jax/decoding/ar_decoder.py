"""Autoregressive decoding with a KV cache (the teacher, and the AR baselines)."""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from opdlm_jax.decoding.sampling import SamplingParams, ban_tokens, sample_tokens
from opdlm_jax.decoding.stopping import is_stop, response_lengths
from opdlm_jax.models import extend, init_cache, unembed
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.layer_stack import decoding_layout


class ARDecodeOutput(NamedTuple):
    tokens: jnp.ndarray  # [B, L] generated tokens, pad after the stop token
    lengths: jnp.ndarray  # [B] up to and including the first stop token
    nfe: jnp.ndarray  # model forward passes (prefill included)
    rounds: jnp.ndarray  # [B] forward passes that produced a token for the sequence


@functools.partial(jax.jit, static_argnames=("config", "sampling", "max_new_tokens", "stop_ids",
                                             "pad_id", "banned_ids", "on_token"))
def ar_decode(config: ModelConfig, params: dict, prompt_tokens: jnp.ndarray,
              prompt_valid: jnp.ndarray, key: jax.Array, *, sampling: SamplingParams,
              max_new_tokens: int, stop_ids: tuple[int, ...], pad_id: int,
              banned_ids: tuple[int, ...] = (), on_token=None) -> ARDecodeOutput:
    """Decode left-padded prompts [B, P] token by token (causal attention).

    on_token: optional host callback `(index, tokens [B], was_active [B])`, called with each new
    token as it is sampled (streaming). A program with a host callback is not stored in JAX's
    persistent compilation cache, so streaming recompiles at each start; without it the
    program is identical to the plain decoder's."""
    config, params = decoding_layout(config, params)
    batch, width = prompt_tokens.shape
    prompt_len = prompt_valid.sum(-1).astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(prompt_valid, -1) - 1, 0).astype(jnp.int32)
    cache = init_cache(config, batch, width + max_new_tokens)
    hidden, cache = extend(config, params, cache, prompt_tokens, 0, positions, mode="causal",
                           valid=prompt_valid, return_hidden=True)

    def logits_at(h):
        return ban_tokens(unembed(config, params, h), banned_ids)

    def step(carry, i):
        cache, logits, finished, key, nfe = carry
        key, sub = jax.random.split(key)
        token, _, _ = sample_tokens(logits, sub, sampling)
        token = jnp.where(finished, pad_id, token)
        if on_token is not None:
            jax.debug.callback(on_token, i, token, ~finished, ordered=True)
        now_finished = finished | is_stop(token, stop_ids)
        need_next = (i + 1 < max_new_tokens) & ~now_finished.all()

        def advance(cache):
            h, cache = extend(config, params, cache, token[:, None], width + i,
                              (prompt_len + i)[:, None], mode="causal", valid=~finished[:, None],
                              return_hidden=True)
            return logits_at(h[:, 0]), cache

        next_logits, cache = jax.lax.cond(need_next, advance, lambda c: (logits, c), cache)
        return (cache, next_logits, now_finished, key, nfe + need_next.astype(jnp.int32)), (token, ~finished)

    init = (cache, logits_at(hidden[:, -1]), jnp.zeros((batch,), bool), key, jnp.int32(1))
    (_, _, _, _, nfe), (tokens, produced) = jax.lax.scan(step, init, jnp.arange(max_new_tokens))
    tokens = tokens.T
    return ARDecodeOutput(tokens, response_lengths(tokens, stop_ids), nfe, produced.sum(0).astype(jnp.int32))
