"""AdamW with linear warmup + cosine decay and global-norm clipping (the OPDLM recipe)."""
from __future__ import annotations

import dataclasses

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Schedule lengths count optimizer updates (RL steps x updates per rollout batch)."""
    learning_rate: float = 1e-5
    end_learning_rate: float = 1e-6
    warmup_steps: int = 80  # reference: 5 RL steps x 16 updates
    total_steps: int = 483 * 16  # one epoch of the reference recipe
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0

    def __post_init__(self):
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError(f"warmup_steps={self.warmup_steps} and total_steps={self.total_steps} "
                             "must be >= 0 and >= 1")


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    if cfg.total_steps <= cfg.warmup_steps:
        return optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if cfg.warmup_steps else cfg.learning_rate, peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps, decay_steps=cfg.total_steps, end_value=cfg.end_learning_rate)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                    weight_decay=cfg.weight_decay),
    )
