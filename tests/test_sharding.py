"""Mesh construction, logical axis rules, and sharded forward/grad parity on 8 fake CPU devices."""
import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from opdlm_jax import sharding as shd
from opdlm_jax.models import forward, logical_axes
from tiny import tiny_config

TOL = 1e-5
MESHES = [(2, 2, 2), (1, 4, 2)]


@pytest.fixture(scope="module", autouse=True)
def _need_8_devices():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")


# --- mesh ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 4, 2), (8, 1, 1)])
def test_mesh_shapes_and_auto_axes(shape):
    mesh = shd.make_mesh(*shape)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape.values()) == shape
    assert mesh.axis_types == (AxisType.Auto,) * 3


@pytest.mark.parametrize("kwargs,expected", [
    (dict(), (8, 1, 1)),
    (dict(fsdp=2, tensor=2), (2, 2, 2)),
    (dict(data=1, fsdp=-1, tensor=2), (1, 4, 2)),
    (dict(data=2, fsdp=4, tensor=-1), (2, 4, 1)),
])
def test_mesh_fill(kwargs, expected):
    assert tuple(shd.make_mesh(**kwargs).shape.values()) == expected


def test_mesh_from_config_and_device_subset():
    mesh = shd.mesh_from_config({"data": 2, "tensor": -1}, devices=jax.devices()[:4])
    assert tuple(mesh.shape.values()) == (2, 1, 2)
    assert mesh.devices.size == 4
    assert shd.MeshConfig.from_any(shd.MeshConfig(fsdp=8)).resolve(8) == (1, 8, 1)
    with pytest.raises(ValueError, match="unknown mesh fields"):
        shd.MeshConfig.from_any({"model": 2})


@pytest.mark.parametrize("kwargs,message", [
    (dict(data=-1, fsdp=-1), "at most one mesh axis may be -1, got data and fsdp"),
    (dict(data=3, fsdp=1, tensor=2), r"data=3 x fsdp=1 x tensor=2 = 6 devices, but 8"),
    (dict(data=-1, tensor=3), r"cannot fill data=-1: fsdp=1 x tensor=3 = 3 does not divide"),
    (dict(data=0, fsdp=8), "mesh axis data=0 must be a positive integer or -1"),
    (dict(tensor=-2), "mesh axis tensor=-2"),
])
def test_mesh_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        shd.make_mesh(**kwargs)


# --- parameter shardings ---------------------------------------------------------------------

def _expected_spec(names, shape, mesh):
    """The rule table applied by hand: parameters never contain "batch", so no rule conflicts."""
    table = dict(shd.RULES)
    out = []
    for name, dim in zip(names, shape):
        axes = table[name]
        size = 1 if axes is None else int(np.prod([mesh.shape[a] for a in shd._as_tuple(axes)]))
        out.append(axes if axes is not None and dim % size == 0 else None)
    return P(*out)


@pytest.mark.parametrize("family", ["qwen3", "llama"])
@pytest.mark.parametrize("scan", [False, True])
def test_param_shardings_follow_rules(family, scan):
    mesh = shd.make_mesh(2, 2, 2)
    config = tiny_config(family, vocab_size=128, scan_layers=scan)
    shardings = shd.param_shardings(config, mesh)
    names = logical_axes(config)
    shapes = shd.param_shapes(config)
    flat_sh = jax.tree_util.tree_leaves_with_path(shardings)
    flat_names = jax.tree.leaves(names, is_leaf=lambda x: isinstance(x, P))
    flat_shapes = jax.tree.leaves(shapes)
    assert len(flat_sh) == len(flat_names) == len(flat_shapes)
    for (path, s), n, a in zip(flat_sh, flat_names, flat_shapes):
        assert isinstance(s, NamedSharding) and s.mesh is mesh
        assert s.spec == _expected_spec(n, a.shape, mesh), jax.tree_util.keystr(path)

    lead = (None,) if scan else ()
    layer = shardings["layers"] if scan else shardings["layers_0"]
    assert shardings["embedding"].spec == P("tensor", "fsdp")
    assert shardings["lm_head"].spec == P("fsdp", "tensor")
    assert layer["attn"]["q_proj"]["kernel"].spec == P(*lead, "fsdp", "tensor", None)
    assert layer["attn"]["k_proj"]["kernel"].spec == P(*lead, "fsdp", "tensor", None)
    assert layer["attn"]["o_proj"]["kernel"].spec == P(*lead, "tensor", None, "fsdp")
    assert layer["mlp"]["gate_proj"]["kernel"].spec == P(*lead, "fsdp", "tensor")
    assert layer["mlp"]["down_proj"]["kernel"].spec == P(*lead, "tensor", "fsdp")
    assert layer["attn_norm"]["scale"].spec == P(*lead, None)
    if family == "qwen3":
        assert layer["attn"]["q_norm"]["scale"].spec == P(*lead, None)


