"""Sequence-chunked divergences: never hold [B, L, V] float32 logits for teacher and student.

With Qwen3's V = 151,936, full-sequence logits cost B * L * V * 4 bytes per model (4.9 GB for
B = 8, L = 1000), several times over once softmax temporaries and the backward pass are
counted. Here the vocabulary projection (hidden -> logits) runs inside a `lax.map` over
sequence chunks, and the chunk body is rematerialised (`jax.checkpoint`) so the backward pass
recomputes one chunk's logits at a time instead of storing every chunk's.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from opdlm_jax.distill.divergences import DivergenceFn, match_vocab, teacher_topk, topk_mass

LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]


def _divergence_of_hidden(div_fn: Callable[..., Any], teacher_logits_fn: LogitsFn,
                          student_logits_fn: LogitsFn, teacher_hidden: jnp.ndarray,
                          student_hidden: jnp.ndarray) -> Any:
    # The teacher is frozen: no gradient may reach its hidden states or its parameters.
    teacher_logits = jax.lax.stop_gradient(teacher_logits_fn(jax.lax.stop_gradient(teacher_hidden)))
    student_logits = student_logits_fn(student_hidden)
    return div_fn(*match_vocab(teacher_logits, student_logits))


def chunked_divergence(div_fn: Callable[..., Any], teacher_logits_fn: LogitsFn,
                       student_logits_fn: LogitsFn, teacher_hidden: jnp.ndarray,
                       student_hidden: jnp.ndarray, chunk_size: int | None) -> Any:
    """Per-position divergence [B, L] computed chunk by chunk along the sequence.

    div_fn: (teacher_logits [B, c, V], student_logits [B, c, V]) -> [B, c], e.g. from
      `divergence_fn`; it may also return a pytree of [B, c] arrays (see `with_topk_mass`), and
      the result then has the same structure with [B, L] leaves.
    teacher_logits_fn / student_logits_fn: hidden [B, c, d] -> float32 logits [B, c, V], e.g.
      `functools.partial(unembed, config, params)`. They may close over parameters; gradients
      flow to the student's (parameters and `student_hidden`), never to the teacher's.
    teacher_hidden [B, L, dT], student_hidden [B, L, dS]: aligned final hidden states (row i of
      the teacher already shifted to predict the token the student predicts at i). The student's
      logits may have extra vocabulary columns: `match_vocab` drops them (renormalising the
      student over the teacher's vocabulary).
    chunk_size: positions per chunk; None or >= L computes everything at once (no loop). L need
      not be a multiple: the last chunk is zero-padded and the padded rows are dropped.

    Memory bound, independent of L: one chunk's teacher and student logits,
    2 * B * chunk_size * V * 4 bytes, plus softmax / gradient temporaries of the same size.
    Measured with XLA:CPU `memory_analysis()` (tests/test_divergences.py, B=2, L=1024, V=1024,
    chunk 32): temporaries besides the hidden copies are 3.0x (forward KL) to 4.4x (top-k + tail) B * chunk * V * 4 for
    the value and 4.0x to 5.4x for value_and_grad, against 96x to 168x B * chunk * V * 4
    (i.e. 3x to 5x the full B * L * V * 4) unchunked. On top: the padded, chunk-major copies of
    the hidden states (B * L * (dT + dS) * itemsize, small next to V) and the [B, L] output.
    Cost: the backward pass recomputes each chunk's teacher and student projections (remat).
    """
    batch, length = teacher_hidden.shape[:2]
    if student_hidden.shape[:2] != (batch, length):
        raise ValueError(f"teacher hidden {teacher_hidden.shape} and student hidden "
                         f"{student_hidden.shape} disagree on [batch, length]")
    if chunk_size is None or chunk_size >= length:
        return _divergence_of_hidden(div_fn, teacher_logits_fn, student_logits_fn,
                                     teacher_hidden, student_hidden)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    n_chunks = -(-length // chunk_size)
    pad = n_chunks * chunk_size - length

    def to_chunks(h):  # [B, L, d] -> [n, B, c, d]; batch stays a leading (shardable) axis of each chunk
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        return h.reshape(batch, n_chunks, chunk_size, h.shape[-1]).swapaxes(0, 1)

    def body(xs):
        return _divergence_of_hidden(div_fn, teacher_logits_fn, student_logits_fn, *xs)

    # Why checkpoint: without it scan's backward saves every chunk's softmax residuals, i.e. the
    # full [B, L, V] arrays this module exists to avoid. prevent_cse=False is safe under scan.
    out = jax.lax.map(jax.checkpoint(body, prevent_cse=False),
                      (to_chunks(teacher_hidden), to_chunks(student_hidden)))
    return jax.tree_util.tree_map(
        lambda o: o.swapaxes(0, 1).reshape(batch, n_chunks * chunk_size)[:, :length], out)


def with_topk_mass(div_fn: DivergenceFn, k: int) -> Callable[[jnp.ndarray, jnp.ndarray], dict]:
    """Wrap `div_fn` to also return the teacher's and student's mass on the teacher's top-k.

    Returns a function giving {"divergence", "teacher_topk_mass", "student_topk_mass"}, each
    [...]; the masses carry no gradient (they are for logging). Use it as `div_fn` of
    `chunked_divergence` to get the masses without materialising full-sequence logits.
    """
    def fn(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray) -> dict:
        idx = teacher_topk(teacher_logits, k)
        return {"divergence": div_fn(teacher_logits, student_logits),
                "teacher_topk_mass": jax.lax.stop_gradient(topk_mass(teacher_logits, idx)),
                "student_topk_mass": jax.lax.stop_gradient(topk_mass(student_logits, idx))}
    return fn
