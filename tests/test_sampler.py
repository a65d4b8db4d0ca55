"""Block-diffusion sampler and AR decoder on random tiny models."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opdlm_jax.decoding import SamplerConfig, block_diffusion_decode
from opdlm_jax.diffusion.states import block_round_state
from opdlm_jax.decoding.strategies import STRATEGIES
from opdlm_jax.decoding.ar_decoder import ar_decode
from opdlm_jax.decoding.batching import left_pad
from opdlm_jax.decoding.sampling import SamplingParams
from tiny import tiny_model

MASK, PAD = 96, 0
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19, 20]]  # ragged on purpose


@pytest.fixture(scope="module")
def sharp():
    """A tiny model whose output distributions are peaked, so confidences span (0, 1)."""
    config, params = tiny_model("llama", seed=3)
    params = dict(params, lm_head=params["lm_head"] * 40.0)
    return config, params


def decode(model, sampler, max_new_tokens=16, seed=0, stop_ids=(1,), prompts=PROMPTS, width=12):
    config, params = model
    tokens, valid = left_pad(prompts, width, PAD)
    return block_diffusion_decode(config, params, jnp.asarray(tokens), jnp.asarray(valid),
                                  jax.random.PRNGKey(seed), sampler=sampler,
                                  max_new_tokens=max_new_tokens, stop_ids=stop_ids, mask_id=MASK,
                                  pad_id=PAD)


def ar(model, max_new_tokens=16, stop_ids=(1,), prompts=PROMPTS, width=12):
    config, params = model
    tokens, valid = left_pad(prompts, width, PAD)
    return ar_decode(config, params, jnp.asarray(tokens), jnp.asarray(valid), jax.random.PRNGKey(0),
                     sampling=SamplingParams(greedy=True), max_new_tokens=max_new_tokens,
                     stop_ids=stop_ids, pad_id=PAD, banned_ids=(MASK,))


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_shifted_block_size_one_greedy_is_ar_greedy(family):
    model = tiny_model(family)
    sampler = SamplerConfig(block_size=1, steps_per_block=1, alignment="shifted")
    diff, ref = decode(model, sampler, width=9), ar(model, width=9)
    np.testing.assert_array_equal(np.asarray(diff.tokens), np.asarray(ref.tokens))
    np.testing.assert_array_equal(np.asarray(diff.lengths), np.asarray(ref.lengths))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("alignment", ["same_position", "shifted"])
def test_cached_equals_uncached(sharp, strategy, alignment):
    base = SamplerConfig(strategy=strategy, alignment=alignment, threshold=0.6, entropy_bound=1.0,
                         steps_per_block=2 if strategy in ("low_confidence_static", "random") else 4)
    cached = decode(sharp, base)
    uncached = decode(sharp, base.replace(use_cache=False))
    for field in ("tokens", "step_map", "lengths", "rounds"):
        np.testing.assert_array_equal(np.asarray(getattr(cached, field)), np.asarray(getattr(uncached, field)))


def per_block_steps(out, b=4):
    steps = np.asarray(out.step_map)
    return steps.reshape(steps.shape[0], -1, b)


def test_dynamic_threshold_one_unmasks_one_token_per_round(sharp):
    out = decode(sharp, SamplerConfig(strategy="low_confidence_dynamic", threshold=1.0))
    for row in per_block_steps(out).reshape(-1, 4):
        if (row >= 0).all():
            assert sorted(row.tolist()) == [0, 1, 2, 3]


def test_dynamic_threshold_zero_unmasks_whole_block(sharp):
    out = decode(sharp, SamplerConfig(strategy="low_confidence_dynamic", threshold=0.0))
    steps = per_block_steps(out)
    assert (steps[steps >= 0] == 0).all()
    assert np.asarray(out.rounds).tolist() == [16 // 4] * 3


@pytest.mark.parametrize("steps_per_block", [1, 2, 4])
def test_static_takes_block_over_k_rounds(sharp, steps_per_block):
    k = 4 // steps_per_block
    out = decode(sharp, SamplerConfig(strategy="low_confidence_static", steps_per_block=steps_per_block))
    for row in per_block_steps(out).reshape(-1, 4):
        assert sorted(row.tolist()) == sorted([r for r in range(steps_per_block) for _ in range(k)])
    assert np.asarray(out.rounds).tolist() == [4 * steps_per_block] * 3


def test_dynamic_uses_fewer_rounds_on_confident_model(sharp):
    out = decode(sharp, SamplerConfig(strategy="low_confidence_dynamic", threshold=0.5))
    assert 4 <= np.asarray(out.rounds).min() and np.asarray(out.rounds).max() <= 16
    assert np.asarray(out.rounds).sum() < 48  # some round unmasked more than one token


def test_recorded_states_equal_rebuilt_states(sharp):
    sampler = SamplerConfig(strategy="low_confidence_dynamic", threshold=0.5, record_states=True,
                            sampling=SamplingParams(temperature=1.0))
    out = decode(sharp, sampler, seed=7)
    seen = np.asarray(out.states)  # [blocks, rounds, B, b]
    tokens, steps = np.asarray(out.tokens), np.asarray(out.step_map)
    num_blocks = tokens.shape[1] // 4
    for r in range(4):
        rebuilt = np.asarray(block_round_state(tokens, steps, np.full((3, num_blocks), r), 4, MASK))
        for j in range(num_blocks):
            for i in range(3):
                block_steps = steps[i, 4 * j:4 * j + 4]
                if (block_steps < 0).all() or r > block_steps.max():
                    continue  # block not decoded, or the round did not happen for this sequence
                np.testing.assert_array_equal(seen[j, r, i], rebuilt[i, 4 * j:4 * j + 4])


def test_stop_token_ends_sequence_and_finished_never_change(sharp):
    free = decode(sharp, SamplerConfig())
    stop = int(np.asarray(free.tokens)[0, 5])
    stopped = decode(sharp, SamplerConfig(), stop_ids=(stop,))
    toks, steps = np.asarray(stopped.tokens), np.asarray(stopped.step_map)
    length = int(stopped.lengths[0])
    assert length <= 6 and toks[0, length - 1] == stop
    end_block = -(-length // 4) * 4
    assert (toks[0, end_block:] == PAD).all() and (steps[0, end_block:] == -1).all()
    # Everything up to the end of the stop block is what the unstopped run produced.
    np.testing.assert_array_equal(toks[0, :end_block], np.asarray(free.tokens)[0, :end_block])


def test_all_finished_skips_forward_passes(sharp):
    free = decode(sharp, SamplerConfig())
    stops = tuple(int(t) for t in np.asarray(free.tokens)[:, 1])
    stopped = decode(sharp, SamplerConfig(), stop_ids=stops)
    assert int(stopped.nfe) < int(free.nfe)
    assert int(free.nfe) == 16  # 4 blocks x 4 rounds, commits fused with round 0


KNOBS = {
    "strategy": dict(strategy="random"),
    "threshold": dict(strategy="low_confidence_dynamic", threshold=0.3),
    "entropy_bound": dict(strategy="entropy_bounded", entropy_bound=3.0),
    "block_size": dict(block_size=2, steps_per_block=2),
    "steps_per_block": dict(steps_per_block=1),
    "alignment": dict(alignment="shifted"),
    "temperature": dict(sampling=SamplingParams(temperature=5.0)),
    "top_k": dict(sampling=SamplingParams(temperature=5.0, top_k=2)),
    "top_p": dict(sampling=SamplingParams(temperature=5.0, top_p=0.3)),
    "greedy": dict(sampling=SamplingParams(greedy=True)),
}
KNOB_BASE = {
    "threshold": dict(strategy="low_confidence_dynamic", threshold=0.95),
    "entropy_bound": dict(strategy="entropy_bounded", entropy_bound=0.0),
    "top_k": dict(sampling=SamplingParams(temperature=5.0)),
    "top_p": dict(sampling=SamplingParams(temperature=5.0)),
    "greedy": dict(sampling=SamplingParams(temperature=5.0)),
}


@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_every_knob_changes_output(sharp, knob):
    base = SamplerConfig(**KNOB_BASE.get(knob, {}))
    a = decode(sharp, base, seed=1)
    b = decode(sharp, base.replace(**KNOBS[knob]), seed=1)
    differs = (np.asarray(a.tokens) != np.asarray(b.tokens)).any() or \
        (np.asarray(a.step_map) != np.asarray(b.step_map)).any()
    assert differs, knob


def test_seed_changes_output_and_same_seed_repeats(sharp):
    sampler = SamplerConfig(sampling=SamplingParams(temperature=1.5))
    a, b, c = decode(sharp, sampler, seed=1), decode(sharp, sampler, seed=1), decode(sharp, sampler, seed=2)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()


def test_mask_token_is_never_generated(sharp):
    config, params = sharp
    params = dict(params, lm_head=params["lm_head"].at[:, MASK].set(100.0))  # mask would win
    out = decode((config, params), SamplerConfig())
    assert (np.asarray(out.tokens) != MASK).all()


@pytest.mark.parametrize("bad,match", [
    (dict(threshold=1.5), "threshold"),
    (dict(strategy="nope"), "unknown strategy"),
    (dict(block_size=4, steps_per_block=3), "not divisible"),
    (dict(alignment="left"), "alignment"),
])
def test_bad_sampler_settings_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**bad)


def test_per_sequence_budgets_stop_each_sequence(sharp):
    config, params = sharp
    tokens, valid = left_pad(PROMPTS, 12, PAD)
    free = decode(sharp, SamplerConfig(), stop_ids=())
    out = block_diffusion_decode(config, params, jnp.asarray(tokens), jnp.asarray(valid), jax.random.PRNGKey(0),
                                 sampler=SamplerConfig(), max_new_tokens=16, stop_ids=(), mask_id=MASK,
                                 pad_id=PAD, max_lengths=jnp.asarray([4, 16, 8]))
    assert np.asarray(out.lengths).tolist() == [4, 16, 8]
    steps, toks = np.asarray(out.step_map), np.asarray(out.tokens)
    assert (steps[0, 4:] == -1).all() and (steps[2, 8:] == -1).all() and (steps[1] >= 0).all()
    np.testing.assert_array_equal(toks[2, :8], np.asarray(free.tokens)[2, :8])
