"""Host-side generation: pad and bucket prompts, call the jitted decoders, time them.

Compilation is done ahead of time per shape and reported separately, so `tokens_per_second`
measures the decode loop only.

With a `mesh`, the prompt batch is split over the mesh's batch axes (data x fsdp; padded to a
multiple with copies of the first prompt, dropped again afterwards), the parameters take their
training shardings, and the completions are gathered back so that every process (process 0
prints) holds all of them. Every process passes the same prompts: this is how several JAX
processes of a pod slice decode one batch together.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from opdlm_jax.decoding.config import SamplerConfig
from opdlm_jax.decoding.block_diffusion import block_diffusion_decode
from opdlm_jax.decoding.ar_decoder import ar_decode
from opdlm_jax.decoding.batching import bucket_width, left_pad, note_shape
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.sharding import (batch_sharding, host_value, param_shardings, place_global_batch,
                                rules_context, shard_params, wait_for_all_processes)

_compiled: dict = {}


@dataclasses.dataclass
class GenerationResult:
    token_ids: list[list[int]]  # each completion up to and including its stop token
    step_maps: list[list[int]] | None  # diffusion only: round of each token within its block
    nfe: int  # forward passes of the decode loop, prefill included
    rounds: list[int]  # per sequence: rounds (diffusion) or forward passes (AR) that produced tokens
    generated_tokens: int
    seconds: float  # wall time of the decode call, compile excluded
    compile_seconds: float

    @property
    def tokens_per_round(self) -> float:
        return self.generated_tokens / max(sum(self.rounds), 1)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / max(self.seconds, 1e-9)


def check_budget(max_new_tokens: int, block_size: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if max_new_tokens % block_size:
        raise ValueError(f"block size {block_size} does not divide the length budget "
                         f"max_new_tokens={max_new_tokens}")


def _run(fn, key_parts: tuple, args: dict, static: dict, mesh: Mesh | None = None):
    """Compile once per (function, shapes, static settings, mesh); return (output, compile s, run s)."""
    cache_key = (fn.__name__, key_parts, tuple(sorted(static.items(), key=lambda kv: kv[0])),
                 None if mesh is None else (mesh.axis_names, mesh.devices.shape, tuple(mesh.devices.flat)))
    context = contextlib.nullcontext() if mesh is None else rules_context(mesh)
    compile_s = 0.0
    with context:
        if cache_key not in _compiled:
            note_shape(fn.__name__, *key_parts)
            t0 = time.perf_counter()
            _compiled[cache_key] = fn.lower(**args, **static).compile()
            compile_s = time.perf_counter() - t0
            # Processes finish compiling at different times; meet before the first collective.
            wait_for_all_processes(f"{fn.__name__} compiled")
        t0 = time.perf_counter()
        out = jax.block_until_ready(_compiled[cache_key](**args))
    return out, compile_s, time.perf_counter() - t0


def _place_on_mesh(mesh: Mesh, config: ModelConfig, params: dict, tokens: np.ndarray, valid: np.ndarray):
    """(params, tokens, valid, real rows): rows padded to a multiple of the batch ways and split."""
    rows = tokens.shape[0]
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    extra = -rows % ways
    if extra:  # copies of a real prompt: an all-padding row would be a degenerate sequence
        tokens = np.concatenate([tokens, np.repeat(tokens[:1], extra, 0)])
        valid = np.concatenate([valid, np.repeat(valid[:1], extra, 0)])
    placed = place_global_batch((tokens, valid), (batch_sharding(mesh, 2), batch_sharding(mesh, 2)), mesh)
    return shard_params(params, param_shardings(config, mesh)), *placed, rows


def _gather(x, rows: int) -> np.ndarray:
    """A batch-sharded output as numpy on every process, padding rows dropped."""
    from jax.experimental import multihost_utils

    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)[:rows]


def _prepare(config: ModelConfig, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             multiple: int, pad_id: int):
    longest = max((len(p) for p in prompts), default=0)
    if longest + max_new_tokens > config.max_position_embeddings:
        raise ValueError(f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the "
                         f"model's limit max_position_embeddings={config.max_position_embeddings}")
    return left_pad(prompts, bucket_width(longest, multiple), pad_id)


def _decode(fn, config: ModelConfig, params: dict, tokens: np.ndarray, valid: np.ndarray, seed: int,
            static: dict, mesh: Mesh | None):
    """Run a jitted decoder on one device or over `mesh` -> (output fields as numpy, compile s, run s)."""
    rows = tokens.shape[0]
    if mesh is not None:
        params, tokens, valid, rows = _place_on_mesh(mesh, config, params, tokens, valid)
    args = dict(params=params, prompt_tokens=tokens, prompt_valid=valid, key=jax.random.PRNGKey(seed))
    out, compile_s, run_s = _run(fn, tokens.shape, args, static, mesh)
    fields = {name: (host_value(v) if np.ndim(v) == 0 else _gather(v, rows)) for name, v in out._asdict().items()}
    return fields, compile_s, run_s


def generate_diffusion(config: ModelConfig, params: dict, prompts: Sequence[Sequence[int]], *,
                       sampler: SamplerConfig, max_new_tokens: int, stop_ids: Sequence[int],
                       mask_id: int, pad_id: int, seed: int = 0,
                       on_block: Callable | None = None, mesh: Mesh | None = None) -> GenerationResult:
    """Block-diffusion decoding of token-id prompts with a (converted) student.

    sampler: block size, steps per block, strategy, threshold, temperature. Each completion stops
    at the first of `stop_ids` (kept) or at `max_new_tokens` (a multiple of the block size).
    on_block: called with each finished block while decoding (streaming; one device only).
    mesh: decode the batch over this mesh's devices (all processes pass the same prompts)."""
    check_budget(max_new_tokens, sampler.block_size)
    if mesh is not None and on_block is not None:
        raise ValueError("streaming (on_block) decodes on one device; pass mesh=None")
    tokens, valid = _prepare(config, prompts, max_new_tokens, sampler.block_size, pad_id)
    static = dict(config=config, sampler=sampler, max_new_tokens=max_new_tokens,
                  stop_ids=tuple(stop_ids), mask_id=mask_id, pad_id=pad_id, on_block=on_block)
    out, compile_s, run_s = _decode(block_diffusion_decode, config, params, tokens, valid, seed, static, mesh)
    lengths, toks, steps = out["lengths"], out["tokens"], out["step_map"]
    return GenerationResult([toks[i, :n].tolist() for i, n in enumerate(lengths)],
                            [steps[i, :n].tolist() for i, n in enumerate(lengths)], int(out["nfe"]),
                            out["rounds"].tolist(), int(lengths.sum()), run_s, compile_s)


