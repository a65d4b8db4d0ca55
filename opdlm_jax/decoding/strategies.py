"""Which masked positions of the active block to unmask in a denoising round.

Each strategy maps per-position statistics of the active block ([B, b] arrays) to a boolean
[B, b] "unmask now" decision. All of them unmask at least one masked position per round (when
any is left) and everything that is left in the last round, so a block always finishes within
`steps_per_block` rounds.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

STRATEGIES = ("low_confidence_static", "low_confidence_dynamic", "entropy_bounded", "random")


def _top_n(score: jnp.ndarray, masked: jnp.ndarray, n: jnp.ndarray) -> jnp.ndarray:
    """The n highest-scoring masked positions of each row (ties broken by position)."""
    score = jnp.where(masked, score, -jnp.inf)
    order = jnp.argsort(-score, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1)
    return masked & (rank < n[..., None])


def choose_unmask(strategy: str, masked: jnp.ndarray, confidence: jnp.ndarray,
                  entropy: jnp.ndarray, key: jax.Array, round_index: jnp.ndarray, *,
                  steps_per_block: int, block_size: int, threshold: float,
                  entropy_bound: float) -> jnp.ndarray:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    remaining = masked.sum(-1)
    last_round = round_index >= steps_per_block - 1
    if strategy in ("low_confidence_static", "random"):
        per_round = block_size // steps_per_block
        score = confidence if strategy == "low_confidence_static" else jax.random.uniform(key, masked.shape)
        chosen = _top_n(score, masked, jnp.full(remaining.shape, per_round))
    elif strategy == "low_confidence_dynamic":
        above = masked & (confidence > threshold)
        # None above the threshold: take the single most confident one.
        chosen = jnp.where(above.any(-1, keepdims=True), above,
                           _top_n(confidence, masked, jnp.ones_like(remaining)))
    else:  # entropy_bounded: the lowest-entropy prefix whose entropy before it stays within the bound
        ent = jnp.where(masked, entropy, jnp.inf)
        order = jnp.argsort(ent, axis=-1, stable=True)
        sorted_ent = jnp.take_along_axis(ent, order, axis=-1)
        before = jnp.cumsum(jnp.where(jnp.isfinite(sorted_ent), sorted_ent, 0.0), axis=-1) - \
            jnp.where(jnp.isfinite(sorted_ent), sorted_ent, 0.0)
        n = jnp.maximum(jnp.sum((before <= entropy_bound) & jnp.isfinite(sorted_ent), -1), 1)
        chosen = _top_n(-entropy, masked, n)
    return jnp.where(last_round, masked, chosen)
