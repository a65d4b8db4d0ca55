"""Prompt-width buckets: the power-of-two ladder and the finer 1.5x ladder, by hand; the trainer's
`data.prompt_ladder` is validated and used for the step's prompt width."""
from pathlib import Path

import pytest

from opdlm_jax.decoding.batching import bucket_width
from opdlm_jax.train.config import ConfigError, default_config, validate_config
from tests_configs_loader import load_config
from tiny_hf import make_tiny_hf_dir, write_prompts

ROOT = Path(__file__).resolve().parents[1]
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


def test_trainer_ladder_is_validated_and_used(tmp_path, monkeypatch):
    from opdlm_jax.train import loop

    config = default_config()
    config.data.train = "x.jsonl"
    config.data.prompt_ladder = "fine"
    with pytest.raises(ConfigError, match="data.prompt_ladder='fine'"):
        validate_config(config)

    config = load_config(ROOT / "tests/configs/tiny_train.py")
    config.teacher = str(make_tiny_hf_dir(tmp_path / "model"))
    config.data.train = str(write_prompts(tmp_path / "prompts.jsonl"))
    config.data.prompt_ladder = "pow2_half"
    config.steps = 1
    seen = []
    real_left_pad = loop.left_pad

    def spy(ids, width, pad):
        seen.append((max(len(t) for t in ids), width))
        return real_left_pad(ids, width, pad)

    monkeypatch.setattr(loop, "left_pad", spy)
    loop.train(config, tmp_path / "run", progress=False)
    assert len(seen) == 1
    longest, width = seen[0]
    assert width == bucket_width(longest, config.rollout.block_size, ladder="pow2_half")
