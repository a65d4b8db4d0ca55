"""Device mesh and logical axis rules: the one place that decides how arrays are laid out.

The model names every parameter and main activation dimension with a *logical* axis ("embed",
"q_heads", ...). This module maps those names onto a three-axis device mesh:

  data    pure data parallelism (batch only; parameters replicated across it)
  fsdp    fully sharded data parallelism (batch, and parameters along "embed")
  tensor  tensor parallelism (heads, MLP width, vocabulary)

`RULES` is the single table of that mapping (t5x / MaxText style). Parameters get their
shardings from `param_shardings` (shape-aware: an indivisible dimension is replicated, never
padded); activations are constrained inside the model by `nn.with_logical_constraint`, which
only takes effect under `rules_context(mesh)`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.forward import init_params, logical_axes

logger = logging.getLogger(__name__)

MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]

# Logical axis -> mesh axis (or axes, or None = replicated). Order is priority: for one array,
# a mesh axis is used at most once, so in an activation ("batch", "length", "embed") the batch
# takes "fsdp" and "embed" stays replicated, while a parameter ("embed", "mlp") is FSDP-sharded.
RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("length", None),
    ("layers", None),
)


# ---------------------------------------------------------------------------------------------
# Mesh
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; -1 (at most one axis) takes whatever devices the others leave."""
    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    @classmethod
    def from_any(cls, value: "MeshConfig | Mapping[str, int] | Any") -> "MeshConfig":
        """Accepts a MeshConfig, a mapping (dict, ml_collections ConfigDict) or any object with
        data/fsdp/tensor attributes; missing fields take the defaults, unknown keys are errors."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping) or hasattr(value, "keys"):
            fields = dict(value)
            unknown = set(fields) - set(MESH_AXES)
            if unknown:
                raise ValueError(f"unknown mesh fields {sorted(unknown)}; expected {MESH_AXES}")
            return cls(**fields)
        return cls(**{name: getattr(value, name) for name in MESH_AXES if hasattr(value, name)})

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        return resolve_mesh_shape(self.data, self.fsdp, self.tensor, num_devices)


def resolve_mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with a -1 filled in; ValueError naming the fields when impossible."""
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    desc = ", ".join(f"{k}={v}" for k, v in sizes.items())
    for name, size in sizes.items():
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or (size < 1 and size != -1):
            raise ValueError(f"mesh axis {name}={size!r} must be a positive integer or -1 ({desc})")
    fill = [name for name, size in sizes.items() if size == -1]
    if len(fill) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {' and '.join(fill)} ({desc})")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if fill:
        if num_devices % fixed:
            others = " x ".join(f"{k}={v}" for k, v in sizes.items() if v != -1)
            raise ValueError(f"cannot fill {fill[0]}=-1: {others} = {fixed} does not divide the "
                             f"{num_devices} devices")
        sizes[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} = {fixed} devices, "
                         f"but {num_devices} devices are available (use -1 on one axis to fill)")
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all global devices).

    Every axis is AxisType.Auto: recent JAX makes `jax.make_mesh` default to Explicit axes,
    under which the logical-constraint (GSPMD-style) sharding used by the model does not apply.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(data, fsdp, tensor, len(devices))
    # jax.make_mesh picks a topology-aware device order (ICI rings on TPU).
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def mesh_from_config(config: MeshConfig | Mapping[str, int] | Any,
                     devices: Sequence[jax.Device] | None = None) -> Mesh:
    cfg = MeshConfig.from_any(config)
    return make_mesh(cfg.data, cfg.fsdp, cfg.tensor, devices=devices)


# ---------------------------------------------------------------------------------------------
# Logical names -> shardings
# ---------------------------------------------------------------------------------------------

class _Unassigned:
    def __repr__(self) -> str:
        return "UNASSIGNED"


_UNASSIGNED = _Unassigned()
_warned_fallbacks: set[tuple] = set()


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def _warn_once(logical: str, dim: int, axes: tuple[str, ...], mesh: Mesh) -> None:
    key = (logical, dim, axes, tuple(mesh.shape.items()))
    if key not in _warned_fallbacks:
        _warned_fallbacks.add(key)
        size = math.prod(mesh.shape[a] for a in axes)
        logger.warning("logical axis %r of size %d is not divisible by mesh axes %s (size %d); "
                       "replicating that dimension", logical, dim, axes, size)


