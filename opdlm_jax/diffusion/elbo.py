"""The masked-diffusion likelihood of a continuation: an ELBO estimate from the 2L layout.

log p(continuation | context) >= E over masks of sum_i w_i log p_student(x_i | x_masked), with
masks drawn per block of the continuation. Two estimators:
- "count": per block of k tokens draw m ~ U{1..k}, then m positions uniformly; weight k / m.
- "bernoulli": per block draw t ~ U(0, 1], mask each position with probability t; weight 1 / t.
Both are unbiased for the same bound; each sample is one forward pass of the training layout.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from opdlm_jax.decoding.batching import bucket_width, left_pad
from opdlm_jax.decoding.sampling import ban_tokens
from opdlm_jax.diffusion.bd3lm_loss import chunked_token_nll
from opdlm_jax.diffusion.rollout_batch import RolloutBatch
from opdlm_jax.diffusion.student import student_hidden
from opdlm_jax.models import unembed
from opdlm_jax.models.config import ModelConfig

ESTIMATORS = ("count", "bernoulli")


@functools.partial(jax.jit, static_argnames=("config", "mask_id", "block_size", "alignment", "chunk_size"))
def masked_token_logprobs(config: ModelConfig, params: dict, prompt_tokens: jnp.ndarray,
                          prompt_valid: jnp.ndarray, response: jnp.ndarray, attend: jnp.ndarray,
                          masked: jnp.ndarray, *, mask_id: int, block_size: int,
                          alignment: str, chunk_size: int = 256) -> jnp.ndarray:
    """log p_student(response_i | state) [B, L] for the state where `masked` positions hold the
    mask token, from one forward pass of the 2L layout. prompt_tokens [B, P] left-padded
    (P % block_size == 0); response [B, L] (L % block_size == 0); attend [B, L]: response
    columns that exist (real tokens and the masked tail of a last partial block). The vocabulary
    projection runs `chunk_size` positions at a time (no [B, L, V] array for long texts)."""
    step_map = jnp.where(attend, 0, -1).astype(jnp.int32)
    batch = RolloutBatch(prompt_tokens, prompt_valid, response, step_map, attend.sum(-1).astype(jnp.int32))
    hidden = student_hidden(config, params, batch, masked, mask_id, block_size, alignment)
    logits_fn = lambda h: ban_tokens(unembed(config, params, h), (mask_id,))  # noqa: E731
    return -chunked_token_nll(logits_fn, hidden, response, chunk_size)


def sample_masks(rng: np.random.Generator, length: int, block_size: int, samples: int,
                 estimator: str = "count") -> tuple[np.ndarray, np.ndarray]:
    """Masks and weights [samples, length] for a continuation of `length` tokens in blocks of
    `block_size` (see the module docstring). Weighted sums of masked log-probs, averaged over
    samples, estimate the ELBO."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown ELBO estimator {estimator!r}; expected one of {ESTIMATORS}")
    masked = np.zeros((samples, length), bool)
    weights = np.zeros((samples, length), np.float64)
    for start in range(0, length, block_size):
        k = min(block_size, length - start)
        for s in range(samples):
            if estimator == "count":
                count = int(rng.integers(1, k + 1))
                chosen = rng.choice(k, size=count, replace=False)
                masked[s, start + chosen] = True
                weights[s, start + chosen] = k / count
            else:
                t = 1.0 - rng.random()  # (0, 1]
                hit = rng.random(k) < t
                masked[s, start:start + k] = hit
                weights[s, start:start + k] = np.where(hit, 1.0 / t, 0.0)
    return masked, weights


def elbo_loglikelihoods(config: ModelConfig, params: dict, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                        *, mask_id: int, pad_id: int, block_size: int = 4,
                        alignment: str = "same_position", samples: int = 8, estimator: str = "count",
                        seeds: Sequence[int] | None = None, seed: int = 0, rows: int = 64,
                        return_samples: bool = False):
    """ELBO estimates of log p(continuation | context) for (context ids, continuation ids) pairs.

    Every context must be non-empty (add a prefix token for an empty one) and every
    continuation non-empty. seeds: one RNG seed per pair (default: seed + index). Returns a
    list of floats, or with return_samples=True a list of per-sample arrays [samples].
    """
    if samples < 1:
        raise ValueError(f"samples={samples} must be >= 1")
    if not pairs:
        return []
    b = block_size
    seeds = [seed + i for i in range(len(pairs))] if seeds is None else list(seeds)
    jobs = []  # (pair index, sample index, masked row, weight row)
    for i, (ctx, cont) in enumerate(pairs):
        if len(ctx) == 0 or len(cont) == 0:
            raise ValueError(f"pair {i}: context and continuation must both be non-empty "
                             f"(got {len(ctx)} and {len(cont)} tokens)")
        m, w = sample_masks(np.random.default_rng(seeds[i]), len(cont), b, samples, estimator)
        for s in range(samples):
            jobs.append((i, s, m[s], w[s]))
    width = bucket_width(max(len(c) for c, _ in pairs), b)
    length = bucket_width(max(len(c) for _, c in pairs), b, minimum=b)
    longest = max(len(c) + -(-len(x) // b) * b for c, x in pairs)
    if longest > config.max_position_embeddings:
        raise ValueError(f"context + continuation blocks ({longest} positions) exceed "
                         f"max_position_embeddings={config.max_position_embeddings}")
    rows = max(1, min(rows, 1 << (len(jobs) - 1).bit_length()))  # few shapes: few compiles
    per_sample = np.zeros((len(pairs), samples), np.float64)
    for start in range(0, len(jobs), rows):
        chunk = jobs[start:start + rows]
        chunk = chunk + [chunk[-1]] * (rows - len(chunk))  # a fixed row count: one compile
        prompt_tokens, prompt_valid = left_pad([pairs[i][0] for i, *_ in chunk], width, pad_id)
        response = np.full((rows, length), pad_id, np.int32)
        attend = np.zeros((rows, length), bool)
        masked = np.zeros((rows, length), bool)
        weights = np.zeros((rows, length), np.float64)
        for r, (i, _, m, w) in enumerate(chunk):
            cont = pairs[i][1]
            n = len(cont)
            response[r, :n] = cont
            tail = -(-n // b) * b  # the masked rest of a last partial block
            attend[r, :tail] = True
            masked[r, :n] = m
            masked[r, n:tail] = True
            weights[r, :n] = w
        logp = np.asarray(masked_token_logprobs(
            config, params, jnp.asarray(prompt_tokens), jnp.asarray(prompt_valid), jnp.asarray(response),
            jnp.asarray(attend), jnp.asarray(masked), mask_id=mask_id, block_size=b, alignment=alignment),
            np.float64)
        for r, (i, s, _, _) in enumerate(chunk[:len(jobs[start:start + rows])]):
            w = weights[r]
            per_sample[i, s] = float(np.sum(np.where(w > 0, w * logp[r], 0.0)))
    if return_samples:
        return [per_sample[i] for i in range(len(pairs))]
    return [float(per_sample[i].mean()) for i in range(len(pairs))]
