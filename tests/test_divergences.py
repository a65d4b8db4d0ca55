"""Distillation divergences, chunked evaluation (values, gradients, memory) and loss positions."""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opdlm_jax.diffusion.loss import NORMALISATIONS, loss_positions, loss_sums, normalise
from opdlm_jax.distill import (DIVERGENCES, chunked_divergence, divergence_fn, forward_kl,
                               generalized_jsd, match_vocab, reverse_kl, teacher_topk,
                               topk_forward_kl_reference, topk_forward_kl_tail, topk_mass,
                               with_topk_mass)
from opdlm_jax.models import forward, init_params
from opdlm_jax.models.forward import unembed
from tiny import tiny_config

LN2, LN3 = math.log(2), math.log(3)


def logits_of(probs, shift=0.0):
    """Logits whose softmax is `probs` (0 -> -inf); `shift` checks shift invariance."""
    return jnp.asarray([math.log(p) + shift if p > 0 else -math.inf for p in probs], jnp.float32)


def close(actual, expected, tol=1e-6):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol)


def randn(seed, *shape, scale=1.0):
    # Host RNG: jax.random would compile a fresh sampler for every shape (slow on small CPUs).
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def random_logits(seed, shape, scale=3.0):
    return randn(seed, *shape, scale=scale)


# p_T = [1/2, 1/4, 1/4], p_S = [1/8, 1/8, 3/4]: closed forms below worked out by hand.
PT, PS = (0.5, 0.25, 0.25), (0.125, 0.125, 0.75)


def test_forward_and_reverse_kl_by_hand():
    t, s = logits_of(PT, shift=3.0), logits_of(PS, shift=-11.0)
    # KL(T||S) = 1/2 ln 4 + 1/4 ln 2 + 1/4 ln(1/3) = 5/4 ln2 - 1/4 ln3.
    close(forward_kl(t, s), 1.25 * LN2 - 0.25 * LN3)
    # KL(S||T) = 1/8 ln(1/4) + 1/8 ln(1/2) + 3/4 ln 3 = -3/8 ln2 + 3/4 ln3.
    close(reverse_kl(t, s), -0.375 * LN2 + 0.75 * LN3)
    close(forward_kl(t, t), 0.0)
    # A teacher zero (logit -inf) contributes 0 * log 0 = 0: KL([1/2,1/2,0] || [1/4,1/4,1/2]) = ln 2.
    close(forward_kl(logits_of((0.5, 0.5, 0.0)), logits_of((0.25, 0.25, 0.5))), LN2)


def test_batched_shapes_and_dtype():
    t, s = random_logits(0, (2, 3, 5)), random_logits(1, (2, 3, 5)).astype(jnp.bfloat16)
    for name in DIVERGENCES:
        kw = {"k": 2} if "topk" in name else {}
        out = jax.eval_shape(divergence_fn(name, **kw), t, s)
        assert out.shape == (2, 3) and out.dtype == jnp.float32, name


def test_topk_reference_by_hand_and_negative():
    # Teacher [0.1, 0.4, 0.2, 0.3] -> top-2 ids {1, 3}; student [0.05, 0.45, 0.05, 0.45].
    t, s = logits_of((0.1, 0.4, 0.2, 0.3)), logits_of((0.05, 0.45, 0.05, 0.45))
    ref = topk_forward_kl_reference(t, s, k=2)
    expected = 0.4 * math.log(0.4 / 0.45) + 0.3 * math.log(0.3 / 0.45)
    close(ref, expected)
    assert float(ref) < 0  # the reference quantity is not a divergence
    close(teacher_topk(t, 2), [1, 3])
    close(topk_mass(t, teacher_topk(t, 2)), 0.7)
    close(topk_mass(s, teacher_topk(t, 2)), 0.9)
    # Tail bucket: teacher 0.3, student 0.1 -> + 0.3 ln 3, a proper (3-category) KL.
    tail = topk_forward_kl_tail(t, s, k=2)
    close(tail, expected + 0.3 * LN3)
    full = expected + 0.2 * math.log(0.2 / 0.05) + 0.1 * math.log(0.1 / 0.05)
    close(forward_kl(t, s), full)
    assert 0 <= float(tail) <= full


