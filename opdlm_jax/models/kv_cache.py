"""KV cache for incremental decoding with static shapes.

The cache holds, per slot, the keys/values of every layer and the metadata the masks need
(position, block id, whether the slot is filled). `extend` writes a chunk of k tokens at a
column and attends over the whole cache, so appending chunks (k=1 for AR, k=block size for
diffusion) reproduces one full forward. A diffusion round that must not commit its block simply
discards the returned cache.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from opdlm_jax.models import masks
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.forward import Mode, module
from opdlm_jax.models.rope import rotary_tables


class KVCache(NamedTuple):
    k: jnp.ndarray  # [layers, B, S, kv_heads, head_dim]
    v: jnp.ndarray
    positions: jnp.ndarray  # [B, S] int32
    block_ids: jnp.ndarray  # [B, S] int32
    filled: jnp.ndarray  # [B, S] bool: a real token's keys live here

    @property
    def length(self) -> int:
        return self.positions.shape[1]


def init_cache(config: ModelConfig, batch: int, length: int, dtype=None) -> KVCache:
    dtype = config.jnp_dtype if dtype is None else dtype
    shape = (config.num_layers, batch, length, config.num_kv_heads, config.head_dim)
    zeros_i = jnp.zeros((batch, length), jnp.int32)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), zeros_i, zeros_i,
                   jnp.zeros((batch, length), bool))


def extend(config: ModelConfig, params: dict, cache: KVCache, tokens: jnp.ndarray,
           index: jnp.ndarray | int, positions: jnp.ndarray, *, mode: Mode = "causal",
           block_ids: jnp.ndarray | None = None, valid: jnp.ndarray | None = None,
           block_size: int = 4, return_hidden: bool = False):
    """Run tokens [B, k] written at cache columns [index, index + k).

    Returns (float32 logits [B, k, V] or hidden states, updated cache). `valid` [B, k] marks
    real tokens (padding is written but never attended).
    """
    b, k = tokens.shape
    valid = jnp.ones((b, k), bool) if valid is None else valid
    block_ids = positions // block_size if block_ids is None else block_ids
    put = lambda buf, new: jax.lax.dynamic_update_slice_in_dim(buf, new.astype(buf.dtype), index, axis=1)
    k_pos, k_blk, k_filled = put(cache.positions, positions), put(cache.block_ids, block_ids), put(cache.filled, valid)
    if mode == "causal":
        mask = masks.causal(positions, k_pos)
    elif mode == "block":
        mask = masks.block_causal(block_ids, k_blk)
    else:
        raise ValueError(f"unknown attention mode {mode!r}; expected 'causal' or 'block'")
    mask = masks.with_valid_keys(mask, k_filled)
    cos, sin = rotary_tables(config, positions)
    out, (new_k, new_v) = module(config).apply(
        {"params": params}, tokens, cos, sin, mask, cache=(cache.k, cache.v), cache_index=index,
        return_hidden=return_hidden)
    return out, KVCache(new_k, new_v, k_pos, k_blk, k_filled)
