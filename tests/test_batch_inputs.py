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
    assert host.inputs.prompts.shape == (4, 16)  # 10 tokens -> the 16 bucket (a multiple of the block)
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