def test_topk_reference_matches_literal_formula():
    t, s = random_logits(2, (6, 11)), random_logits(3, (6, 11))
    k = 4
    tn, sn = np.asarray(t, np.float64), np.asarray(s, np.float64)
    expected = []
    for row_t, row_s in zip(tn, sn):
        lt = row_t - math.log(sum(math.exp(x) for x in row_t))  # full softmax, not renormalised
        ls = row_s - math.log(sum(math.exp(x) for x in row_s))
        idx = sorted(range(len(row_t)), key=lambda v: -row_t[v])[:k]
        expected.append(sum(math.exp(lt[v]) * (lt[v] - ls[v]) for v in idx))
    close(topk_forward_kl_reference(t, s, k), expected, tol=1e-5)


def test_topk_tail_properties():
    vocab = 9
    t, s = random_logits(4, (64, vocab)), random_logits(5, (64, vocab))
    # A student that is the teacher plus extra mass on the teacher's top-3.
    top = jnp.put_along_axis(jnp.zeros(t.shape), teacher_topk(t, 3), 1.0, axis=-1, inplace=False)
    bumped = t + 2.0 * top

    @jax.jit  # one compile for all the values below (op-by-op dispatch is slow on busy CPUs)
    def values(t, s, bumped):
        return {"full": forward_kl(t, s),
                **{f"tail{k}": topk_forward_kl_tail(t, s, k) for k in (1, 3, 5, vocab - 1, vocab)},
                "ref_bumped": topk_forward_kl_reference(t, bumped, 3),
                "tail_bumped": topk_forward_kl_tail(t, bumped, 3)}

    v = values(t, s, bumped)
    for k in (1, 3, 5):
        assert bool(jnp.all(v[f"tail{k}"] >= -1e-6)), k
        assert bool(jnp.all(v[f"tail{k}"] <= v["full"] + 1e-5)), k  # merging categories can't raise KL
    # The reference quantity is negative on every bumped row, the tail KL stays > 0.
    assert bool(jnp.all(v["ref_bumped"] < 0)) and bool(jnp.all(v["tail_bumped"] > 0))
    # A one-token tail is that token: exact for k = V - 1 (and trivially k = V).
    close(v[f"tail{vocab - 1}"], v["full"], tol=1e-5)
    close(v[f"tail{vocab}"], v["full"], tol=1e-5)
    # The top-k holding all but ~1e-13 of the teacher's mass: tail log-mass stays finite.
    peaked = jnp.asarray([30.0, 30.0, 0.0, 0.0, 0.0])
    out = topk_forward_kl_tail(peaked, jnp.zeros(5), 2)
    assert bool(jnp.isfinite(out)) and float(out) >= 0
    close(out, math.log(5 / 2), tol=1e-5)  # = 2 * 1/2 ln((1/2) / (1/5)) + ~1e-13 * ln(~0)


