"""KV cache for incremental decoding with static shapes.

The cache holds, per slot, the keys/values of every layer and the metadata the masks need
(position, block id, whether the slot is filled). `extend` writes a chunk of k tokens at a
column and attends over the whole cache, so appending chunks (k=1 for AR, k=block size for
diffusion) reproduces one full forward. A diffusion round that must not commit its block runs
with `commit=False`: the chunk attends to the cache and to itself, and the cache is not touched
(no write, so no copy of a buffer that the loop still holds).

Unrolled layers keep one buffer per layer (a tuple), so a write updates that layer's buffer in
place; scanned layers keep the stacked [layers, ...] arrays that `nn.scan` slices.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from opdlm_jax.models import masks
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.forward import Mode, module
from opdlm_jax.models.rope import rotary_tables


class KVCache(NamedTuple):
    k: jnp.ndarray | tuple  # [layers, B, kv_heads, S, head_dim], or per layer [B, kv, S, hd]
    v: jnp.ndarray | tuple
    positions: jnp.ndarray  # [B, S] int32
    block_ids: jnp.ndarray  # [B, S] int32
    filled: jnp.ndarray  # [B, S] bool: a real token's keys live here

    @property
    def length(self) -> int:
        return self.positions.shape[1]


def init_cache(config: ModelConfig, batch: int, length: int, dtype=None) -> KVCache:
    dtype = config.jnp_dtype if dtype is None else dtype
    shape = (batch, config.num_kv_heads, length, config.head_dim)
    zeros_i = jnp.zeros((batch, length), jnp.int32)
    if config.scan_layers:
        k = v = jnp.zeros((config.num_layers,) + shape, dtype)
    else:
        k = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
        v = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(k, v, zeros_i, zeros_i, jnp.zeros((batch, length), bool))


def extend(config: ModelConfig, params: dict, cache: KVCache, tokens: jnp.ndarray,
           index: jnp.ndarray | int, positions: jnp.ndarray, *, mode: Mode = "causal",
           block_ids: jnp.ndarray | None = None, valid: jnp.ndarray | None = None,
           block_size: int = 4, return_hidden: bool = False, commit: bool = True):
    """Run tokens [B, k] at cache columns [index, index + k).

    Returns (float32 logits [B, k, V] or hidden states, cache). `valid` [B, k] marks real tokens
    (padding is written but never attended). commit=False: the chunk is not written; it sees the
    cache outside [index, index + k) and itself, and the cache comes back unchanged.
    """
    b, k = tokens.shape
    valid = jnp.ones((b, k), bool) if valid is None else valid
    block_ids = positions // block_size if block_ids is None else block_ids
    cos, sin = rotary_tables(config, positions)
    apply = functools.partial(module(config).apply, {"params": params}, tokens, cos, sin,
                              cache=(cache.k, cache.v), cache_index=index, return_hidden=return_hidden)
    if not commit:
        columns = jnp.arange(cache.length)
        elsewhere = (columns < index) | (columns >= index + k)  # the chunk's own slots may hold stale keys
        mask = masks.PeekMask(
            masks.with_valid_keys(masks.by_mode(mode, positions, block_ids, cache.positions, cache.block_ids),
                                  cache.filled & elsewhere[None]),
            masks.with_valid_keys(masks.by_mode(mode, positions, block_ids, positions, block_ids), valid))
        out, _ = apply(mask)
        return out, cache
    put = lambda buf, new: jax.lax.dynamic_update_slice_in_dim(buf, new.astype(buf.dtype), index, axis=1)
    k_pos, k_blk, k_filled = put(cache.positions, positions), put(cache.block_ids, block_ids), put(cache.filled, valid)
    mask = masks.with_valid_keys(masks.by_mode(mode, positions, block_ids, k_pos, k_blk), k_filled)
    out, (new_k, new_v) = apply(mask)
    return out, KVCache(new_k, new_v, k_pos, k_blk, k_filled)
