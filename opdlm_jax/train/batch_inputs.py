"""A host batch from the data iterator -> the step's `StepInputs` and its response budget.

Prompts are left-padded to a bucketed width; the curriculum gives the batch budget (the compiled
response length) and each sequence's own budget, its domain's cap applied (the recipe caps math
at 4096, code and chat at 2048, science at 1024 new tokens).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from opdlm_jax.decoding.batching import bucket_width, left_pad
from opdlm_jax.train.step import StepInputs


class HostInputs(NamedTuple):
    inputs: StepInputs  # host (numpy) arrays; the loop places them on the mesh
    budget: int  # the batch's response budget (StepConfig.max_new_tokens)
    prompt_tokens: int  # real prompt tokens in the batch (accounting)


def step_inputs(config, setup, batch_in: Any, rl_step: int) -> HostInputs:
    """The inputs of RL step `rl_step` (0-based) for a batch of the config's data iterator."""
    b = config.rollout.block_size
    pad_id = setup.tokens.pad_id
    if config.method == "corpus":
        prompts, responses = batch_in
        budget = setup.curriculum.length(rl_step, b)
        caps = np.full((prompts.shape[0],), budget, np.int32)
        inputs = StepInputs(np.asarray(prompts, np.int32), np.ones(prompts.shape, bool), caps,
                            np.asarray(responses[:, :budget], np.int32), caps.copy())
        return HostInputs(inputs, budget, int(prompts.size))
    budget, per_seq = setup.curriculum.sequence_budgets(rl_step, batch_in.domains, b)
    width = bucket_width(max(len(t) for t in batch_in.token_ids), b, minimum=config.data.prompt_bucket,
                         ladder=config.data.prompt_ladder)
    tokens, valid = left_pad(batch_in.token_ids, width, pad_id)
    return HostInputs(StepInputs(tokens, valid, np.asarray(per_seq, np.int32)), budget, int(valid.sum()))
