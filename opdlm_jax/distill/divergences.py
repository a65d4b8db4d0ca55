"""Per-position divergences between teacher and student next-token distributions.

Every function takes LOGITS [..., V] (any float dtype; cast to float32) and returns float32
per-position values [...]. Probabilities come from `jax.nn.log_softmax` in float32, so the
functions are safe for large logits. Zero-probability entries (logits of -inf) contribute 0
(the 0 * log 0 = 0 convention) rather than NaN.

The teacher is the first argument everywhere; "forward KL" is KL(teacher || student).
Teacher and student must share the last axis; see `match_vocab` for a student with extra rows.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp

DivergenceFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def match_vocab(teacher_logits: jnp.ndarray,
                student_logits: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Drop student vocabulary columns beyond the teacher's vocabulary.

    The student may carry extra rows (the mask token appended after the teacher's vocabulary).
    Slicing the logits means the student's softmax is then *renormalised over the teacher's
    vocabulary*: the probability the student puts on the dropped ids (e.g. predicting the mask
    token itself) is neither counted nor penalised. A student with a smaller vocabulary than
    the teacher is an error (the teacher's extra ids would have no student probability).
    """
    vt, vs = teacher_logits.shape[-1], student_logits.shape[-1]
    if vs < vt:
        raise ValueError(f"student vocabulary ({vs}) is smaller than the teacher's ({vt}); "
                         "cannot compare the distributions")
    if vs > vt:
        student_logits = student_logits[..., :vt]
    return teacher_logits, student_logits


def _check(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray) -> None:
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {teacher_logits.shape} and student logits "
                         f"{student_logits.shape} differ; use match_vocab() when the student has "
                         "extra vocabulary rows")


def _log_probs(logits: jnp.ndarray) -> jnp.ndarray:
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def _weighted_log_ratio(log_p: jnp.ndarray, log_q: jnp.ndarray) -> jnp.ndarray:
    """Elementwise p * (log p - log q), with 0 where p == 0 (no NaN from -inf - -inf)."""
    p = jnp.exp(log_p)
    positive = p > 0
    # Why two wheres: the unused branch must stay finite so that its gradient (times 0) is not NaN.
    diff = jnp.where(positive, log_p, 0.0) - jnp.where(positive, log_q, 0.0)
    return jnp.where(positive, p * diff, 0.0)


def forward_kl(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray) -> jnp.ndarray:
    """KL(p_T || p_S) = sum_v p_T(v) (log p_T(v) - log p_S(v)) over the full vocabulary."""
    _check(teacher_logits, student_logits)
    return _weighted_log_ratio(_log_probs(teacher_logits), _log_probs(student_logits)).sum(-1)


def reverse_kl(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray) -> jnp.ndarray:
    """KL(p_S || p_T) = sum_v p_S(v) (log p_S(v) - log p_T(v)) over the full vocabulary."""
    _check(teacher_logits, student_logits)
    return _weighted_log_ratio(_log_probs(student_logits), _log_probs(teacher_logits)).sum(-1)


def generalized_jsd(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray,
                    beta: float = 0.5) -> jnp.ndarray:
    """Generalised Jensen-Shannon divergence with teacher weight `beta`.

    JSD_beta(p_T, p_S) = beta KL(p_T || m) + (1 - beta) KL(p_S || m),
    m = beta p_T + (1 - beta) p_S.
    (The GKD convention with P = teacher, Q = student.) beta = 0.5 is the usual symmetric JSD,
    bounded by log 2; JSD_beta(T, S) = JSD_{1-beta}(S, T). At beta = 0 and beta = 1 the mixture
    equals one of the two distributions and the weighted term vanishes, so the divergence is
    identically 0 (no training signal); we return exact zeros there instead of evaluating
    log(0). (Some libraries instead map these endpoints to the reverse/forward KL, which is the
    limit of JSD_beta / (beta (1 - beta)), not of JSD_beta.) `beta` must be a Python float.
    """
    _check(teacher_logits, student_logits)
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"generalized_jsd needs 0 <= beta <= 1, got {beta}")
    log_pt, log_ps = _log_probs(teacher_logits), _log_probs(student_logits)
    if beta in (0.0, 1.0):
        # Keep the student in the graph so the gradient is an explicit 0, not a missing input.
        return (0.0 * log_ps).sum(-1)
    log_m = jnp.logaddexp(jnp.log(beta) + log_pt, jnp.log1p(-beta) + log_ps)
    return (beta * _weighted_log_ratio(log_pt, log_m).sum(-1)
            + (1.0 - beta) * _weighted_log_ratio(log_ps, log_m).sum(-1))


