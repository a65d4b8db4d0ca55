"""The rollout batch every OPD stage reads: left-padded prompts and terminal responses."""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class RolloutBatch(NamedTuple):
    prompt_tokens: jnp.ndarray  # [B, P] left-padded; P a multiple of the block size
    prompt_valid: jnp.ndarray  # [B, P] bool
    response: jnp.ndarray  # [B, L] terminal tokens x0 (pad where never decoded)
    step_map: jnp.ndarray  # [B, L] round within its block at which each token was unmasked; -1 = none
    lengths: jnp.ndarray  # [B] response tokens up to and including the first stop token

    @property
    def response_valid(self) -> jnp.ndarray:
        """Decoded positions: attended in training, like the rollout attended them."""
        return self.step_map >= 0

    @property
    def prompt_lengths(self) -> jnp.ndarray:
        return self.prompt_valid.sum(-1).astype(jnp.int32)

    def minibatch(self, index: jnp.ndarray, size: int) -> "RolloutBatch":
        import jax

        return RolloutBatch(*(jax.lax.dynamic_slice_in_dim(x, index * size, size, axis=0) for x in self))