def test_jsd_by_hand_and_properties():
    # beta = 1/2, p_T = [1/2, 1/2], p_S = [1, 0]: m = [3/4, 1/4];
    # 1/2 (1/2 ln(2/3) + 1/2 ln 2) + 1/2 (ln(4/3)) = 3/4 ln(4/3).
    close(generalized_jsd(logits_of((0.5, 0.5)), logits_of((1.0, 0.0)), 0.5), 0.75 * math.log(4 / 3))
    # beta = 1/4 on PT / PS: m = 1/4 p_T + 3/4 p_S = [7/32, 5/32, 20/32].
    m = (7 / 32, 5 / 32, 20 / 32)
    expected = (0.25 * (0.5 * math.log(0.5 / m[0]) + 0.25 * math.log(0.25 / m[1])
                        + 0.25 * math.log(0.25 / m[2]))
                + 0.75 * (0.125 * math.log(0.125 / m[0]) + 0.125 * math.log(0.125 / m[1])
                          + 0.75 * math.log(0.75 / m[2])))
    close(generalized_jsd(logits_of(PT), logits_of(PS), beta=0.25), expected)

    t, s = random_logits(6, (32, 7)), random_logits(7, (32, 7))
    close(generalized_jsd(t, s, 0.5), generalized_jsd(s, t, 0.5), tol=1e-6)  # symmetric at 1/2
    close(generalized_jsd(t, s, 0.2), generalized_jsd(s, t, 0.8), tol=1e-6)
    half = generalized_jsd(t, s, 0.5)
    assert bool(jnp.all(half >= -1e-7)) and bool(jnp.all(half <= LN2 + 1e-6))
    for beta in (0.0, 1.0):  # endpoints: the mixture equals one side, the divergence is 0
        close(generalized_jsd(t, s, beta), np.zeros(32))
        g = jax.grad(lambda x: generalized_jsd(t, x, beta).sum())(s)
        close(g, np.zeros((32, 7)))
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(t, s, 1.5)


def test_gradients_finite_and_forward_kl_gradient():
    t = random_logits(8, (16, 6), scale=40.0)  # very peaked distributions
    t = t.at[:, 0].set(-jnp.inf)  # a token the teacher never predicts
    s = random_logits(9, (16, 6), scale=40.0)

    @jax.jit
    def all_grads(t, s):
        out = {}
        for name in DIVERGENCES:
            kw = {"k": 2} if "topk" in name else {"beta": 0.3} if name == "generalized_jsd" else {}
            fn = divergence_fn(name, **kw)
            teacher = t if name != "reverse_kl" else t.at[:, 0].set(0.0)  # reverse KL is inf there
            out[name] = jax.value_and_grad(lambda x: fn(teacher, x).sum())(s)
        return out

    for name, (value, grad) in all_grads(t, s).items():
        assert bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad))), name
    # d KL(T||S) / d student logits = p_S - p_T.
    t, s = random_logits(10, (4, 5)), random_logits(11, (4, 5))
    g = jax.grad(lambda x: forward_kl(t, x).sum())(s)
    close(g, jax.nn.softmax(s) - jax.nn.softmax(t), tol=1e-6)


def test_match_vocab():
    teacher = logits_of((0.25, 0.25, 0.25, 0.25))
    student = logits_of((0.1, 0.2, 0.3, 0.2, 0.2))  # last row: the mask token
    t, s = match_vocab(teacher, student)
    assert s.shape == (4,) and t is teacher
    # The student is renormalised over the teacher's 4 ids: [1/8, 1/4, 3/8, 1/4].
    q = (0.125, 0.25, 0.375, 0.25)
    close(forward_kl(t, s), sum(0.25 * math.log(0.25 / qi) for qi in q))
    with pytest.raises(ValueError, match="smaller"):
        match_vocab(student, teacher)
    with pytest.raises(ValueError, match="match_vocab"):
        forward_kl(teacher, student)


def test_registry():
    assert set(DIVERGENCES) == {"forward_kl", "reverse_kl", "generalized_jsd",
                                "topk_forward_kl_reference", "topk_forward_kl_tail"}
    t, s = random_logits(12, (3, 8)), random_logits(13, (3, 8))
    close(divergence_fn("topk_forward_kl_reference", k=3)(t, s), topk_forward_kl_reference(t, s, 3))
    close(divergence_fn("generalized_jsd", beta=0.1)(t, s), generalized_jsd(t, s, 0.1))
    with pytest.raises(ValueError, match="unknown divergence 'kl'"):
        divergence_fn("kl")
    with pytest.raises(ValueError, match="bad options"):
        divergence_fn("topk_forward_kl_tail")  # k missing
    with pytest.raises(ValueError, match="bad options"):
        divergence_fn("forward_kl", beta=0.5)


# --- chunked ----------------------------------------------------------------------------------

B, L, DT, DS, VT = 2, 10, 6, 5, 7