def logical_to_mesh_spec(names: Sequence[str | None] | None, mesh: Mesh, rules: Rules = RULES,
                         shape: Sequence[int] | None = None) -> PartitionSpec:
    """One array's logical names -> a PartitionSpec of mesh axes.

    Same precedence as flax's `logical_to_mesh_axes` (rules in order, each mesh axis used at
    most once per array), plus: a rule is skipped when `shape` says the dimension does not
    divide evenly over its mesh axes (the dimension falls back to replication, logged once).
    Unknown logical names are errors, so a new model axis cannot silently go unsharded.
    """
    if names is None:
        return PartitionSpec()
    names = tuple(names)
    if shape is not None and len(shape) != len(names):
        raise ValueError(f"logical axes {names} do not match the array rank of shape {tuple(shape)}")
    dups = {n for n in names if isinstance(n, str) and names.count(n) > 1}
    if dups:
        raise ValueError(f"logical axes {sorted(dups)} occur more than once in {names}")
    known = {logical for logical, _ in rules}
    unknown = [n for n in names if isinstance(n, str) and n not in known]
    if unknown:
        raise ValueError(f"no sharding rule for logical axes {unknown} (in {names}); add them to "
                         "opdlm_jax.sharding.RULES")

    result: list[Any] = [_UNASSIGNED if isinstance(n, str) else n for n in names]
    used: set[str] = set()
    for logical, mesh_axes in rules:
        if logical not in names:
            continue
        pos = names.index(logical)
        if result[pos] is not _UNASSIGNED:
            continue
        axes = _as_tuple(mesh_axes)
        missing = [a for a in axes if a not in mesh.shape]
        if missing:
            raise ValueError(f"rule {logical!r} -> {mesh_axes!r} names mesh axes {missing} that are "
                             f"not in the mesh {tuple(mesh.axis_names)}")
        if used.intersection(axes):
            continue  # taken by a higher-priority dimension of this array
        if shape is not None and axes and shape[pos] % math.prod(mesh.shape[a] for a in axes):
            _warn_once(logical, shape[pos], axes, mesh)
            continue
        result[pos] = mesh_axes
        used.update(axes)
    return PartitionSpec(*(None if r is _UNASSIGNED else r for r in result))


def _is_spec_leaf(x: Any) -> bool:
    return x is None or isinstance(x, PartitionSpec)


def logical_to_sharding(spec_tree: Any, mesh: Mesh, rules: Rules = RULES,
                        shapes: Any = None) -> Any:
    """A pytree of logical PartitionSpecs -> a pytree of NamedShardings on `mesh`.

    `shapes` (same structure; leaves with `.shape`, e.g. from `jax.eval_shape`) enables the
    divisibility fallback. Without it no dimension is checked, so pass it for anything that
    goes through `jax.device_put` or jit in/out shardings, which reject uneven shardings.
    """
    if shapes is None:
        return jax.tree.map(lambda spec: NamedSharding(mesh, logical_to_mesh_spec(spec, mesh, rules)),
                            spec_tree, is_leaf=_is_spec_leaf)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(mesh, logical_to_mesh_spec(spec, mesh, rules, leaf.shape)),
        spec_tree, shapes, is_leaf=_is_spec_leaf)


def param_shapes(config: ModelConfig) -> Any:
    """Parameter ShapeDtypeStructs, without allocating anything."""
    return jax.eval_shape(functools.partial(init_params, config), jax.random.PRNGKey(0))


