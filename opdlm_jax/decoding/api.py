"""Host-side generation: pad and bucket prompts, call the jitted decoders, time them.

Compilation is done ahead of time per shape and reported separately, so `tokens_per_second`
measures the decode loop only.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import jax
import numpy as np

from opdlm_jax.decoding.config import SamplerConfig
from opdlm_jax.decoding.block_diffusion import block_diffusion_decode
from opdlm_jax.decoding.ar_decoder import ar_decode
from opdlm_jax.decoding.batching import bucket_width, left_pad, note_shape
from opdlm_jax.models.config import ModelConfig

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


def _run(fn, key_parts: tuple, args: dict, static: dict):
    """Compile once per (function, shapes, static settings); return (output, compile s, run s)."""
    cache_key = (fn.__name__, key_parts, tuple(sorted(static.items(), key=lambda kv: kv[0])))
    compile_s = 0.0
    if cache_key not in _compiled:
        note_shape(fn.__name__, *key_parts)
        t0 = time.perf_counter()
        _compiled[cache_key] = fn.lower(**args, **static).compile()
        compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(_compiled[cache_key](**args))
    return out, compile_s, time.perf_counter() - t0


def _prepare(config: ModelConfig, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             multiple: int, pad_id: int):
    longest = max((len(p) for p in prompts), default=0)
    if longest + max_new_tokens > config.max_position_embeddings:
        raise ValueError(f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the "
                         f"model's limit max_position_embeddings={config.max_position_embeddings}")
    return left_pad(prompts, bucket_width(longest, multiple), pad_id)


def generate_diffusion(config: ModelConfig, params: dict, prompts: Sequence[Sequence[int]], *,
                       sampler: SamplerConfig, max_new_tokens: int, stop_ids: Sequence[int],
                       mask_id: int, pad_id: int, seed: int = 0,
                       on_block: Callable | None = None) -> GenerationResult:
    check_budget(max_new_tokens, sampler.block_size)
    tokens, valid = _prepare(config, prompts, max_new_tokens, sampler.block_size, pad_id)
    static = dict(config=config, sampler=sampler, max_new_tokens=max_new_tokens,
                  stop_ids=tuple(stop_ids), mask_id=mask_id, pad_id=pad_id, on_block=on_block)
    args = dict(params=params, prompt_tokens=tokens, prompt_valid=valid, key=jax.random.PRNGKey(seed))
    out, compile_s, run_s = _run(block_diffusion_decode, tokens.shape, args, static)
    lengths = np.asarray(out.lengths)
    toks, steps = np.asarray(out.tokens), np.asarray(out.step_map)
    return GenerationResult([toks[i, :n].tolist() for i, n in enumerate(lengths)],
                            [steps[i, :n].tolist() for i, n in enumerate(lengths)], int(out.nfe),
                            np.asarray(out.rounds).tolist(), int(lengths.sum()), run_s, compile_s)


def generate_ar(config: ModelConfig, params: dict, prompts: Sequence[Sequence[int]], *,
                sampling, max_new_tokens: int, stop_ids: Sequence[int], pad_id: int,
                banned_ids: Sequence[int] = (), seed: int = 0) -> GenerationResult:
    check_budget(max_new_tokens, 1)
    tokens, valid = _prepare(config, prompts, max_new_tokens, 1, pad_id)
    static = dict(config=config, sampling=sampling, max_new_tokens=max_new_tokens,
                  stop_ids=tuple(stop_ids), pad_id=pad_id, banned_ids=tuple(banned_ids))
    args = dict(params=params, prompt_tokens=tokens, prompt_valid=valid, key=jax.random.PRNGKey(seed))
    out, compile_s, run_s = _run(ar_decode, tokens.shape, args, static)
    lengths = np.asarray(out.lengths)
    toks = np.asarray(out.tokens)
    return GenerationResult([toks[i, :n].tolist() for i, n in enumerate(lengths)], None, int(out.nfe),
                            np.asarray(out.rounds).tolist(), int(lengths.sum()), run_s, compile_s)
