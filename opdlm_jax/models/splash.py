"""Block-sparse flash attention on TPU (Pallas splash attention) for the static training masks.

The dense path materialises [B, H, T, T] float32 scores per layer; this one streams K/V blocks
through VMEM and skips blocks the mask leaves empty, so no [T, T] tensor reaches HBM. The mask is
a `masks.StaticMask` (compiled into the kernel's block-sparsity tables and evaluated in-kernel
on partial blocks) AND the per-token key validity, passed as splash segment ids: real tokens are
segment 1, padding segment 0, so a real query sees only real keys. Every static pattern here
contains the diagonal, so no row is empty (an empty row would divide by zero in the kernel).

Grouped-query attention runs the kernel's multi-query form once per KV head (vmapped), so K/V
are never repeated. Under a mesh (`jax.set_mesh`) the kernel, an opaque custom call that GSPMD
cannot partition, runs inside `shard_map` over the batch (and head) axes the logical rules give
those dimensions. Off TPU the same kernel runs in Pallas interpret mode (slow; for tests).
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention as sa
from jax.sharding import PartitionSpec

from opdlm_jax.models.masks import StaticMask

_LANES = 128  # the kernel's KV blocks must be lane multiples
_MAX_BLOCK = 512  # large enough to amortise per-block overhead, small enough for VMEM at head_dim 128


class _KernelMask(sa.Mask):
    """A `StaticMask` as a splash mask of one head: computable in-kernel from column indices.

    The kernel recognises in-kernel masks by their `q_sequence` and `mask_function` attributes.
    """

    def __init__(self, structure: StaticMask, length: int):
        self.structure = structure
        self._shape = (length, length)
        self.q_sequence = np.arange(length, dtype=np.int32)
        self.mask_function = structure.allowed

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def __getitem__(self, idx) -> np.ndarray:
        q_slice, k_slice = idx
        rows = self.q_sequence[q_slice]
        cols = np.arange(self._shape[1], dtype=np.int32)[k_slice]
        return self.structure.allowed(rows[:, None], cols[None, :])

    def __eq__(self, other) -> bool:
        return (isinstance(other, _KernelMask) and self.structure == other.structure
                and self._shape == other._shape)

    def __hash__(self) -> int:
        return hash((_KernelMask, self.structure, self._shape))


def kernel_block(length: int) -> int:
    """The q / kv block size for a sequence of `length` (padded up to a multiple of it)."""
    return min(_MAX_BLOCK, _LANES * math.ceil(length / _LANES))


def _kernel(structure: StaticMask, length: int, group: int, block: int, interpret: bool):
    """One multi-query kernel: `group` query heads share a K/V head. Made per trace, not cached:
    it holds its block tables as arrays, which a cached kernel made under one trace (scan,
    remat) would leak into the next; the numpy work behind them is cached by jax itself."""
    # Separate dq and dk/dv backward kernels: the fused one writes dq once per KV block
    # ([T / block] x the size of q, 2.3 GiB per chip for Qwen3-4B's 2L layout on v5p-8).
    sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                          block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                          block_q_dq=block, block_kv_dq=block)
    mask = sa.MultiHeadMask([_KernelMask(structure, length)] * group)
    return sa.make_splash_mqa(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                              interpret=interpret)


def _local_attention(q, k, v, valid, *, structure: StaticMask, interpret: bool):
    """q [B, T, H, hd] (already scaled), k / v [B, T, KV, hd], valid [B, T] -> [B, T, H, hd]."""
    b, t, h, hd = q.shape
    kv = k.shape[2]
    block = kernel_block(t)
    padded = block * math.ceil(t / block)
    if padded != t:
        # Padding columns are segment 0 (invisible to real queries); their rows are dropped.
        pad = ((0, 0), (0, padded - t), (0, 0), (0, 0))
        q, k, v = jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad)
        valid = jnp.pad(valid, ((0, 0), (0, padded - t)))
    kernel = _kernel(structure, padded, h // kv, block, interpret)
    segments = valid.astype(jnp.int32)
    qh = q.reshape(b, padded, kv, h // kv, hd).transpose(0, 2, 3, 1, 4)  # [B, KV, G, T, hd]
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, T, hd]

    def one_sequence(q1, k1, v1, seg):
        ids = sa.SegmentIds(q=seg, kv=seg)
        return jax.vmap(lambda qg, kg, vg: kernel(qg, kg, vg, segment_ids=ids))(q1, k1, v1)

    out = jax.vmap(one_sequence)(qh, kh, vh, segments)  # [B, KV, G, T, hd]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, padded, h, hd)[:, :t]


def _spec_for(names: tuple, shape: tuple, mesh) -> PartitionSpec:
    """Logical names -> mesh axes under the active rules, replicating a dimension that does not
    divide evenly (shard_map needs even blocks)."""
    spec = nn.logical_to_mesh_axes(names)
    axes = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names_ = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        size = math.prod(mesh.shape[a] for a in names_)
        axes.append(entry if names_ and dim % size == 0 else None)
    return PartitionSpec(*axes)


def splash_attention(q, k, v, valid, structure: StaticMask, *, interpret: bool = False):
    """Softmax attention of q [B, T, H, hd] over k / v [B, T, KV, hd] under `structure` AND
    key validity `valid` [B, T]; returns [B, T, H, hd] in q's dtype.

    Scores are q.k / sqrt(hd) accumulated in float32, softmax in float32, as the dense path.
    """
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    local = functools.partial(_local_attention, structure=structure, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or not nn.get_logical_axis_rules():
        return local(q, k, v, valid)
    # Heads may be split only if both q and kv heads split the same way (the groups stay whole).
    q_spec = _spec_for(("batch", "length", "q_heads", "head_dim"), q.shape, mesh)
    kv_spec = _spec_for(("batch", "length", "kv_heads", "head_dim"), k.shape, mesh)
    if q_spec[2] != kv_spec[2]:
        q_spec = PartitionSpec(q_spec[0], None, None, None)
        kv_spec = PartitionSpec(kv_spec[0], None, None, None)
    batch_axes = PartitionSpec(q_spec[0], None)
    kv_spec = PartitionSpec(q_spec[0], None, kv_spec[2], None)
    return jax.shard_map(local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, batch_axes),
                         out_specs=q_spec, check_vma=False)(q, k, v, valid)
