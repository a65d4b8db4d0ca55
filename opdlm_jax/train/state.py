"""The train state: optimizer step count, student parameters, optimizer state; and its shardings."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from opdlm_jax.sharding import replicated


class TrainState(NamedTuple):
    step: jnp.ndarray  # optimizer updates done
    params: Any
    opt_state: Any


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def train_state_shardings(state: TrainState, param_shardings: Any, optimizer: optax.GradientTransformation,
                          mesh) -> TrainState:
    """Shardings of a TrainState: optimizer moments follow their parameters, the rest replicated."""
    rep = replicated(mesh)
    opt = optax.tree_map_params(optimizer, lambda _, s: s, state.opt_state, param_shardings,
                                transform_non_params=lambda _: rep)
    return TrainState(rep, param_shardings, opt)