def _chunk_setup():
    wt = randn(20, DT, VT)
    ws = randn(21, DS, VT + 1)  # student: one extra (mask) column
    th = randn(22, B, L, DT)
    sh = randn(23, B, L, DS)
    weights = jnp.abs(randn(24, B, L))
    return wt, ws, th, sh, weights


def _weighted_loss(div, chunk, wt, ws, th, sh, weights):
    per = chunked_divergence(div, lambda h: h @ wt, lambda h: h @ ws, th, sh, chunk)
    return (per * weights).sum(), per


@pytest.mark.parametrize("name,kw,chunks", [
    ("forward_kl", {}, (3, 5)),
    ("reverse_kl", {}, (3,)),
    ("generalized_jsd", {"beta": 0.3}, (4,)),
    ("topk_forward_kl_reference", {"k": 3}, (3,)),
    ("topk_forward_kl_tail", {"k": 3}, (4,)),
])
def test_chunked_matches_unchunked(name, kw, chunks):
    wt, ws, th, sh, weights = _chunk_setup()
    div = divergence_fn(name, **kw)
    vg = jax.value_and_grad(_weighted_loss, argnums=(2, 3, 4, 5), has_aux=True)

    @jax.jit  # one compile for the direct value and every chunking
    def run(wt, ws, th, sh, weights):
        direct = div(*match_vocab(th @ wt, sh @ ws))
        return direct, [vg(div, c, wt, ws, th, sh, weights) for c in (None, *chunks)]

    direct, (((ref_loss, ref_per), ref_grads), *chunked) = run(wt, ws, th, sh, weights)
    close(ref_per, direct, tol=1e-6)
    for chunk, ((loss, per), grads) in zip(chunks, chunked):
        # L = 10: chunks of 3 and 4 leave a ragged (padded) last chunk, 5 divides it.
        assert per.shape == (B, L)
        close(per, ref_per, tol=1e-6)
        # The loss sum and the weight gradient accumulate over chunks in another order than one
        # big reduction: float32 rounding of sums of ~20-40 terms, hence the relative tolerance
        # (test_chunked_matches_unchunked_float64 shows it is only rounding).
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
        for g, rg in zip(grads, ref_grads):
            np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-6)
        close(grads[0], np.zeros_like(grads[0]))  # the teacher gets no gradient
        close(grads[2], np.zeros_like(grads[2]))


def test_chunked_matches_unchunked_float64():
    """With float64 hidden states and weights the chunked loss and gradients agree to ~1e-14."""
    with jax.enable_x64(True):
        wt, ws, th, sh, weights = (x.astype(jnp.float64) for x in _chunk_setup())
        div = divergence_fn("reverse_kl")
        vg = jax.value_and_grad(_weighted_loss, argnums=(2, 3, 4, 5), has_aux=True)
        run = jax.jit(lambda *a: [vg(div, c, *a) for c in (None, 3)])
        ref, chunked = run(wt, ws, th, sh, weights)
        for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(chunked)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_chunked_pytree_output_with_topk_mass():
    wt, ws, th, sh, _ = _chunk_setup()
    out = chunked_divergence(with_topk_mass(forward_kl, 2), lambda h: h @ wt, lambda h: h @ ws,
                             th, sh, 3)
    t, s = match_vocab(th @ wt, sh @ ws)
    idx = teacher_topk(t, 2)
    close(out["divergence"], forward_kl(t, s))
    close(out["teacher_topk_mass"], topk_mass(t, idx))
    close(out["student_topk_mass"], topk_mass(s, idx))


