"""Decoding the embedded SmolLM2-135M: block diffusion with b=1, shifted, greedy == AR greedy."""
import jax
import numpy as np
import pytest

from opdlm_jax.data.chat_format import chat_prompt_ids
from opdlm_jax.decoding import SamplerConfig
from opdlm_jax.decoding.api import generate_ar, generate_diffusion
from opdlm_jax.decoding.sampling import SamplingParams


@pytest.fixture(scope="module")
def smollm2():
    from opdlm_jax.checkpoints.loading import load_model

    model = load_model("smollm2-135m")
    model.params = jax.device_put(model.params)
    return model


def test_block_size_one_shifted_greedy_equals_ar(smollm2):
    m = smollm2
    prompts = [chat_prompt_ids(m.tokenizer, q)
               for q in ("What is the capital of France?", "Name a fruit.")]
    ar = generate_ar(m.config, m.params, prompts, sampling=SamplingParams(greedy=True), max_new_tokens=24,
                     stop_ids=m.stop_token_ids, pad_id=0, banned_ids=(m.mask_token_id,))
    diff = generate_diffusion(m.config, m.params, prompts,
                              sampler=SamplerConfig(block_size=1, steps_per_block=1, alignment="shifted"),
                              max_new_tokens=24, stop_ids=m.stop_token_ids, mask_id=m.mask_token_id, pad_id=0)
    assert ar.token_ids == diff.token_ids
    assert len(ar.token_ids[0]) > 3  # a real answer, not an immediate stop
    assert np.isclose(diff.tokens_per_round, 1.0)
