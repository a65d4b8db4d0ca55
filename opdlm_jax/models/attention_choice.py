"""Which attention implementation a full forward pass uses: dense `where` masks or splash.

`ModelConfig.attention`: "dense" always materialises the scores (the reference; CPU and GPU);
"splash" always uses the block-sparse kernel (off TPU in Pallas interpret mode: tests only);
"auto" picks splash when the program is traced for TPU. The platform is that of the mesh in
context (the trainer and the AOT tool trace under `jax.set_mesh`, and an AOT mesh of compile-only
TPU devices must count as TPU on a CPU-only host), else JAX's default backend.
"""
from __future__ import annotations

import jax

from opdlm_jax.models.config import ModelConfig


def traced_platform() -> str:
    """The platform the program is traced for (also what `layer_stack` keys its layout on)."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        return mesh.abstract_device.platform
    return jax.default_backend()


def use_splash(config: ModelConfig) -> bool:
    if config.attention == "auto":
        return traced_platform() == "tpu"
    return config.attention == "splash"
