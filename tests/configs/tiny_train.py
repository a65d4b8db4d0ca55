"""A toy training config for the trainer tests (teacher and prompts are given as overrides)."""
from opdlm_jax.train.config import default_config


def get_config(arg: str = ""):
    c = default_config()
    c.method = arg or "opdlm"
    c.steps = 6
    c.batch_size = 4
    c.minibatch_size = 2
    c.data.max_prompt_tokens = 120
    # One response budget: every trainer test compiles one step shape (the ramp is unit-tested).
    c.curriculum.start = 8
    c.curriculum.end = 8
    c.curriculum.bucket = 8
    c.curriculum.ramp_steps = 0
    c.rollout.temperature = 1.0
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_rl_steps = 1
    c.checkpoint_every = 1
    c.keep_checkpoints = 10
    c.async_checkpoints = False
    c.tensorboard = False
    c.mesh.devices = 1
    return c
