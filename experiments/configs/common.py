"""Shared pieces of the table configs: the paper's recipe and the cheap toy/CPU variants."""
from __future__ import annotations

from pathlib import Path

from opdlm_jax.train.config import default_config

# The shipped demo prompts, found from this file (installed with the package), so a config runs
# from any working directory.
DEMO_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "demo_prompts"
RECIPE_PROMPTS = "data/opdlm_prompts.jsonl"  # the reference's 61,816 prompts, converted to JSONL
MATH_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


def recipe(model: str, model_dir: str = ""):
    """docs/METHOD.md section 5 (paper Table 13 + reference launchers) for a Qwen3 preset."""
    c = default_config()
    c.teacher, c.teacher_dir = model, model_dir
    c.dtype, c.param_dtype = "bfloat16", "float32"
    c.remat_policy = "full"
    c.steps = 483  # one epoch of 61,816 prompts at 128 per RL step
    c.batch_size, c.minibatch_size = 128, 8  # 16 updates of 8 per rollout batch
    c.data.train = RECIPE_PROMPTS
    c.data.max_prompt_tokens = 1024
    c.data.suffixes = {"math": "\n" + MATH_SUFFIX}
    c.rollout.update(block_size=4, steps_per_block=4, strategy="low_confidence_dynamic", threshold=0.9,
                     temperature=1.0, alignment="same_position")
    c.curriculum.update(start=100, end=4000, ramp_steps=100, ramp="cosine", bucket=256)
    c.loss.divergence = "topk_forward_kl_reference" if model in ("qwen3-4b", "qwen3-8b") else "forward_kl"
    c.loss.topk = 16
    c.loss.chunk_size = 256
    c.optimizer.update(learning_rate=1e-5, end_learning_rate=1e-6, warmup_rl_steps=5, clip_norm=1.0)
    c.checkpoint_every = 20
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    return c


def toy(c, method: str | None = None):
    """A cheap variant that runs on a laptop CPU: the embedded SmolLM2, short rollouts, few steps.

    Checkpoints hold the parameters only (0.48 GB for SmolLM2 instead of 1.4 GB with the AdamW
    moments; a resume restarts the moments, see `checkpoint_params_only`); the last one is kept."""
    c.teacher, c.teacher_dir = "smollm2-135m", ""
    c.dtype, c.remat_policy = "float32", "none"
    c.steps, c.batch_size, c.minibatch_size = 4, 8, 8
    c.data.train = str(DEMO_PROMPTS / "train.jsonl")
    c.data.heldout = str(DEMO_PROMPTS / "heldout.jsonl")
    c.data.max_prompt_tokens = 96
    c.data.suffixes = {}
    c.curriculum.update(start=32, end=32, ramp_steps=0, bucket=32)
    c.loss.divergence, c.loss.chunk_size = "forward_kl", 64
    c.optimizer.update(learning_rate=5e-5, end_learning_rate=5e-5, warmup_rl_steps=0)
    c.checkpoint_every = 2
    c.keep_checkpoints = 1
    c.checkpoint_params_only = True
    c.mesh.devices = 1
    if method:
        c.method = method
    return c
