"""Prompt-width buckets: the power-of-two ladder and the finer 1.5x ladder, by hand; the trainer's
`data.prompt_ladder` is validated and used for the step's prompt width."""
import pytest

from opdlm_jax.decoding.batching import bucket_width
from opdlm_jax.train.config import ConfigError, default_config, validate_config

LENGTHS = [1, 16, 17, 24, 25, 33, 49, 64, 65, 89, 97, 128, 129, 200]


def test_ladders_by_hand():
    assert [bucket_width(n, 4) for n in LENGTHS] == [16, 16, 32, 32, 32, 64, 64, 64, 128, 128, 128, 128, 256, 256]
    assert [bucket_width(n, 4, ladder="pow2_half") for n in LENGTHS] == \
        [16, 16, 24, 24, 32, 48, 64, 64, 96, 96, 128, 128, 192, 256]
    # rungs are rounded up to the block size
    assert bucket_width(17, 16, ladder="pow2_half") == 32 and bucket_width(33, 16, ladder="pow2_half") == 48
    # never more than 1.5x padding (past the minimum) with the finer ladder
    assert all(bucket_width(n, 4, ladder="pow2_half") <= max(16, 1.5 * n) for n in range(1, 600))
    with pytest.raises(ValueError, match="unknown bucket ladder 'pow3'"):
        bucket_width(10, 4, ladder="pow3")


def test_trainer_ladder_is_validated_and_used():
    from types import SimpleNamespace

    from opdlm_jax.train.batch_inputs import step_inputs
    from opdlm_jax.train.curriculum import Curriculum
    from opdlm_jax.train.setup import SpecialTokens

    config = default_config()
    config.data.train = "x.jsonl"
    config.data.prompt_ladder = "fine"
    with pytest.raises(ConfigError, match="data.prompt_ladder='fine'"):
        validate_config(config)
    # The loop's inputs (train.batch_inputs.step_inputs) pad prompts to the configured ladder's rung.
    setup = SimpleNamespace(curriculum=Curriculum(start=8, end=8, bucket=8),
                            tokens=SpecialTokens(mask_id=99, pad_id=0, stop_ids=(1,)))
    for ladder in ("pow2", "pow2_half"):
        config.data.prompt_ladder = ladder
        for longest in (17, 25, 40, 70):
            batch = SimpleNamespace(token_ids=[[3] * longest, [4]], domains=["chat", "chat"])
            width = step_inputs(config, setup, batch, rl_step=0).inputs.prompts.shape[1]
            assert width == bucket_width(longest, config.rollout.block_size, minimum=config.data.prompt_bucket,
                                         ladder=ladder)
    assert bucket_width(25, 4, ladder="pow2_half") == 32 and bucket_width(17, 4, ladder="pow2_half") == 24
