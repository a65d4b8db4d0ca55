"""The decoder-only Transformer of the Llama / Qwen2 / Qwen3 families, in Flax linen.

Pure-functional: parameters are a plain pytree passed to `apply`. The attention mask is an
input (built by `opdlm_jax.models.masks` from per-token metadata), so one module serves causal
teacher scoring, block-causal student decoding and the 2L training layout. Every parameter and
the main activations carry logical axis names; `opdlm_jax.sharding` maps them to a mesh.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from opdlm_jax.models.attention_choice import traced_platform
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.masks import PeekMask, StructuredMask
from opdlm_jax.models.mixed_matmul import dot_accumulate_f32, scale_features
from opdlm_jax.models.rope import apply_rotary

LayerCache = Any  # (k, v) arrays [B, kv_heads, S, head_dim] or None

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _param(module: nn.Module, name: str, init, shape, axes, dtype):
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _constrain(x, axes):
    return nn.with_logical_constraint(x, axes)


class RMSNorm(nn.Module):
    eps: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("norm",), self.param_dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        # HF order: normalise in float32, cast back, then scale in the activation dtype.
        return scale_features(normed.astype(self.dtype), scale)


class Projection(nn.Module):
    """A dense layer with an n-d kernel: contracts `in_dims` leading kernel dims with x's last ones."""
    shape: tuple
    axes: tuple
    in_dims: int
    use_bias: bool
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.normal(stddev=0.02)
        kernel = _param(self, "kernel", init, self.shape, self.axes, self.param_dtype)
        contract_x = tuple(range(x.ndim - self.in_dims, x.ndim))
        # float32 accumulation, then the activation dtype: the form XLA's CPU backend runs as a
        # native bfloat16 matmul, in the backward pass too (mixed_matmul).
        y = dot_accumulate_f32(x, kernel, (contract_x, tuple(range(self.in_dims))), self.dtype).astype(self.dtype)
        if self.use_bias:
            bias = _param(self, "bias", nn.initializers.zeros, self.shape[self.in_dims:],
                          self.axes[self.in_dims:], self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class Attention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, layer_cache: LayerCache, cache_index):
        c = self.config
        dt, pdt = c.jnp_dtype, c.jnp_param_dtype
        d, h, kv, hd = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim

        def proj(name, heads, axes_heads):
            return Projection((d, heads, hd), ("embed", axes_heads, "head_dim"), 1,
                              c.attention_bias, dt, pdt, name=name)(x)

        q = proj("q_proj", h, "q_heads")
        k = proj("k_proj", kv, "kv_heads")
        v = proj("v_proj", kv, "kv_heads")
        if c.qk_norm:
            q = RMSNorm(c.rms_norm_eps, dt, pdt, name="q_norm")(q)
            k = RMSNorm(c.rms_norm_eps, dt, pdt, name="k_norm")(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q = _constrain(q, ("batch", "length", "q_heads", "head_dim"))
        k = _constrain(k, ("batch", "length", "kv_heads", "head_dim"))

        new_cache = None
        if isinstance(mask, PeekMask):
            # A pass that must not change the cache (a diffusion round): attend to the cached
            # keys and to the chunk's own keys side by side, so nothing is written or copied.
            cache_k, cache_v = layer_cache
            out = _dense_attention(q, ((cache_k, cache_v, mask.cached),
                                       (_heads_first(k), _heads_first(v), mask.chunk)), kv, dt)
        elif isinstance(mask, StructuredMask):
            out = _splash(q, k.astype(dt), v.astype(dt), mask, layer_cache is not None)
        else:
            k, v = _heads_first(k), _heads_first(v)
            if layer_cache is not None:
                # Write this chunk's keys/values at cache_index (in place: each layer owns its
                # buffer), then attend over the whole cache; the mask hides empty slots.
                cache_k, cache_v = layer_cache
                k = jax.lax.dynamic_update_slice_in_dim(cache_k, k.astype(cache_k.dtype), cache_index, axis=2)
                v = jax.lax.dynamic_update_slice_in_dim(cache_v, v.astype(cache_v.dtype), cache_index, axis=2)
                new_cache = (k, v)
            out = _dense_attention(q, ((k, v, mask),), kv, dt)
        out = _constrain(out, ("batch", "length", "q_heads", "head_dim"))
        out = Projection((h, hd, d), ("q_heads", "head_dim", "embed"), 2, False, dt, pdt,
                         name="o_proj")(out)
        return out, new_cache


def _dense_attention(q, segments, kv_heads: int, dt):
    """Softmax attention of q [B, T, H, hd] over one or more (keys, values, mask [B, T, S_i])
    segments, as if their keys were concatenated; keys/values [B, kv_heads, S_i, hd] (the cache's
    layout, so cached keys are read without a transpose); float32 scores, grouped-query heads."""
    b, t, h, hd = q.shape
    q = q.reshape(b, t, kv_heads, h // kv_heads, hd)
    scores = []
    for k, _, mask in segments:
        s = jnp.einsum("btkgd,bksd->bkgts", q, k.astype(dt), preferred_element_type=jnp.float32) * (hd ** -0.5)
        scores.append(jnp.where(mask[:, None, None, :, :], s, jnp.finfo(jnp.float32).min))
    probs = jax.nn.softmax(jnp.concatenate(scores, -1) if len(scores) > 1 else scores[0], axis=-1).astype(dt)
    out, start = 0, 0
    for k, v, _ in segments:
        part = jax.lax.slice_in_dim(probs, start, start + k.shape[2], axis=-1)
        out = out + jnp.einsum("bkgts,bksd->btkgd", part, v.astype(dt))
        start += k.shape[2]
    return out.reshape(b, t, h, hd)


def _heads_first(x):
    """[B, T, kv_heads, hd] -> [B, kv_heads, T, hd]."""
    return jnp.swapaxes(x, 1, 2)


def _splash(q, k, v, mask: StructuredMask, cached: bool):
    if cached:
        raise ValueError("splash attention serves full (uncached) passes only; the KV cache uses "
                         "dense masks")
    # Pallas is imported only on this path.
    from opdlm_jax.models.splash import splash_attention
    return splash_attention(q, k, v, mask.valid, mask.structure,
                            interpret=traced_platform() != "tpu")


class MLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        dt, pdt = c.jnp_dtype, c.jnp_param_dtype
        up_shape, up_axes = (c.hidden_size, c.intermediate_size), ("embed", "mlp")
        gate = Projection(up_shape, up_axes, 1, False, dt, pdt, name="gate_proj")(x)
        up = Projection(up_shape, up_axes, 1, False, dt, pdt, name="up_proj")(x)
        hidden = _constrain(nn.silu(gate) * up, ("batch", "length", "mlp"))
        return Projection((c.intermediate_size, c.hidden_size), ("mlp", "embed"), 1, False, dt, pdt,
                          name="down_proj")(hidden)


class DecoderLayer(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x, layer_cache, cos, sin, mask, cache_index):
        c = self.config
        dt, pdt = c.jnp_dtype, c.jnp_param_dtype
        attn_out, new_cache = Attention(c, name="attn")(
            RMSNorm(c.rms_norm_eps, dt, pdt, name="attn_norm")(x), cos, sin, mask, layer_cache,
            cache_index)
        x = x + attn_out
        x = x + MLP(c, name="mlp")(RMSNorm(c.rms_norm_eps, dt, pdt, name="mlp_norm")(x))
        return _constrain(x, ("batch", "length", "embed")), new_cache


class Transformer(nn.Module):
    """tokens [B, T] -> hidden [B, T, d] (or float32 logits), plus the updated cache.

    `mask` is boolean [B, T, S]: S = T without a cache, the cache length with one; a
    `masks.PeekMask` runs the chunk against the cache without writing it. `cache` is (k, v):
    with scanned layers each [num_layers, B, kv_heads, S, head_dim], unrolled a tuple of
    per-layer [B, kv_heads, S, head_dim] buffers (updated in place, no per-step restacking);
    or None.
    """
    config: ModelConfig

    def setup(self):
        c = self.config
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
            (c.vocab_size, c.hidden_size), c.jnp_param_dtype)
        layer_cls = DecoderLayer
        if c.remat_policy != "none":
            layer_cls = nn.remat(DecoderLayer, policy=_REMAT_POLICIES[c.remat_policy],
                                 prevent_cse=not c.scan_layers)
        if c.scan_layers:
            self.layers = nn.scan(
                layer_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                length=c.num_layers, metadata_params={nn.PARTITION_NAME: "layers"},
            )(c, name="layers")
        else:
            self.layers = [layer_cls(c, name=f"layers_{i}") for i in range(c.num_layers)]
        self.final_norm = RMSNorm(c.rms_norm_eps, c.jnp_dtype, c.jnp_param_dtype, name="final_norm")
        if not c.tie_word_embeddings:
            self.lm_head = self.param(
                "lm_head", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "vocab")),
                (c.hidden_size, c.vocab_size), c.jnp_param_dtype)

    def __call__(self, tokens, cos, sin, mask, cache=None, cache_index=0, return_hidden=False):
        c = self.config
        x = jnp.take(self.embedding, tokens, axis=0).astype(c.jnp_dtype)
        x = _constrain(x, ("batch", "length", "embed"))
        if c.scan_layers:
            x, new_cache = self.layers(x, cache, cos, sin, mask, cache_index)
        else:
            new_layers = []
            for i, layer in enumerate(self.layers):
                layer_cache = None if cache is None else (cache[0][i], cache[1][i])
                x, layer_new = layer(x, layer_cache, cos, sin, mask, cache_index)
                new_layers.append(layer_new)
            new_cache = None
            if cache is not None and not isinstance(mask, PeekMask):
                new_cache = tuple(tuple(lc[j] for lc in new_layers) for j in range(2))
        x = self.final_norm(x)
        if return_hidden:
            return x, new_cache
        return self.unembed(x), new_cache

    def unembed(self, hidden):
        """Hidden states [..., d] -> float32 logits [..., V]; callers may chunk along the sequence."""
        c = self.config
        if c.tie_word_embeddings:
            weight, dims = self.embedding, ((hidden.ndim - 1,), (1,))
        else:
            weight, dims = self.lm_head, ((hidden.ndim - 1,), (0,))
        logits = dot_accumulate_f32(hidden, weight, dims, c.jnp_dtype)
        # Decoding unembeds one position per row ([B, d] -> [B, V]); training whole sequences.
        names = {2: ("batch", "vocab"), 3: ("batch", "length", "vocab")}.get(logits.ndim)
        return logits if names is None else _constrain(logits, names)