def test_chunked_with_model_unembed():
    """With the real model: final hidden states + unembed, student with one extra vocab row."""
    t_cfg = tiny_config(num_layers=1)
    # Random weights of the right shapes without running (and compiling) the Flax init.
    shapes = jax.eval_shape(functools.partial(init_params, t_cfg), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)  # host RNG: no per-shape compiles
    t_params = jax.tree_util.tree_map(
        lambda x: (0.3 * rng.standard_normal(x.shape)).astype(x.dtype), shapes)
    # Student: the teacher's weights, scaled so the two differ, plus one extra vocabulary row
    # (embedding and lm_head) as when a mask token is appended; built by padding, not a 2nd init.
    s_cfg = dataclasses.replace(t_cfg, vocab_size=t_cfg.vocab_size + 1,
                                mask_token_id=t_cfg.vocab_size)
    s_params = jax.tree_util.tree_map(
        lambda x: np.pad(1.05 * x, [(0, int(n == t_cfg.vocab_size)) for n in x.shape],
                         constant_values=0.05), t_params)
    tokens = jnp.asarray(rng.integers(2, 96, (2, 9)), jnp.int32)

    @jax.jit  # one compile instead of op-by-op Flax dispatch
    def both(t_params, s_params, tokens):
        t_hidden = forward(t_cfg, t_params, tokens, return_hidden=True)
        s_hidden = forward(s_cfg, s_params, tokens, mode="block", return_hidden=True)
        per = chunked_divergence(forward_kl, functools.partial(unembed, t_cfg, t_params),
                                 functools.partial(unembed, s_cfg, s_params), t_hidden, s_hidden, 4)
        t_logits, s_logits = unembed(t_cfg, t_params, t_hidden), unembed(s_cfg, s_params, s_hidden)
        assert s_logits.shape[-1] == t_logits.shape[-1] + 1
        return per, forward_kl(*match_vocab(t_logits, s_logits))

    per, direct = both(t_params, s_params, tokens)
    close(per, direct, tol=1e-5)


def test_chunked_memory_bound():
    """Compiled temp memory of the chunked loss is bounded by the chunk, not by L."""
    batch, length, vocab, d, chunk = 2, 1024, 1024, 16, 32
    wt, ws = randn(0, d, vocab), randn(1, d, vocab + 1)
    th = jnp.zeros((batch, length, d))
    sh = jnp.zeros((batch, length, d))
    chunk_logits = batch * chunk * vocab * 4  # one model's float32 logits for one chunk
    full_logits = batch * length * vocab * 4
    hidden = 2 * batch * length * d * 4  # both models' hidden states (padded chunk-major copies)
    for name, kw in (("forward_kl", {}), ("topk_forward_kl_tail", {"k": 16})):
        div = divergence_fn(name, **kw)

        # Everything is an argument: closed-over arrays would become constants that XLA folds.
        def loss(wt, ws, th, sh, c):
            return chunked_divergence(div, lambda h: h @ wt, lambda h: h @ ws, th, sh, c).mean()

        temps = {}
        for c in (None, chunk):
            f = functools.partial(loss, c=c)
            fwd = jax.jit(f).lower(wt, ws, th, sh).compile().memory_analysis().temp_size_in_bytes
            bwd = jax.jit(jax.value_and_grad(f, argnums=(1, 3))).lower(wt, ws, th, sh).compile()
            temps[c] = (fwd, bwd.memory_analysis().temp_size_in_bytes)
        print(name, "temp bytes (fwd, value_and_grad): unchunked", temps[None], "chunk", chunk,
              temps[chunk], "chunk logits", chunk_logits, "full logits", full_logits)
        # Sanity: unchunked really materialises teacher + student full-sequence logits.
        assert min(temps[None]) >= 2 * full_logits, (name, temps)
        for t in temps[chunk]:
            # Logits + softmax temporaries: 2 models x ~3-4 chunk-sized arrays, plus hidden copies.
            assert t <= 8 * chunk_logits + 2 * hidden, (name, t)
            assert t <= 2 * full_logits / 8, (name, t)


# --- loss positions and normalisation ----------------------------------------------------------

EOT, EOS, PAD = 50, 51, 0


