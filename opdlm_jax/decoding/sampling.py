"""Token sampling from logits, in float32, with explicit PRNG keys."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    greedy: bool = False

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


def ban_tokens(logits: jnp.ndarray, banned: tuple[int, ...]) -> jnp.ndarray:
    """Remove tokens (the mask token) from the output vocabulary."""
    for tok in banned:
        if tok is not None and 0 <= tok < logits.shape[-1]:
            logits = logits.at[..., tok].set(NEG_INF)
    return logits


def filtered_log_probs(logits: jnp.ndarray, params: SamplingParams) -> jnp.ndarray:
    """log softmax of logits / T after top-k and top-p filtering (greedy: plain log softmax)."""
    logits = logits.astype(jnp.float32)
    if params.is_greedy:
        return jax.nn.log_softmax(logits, axis=-1)
    logits = logits / params.temperature
    if params.top_k:
        kth = jax.lax.top_k(logits, params.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if params.top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the token crossing it included).
        mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
        cutoff = jnp.min(jnp.where(mass_before < params.top_p, sorted_logits, jnp.inf), axis=-1,
                         keepdims=True)
        logits = jnp.where(logits < cutoff, NEG_INF, logits)
    return jax.nn.log_softmax(logits, axis=-1)


def sample_tokens(logits: jnp.ndarray, key: jax.Array, params: SamplingParams):
    """Sample one token per position. Returns (tokens, confidence, entropy), float32 statistics.

    Confidence is the probability of the chosen token under the (filtered, tempered)
    distribution; entropy is that distribution's entropy.
    """
    log_probs = filtered_log_probs(logits, params)
    if params.is_greedy:
        tokens = jnp.argmax(log_probs, axis=-1)
    else:
        tokens = jax.random.categorical(key, log_probs, axis=-1)
    chosen = jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
    probs = jnp.exp(log_probs)
    entropy = -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)
    return tokens.astype(jnp.int32), jnp.exp(chosen), entropy