def param_shardings(config: ModelConfig, mesh: Mesh, rules: Rules = RULES) -> Any:
    """NamedShardings for every parameter of `config`'s model (same pytree as init_params)."""
    return logical_to_sharding(logical_axes(config), mesh, rules, shapes=param_shapes(config))


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree`'s arrays carrying `shardings` (restore and AOT targets)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    # Multi-process: every process holds the full value; each fills its own devices' shards.
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_params(params: Any, shardings: Any) -> Any:
    """Place a (host or single-device) parameter pytree onto the mesh."""
    return jax.tree.map(_put, params, shardings)


def init_sharded_params(config: ModelConfig, mesh: Mesh, rng: jax.Array) -> Any:
    """Random parameters created directly in their shards (no full copy on one device)."""
    return jax.jit(functools.partial(init_params, config),
                   out_shardings=param_shardings(config, mesh))(rng)


def batch_spec(ndim: int, rules: Rules = RULES) -> PartitionSpec:
    """Leading axis over the mesh axes of the "batch" rule, the rest replicated."""
    if ndim < 1:
        raise ValueError(f"a batch array needs at least one dimension, got ndim={ndim}")
    batch_axes = next((axes for logical, axes in rules if logical == "batch"), None)
    return PartitionSpec(batch_axes, *([None] * (ndim - 1)))


def batch_sharding(mesh: Mesh, ndim: int, rules: Rules = RULES) -> NamedSharding:
    return NamedSharding(mesh, batch_spec(ndim, rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def rules_context(mesh: Mesh, rules: Rules = RULES) -> Iterator[Mesh]:
    """Activate the mesh and the logical rules, so the model's activation constraints apply.

    flax's `with_logical_constraint` is a no-op unless logical rules are set *and* a mesh is in
    context (it reads `jax.sharding.get_abstract_mesh()`), hence both. Trace and call jitted
    functions inside it. Activation constraints may be uneven (GSPMD pads); only parameters and
    inputs, which become jit in/out shardings, need the divisibility fallback.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
        yield mesh


# ---------------------------------------------------------------------------------------------
# Multi-host
# ---------------------------------------------------------------------------------------------

def _host_list(value: str | None) -> list[str]:
    return [h for h in (value or "").split(",") if h.strip()]


def multihost_env_detected(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment describes more than one process (without network queries).

    Recognised: an explicit JAX_COORDINATOR_ADDRESS; a multi-process run forced with
    OPDLM_MULTIHOST=1 (for plain Cloud TPU VMs, whose worker list lives only in the metadata
    server); GKE-style TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES listing several hosts;
    multislice MEGASCALE_COORDINATOR_ADDRESS or MEGASCALE_NUM_SLICES > 1.
    """
    env = os.environ if environ is None else environ
    if env.get("OPDLM_MULTIHOST", "").strip().lower() in ("1", "true", "yes"):
        return True
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if len(_host_list(env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES"))) > 1:
        return True
    if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True
    try:
        return int(env.get("MEGASCALE_NUM_SLICES", "1")) > 1
    except ValueError:
        return False


def initialize_distributed(environ: Mapping[str, str] | None = None) -> bool:
    """Start JAX's multi-process runtime on a TPU pod; a no-op on a single host.

    Call it first thing, before anything touches a JAX backend (jax.devices(), an array).
    Returns True when the distributed runtime is (now) initialised. Coordinator address,
    process count and id come from JAX's own cluster detection (TPU metadata, GKE env vars)
    or from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.
    """
    env = os.environ if environ is None else environ
    if jax.distributed.is_initialized():
        return True
    if not multihost_env_detected(env):
        return False
    kwargs: dict[str, Any] = {}
    if env.get("JAX_COORDINATOR_ADDRESS"):
        kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
    if env.get("JAX_NUM_PROCESSES"):
        kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
    if env.get("JAX_PROCESS_ID"):
        kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
    # A dead peer (kill -9, a lost VM) is noticed by the coordination service's heartbeat: the
    # survivors then stop with an error instead of waiting in a collective forever.
    kwargs["heartbeat_timeout_seconds"] = int(env.get("OPDLM_HEARTBEAT_TIMEOUT", "60"))
    # CPU processes (tests, a laptop) need real cross-process collectives: gloo over TCP.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    logger.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
                jax.process_index(), jax.process_count(), jax.local_device_count(),
                jax.device_count())
    return True


_barriers: dict[str, int] = {}


def wait_for_all_processes(name: str, timeout_s: int = 3600) -> None:
    """Block until every process reaches this point (a no-op with one process).

    The barrier goes through the distributed runtime's coordination service, not through a device
    collective: processes may arrive minutes apart (one still compiling or building a dataset)
    without tripping the 30 s first-contact timeout of CPU (gloo) collectives."""
    if jax.process_count() == 1:
        return
    _barriers[name] = _barriers.get(name, 0) + 1  # each use of a name is its own barrier
    from jax._src import distributed  # the client jax.distributed.initialize created

    client = distributed.global_state.client
    if client is None:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    client.wait_at_barrier(f"opdlm_jax:{name}:{_barriers[name]}", timeout_in_ms=timeout_s * 1000)


def local_rows(sharding: NamedSharding, global_shape: tuple[int, ...]) -> slice:
    """The rows of a batch-sharded array of `global_shape` that this process's devices hold.

    They are contiguous on a mesh built by `make_mesh` (devices in process order); anything else
    is an error rather than a silently wrong batch."""
    rows = global_shape[0]
    spans = {index[0].indices(rows)[:2] for index in sharding.addressable_devices_indices_map(global_shape).values()}
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    covered = sum(b - a for a, b in spans)
    if covered != hi - lo:
        raise ValueError(f"this process's rows of a {global_shape} batch are not contiguous: {sorted(spans)}")
    return slice(lo, hi)


def place_global_batch(host_batch: Any, shardings: Any, mesh: Mesh) -> Any:
    """A batch every process holds in full (host numpy) -> global arrays: each process hands over
    only the rows of its own devices (`global_batch_from_host_shards`)."""
    def one(x: Any, sharding: NamedSharding) -> jax.Array:
        x = np.asarray(x)
        return global_batch_from_host_shards(x[local_rows(sharding, x.shape)], mesh, sharding)
    return jax.tree.map(one, host_batch, shardings)


def host_value(x: Any) -> np.ndarray:
    """A replicated (or single-device) array as numpy on any process. `np.asarray` refuses arrays
    that span other processes' devices; a replicated one has a full copy on each local device."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.is_fully_replicated:
            raise ValueError(f"host_value needs a replicated array, got sharding {x.sharding}")
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def global_batch_from_host_shards(local_batch: Any, mesh: Mesh,
                                  sharding: NamedSharding | None = None) -> Any:
    """Assemble per-process batch slices into global arrays sharded over the mesh.

    Each process passes its own rows (a numpy array or a pytree of them); the global batch is
    their concatenation in process order along the sharded leading axis. Single-process, the
    local batch *is* the global batch. `sharding` defaults to `batch_sharding(mesh, ndim)`.
    """
    def one(x: Any) -> jax.Array:
        x = np.asarray(x)
        target = batch_sharding(mesh, x.ndim) if sharding is None else sharding
        return jax.make_array_from_process_local_data(target, x)
    return jax.tree.map(one, local_batch)