def test_loss_positions():
    tokens = jnp.asarray([
        [5, 6, EOT, 7, 8, 9, 10, 11],     # end-of-turn mid-block; the block's later tokens are real
        [5, 6, 7, 8, 9, 10, 11, 12],      # truncated at the length limit: no stop token
        [5, 6, 7, PAD, PAD, PAD, PAD, PAD],  # truncated, then padding
        [5, 6, 7, 8, 9, EOT, PAD, PAD],   # end-of-turn in the second block, then padding
        [EOS, 6, 7, 8, PAD, PAD, PAD, PAD],  # the other stop id, at position 0
    ])
    valid = jnp.asarray([
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
    ], bool)
    masked = jnp.asarray([
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 1, 1, 0, 1, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],   # padding "masked" too: must still be excluded
        [0, 1, 1, 0, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ], bool)
    lengths = jnp.asarray([3, 8, 3, 6, 1])
    expected = np.asarray([
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 1, 0, 1],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ], bool)
    got = loss_positions(valid, masked, tokens, lengths, (EOT, EOS))
    np.testing.assert_array_equal(np.asarray(got), expected)
    # Matches stopping.response_lengths' convention, and jits with static stop ids.
    from opdlm_jax.decoding.stopping import response_lengths
    jitted = jax.jit(loss_positions, static_argnums=4)
    np.testing.assert_array_equal(
        np.asarray(jitted(valid, masked, tokens, response_lengths(tokens, (EOT, EOS)), (EOT, EOS))),
        expected)


PER = jnp.asarray([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [5.0, 5.0, 5.0, 5.0]])
MASK = jnp.asarray([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)


def test_normalise_by_hand():
    # Row means: seq 0 -> (1 + 2) / 2 = 1.5, seq 1 -> 40, seq 2 has no loss position (an empty row).
    # sequence (the reference's loss_unreduced.mean()): the empty row counts 0, (1.5 + 40 + 0) / 3.
    close(normalise(PER, MASK, "sequence"), 41.5 / 3)
    close(loss_sums(PER, MASK, "sequence"), (41.5, 3.0))
    # sequence_nonempty: the mean over the two rows that have loss positions, (1.5 + 40) / 2.
    close(normalise(PER, MASK, "sequence_nonempty"), 20.75)
    close(loss_sums(PER, MASK, "sequence_nonempty"), (41.5, 2.0))
    # token: (1 + 2 + 40) / 3.
    close(normalise(PER, MASK, "token"), 43 / 3)
    close(loss_sums(PER, MASK, "token"), (43.0, 3.0))
    # Float weights: token mode (2*1 + 1*40) / 3.
    w = jnp.asarray([[2.0, 0, 0, 0], [0, 0, 0, 1.0], [0, 0, 0, 0]])
    close(normalise(PER, w, "token"), 42 / 3)
    with pytest.raises(ValueError, match="normalisation mode"):
        normalise(PER, MASK, "batch")


def test_normalise_data_parallel_sums():
    """Summing each shard's (numerator, denominator) and dividing once = the whole-batch loss."""
    per = jnp.concatenate([PER, PER[::-1] * 3.0])
    mask = jnp.concatenate([MASK, jnp.asarray([[1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 1]], bool)])
    for mode in NORMALISATIONS:
        shards = [loss_sums(per[i:i + 2], mask[i:i + 2], mode) for i in range(0, 6, 2)]
        num = sum(s.numerator for s in shards)
        den = sum(s.denominator for s in shards)
        close(num / den, normalise(per, mask, mode), tol=1e-6)


def test_no_loss_positions_no_nan():
    per = PER.at[2, 0].set(jnp.nan)  # garbage at an excluded position must not leak
    for mode in NORMALISATIONS:
        close(normalise(per, MASK, mode), float(normalise(PER, MASK, mode)))
        empty = jnp.zeros_like(MASK)
        value, grad = jax.value_and_grad(normalise)(per, empty, mode)
        close(value, 0.0)
        assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) == 0.0
        g = jax.grad(normalise)(per, MASK, mode)
        assert bool(jnp.all(jnp.isfinite(g)))
        assert bool(jnp.all(g[2] == 0))  # the empty sequence gets no gradient
