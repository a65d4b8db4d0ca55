"""Host batch -> StepInputs: bucketed left padding, the batch budget and per-domain caps."""
from types import SimpleNamespace

import numpy as np

from opdlm_jax.train.batch_inputs import step_inputs
from opdlm_jax.train.config import default_config
from opdlm_jax.train.curriculum import Curriculum
from opdlm_jax.train.setup import SpecialTokens


def _setup(caps):
    curriculum = Curriculum(start=32, end=32, ramp_steps=0, bucket=16, domain_caps=tuple(sorted(caps.items())))
    return SimpleNamespace(curriculum=curriculum, tokens=SpecialTokens(mask_id=99, pad_id=0, stop_ids=(1,)))


def test_prompt_batch_caps_per_domain():
    config = default_config()
    config.data.prompt_bucket = 8
    batch = SimpleNamespace(token_ids=[[5, 6, 7], [8] * 10, [9, 9], [4]], domains=["math", "chat", "science", "math"])
    host = step_inputs(config, _setup({"math": 16, "science": 6}), batch, rl_step=0)
    assert host.budget == 32  # chat is uncapped, so the batch keeps the full budget
    # science's cap of 6 rounds down to whole blocks (4); math's 16 stays; chat gets the budget.
    assert host.inputs.max_lengths.tolist() == [16, 32, 4, 16]
    assert host.inputs.prompts.shape == (4, 12)  # 10 tokens -> the 12 rung of the default pow2_half ladder (8, 12, 16, ...)
    assert host.inputs.prompt_valid.sum(1).tolist() == [3, 10, 2, 1]
    assert host.inputs.prompts[0, -3:].tolist() == [5, 6, 7] and host.inputs.prompts[0, 0] == 0  # left-padded
    assert host.inputs.responses is None and host.prompt_tokens == 16


def test_all_capped_batch_shrinks_the_budget():
    config = default_config()
    batch = SimpleNamespace(token_ids=[[5], [6]], domains=["science", "science"])
    host = step_inputs(config, _setup({"science": 6}), batch, rl_step=0)
    assert host.budget == 16 and host.inputs.max_lengths.tolist() == [4, 4]  # one bucket, not 32


def test_corpus_windows_are_given_responses():
    config = default_config()
    config.method = "corpus"
    prompts, responses = np.arange(8).reshape(2, 4), np.arange(100).reshape(2, 50)
    host = step_inputs(config, _setup({}), (prompts, responses), rl_step=0)
    assert host.budget == 32 and host.inputs.responses.shape == (2, 32)
    assert host.inputs.response_lengths.tolist() == [32, 32] and host.inputs.prompt_valid.all()


def test_curriculum_follows_the_reference_schedule():
    """The recipe's ramp 100 -> 4000 over 100 RL steps, values by hand from the reference's formula
    val = start + (end - start) * (1 - cos(pi/2 * min(n / 100, 1))), n the 1-based RL step,
    rounded to the nearest multiple of the block size (4)."""
    import math

    c = Curriculum(start=100, end=4000, ramp_steps=100, ramp="cosine", bucket=256)
    # n = 1: 100 + 3900 * (1 - cos(pi / 200)) = 100.48 -> 100
    assert c.exact_length(0, 4) == 100 and c.length(0, 4) == 256
    # n = 50: 100 + 3900 * (1 - cos(pi / 4)) = 1242.28 -> 1244 (311 blocks)
    assert abs(c.raw_length(49) - (100 + 3900 * (1 - math.cos(math.pi / 4)))) < 1e-9
    assert c.exact_length(49, 4) == 1244 and c.length(49, 4) == 1280
    assert c.exact_length(99, 4) == 4000 and c.length(99, 4) == 4096 and c.exact_length(500, 4) == 4000
    # Every sequence gets the exact budget (not the bucket): at n = 50, math is uncapped (4096 > 1244),
    # science is capped at 1024.
    capped = Curriculum(start=100, end=4000, ramp_steps=100, bucket=256, domain_caps=(("science", 1024),))
    width, per_seq = capped.sequence_budgets(49, ["math", "science"], 4)
    assert width == 1280 and per_seq.tolist() == [1244, 1024]
    linear = Curriculum(start=100, end=4000, ramp_steps=10, ramp="linear", bucket=4)
    # 100 + 390 n; n = 5 gives 2050 = 512.5 blocks, and Python's round (the reference's too) goes to even: 2048.
    assert [linear.exact_length(s, 4) for s in (0, 4, 9)] == [488, 2048, 4000]
