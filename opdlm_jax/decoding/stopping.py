"""Stop handling shared by the AR and block-diffusion decoders."""
from __future__ import annotations

import jax.numpy as jnp


def is_stop(tokens: jnp.ndarray, stop_ids: tuple[int, ...]) -> jnp.ndarray:
    hit = jnp.zeros(tokens.shape, bool)
    for s in stop_ids:
        hit = hit | (tokens == s)
    return hit


def response_lengths(tokens: jnp.ndarray, stop_ids: tuple[int, ...]) -> jnp.ndarray:
    """Tokens up to and including the first stop token (the whole row when there is none)."""
    hit = is_stop(tokens, stop_ids)
    first = jnp.argmax(hit, axis=-1)
    return jnp.where(hit.any(axis=-1), first + 1, tokens.shape[-1]).astype(jnp.int32)
