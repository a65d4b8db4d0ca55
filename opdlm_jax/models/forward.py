"""Functional entry points: parameter init and a full (uncached) forward pass."""
from __future__ import annotations

import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from opdlm_jax.models import masks
from opdlm_jax.models.attention_choice import use_splash
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.rope import rotary_tables
from opdlm_jax.models.transformer import Transformer

Mode = Literal["causal", "block"]


@functools.lru_cache(maxsize=None)
def module(config: ModelConfig) -> Transformer:
    return Transformer(config)


def init_params(config: ModelConfig, rng: jax.Array) -> dict:
    """Random parameters (a plain pytree, no partitioning boxes)."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    cos, sin = rotary_tables(config, jnp.zeros((1, 1), jnp.int32))
    boxed = module(config).init(rng, tokens, cos, sin, jnp.ones((1, 1, 1), bool))
    return nn.meta.unbox(boxed)["params"]


def logical_axes(config: ModelConfig) -> dict:
    """The logical axis names of every parameter, as a pytree of PartitionSpecs."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    cos, sin = rotary_tables(config, jnp.zeros((1, 1), jnp.int32))
    abstract = jax.eval_shape(
        lambda: module(config).init(jax.random.PRNGKey(0), tokens, cos, sin, jnp.ones((1, 1, 1), bool)))
    return nn.get_partition_spec(abstract)["params"]


def build_mask(mode: Mode, positions, block_ids, valid) -> jnp.ndarray:
    return masks.with_valid_keys(masks.by_mode(mode, positions, block_ids, positions, block_ids), valid)


def forward(config: ModelConfig, params: dict, tokens: jnp.ndarray, *, mode: Mode = "causal",
            block_size: int = 4, positions: jnp.ndarray | None = None,
            valid: jnp.ndarray | None = None, block_ids: jnp.ndarray | None = None,
            mask: jnp.ndarray | None = None, structure: masks.StaticMask | None = None,
            return_hidden: bool = False) -> jnp.ndarray:
    """Full forward pass -> float32 logits [B, T, V] (or final hidden states [B, T, d]).

    tokens: int [B, T]. valid: bool [B, T], False at padding (default all True). positions:
    RoPE position ids (default: count of real tokens so far, so left padding is transparent).
    mode: "causal" (the AR teacher) or "block" (the block-diffusion student, blocks of
    `block_size`; block ids default to `positions // block_size`). An explicit boolean `mask`
    [B, T, T] (for example the 2L training layout) overrides `mode`.

    structure: the mask's static column pattern (`masks.StaticMask`), which lets TPU use splash
    attention (`ModelConfig.attention`); it must describe the same mask as `mask` / `mode` on
    every real query's row. Derived here for the causal mode with default positions.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
    valid = jnp.ones(tokens.shape, bool) if valid is None else jnp.asarray(valid, bool)
    default_positions = positions is None  # real tokens then count up with their columns
    positions = masks.positions_from_valid(valid) if positions is None else jnp.asarray(positions)
    if structure is None and mask is None and mode == "causal" and default_positions:
        structure = masks.StaticMask("causal")
    if structure is not None and use_splash(config):
        mask = masks.StructuredMask(valid, structure)
    elif mask is None:
        if block_ids is None:
            block_ids = positions // block_size
        mask = build_mask(mode, positions, block_ids, valid)
    cos, sin = rotary_tables(config, positions)
    out, _ = module(config).apply({"params": params}, tokens, cos, sin, mask,
                                  return_hidden=return_hidden)
    return out


def unembed(config: ModelConfig, params: dict, hidden: jnp.ndarray) -> jnp.ndarray:
    """Final hidden states -> float32 logits (lets losses chunk the vocabulary projection)."""
    return module(config).apply({"params": params}, hidden, method=Transformer.unembed)
