"""Which positions enter the distillation loss, and how per-position values are averaged."""
from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import jax.numpy as jnp

from opdlm_jax.decoding.stopping import is_stop

NormaliseMode = Literal["sequence", "sequence_nonempty", "token"]
# "sequence" is the reference's: the mean of per-row means over ALL rows, an empty row counting 0.
NORMALISATIONS = ("sequence", "sequence_nonempty", "token")


def loss_positions(response_valid: jnp.ndarray, masked: jnp.ndarray, response_tokens: jnp.ndarray,
                   lengths: jnp.ndarray, stop_ids: Sequence[int]) -> jnp.ndarray:
    """bool [B, L]: the response positions that enter the loss.

    A position counts when it is a real response token (`response_valid`), masked in the chosen
    training state (`masked`), and strictly before the response's first stop token
    (end-of-turn / EOS, any of `stop_ids`). So never padding, never the stop token itself and
    nothing after it. `lengths` [B] = tokens up to and including the first stop token (as from
    `generation.stopping.response_lengths`); a response truncated without a stop token has no
    stop to drop and contributes all its real tokens. The cut is min(first stop position found
    in `response_tokens`, lengths): the stop token is located from the tokens themselves, and
    `lengths` only bounds the response from above.
    Responses are laid out from index 0 of the row (padding, if any, after them).
    """
    response_valid = jnp.asarray(response_valid, bool)
    masked = jnp.asarray(masked, bool)
    response_tokens = jnp.asarray(response_tokens)
    length = response_tokens.shape[-1]
    pos = jnp.arange(length)
    stops = is_stop(response_tokens, tuple(int(s) for s in stop_ids)) & response_valid
    first_stop = jnp.where(stops.any(-1), jnp.argmax(stops, axis=-1), length)
    # With consistent inputs lengths == first_stop + 1 (stop found) or the real length (none).
    end = jnp.minimum(first_stop, jnp.asarray(lengths))
    return response_valid & masked & (pos[None, :] < end[:, None])


class LossSums(NamedTuple):
    """Numerator and denominator of a normalised loss; `value` = numerator / denominator.

    Under data parallelism (or gradient accumulation) reduce both fields over all shards /
    micro-batches with a sum (e.g. `lax.psum`) and divide once; the result then equals the
    single-device loss on the whole batch. For the "sequence" modes the numerator is the sum of
    per-sequence means and the denominator the number of sequences ("sequence": all of them, as
    the reference; "sequence_nonempty": those with >= 1 loss position); for "token" mode they are
    the weighted sum of all values and the total weight.
    """
    numerator: jnp.ndarray
    denominator: jnp.ndarray

    @property
    def value(self) -> jnp.ndarray:
        return safe_divide(self.numerator, self.denominator)


def safe_divide(numerator: jnp.ndarray, denominator: jnp.ndarray) -> jnp.ndarray:
    """numerator / denominator, and 0 (with a zero, finite gradient) where the denominator is 0."""
    ok = denominator > 0
    return jnp.where(ok, numerator / jnp.where(ok, denominator, 1.0), 0.0)


def loss_sums(per_position: jnp.ndarray, weights: jnp.ndarray,
              mode: NormaliseMode = "sequence") -> LossSums:
    """Numerator/denominator pieces of `normalise` (float32 scalars); see `LossSums`.

    per_position [B, L]; weights [B, L], a bool loss mask (e.g. `loss_positions`) or float
    weights. Values at zero-weight positions are ignored even if NaN or inf.
    """
    if mode not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation mode {mode!r}; expected one of {NORMALISATIONS}")
    per_position = jnp.asarray(per_position, jnp.float32)
    weights = jnp.asarray(weights).astype(jnp.float32)
    if per_position.shape != weights.shape or per_position.ndim != 2:
        raise ValueError(f"per_position {per_position.shape} and weights {weights.shape} must both "
                         "be [batch, length]")
    # where, not a product: garbage (NaN) at excluded positions must not leak through 0 * NaN.
    weighted = jnp.where(weights != 0, per_position * weights, 0.0)
    if mode == "token":
        return LossSums(weighted.sum(), weights.sum())
    seq_weight = weights.sum(-1)
    seq_mean = safe_divide(weighted.sum(-1), seq_weight)
    if mode == "sequence":  # the reference's loss_unreduced.mean(): empty rows count as 0
        return LossSums(seq_mean.sum(), jnp.float32(per_position.shape[0]))
    return LossSums(seq_mean.sum(), (seq_weight > 0).sum().astype(jnp.float32))


def normalise(per_position: jnp.ndarray, weights: jnp.ndarray,
              mode: NormaliseMode = "sequence") -> jnp.ndarray:
    """Scalar loss from per-position values [B, L] and a loss mask / weights [B, L].

    "sequence" (the reference default): per sequence, sum over its loss positions / their count;
    then the mean over ALL sequences, a sequence without loss positions counting 0.
    "sequence_nonempty": the same per-sequence means, averaged over the sequences that have at
    least one loss position (a batch with many empty responses is not scaled down).
    "token": global sum / global count. Returns 0 (not NaN) when nothing is in the loss.
    """
    return loss_sums(per_position, weights, mode).value
