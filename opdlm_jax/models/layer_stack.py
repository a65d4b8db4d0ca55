"""The weights a decode loop runs on: scanned (stacked) vs unrolled layers, and their dtype.

Training scans the layers (`ModelConfig.scan_layers`): one layer body to compile, parameters
stacked on a leading axis. A decode loop runs the model dozens to thousands of times on the same
weights; on CPU every scanned forward slices each layer's weights out of the stack (a copy of
all weights per forward; BENCHMARKS.md "Speed work of 2026-12-02"), so decoding there unstacks the
layers once per call and runs the unrolled model. TPU and GPU compilers read the slices in place
and keep the scan (shorter compiles).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from opdlm_jax.models.config import ModelConfig

STACKED = "layers"


def unstack_layers(config: ModelConfig, params: dict) -> tuple[ModelConfig, dict]:
    """(config with scan_layers=False, params with `layers_{i}` entries) from a scanned model."""
    if not config.scan_layers:
        return config, params
    stacked = params[STACKED]
    unrolled = {k: v for k, v in params.items() if k != STACKED}
    for i in range(config.num_layers):
        unrolled[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
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
    dtype = config.jnp_dtype
    cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return config.replace(param_dtype=config.dtype), jax.tree.map(cast, params)


def decoding_layout(config: ModelConfig, params: Any) -> tuple[ModelConfig, Any]:
    """The weights a decode loop should run on: cast to the compute dtype once, and unstacked on
    CPU (see the module docstring)."""
    config, params = compute_dtype_weights(config, params)
    if config.scan_layers and jax.default_backend() == "cpu":
        return unstack_layers(config, params)
    return config, params
