"""The weights a program runs on: scanned (stacked) vs unrolled layers, and their dtype.

Training stores the layers scanned (`ModelConfig.scan_layers`): one layer body to compile,
parameters stacked on a leading axis. On CPU a scanned program is slow twice over: every scanned
forward slices each layer's weights out of the stack (a copy of all weights per forward), and a
scanned backward writes every layer's saved activations into stacked buffers one layer at a time,
copies XLA's CPU backend does not make in place (a third of the demo's bfloat16 student update;
BENCHMARKS.md). So on CPU decoding, teacher scoring and the student update unstack the layers at
the start of the program and run the unrolled model; the gradient of the unstacking is one
concatenation per parameter back into the stacked layout. TPU and GPU compilers read the slices
in place and keep the scan (shorter compiles, one layer's activations live at a time).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from opdlm_jax.models.attention_choice import traced_platform
from opdlm_jax.models.config import ModelConfig

STACKED = "layers"


def unstack_layers(config: ModelConfig, params: dict) -> tuple[ModelConfig, dict]:
    """(config with scan_layers=False, params with `layers_{i}` entries) from a scanned model."""
    if not config.scan_layers:
        return config, params
    n = config.num_layers
    # split (not n slices): its gradient is one concatenation, not n zero-padded full-size copies
    per_leaf = jax.tree.map(lambda x: [jnp.squeeze(s, 0) for s in jnp.split(x, n)], params[STACKED])
    unrolled = {k: v for k, v in params.items() if k != STACKED}
    for i in range(n):
        unrolled[f"layers_{i}"] = jax.tree.map(lambda parts, i=i: parts[i], per_leaf,
                                               is_leaf=lambda x: isinstance(x, list))
    return config.replace(scan_layers=False), unrolled


def stack_layers(config: ModelConfig, params: dict) -> tuple[ModelConfig, dict]:
    """The inverse of `unstack_layers`: `layers_{i}` entries stacked for `scan_layers=True`."""
    if config.scan_layers:
        return config, params
    stacked = {k: v for k, v in params.items() if not k.startswith("layers_")}
    stacked[STACKED] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                    *[params[f"layers_{i}"] for i in range(config.num_layers)])
    return config.replace(scan_layers=True), stacked


def compute_dtype_weights(config: ModelConfig, params: Any) -> tuple[ModelConfig, Any]:
    """Weights cast to the compute dtype once (float32 master weights with bfloat16 compute):
    every use casts them anyway, so a loop that reuses them saves a cast of all weights per pass;
    the results are bit-identical."""
    if config.param_dtype == config.dtype:
        return config, params
    return config.replace(param_dtype=config.dtype), cast_floating(params, config.dtype)


def cast_floating(params: Any, dtype) -> Any:
    """The tree with its floating-point leaves cast to `dtype` (integer leaves as they are)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)


def platform_layout(config: ModelConfig, params: Any) -> tuple[ModelConfig, Any]:
    """Layers unstacked on CPU, as stored elsewhere (see the module docstring); differentiable.
    The platform is the one traced for (an AOT compile for TPU on a CPU host keeps the scan)."""
    if config.scan_layers and traced_platform() == "cpu":
        return unstack_layers(config, params)
    return config, params


def decoding_layout(config: ModelConfig, params: Any) -> tuple[ModelConfig, Any]:
    """The weights a decode loop should run on: cast to the compute dtype once, and unstacked on
    CPU (see the module docstring)."""
    return platform_layout(*compute_dtype_weights(config, params))