def generate_ar(config: ModelConfig, params: dict, prompts: Sequence[Sequence[int]], *,
                sampling, max_new_tokens: int, stop_ids: Sequence[int], pad_id: int,
                banned_ids: Sequence[int] = (), seed: int = 0, on_token: Callable | None = None,
                mesh: Mesh | None = None) -> GenerationResult:
    """Autoregressive decoding (the teacher, or any causal model) of token-id prompts.

    sampling: temperature / top-k / top-p. Each completion stops at the first of `stop_ids`
    (kept) or at `max_new_tokens`; `banned_ids` are never sampled (e.g. the mask token).
    on_token: called with each new token while decoding (streaming; one device only).
    mesh: decode the batch over this mesh's devices (all processes pass the same prompts)."""
    check_budget(max_new_tokens, 1)
    if mesh is not None and on_token is not None:
        raise ValueError("streaming (on_token) decodes on one device; pass mesh=None")
    tokens, valid = _prepare(config, prompts, max_new_tokens, 1, pad_id)
    static = dict(config=config, sampling=sampling, max_new_tokens=max_new_tokens,
                  stop_ids=tuple(stop_ids), pad_id=pad_id, banned_ids=tuple(banned_ids), on_token=on_token)
    out, compile_s, run_s = _decode(ar_decode, config, params, tokens, valid, seed, static, mesh)
    lengths, toks = out["lengths"], out["tokens"]
    return GenerationResult([toks[i, :n].tolist() for i, n in enumerate(lengths)], None, int(out["nfe"]),
                            out["rounds"].tolist(), int(lengths.sum()), run_s, compile_s)