def teacher_topk(teacher_logits: jnp.ndarray, k: int) -> jnp.ndarray:
    """Indices [..., k] of the teacher's k most likely tokens (ties: lower id first)."""
    k = int(k)
    if not 1 <= k <= teacher_logits.shape[-1]:
        raise ValueError(f"top-k needs 1 <= k <= vocab ({teacher_logits.shape[-1]}), got {k}")
    return jax.lax.top_k(teacher_logits.astype(jnp.float32), k)[1]


def topk_mass(logits: jnp.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
    """Probability mass of softmax(logits) on the ids `idx` [..., k] -> [...] (float32).

    Log it for both models with the teacher's top-k ids: the top-k KL is only a good proxy when
    the teacher's mass there is near 1, and it can go negative when the student's mass exceeds it.
    """
    log_p = _log_probs(logits)
    return jnp.exp(jnp.take_along_axis(log_p, idx, axis=-1)).sum(-1)


def topk_forward_kl_reference(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray,
                              k: int) -> jnp.ndarray:
    """The reference OPDLM top-k forward KL (used there for the 4B/8B runs with k = 16).

    Teacher and student log-probs come from the FULL softmax (not renormalised over the top-k);
    idx = teacher top-k; value = sum_{v in idx} p_T(v) (log p_T(v) - log p_S(v)).
    This is not a divergence: it is negative whenever the student's log-probs on idx exceed the
    teacher's enough (e.g. the student puts more mass on the top-k than the teacher does).
    """
    _check(teacher_logits, student_logits)
    idx = teacher_topk(teacher_logits, k)
    log_pt = jnp.take_along_axis(_log_probs(teacher_logits), idx, axis=-1)
    log_ps = jnp.take_along_axis(_log_probs(student_logits), idx, axis=-1)
    return _weighted_log_ratio(log_pt, log_ps).sum(-1)


def topk_forward_kl_tail(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray,
                         k: int) -> jnp.ndarray:
    """Top-k forward KL plus one tail bucket: a true KL between (k+1)-category distributions.

    Categories: the teacher's top-k ids, and "everything else" holding 1 - sum_topk p for each
    model. Always >= 0, and <= the full forward KL (merging categories cannot increase a KL).
    Equal to the full KL for k >= V - 1 (a one-token tail is just that token). The tail's log
    mass is a logsumexp over the non-top-k log-probs, so it stays accurate when the top-k holds
    almost all the mass (no log(1 - 0.99999...) cancellation).
    """
    _check(teacher_logits, student_logits)
    vocab = teacher_logits.shape[-1]
    idx = teacher_topk(teacher_logits, k)
    if k == vocab:  # empty tail
        return forward_kl(teacher_logits, student_logits)
    log_pt_all, log_ps_all = _log_probs(teacher_logits), _log_probs(student_logits)
    head = _weighted_log_ratio(jnp.take_along_axis(log_pt_all, idx, axis=-1),
                               jnp.take_along_axis(log_ps_all, idx, axis=-1)).sum(-1)
    # A scatter, not one_hot(idx).any(): that would build a [..., k, V] temporary.
    in_topk = jnp.put_along_axis(jnp.zeros(log_pt_all.shape, jnp.bool_), idx, True, axis=-1,
                                 inplace=False)
    tail_t = jax.nn.logsumexp(jnp.where(in_topk, -jnp.inf, log_pt_all), axis=-1)
    tail_s = jax.nn.logsumexp(jnp.where(in_topk, -jnp.inf, log_ps_all), axis=-1)
    return head + _weighted_log_ratio(tail_t, tail_s)


DIVERGENCES: dict[str, Callable[..., jnp.ndarray]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "generalized_jsd": generalized_jsd,
    "topk_forward_kl_reference": topk_forward_kl_reference,
    "topk_forward_kl_tail": topk_forward_kl_tail,
}


def divergence_fn(name: str, **kwargs) -> DivergenceFn:
    """The divergence `name` with its options bound: (teacher_logits, student_logits) -> [...].

    e.g. divergence_fn("topk_forward_kl_reference", k=16), divergence_fn("generalized_jsd",
    beta=0.5). Unknown names and missing/unexpected options raise ValueError now, not at trace time.
    """
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; expected one of {sorted(DIVERGENCES)}")
    fn = DIVERGENCES[name]
    try:
        inspect.signature(fn).bind(None, None, **kwargs)
    except TypeError as e:
        raise ValueError(f"bad options {kwargs} for divergence {name!r}: {e}") from None
    return functools.partial(fn, **kwargs) if kwargs else fn
