"""Matrix products in a low-precision compute dtype with float32 accumulation, forward AND backward.

`jax.lax.dot_general(x, w, ..., preferred_element_type=float32)` on bfloat16 operands is the form
XLA's CPU backend runs as a native bfloat16 matmul. Its automatic transpose is not that form: the
cotangent of the float32 product is float32, so both backward products multiply a float32
cotangent by a bfloat16 operand (XLA converts one side on every use), and the gradient of a
float32 master weight is rounded to bfloat16 on its way back. `dot_accumulate_f32` casts the
cotangent to the compute dtype first and runs both backward products in it with float32
accumulation; the weight's gradient leaves the float32 accumulator in the weight's own dtype.
Where the forward result is cast to the compute dtype right away (every projection), its
cotangent already holds compute-dtype values, so the cast loses nothing. float32 compute takes
the plain product, unchanged. (A one-process check on an MLP stack's gradient: 5-10% faster; most
of the bfloat16 update's speed-up came from unrolling the layers, `layer_stack.platform_layout`.)
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

Dims = tuple[tuple[int, ...], tuple[int, ...]]  # (x's contracted dims, w's contracted dims)


def dot_accumulate_f32(x: jax.Array, w: jax.Array, contract: Dims, compute_dtype=None) -> jax.Array:
    """float32 result of contracting x's dims contract[0] with w's dims contract[1] (no batch
    dims; result dims: x's free dims, then w's free dims, as `jax.lax.dot_general`), both
    operands in `compute_dtype` (default: x's). `w` may be stored in another dtype (float32
    master weights): its gradient comes back in that dtype straight from the float32
    accumulator, without a detour through the compute dtype."""
    compute_dtype = jnp.dtype(compute_dtype or x.dtype)
    if compute_dtype == jnp.float32:
        return _dot(x.astype(compute_dtype), w.astype(compute_dtype), contract)
    return _low_precision_dot(x.astype(compute_dtype), w, contract)


def _dot(x, w, contract: Dims):
    return jax.lax.dot_general(x, w, (contract, ((), ())), preferred_element_type=jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _low_precision_dot(x, w, contract: Dims):
    return _dot(x, w.astype(x.dtype), contract)


def _forward(x, w, contract: Dims):
    w_compute = w.astype(x.dtype)
    return _dot(x, w_compute, contract), (x, w_compute, jnp.zeros((), w.dtype))


def _backward(contract: Dims, residuals, cotangent):
    x, w, w_stored = residuals
    cx, cw = contract
    fx = [d for d in range(x.ndim) if d not in cx]
    fw = [d for d in range(w.ndim) if d not in cw]
    ct = cotangent.astype(x.dtype)
    ct_free_x, ct_free_w = tuple(range(len(fx))), tuple(range(len(fx), cotangent.ndim))
    # d/dx pairs the cotangent's w-free part with w's free dims; each of w's contracted dims
    # stands for its x partner. d/dw likewise with x's free dims.
    dx = _product_in_layout(ct, ct_free_w, fx, w, tuple(fw), [cx[i] for i in np.argsort(cw)])
    dw = _product_in_layout(ct, ct_free_x, fw, x, tuple(fx), [cw[i] for i in np.argsort(cx)])
    return dx.astype(x.dtype), dw.astype(w_stored.dtype)


def _product_in_layout(ct, ct_contract, ct_free_dims, other, other_contract, other_free_dims):
    """ct x other contracted over (ct_contract, other_contract), laid out as the target array whose
    dims are named by ct's free dims (ct_free_dims) and other's free dims (other_free_dims).
    One of the two operand orders yields that layout directly for every product of the model;
    any other layout is computed in float32, because XLA's CPU backend fuses a transposed product
    into its generic dot kernel, which has no bfloat16 x bfloat16 -> float32 form."""
    ct_first, other_first = list(ct_free_dims) + list(other_free_dims), list(other_free_dims) + list(ct_free_dims)
    if ct_first == sorted(ct_first):
        return _dot(ct, other, (ct_contract, other_contract))
    if other_first == sorted(other_first):
        return _dot(other, ct, (other_contract, ct_contract))
    product = _dot(ct.astype(jnp.float32), other.astype(jnp.float32), (ct_contract, other_contract))
    return jnp.transpose(product, np.argsort(ct_first))


_low_precision_dot.defvjp(_forward, _backward)


def scale_features(x: jax.Array, scale: jax.Array) -> jax.Array:
    """x * scale over x's last axis, in x's dtype (a norm's learned scale). In a low-precision
    dtype the scale's gradient (a sum over every row) is taken as a float32 matrix-vector
    product: XLA's CPU backend runs it as a windowed reduction, 4 ms per norm of the demo's update."""
    if x.dtype == jnp.float32:
        return x * scale.astype(x.dtype)
    return _scale_features(x, scale)


@jax.custom_vjp
def _scale_features(x, scale):
    return x * scale.astype(x.dtype)


def _scale_forward(x, scale):
    return _scale_features(x, scale), (x, scale)


def _scale_backward(residuals, cotangent):
    x, scale = residuals
    rows = (cotangent.astype(jnp.float32) * x.astype(jnp.float32)).reshape(-1, x.shape[-1])
    d_scale = jnp.ones((rows.shape[0],), jnp.float32) @ rows
    return (cotangent * scale.astype(cotangent.dtype)).astype(x.dtype), d_scale.astype(scale.dtype)


_scale_features.defvjp(_scale_forward, _scale_backward)
