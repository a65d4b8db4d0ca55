"""experiments/parallelism_probe: fully masked blocks, the student's confidence per block position."""
import numpy as np
import pytest

from experiments.parallelism_probe import masked_block_confidence, summarize


def test_summarize_counts_the_first_round_by_hand():
    conf = np.array([[0.95, 0.5, 0.92, 0.1], [0.6, 0.3, 0.2, 0.1]])
    correct = np.array([[True, False, False, False], [False, True, False, False]])
    blocks = dict(student_conf=conf, student_correct=correct, student_p_true=conf,
                  teacher_conf=np.full_like(conf, 0.8), teacher_correct=correct)
    s = summarize(blocks, [0.9, 0.55])
    assert s["blocks"] == 2
    np.testing.assert_allclose(s["student_confidence"], [0.775, 0.4, 0.56, 0.1])
    # 0.9: block 1 keeps positions 1 and 3, block 2 none above -> its most confident (position 1)
    assert s["first_round_tokens_at_0.9"] == pytest.approx(1.5)
    assert s["first_round_kept_agree_at_0.9"] == pytest.approx(1 / 3)  # only block 1, position 1 agrees
    assert s["first_round_tokens_at_0.55"] == pytest.approx(1.5)  # block 2: 0.6 is above 0.55
    assert s["student_above_0.9"] == [0.5, 0.0, 0.5, 0.0] and s["teacher_above_0.9"] == [0.0] * 4


def test_a_shifted_block_of_one_is_the_teacher(tiny_assets):
    """At block 1 the shifted student reads each token from the clean token before it: its prediction
    is the causal teacher's, position by position (the probe's indexing against the reference)."""
    from opdlm_jax.checkpoints.loading import load_model

    model = load_model(str(tiny_assets[0]))
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size - 1
    prompts = [rng.integers(1, vocab, n).tolist() for n in (5, 9, 3)]
    texts = [rng.integers(1, vocab, n).tolist() for n in (8, 5, 12)]
    common = dict(mask_id=model.mask_token_id, stop_ids=[-1], alignment="shifted")
    one = masked_block_confidence(model.config, model.params, model.config, model.params, prompts, texts,
                                  block_size=1, **common)
    assert one["student_conf"].shape == (25, 1)
    np.testing.assert_allclose(one["student_conf"], one["teacher_conf"], atol=1e-5)
    np.testing.assert_array_equal(one["student_correct"], one["teacher_correct"])
    four = masked_block_confidence(model.config, model.params, model.config, model.params, prompts, texts,
                                   block_size=4, **common)
    assert four["student_conf"].shape == (2 + 1 + 3, 4)  # the 5-token text's last token is not a full block
    np.testing.assert_allclose(four["teacher_conf"].ravel()[:8], one["teacher_conf"].ravel()[:8], atol=1e-5)
