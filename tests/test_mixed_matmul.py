"""bfloat16 products with float32 accumulation in the backward pass (models/mixed_matmul.py), and
the student update's unrolled layers on CPU (models/layer_stack.platform_layout).

References: JAX's own autodiff of the same product (the plain `dot_general` the model used
before) and of the scanned model; brute-force float32 products.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opdlm_jax.models import forward
from opdlm_jax.models.layer_stack import platform_layout, stack_layers
from opdlm_jax.models.mixed_matmul import dot_accumulate_f32, scale_features
from tiny import tiny_model

# Every contraction the model makes: projections (1 and 2 contracted dims), the tied unembedding
# ([V, d] weight, contracted on its last dim), an untied one; then a layout no model product has
# (w's contracted dims in the reverse order), which takes the float32 fallback.
CASES = [
    ((3, 5, 8), (8, 2, 4), ((2,), (0,))),
    ((3, 5, 2, 4), (2, 4, 8), ((2, 3), (0, 1))),
    ((3, 5, 8), (11, 8), ((2,), (1,))),
    ((3, 5, 8), (8, 11), ((2,), (0,))),
    ((5, 4, 6), (6, 3, 4), ((1, 2), (2, 0))),
]


def _operands(xs, ws, dtype):
    kx, kw, kc = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, xs, jnp.float32).astype(dtype)
    w = jax.random.normal(kw, ws, jnp.float32).astype(dtype)
    return x, w, kc


@pytest.mark.parametrize("xs,ws,contract", CASES)
def test_bfloat16_gradients_match_autodiff_of_the_plain_product(xs, ws, contract):
    x, w, kc = _operands(xs, ws, jnp.bfloat16)
    out_shape = jax.eval_shape(lambda: jax.lax.dot_general(x, w, (contract, ((), ())))).shape
    # A cotangent that holds bfloat16 values, as a projection's (its output is cast to bfloat16).
    c = jax.random.normal(kc, out_shape, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32)

    def loss(product):
        return lambda x, w: jnp.sum(product(x, w).astype(jnp.bfloat16).astype(jnp.float32) * c)

    plain = lambda x, w: jax.lax.dot_general(x, w, (contract, ((), ())), preferred_element_type=jnp.float32)
    ours = lambda x, w: dot_accumulate_f32(x, w, contract)
    np.testing.assert_array_equal(np.asarray(jax.jit(ours)(x, w)), np.asarray(jax.jit(plain)(x, w)))
    got = jax.jit(jax.grad(loss(ours), (0, 1)))(x, w)
    want = jax.jit(jax.grad(loss(plain), (0, 1)))(x, w)
    for g, r in zip(got, want):
        assert g.dtype == jnp.bfloat16 and g.shape == r.shape
        g, r = np.asarray(g, np.float32), np.asarray(r, np.float32)
        # Both round a float32-accumulated product to bfloat16 (8-bit mantissa); summation
        # order differs, so they agree to one bfloat16 ulp of the largest entry.
        np.testing.assert_allclose(g, r, rtol=0, atol=2 ** -7 * np.abs(r).max())


@pytest.mark.parametrize("xs,ws,contract", CASES)
def test_float32_operands_take_the_plain_product(xs, ws, contract):
    x, w, _ = _operands(xs, ws, jnp.float32)
    f = lambda x, w: jnp.sum(jnp.sin(dot_accumulate_f32(x, w, contract)))
    g = lambda x, w: jnp.sum(jnp.sin(jax.lax.dot_general(x, w, (contract, ((), ())))))
    for a, b in zip(jax.grad(f, (0, 1))(x, w), jax.grad(g, (0, 1))(x, w)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("xs,ws,contract", CASES)
def test_float32_master_weight_gets_an_unrounded_gradient(xs, ws, contract):
    """bfloat16 compute on float32-stored weights (the trainer's master weights): the weight's
    gradient comes straight from the float32 accumulator, so it equals the float32 product of the
    same bfloat16-valued operands up to summation order (not rounded to bfloat16)."""
    x, w, kc = _operands(xs, ws, jnp.bfloat16)
    w32 = w.astype(jnp.float32)  # stored float32, holding bfloat16 values
    out_shape = jax.eval_shape(lambda: jax.lax.dot_general(x, w, (contract, ((), ())))).shape
    c = jax.random.normal(kc, out_shape, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32)
    ours = jax.grad(lambda w: jnp.sum(dot_accumulate_f32(x, w, contract, jnp.bfloat16)
                                      .astype(jnp.bfloat16).astype(jnp.float32) * c))(w32)
    exact = jax.grad(lambda w: jnp.sum(jax.lax.dot_general(x.astype(jnp.float32), w, (contract, ((), ())),
                                                           precision="highest") * c))(w32)
    assert ours.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ours), np.asarray(exact), rtol=1e-5, atol=1e-5)


def test_scale_features_gradient_in_bfloat16():
    """A norm's scale in bfloat16 compute: value as the plain product, the scale's gradient a
    float32 sum over rows (the plain autodiff's, up to order), x's gradient the plain one."""
    kx, ks, kc = jax.random.split(jax.random.PRNGKey(5), 3)
    x = jax.random.normal(kx, (3, 7, 16), jnp.float32).astype(jnp.bfloat16)
    scale = 1 + 0.1 * jax.random.normal(ks, (16,), jnp.float32)
    c = jax.random.normal(kc, x.shape, jnp.float32).astype(jnp.bfloat16)
    plain = lambda x, s: x * s.astype(x.dtype)
    loss = lambda f: lambda x, s: jnp.sum((f(x, s) * c).astype(jnp.float32))
    np.testing.assert_array_equal(np.asarray(scale_features(x, scale)), np.asarray(plain(x, scale)))
    (gx, gs), (rx, _) = jax.grad(loss(scale_features), (0, 1))(x, scale), jax.grad(loss(plain), (0, 1))(x, scale)
    np.testing.assert_array_equal(np.asarray(gx), np.asarray(rx))
    want = np.einsum("btd,btd->d", np.asarray(c, np.float64), np.asarray(x, np.float64))
    assert gs.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(gs), want, rtol=1e-5, atol=1e-5)


def test_student_gradient_through_the_cpu_layout_equals_the_scanned_model():
    """The update differentiates the unrolled model through `platform_layout` (on CPU) but
    keeps the stacked layout of the parameters and gradients: same gradient as the scan."""
    config, params = tiny_model("qwen3")
    scanned, stacked = stack_layers(config, params)
    tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 9), 0, config.vocab_size)

    def loss(layout):
        def f(p):
            cfg, p = layout(scanned, p)
            return jnp.mean(jax.nn.log_softmax(forward(cfg, p, tokens, mode="block", block_size=4))[..., 3])
        return f

    unrolled_config, _ = platform_layout(scanned, stacked)
    assert not unrolled_config.scan_layers  # the tests run on CPU
    got = jax.jit(jax.grad(loss(platform_layout)))(stacked)
    want = jax.jit(jax.grad(loss(lambda c, p: (c, p))))(stacked)
    assert jax.tree.structure(got) == jax.tree.structure(stacked)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)  # float32, other order


def test_platform_layout_keeps_the_scan_off_cpu(monkeypatch):
    """The layout follows the platform the program is traced for (an AOT compile for TPU on this
    CPU host keeps the scan), and an unrolled model is left as it is."""
    from opdlm_jax.models import layer_stack

    config, params = tiny_model("qwen3")
    scanned, stacked = stack_layers(config, params)
    assert platform_layout(config, params)[0] is config  # already unrolled
    monkeypatch.setattr(layer_stack, "traced_platform", lambda: "tpu")
    kept_config, kept = platform_layout(scanned, stacked)
    assert kept_config.scan_layers and kept is stacked
