"""Attention masks as pure functions of per-token metadata.

Every mask answers "may query q attend to key k?" from small per-token arrays, never from the
token values, so the same functions serve a full forward, a KV-cached step and the 2L training
layout. Shapes: per-token arrays are [B, T]; masks are boolean [B, Tq, Tk].

Block convention (shared by rollout and training): a token's block id is supplied by the caller.
`forward` defaults to `position // block_size`; the sampler and the OPD step align blocks to the
*response start* (the prompt is split into blocks counting backwards from its end), which they
realise by left-padding every prompt to a common width that is a multiple of the block size, so
that a column's block is simply `(column - prompt_width) // block_size`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


def causal(q_pos: jnp.ndarray, k_pos: jnp.ndarray) -> jnp.ndarray:
    """Autoregressive: a key is visible when its position is not after the query's."""
    return k_pos[:, None, :] <= q_pos[:, :, None]


def block_causal(q_block: jnp.ndarray, k_block: jnp.ndarray) -> jnp.ndarray:
    """Bidirectional inside a block, causal across blocks."""
    return k_block[:, None, :] <= q_block[:, :, None]


def by_mode(mode: str, q_pos, q_block, k_pos, k_block) -> jnp.ndarray:
    """The mask of an attention mode: "causal" (the AR teacher) or "block" (the student)."""
    if mode == "causal":
        return causal(q_pos, k_pos)
    if mode == "block":
        return block_causal(q_block, k_block)
    raise ValueError(f"unknown attention mode {mode!r}; expected 'causal' or 'block'")


def training_layout(q_block: jnp.ndarray, q_noisy: jnp.ndarray,
                    k_block: jnp.ndarray, k_noisy: jnp.ndarray) -> jnp.ndarray:
    """The 2L `[prompt | x0 | x_t]` layout (BD3-LM).

    Clean tokens (prompt and x0) attend block-causally among clean tokens. A noisy token of block
    j attends to the clean tokens of blocks < j and bidirectionally to the noisy tokens of block
    j. Clean tokens never see noisy ones.
    """
    qb, kb = q_block[:, :, None], k_block[:, None, :]
    qn, kn = q_noisy[:, :, None], k_noisy[:, None, :]
    clean_query = ~qn & ~kn & (kb <= qb)
    noisy_query = qn & ((kn & (kb == qb)) | (~kn & (kb < qb)))
    return clean_query | noisy_query


def with_valid_keys(mask: jnp.ndarray, k_valid: jnp.ndarray) -> jnp.ndarray:
    """Hide padding (and empty cache slots) from every query."""
    return mask & k_valid[:, None, :]


def positions_from_valid(valid: jnp.ndarray) -> jnp.ndarray:
    """Position ids that count real tokens only (left padding gets position 0, never attended)."""
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)


def response_block_ids(columns: jnp.ndarray, prompt_width: int, block_size: int) -> jnp.ndarray:
    """Block id of each column when blocks are aligned to the response start at `prompt_width`."""
    return jnp.floor_divide(columns - prompt_width, block_size)


# ---------------------------------------------------------------------------------------------
# Static column structure (for block-sparse kernels)
# ---------------------------------------------------------------------------------------------

MASK_KINDS = ("causal", "block_causal", "training_layout")


@dataclasses.dataclass(frozen=True)
class StaticMask:
    """The part of a mask that depends on column indices only; key validity is the only data.

    A block-sparse kernel (splash attention) needs the mask's sparsity pattern at trace time, so
    it cannot take the boolean [B, T, T] array. Every training mask splits into a static column
    pattern AND `k_valid`, which holds on every row of a real (valid) query:
      causal           column k <= column q (the dense `causal` over positions counts real
                       tokens only, so among real tokens positions and columns agree in order);
      block_causal     blocks of `block_size` aligned to column `offset` (the response start);
      training_layout  the 2L `[prompt | x0 | x_t]` layout with prompt width `offset` and
                       response length `length` (`diffusion.layout.build_layout`).
    Rows of padding queries may differ from the dense masks; no real token reads them.
    """
    kind: str
    block_size: int = 1
    offset: int = 0
    length: int = 0

    def __post_init__(self):
        if self.kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {self.kind!r}; expected one of {MASK_KINDS}")
        if self.block_size < 1 or self.offset < 0 or self.length < 0:
            raise ValueError(f"bad StaticMask {self}: block_size >= 1, offset >= 0, length >= 0")

    def allowed(self, q_cols, k_cols):
        """May column q see column k? Broadcasting int arrays, numpy or jax (also inside a Pallas
        kernel, hence only +, -, *, comparisons and a non-negative integer division)."""
        if self.kind == "causal":
            return k_cols <= q_cols
        qb, kb = self._block(q_cols), self._block(k_cols)
        if self.kind == "block_causal":
            return kb <= qb
        qn, kn = self._noisy(q_cols), self._noisy(k_cols)
        clean_query = ~qn & ~kn & (kb <= qb)
        noisy_query = qn & ((kn & (kb == qb)) | (~kn & (kb < qb)))
        return clean_query | noisy_query

    def dense(self, k_valid: jnp.ndarray) -> jnp.ndarray:
        """The boolean [B, T, T] mask this structure stands for (tests, and a reference)."""
        cols = jnp.arange(k_valid.shape[-1], dtype=jnp.int32)
        return with_valid_keys(jnp.broadcast_to(self.allowed(cols[:, None], cols[None, :]),
                                                (k_valid.shape[0],) + (cols.size,) * 2), k_valid)

    def _noisy(self, cols):
        return cols >= self.offset + self.length

    def _block(self, cols):
        # A block id shifted so that it is never negative (comparisons only need differences):
        # x_t columns take their x0 twin's block; the shift moves `offset` onto a block start.
        if self.kind == "training_layout":
            cols = cols - self.length * self._noisy(cols).astype(cols.dtype)
        return _nonneg_floordiv(cols + (-self.offset) % self.block_size, self.block_size)


def _nonneg_floordiv(x, d: int):
    if d == 1:
        return x
    if isinstance(x, np.ndarray):
        return x // d
    # lax.div truncates, which is the floor for the non-negative ids here, and lowers to one
    # integer division in a TPU kernel (jnp's floor_divide adds sign fix-ups).
    return jax.lax.div(x, jnp.asarray(d, x.dtype))


@struct.dataclass
class StructuredMask:
    """What the model receives instead of a boolean mask on the splash path: key validity [B, T]
    (data) and the static column structure (pytree metadata, so it passes scan and remat)."""
    valid: jnp.ndarray
    structure: StaticMask = struct.field(pytree_node=False)


@struct.dataclass
class PeekMask:
    """A cached pass that leaves the cache untouched (a diffusion round that is not committed):
    `cached` [B, T, S] says which cache slots each query sees, `chunk` [B, T, T] which of the
    chunk's own tokens; the model attends to both as one softmax."""
    cached: jnp.ndarray
    chunk: jnp.ndarray