def test_indivisible_dims_fall_back_to_replication(caplog):
    mesh = shd.make_mesh(2, 2, 2)
    # vocab 97 and kv_heads 3 do not split over tensor=2; q_heads 6 and embed 32 do.
    config = tiny_config("llama", num_heads=6, num_kv_heads=3)
    shardings = shd.param_shardings(config, mesh)
    attn = shardings["layers_0"]["attn"]
    assert shardings["embedding"].spec == P(None, "fsdp")
    assert attn["k_proj"]["kernel"].spec == P("fsdp", None, None)
    assert attn["q_proj"]["kernel"].spec == P("fsdp", "tensor", None)
    # The fallback shardings are valid: placing real parameters on them works.
    params = shd.shard_params(_random_params(config), shardings)
    assert params["layers_0"]["attn"]["k_proj"]["kernel"].sharding == attn["k_proj"]["kernel"]

    # A SmolLM2-like vocabulary plus one, logged once however many arrays carry it.
    names = {"a": P("vocab", "embed"), "b": P("embed", "vocab")}
    shapes = {"a": jax.ShapeDtypeStruct((49153, 576), jnp.float32),
              "b": jax.ShapeDtypeStruct((576, 49153), jnp.float32)}
    with caplog.at_level(logging.WARNING, logger="opdlm_jax.sharding"):
        out = shd.logical_to_sharding(names, mesh, shapes=shapes)
    assert out["a"].spec == P(None, "fsdp") and out["b"].spec == P("fsdp", None)
    assert sum("49153" in r.getMessage() for r in caplog.records) == 1


def test_rule_precedence_and_errors():
    mesh = shd.make_mesh(2, 2, 2)
    # An activation: batch takes data+fsdp, so embed (-> fsdp) must stay replicated.
    assert shd.logical_to_mesh_spec(("batch", "length", "embed"), mesh) == P(("data", "fsdp"), None, None)
    assert shd.logical_to_mesh_spec(("batch", "length", "vocab"), mesh) == P(("data", "fsdp"), None, "tensor")
    with pytest.raises(ValueError, match="no sharding rule for logical axes"):
        shd.logical_to_mesh_spec(("embed", "experts"), mesh)
    with pytest.raises(ValueError, match="occur more than once"):
        shd.logical_to_mesh_spec(("embed", "embed"), mesh)
    assert shd.batch_sharding(mesh, 3).spec == P(("data", "fsdp"), None, None)
    # Without a divisibility problem, parameters and activations (mapped by flax inside the
    # model) read the table the same way.
    for names in [("batch", "length", "q_heads", "head_dim"), ("batch", "length", "mlp"),
                  ("layers", "embed", "kv_heads", "head_dim"), ("q_heads", "head_dim", "embed"),
                  ("vocab", "embed"), ("norm",)]:
        assert shd.logical_to_mesh_spec(names, mesh) == nn.logical_to_mesh_axes(names, shd.RULES)


# --- sharded forward / grad parity -----------------------------------------------------------

def _random_params(config, seed=0):
    """Random parameters from numpy: the same pytree as init_params without compiling an init
    (eager or jitted init costs several seconds per config on 2 cores)."""
    rng = np.random.default_rng(seed)

    def one(path, s):
        x = rng.normal(0.0, 0.1, s.shape)
        is_norm = "norm" in jax.tree_util.keystr(path)
        return jnp.asarray((1.0 + x) if is_norm else x, s.dtype)
    return jax.tree_util.tree_map_with_path(one, shd.param_shapes(config))


@functools.lru_cache(maxsize=None)
def _setup(family, scan):
    config = tiny_config(family, scan_layers=scan)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (8, 8), 0, config.vocab_size)
    return config, _random_params(config), tokens


def _both_modes(config, params, tokens):
    # One program for both masks: half the compiles of one test per mode.
    return tuple(forward(config, params, tokens, mode=m, block_size=4) for m in ("causal", "block"))


def _loss(config, params, tokens):
    return jnp.mean(forward(config, params, tokens, mode="block", block_size=4) ** 2)


@functools.lru_cache(maxsize=None)
def _single_device(kind, family, scan):
    """Unsharded reference results, computed once per model for all meshes."""
    config, params, tokens = _setup(family, scan)
    fn = {"forward": _both_modes, "grad": jax.value_and_grad(_loss, argnums=1)}[kind]
    return jax.jit(functools.partial(fn, config))(params, tokens)


@pytest.mark.parametrize("mesh_shape", MESHES)
@pytest.mark.parametrize("family,scan", [("qwen3", False), ("llama", True)])
def test_sharded_forward_matches_single_device(mesh_shape, family, scan):
    config, params, tokens = _setup(family, scan)
    fn = functools.partial(_both_modes, config)
    expected = _single_device("forward", family, scan)

    mesh = shd.make_mesh(*mesh_shape)
    pshard = shd.param_shardings(config, mesh)
    bshard = shd.batch_sharding(mesh, 2)
    out_sharding = shd.batch_sharding(mesh, 3)
    with shd.rules_context(mesh):
        got = jax.jit(fn, in_shardings=(pshard, bshard), out_shardings=(out_sharding,) * 2)(
            shd.shard_params(params, pshard), jax.device_put(tokens, bshard))
    for mode, g, e in zip(("causal", "block"), got, expected):
        assert g.sharding == out_sharding
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=TOL, rtol=TOL, err_msg=mode)


