"""Fingerprints and finiteness of array trees: what a checkpoint is checked against on restore.

A leaf's fingerprint is two wrapping uint32 sums over its raw bits: the plain sum and a sum
weighted by a per-position odd multiplier. Integer addition modulo 2**32 is exact and order-free,
so the fingerprint is the same on any mesh and process count (a checkpoint written by two
processes verifies in one), and any changed element changes it; a float sum could not promise
either. Both are computed on device under jit: no host copy of the state is made.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from opdlm_jax.sharding import host_value

_GOLDEN = np.uint32(2654435761)  # Knuth's multiplicative hash constant: spreads positions over 32 bits


def _bits_u32(x: jnp.ndarray) -> jnp.ndarray:
    """The element bits of `x` as uint32 (16-bit and 8-bit types widened, 64-bit split)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = x.dtype.itemsize
    if width == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if width in (1, 2):
        unsigned = {1: jnp.uint8, 2: jnp.uint16}[width]
        return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    raise TypeError(f"no fingerprint for dtype {x.dtype}")


def _leaf_fingerprint(x: jnp.ndarray) -> jnp.ndarray:
    bits = _bits_u32(jnp.asarray(x)).reshape(-1)
    # Odd weights: multiplying by an odd number is a bijection mod 2**32, so no change is hidden.
    weights = (jnp.arange(bits.shape[0], dtype=jnp.uint32) * _GOLDEN) | jnp.uint32(1)
    return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * weights, dtype=jnp.uint32)])


def _leaf_finite(x: jnp.ndarray) -> jnp.ndarray:
    x = jnp.asarray(x)
    return jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.array(True)


def tree_is_finite(tree: Any) -> jnp.ndarray:
    """A scalar bool: every floating leaf of `tree` is free of NaN and inf (traceable)."""
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([_leaf_finite(x) for x in leaves])) if leaves else jnp.array(True)


@jax.jit
def _fingerprints_and_finite(tree: Any):
    return [_leaf_fingerprint(x) for x in jax.tree.leaves(tree)], tree_is_finite(tree)


def fingerprint(tree: Any) -> tuple[dict[str, list], bool]:
    """-> ({leaf path: [sum, weighted sum, dtype]}, all finite) for an array tree."""
    prints, finite = _fingerprints_and_finite(tree)
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return ({jax.tree_util.keystr(path): [*(int(v) for v in host_value(f)), str(jnp.asarray(leaf).dtype)]
             for (path, leaf), f in zip(flat, prints)}, bool(host_value(finite)))


def mismatched_leaves(expected: dict[str, list], actual: dict[str, list]) -> list[str]:
    """The leaf paths whose fingerprint in `actual` differs from `expected` or that are missing on
    either side. A leaf restored in another dtype than it was saved in (a cast on restore) cannot
    be compared bit for bit and is skipped."""
    bad = [p for p in expected if p not in actual] + [p for p in actual if p not in expected]
    return bad + [p for p, v in actual.items() if p in expected and expected[p][2] == v[2] and expected[p] != v]
