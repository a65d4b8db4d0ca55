"""opdlm_jax: on-policy distillation of autoregressive LMs into block-diffusion LMs, in JAX."""
from opdlm_jax.models import ModelConfig, forward, init_params

__all__ = ["ModelConfig", "forward", "init_params"]
