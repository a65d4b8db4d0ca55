"""Llama / Qwen2 / Qwen3 decoder in Flax linen, attention masks and KV cache."""
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.forward import forward, init_params, logical_axes, unembed
from opdlm_jax.models.kv_cache import KVCache, extend, init_cache

__all__ = ["ModelConfig", "forward", "init_params", "logical_axes", "unembed", "KVCache", "extend",
           "init_cache"]
