"""FLOP accounting: the paper's formula and the full count including rollouts and the 2L layout."""
from __future__ import annotations

from opdlm_jax.models.config import ModelConfig


def forward_flops_per_token(config: ModelConfig, context: float) -> float:
    """2 N per token for the matmuls plus attention scores and values (4 x layers x d x context)."""
    return 2 * config.num_params() + 4 * config.num_layers * config.num_heads * config.head_dim * context


def paper_flops(student: ModelConfig, teacher: ModelConfig, generated_tokens: float) -> float:
    """Paper B.4: 2 N_teacher T + 6 N_student T, T = generated tokens (rollouts left out)."""
    return (2 * teacher.num_params() + 6 * student.num_params()) * generated_tokens


def full_step_flops(student: ModelConfig, teacher: ModelConfig, *, batch: int, prompt_width: int,
                    response_width: int, rollout_forward_tokens: float, updates_tokens_factor: float = 1.0) -> float:
    """Rollout forwards + teacher forward over [prompt | x0] + student fwd/bwd over [prompt | x0 | x_t]."""
    ctx_rollout = prompt_width + response_width / 2
    rollout = rollout_forward_tokens * forward_flops_per_token(student, ctx_rollout)
    teacher_tokens = batch * (prompt_width + response_width)
    teacher_f = teacher_tokens * forward_flops_per_token(teacher, teacher_tokens / batch / 2)
    layout = prompt_width + 2 * response_width
    student_f = 3 * batch * layout * forward_flops_per_token(student, layout / 2) * updates_tokens_factor
    return rollout + teacher_f + student_f