@pytest.mark.parametrize("mesh_shape", MESHES)
def test_sharded_grad_matches_single_device(mesh_shape):
    config, params, tokens = _setup("qwen3", False)
    loss = functools.partial(_loss, config)
    expected_loss, expected_grads = _single_device("grad", "qwen3", False)
    mesh = shd.make_mesh(*mesh_shape)
    pshard = shd.param_shardings(config, mesh)
    bshard = shd.batch_sharding(mesh, 2)
    with shd.rules_context(mesh):
        got_loss, got_grads = jax.jit(
            jax.value_and_grad(loss), in_shardings=(pshard, bshard),
            out_shardings=(shd.replicated(mesh), pshard),
        )(shd.shard_params(params, pshard), jax.device_put(tokens, bshard))
    np.testing.assert_allclose(float(got_loss), float(expected_loss), rtol=TOL)
    jax.tree.map(lambda g, s: (g.sharding == s) or pytest.fail(f"{g.sharding} != {s}"), got_grads, pshard)
    jax.tree.map(lambda g, e: np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=TOL, rtol=TOL),
                 got_grads, expected_grads)


def test_rules_context_activates_activation_constraints():
    config, params, tokens = _setup("qwen3", False)
    mesh = shd.make_mesh(2, 2, 2)
    fn = jax.jit(functools.partial(forward, config, mode="causal"))
    outside = fn.lower(params, tokens).as_text()
    with shd.rules_context(mesh):
        inside = fn.lower(params, tokens).as_text()
    # Shardy (the default partitioner here) spells constraints sdy.sharding_constraint, GSPMD
    # @Sharding custom calls.
    def count(text):
        return text.count("sdy.sharding_constraint") + text.count("@Sharding")
    assert count(outside) == 0  # no constraints without the context
    assert count(inside) >= 2 * config.num_layers


def test_init_sharded_params():
    config = tiny_config("qwen3", num_layers=1)  # fewer random draws: a quicker compile
    mesh = shd.make_mesh(1, 4, 2)
    params = shd.init_sharded_params(config, mesh, jax.random.PRNGKey(0))
    shapes = shd.param_shapes(config)
    jax.tree.map(lambda a, s: a.sharding == s or pytest.fail(str(a.sharding)), params,
                 shd.param_shardings(config, mesh))
    jax.tree.map(lambda a, s: a.shape == s.shape or pytest.fail(str(a.shape)), params, shapes)
    q = np.asarray(params["layers_0"]["attn"]["q_proj"]["kernel"])
    assert 0.01 < q.std() < 0.04  # the model's normal(0.02) init, not zeros


# --- multi-host helpers ----------------------------------------------------------------------

def test_global_batch_from_host_shards_round_trip():
    mesh = shd.make_mesh(2, 2, 2)
    local = {"tokens": np.arange(8 * 6, dtype=np.int32).reshape(8, 6),
             "valid": np.ones((8, 6, 3), bool)}
    batch = shd.global_batch_from_host_shards(local, mesh)
    assert batch["tokens"].sharding == shd.batch_sharding(mesh, 2)
    assert batch["valid"].sharding == shd.batch_sharding(mesh, 3)
    np.testing.assert_array_equal(np.asarray(batch["tokens"]), local["tokens"])
    np.testing.assert_array_equal(np.asarray(batch["valid"]), local["valid"])
    custom = NamedSharding(mesh, P("data", "tensor"))
    arr = shd.global_batch_from_host_shards(local["tokens"], mesh, custom)
    assert arr.sharding == custom
    np.testing.assert_array_equal(np.asarray(arr), local["tokens"])


@pytest.mark.parametrize("env,expected", [
    ({}, False),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1,t1v-2,t1v-3"}, True),
    ({"TPU_PROCESS_ADDRESSES": "10.0.0.1:8476,10.0.0.2:8476"}, True),
    ({"MEGASCALE_NUM_SLICES": "1"}, False),
    ({"MEGASCALE_NUM_SLICES": "2"}, True),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.1"}, True),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ({"OPDLM_MULTIHOST": "1"}, True),
])
def test_multihost_detection(env, expected):
    assert shd.multihost_env_detected(env) is expected


def test_initialize_distributed(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    # Single host: no-op.
    assert shd.initialize_distributed({"TPU_WORKER_HOSTNAMES": "localhost"}) is False
    assert calls == []
    # Pod with explicit coordinator settings: forwarded.
    assert shd.initialize_distributed({"JAX_COORDINATOR_ADDRESS": "h0:1234", "JAX_NUM_PROCESSES": "2",
                                       "JAX_PROCESS_ID": "1"}) is True
    assert calls == [dict(coordinator_address="h0:1234", num_processes=2, process_id=1,
                          heartbeat_timeout_seconds=60)]  # a dead peer is noticed within a minute
