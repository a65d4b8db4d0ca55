"""The OPD step: ONE jitted function from prompts to updated student parameters.

    rollout_stage        the student samples block-diffusion rollouts (no gradient)
    select_states_stage  one training state x_t per rollout (per block round / global / random)
    teacher_stage        the frozen AR teacher scores prompt + x0 causally, once per batch
    update_stage         K optimizer updates over minibatches (lax.scan), each:
                           student over [prompt | x0 | x_t] -> divergence on masked positions
                           -> per-sequence mean -> batch mean -> grads -> AdamW

K = rollout batch / minibatch size: K=1 is purely on-policy; the reference runs 16 updates of 8
on each batch of 128 rollouts (the later ones slightly off-policy). The teacher's parameters are a
separate, non-donated argument; the train state is donated.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from opdlm_jax.diffusion.config import SamplerConfig
from opdlm_jax.diffusion.sampler import block_diffusion_decode
from opdlm_jax.diffusion.states import select_states
from opdlm_jax.distill.opd_loss import LossConfig, opd_loss
from opdlm_jax.distill.rollout_batch import RolloutBatch
from opdlm_jax.distill.teacher import teacher_hidden
from opdlm_jax.models.config import ModelConfig


class TrainState(NamedTuple):
    step: jnp.ndarray  # optimizer updates done
    params: Any
    opt_state: Any


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


@dataclasses.dataclass(frozen=True)
class StepConfig:
    sampler: SamplerConfig
    loss: LossConfig
    max_new_tokens: int
    minibatch_size: int
    mask_id: int
    pad_id: int
    stop_ids: tuple[int, ...]
    selection: str = "per_block"

    def __post_init__(self):
        if self.sampler.block_size != self.loss.block_size:
            raise ValueError(f"sampler.block_size={self.sampler.block_size} and "
                             f"loss.block_size={self.loss.block_size} must agree")
        if self.sampler.alignment != self.loss.alignment:
            raise ValueError(f"sampler.alignment={self.sampler.alignment!r} and "
                             f"loss.alignment={self.loss.alignment!r} must agree")
        if self.max_new_tokens % self.sampler.block_size:
            raise ValueError(f"block_size={self.sampler.block_size} does not divide the length budget "
                             f"max_new_tokens={self.max_new_tokens}")


def rollout_stage(config: ModelConfig, params: Any, prompts: jnp.ndarray, prompt_valid: jnp.ndarray,
                  key: jax.Array, cfg: StepConfig) -> tuple[RolloutBatch, dict]:
    out = block_diffusion_decode(config, jax.lax.stop_gradient(params), prompts, prompt_valid, key,
                                 sampler=cfg.sampler, max_new_tokens=cfg.max_new_tokens,
                                 stop_ids=cfg.stop_ids, mask_id=cfg.mask_id, pad_id=cfg.pad_id)
    batch = RolloutBatch(prompts, prompt_valid, out.tokens, out.step_map, out.lengths)
    stats = {"rollout_nfe": out.nfe, "response_length": out.lengths.mean(),
             "rollout_tokens": out.lengths.sum(),
             "rollout_tokens_per_round": out.lengths.sum() / jnp.maximum(out.rounds.sum(), 1)}
    return batch, stats


def select_states_stage(batch: RolloutBatch, key: jax.Array, cfg: StepConfig) -> jnp.ndarray:
    masked, _ = select_states(cfg.selection, batch.step_map, key, cfg.sampler.block_size)
    return masked


def teacher_stage(config: ModelConfig, params: Any, batch: RolloutBatch) -> jnp.ndarray:
    return teacher_hidden(config, params, batch)


def update_stage(state: TrainState, student_config: ModelConfig, teacher_config: ModelConfig,
                 teacher_params: Any, batch: RolloutBatch, masked: jnp.ndarray,
                 t_hidden: jnp.ndarray, key: jax.Array, cfg: StepConfig,
                 optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    size = batch.response.shape[0]
    m = cfg.minibatch_size
    num_updates = size // m
    order = jax.random.permutation(key, size)
    shuffled = (RolloutBatch(*(x[order] for x in batch)), masked[order], t_hidden[order])

    def loss_fn(params, minibatch, mb_masked, mb_teacher):
        return opd_loss(student_config, params, teacher_config, teacher_params, minibatch, mb_masked,
                        mask_id=cfg.mask_id, stop_ids=cfg.stop_ids, loss=cfg.loss,
                        teacher_states=mb_teacher)

    def one_update(state: TrainState, index):
        mb = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, index * m, m, axis=0), shuffled)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, *mb)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "teacher_topk_mass": aux["teacher_topk_mass"],
                   "student_topk_mass": aux["student_topk_mass"], "loss_positions": aux["loss_positions"]}
        return TrainState(state.step + 1, params, opt_state), metrics

    state, per_update = jax.lax.scan(one_update, state, jnp.arange(num_updates))
    metrics = {k: v.mean() for k, v in per_update.items()}
    metrics["loss_first_update"] = per_update["loss"][0]
    metrics["loss_positions"] = per_update["loss_positions"].sum()
    return state, metrics


def opd_step(state: TrainState, teacher_params: Any, prompts: jnp.ndarray, prompt_valid: jnp.ndarray,
             key: jax.Array, *, student_config: ModelConfig, teacher_config: ModelConfig,
             cfg: StepConfig, optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    """prompts [B, P] left-padded (P a multiple of the block size) -> (new state, metrics)."""
    if prompts.shape[0] % cfg.minibatch_size:
        raise ValueError(f"rollout batch {prompts.shape[0]} is not a multiple of "
                         f"minibatch_size={cfg.minibatch_size}")
    k_rollout, k_states, k_order = jax.random.split(key, 3)
    batch, rollout_stats = rollout_stage(student_config, state.params, prompts, prompt_valid, k_rollout, cfg)
    masked = select_states_stage(batch, k_states, cfg)
    t_hidden = teacher_stage(teacher_config, teacher_params, batch)
    state, metrics = update_stage(state, student_config, teacher_config, teacher_params, batch, masked,
                                  t_hidden, k_order, cfg, optimizer)
    metrics.update(rollout_stats)
    return state, metrics


def make_opd_step(student_config: ModelConfig, teacher_config: ModelConfig, cfg: StepConfig,
                  optimizer: optax.GradientTransformation, *, state_shardings=None,
                  teacher_shardings=None, batch_sharding=None, mesh=None):
    """The jitted step `(state, teacher_params, prompts, prompt_valid, key) -> (state, metrics)`.

    With a mesh, pass the shardings from `opdlm_jax.sharding` (`train_state_shardings`); the step
    then runs inside the logical-axis rules so the model's activation constraints take effect.
    """
    def step(state, teacher_params, prompts, prompt_valid, key):
        return opd_step(state, teacher_params, prompts, prompt_valid, key, student_config=student_config,
                        teacher_config=teacher_config, cfg=cfg, optimizer=optimizer)

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    from opdlm_jax.sharding import replicated, rules_context

    rep = replicated(mesh)
    jitted = jax.jit(step, donate_argnums=0,
                     in_shardings=(state_shardings, teacher_shardings, batch_sharding, batch_sharding, rep),
                     out_shardings=(state_shardings, rep))

    def run(*args):
        with rules_context(mesh):
            return jitted(*args)

    run.lower = lambda *a: _lower_in(mesh, jitted, *a)
    return run


def _lower_in(mesh, jitted, *args):
    from opdlm_jax.sharding import rules_context

    with rules_context(mesh):
        return jitted.lower(*args)


def train_state_shardings(state: TrainState, param_shardings: Any, optimizer: optax.GradientTransformation,
                          mesh) -> TrainState:
    """Shardings of a TrainState: optimizer moments follow their parameters, the rest replicated."""
    from opdlm_jax.sharding import replicated

    rep = replicated(mesh)
    opt = optax.tree_map_params(optimizer, lambda _, s: s, state.opt_state, param_shardings,
                                transform_non_params=lambda _: rep)
    return TrainState(rep, param_shardings, opt)
