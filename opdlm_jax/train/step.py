"""The OPD step: ONE jitted function from prompts to updated student parameters.

    rollout_stage        the student samples block-diffusion rollouts (no gradient)
    select_states_stage  one training state x_t per rollout (per block round / global / random)
    teacher_stage        the frozen AR teacher scores prompt + x0 causally, once per batch
                         (minibatch-sized slices in a lax.map, so its attention never spans the batch)
    update_stage         K optimizer updates over minibatches (lax.scan), each:
                           student over [prompt | x0 | x_t] -> divergence on masked positions
                           -> per-sequence mean -> batch mean -> grads -> AdamW

K = rollout batch / minibatch size: K=1 is purely on-policy; the reference runs 16 updates of 8
on each batch of 128 rollouts (the later ones slightly off-policy). The teacher's parameters are a
separate, non-donated argument; the train state is donated. Everything that changes from one
rollout batch to the next comes in one `StepInputs` tuple (prompts, per-sequence caps, given
responses), sharded over the batch axes by the matching `step_inputs_shardings` tree.

The baselines of the ablation tables are the same step with other stages plugged in:
rollout_source "teacher" (the AR teacher's responses; Off-Policy, SFT) or "given" (a text corpus),
selection "random" (OPDLM_off, Off-Policy, SFT), objective "bd3lm" (masked-diffusion
cross-entropy on the responses' tokens instead of the KL to the teacher; SFT and corpus).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from opdlm_jax.checkpoints.integrity import tree_is_finite
from opdlm_jax.decoding.ar_decoder import ar_decode
from opdlm_jax.decoding.block_diffusion import block_diffusion_decode
from opdlm_jax.decoding.config import SamplerConfig
from opdlm_jax.diffusion.bd3lm_loss import bd3lm_loss
from opdlm_jax.diffusion.rollout_batch import RolloutBatch
from opdlm_jax.diffusion.states import block_mask_fraction, select_states
from opdlm_jax.distill.opd_loss import LossConfig, opd_loss
from opdlm_jax.distill.teacher import teacher_hidden
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.layer_stack import platform_layout
from opdlm_jax.train.state import TrainState


ROLLOUT_SOURCES = ("student", "teacher", "given")
OBJECTIVES = ("kl", "bd3lm")


class StepInputs(NamedTuple):
    """What one OPD step consumes besides the states and the key, as one pytree.

    prompts / prompt_valid [B, P]: left-padded prompt ids and their mask (P a multiple of the
    block size). max_lengths [B] int32: each sequence's response budget (the curriculum's budget
    capped per domain; multiples of the block size, <= StepConfig.max_new_tokens); a student
    rollout stops there as at a stop token. responses / response_lengths [B, L] / [B]: the data
    of rollout_source "given" (None otherwise).
    """
    prompts: jnp.ndarray
    prompt_valid: jnp.ndarray
    max_lengths: jnp.ndarray
    responses: jnp.ndarray | None = None
    response_lengths: jnp.ndarray | None = None


def full_budget_inputs(prompts, prompt_valid, max_new_tokens: int, responses=None,
                       response_lengths=None) -> StepInputs:
    """StepInputs where every sequence may use the whole budget (no per-sequence caps)."""
    caps = jnp.full((prompts.shape[0],), max_new_tokens, jnp.int32)
    return StepInputs(jnp.asarray(prompts), jnp.asarray(prompt_valid), caps,
                      None if responses is None else jnp.asarray(responses),
                      None if response_lengths is None else jnp.asarray(response_lengths, jnp.int32))


def step_inputs_shardings(mesh, given: bool = False) -> StepInputs:
    """The sharding tree of StepInputs: every field split over the batch axes (data x fsdp)."""
    from opdlm_jax.sharding import batch_sharding

    rows, per_seq = batch_sharding(mesh, 2), batch_sharding(mesh, 1)
    return StepInputs(rows, rows, per_seq, rows if given else None, per_seq if given else None)


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
    rollout_source: str = "student"  # "student" | "teacher" | "given"
    objective: str = "kl"  # "kl" (OPD) | "bd3lm" (masked-diffusion cross-entropy)
    # Sequences per teacher forward: None = minibatch_size (the update's own working set), 0 = all.
    teacher_slice: int | None = None

    def __post_init__(self):
        if self.rollout_source not in ROLLOUT_SOURCES:
            raise ValueError(f"unknown rollout_source {self.rollout_source!r}; expected one of {ROLLOUT_SOURCES}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; expected one of {OBJECTIVES}")
        if self.rollout_source != "student" and self.selection != "random":
            raise ValueError(f"rollout_source={self.rollout_source!r} has no denoising trajectory: "
                             f"selection must be 'random', got {self.selection!r}")
        if self.sampler.block_size != self.loss.block_size:
            raise ValueError(f"sampler.block_size={self.sampler.block_size} and "
                             f"loss.block_size={self.loss.block_size} must agree")
        if self.sampler.alignment != self.loss.alignment:
            raise ValueError(f"sampler.alignment={self.sampler.alignment!r} and "
                             f"loss.alignment={self.loss.alignment!r} must agree")
        if self.teacher_slice is not None and self.teacher_slice < 0:
            raise ValueError(f"teacher_slice must be >= 0 (0: the whole batch), got {self.teacher_slice}")
        if self.max_new_tokens % self.sampler.block_size:
            raise ValueError(f"block_size={self.sampler.block_size} does not divide the length budget "
                             f"max_new_tokens={self.max_new_tokens}")

    @property
    def teacher_slice_size(self) -> int:
        return self.minibatch_size if self.teacher_slice is None else self.teacher_slice


def rollout_stage(config: ModelConfig, params: Any, prompts: jnp.ndarray, prompt_valid: jnp.ndarray,
                  key: jax.Array, cfg: StepConfig, max_lengths: jnp.ndarray | None = None) -> tuple[RolloutBatch, dict]:
    """The student's own block-diffusion rollouts (no gradient), with their step maps."""
    out = block_diffusion_decode(config, jax.lax.stop_gradient(params), prompts, prompt_valid, key,
                                 sampler=cfg.sampler, max_new_tokens=cfg.max_new_tokens,
                                 stop_ids=cfg.stop_ids, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                                 max_lengths=max_lengths)
    batch = RolloutBatch(prompts, prompt_valid, out.tokens, out.step_map, out.lengths)
    stats = {"rollout_nfe": out.nfe, "rollout_forward_tokens": out.forward_tokens,
             "rollout_tokens_per_round": out.lengths.sum() / jnp.maximum(out.rounds.sum(), 1)}
    return batch, stats


def teacher_rollout_stage(config: ModelConfig, params: Any, prompts: jnp.ndarray, prompt_valid: jnp.ndarray,
                          key: jax.Array, cfg: StepConfig,
                          max_lengths: jnp.ndarray | None = None) -> tuple[RolloutBatch, dict]:
    """Off-policy data: the AR teacher's responses; every real token counts as decoded (step 0).

    max_lengths [B]: per-sequence caps; a response is cut there (the AR decoder runs the batch budget).
    """
    out = ar_decode(config, jax.lax.stop_gradient(params), prompts, prompt_valid, key,
                    sampling=cfg.sampler.sampling, max_new_tokens=cfg.max_new_tokens, stop_ids=cfg.stop_ids,
                    pad_id=cfg.pad_id, banned_ids=(cfg.mask_id,))
    lengths = out.lengths if max_lengths is None else jnp.minimum(out.lengths, max_lengths)
    return given_rollouts(prompts, prompt_valid, out.tokens, lengths), {
        "rollout_nfe": out.nfe, "rollout_tokens_per_round": jnp.ones(()),
        "rollout_forward_tokens": prompts.size + out.rounds.sum() * 1}


def given_rollouts(prompts, prompt_valid, responses, lengths) -> RolloutBatch:
    steps = jnp.where(jnp.arange(responses.shape[1])[None] < lengths[:, None], 0, -1).astype(jnp.int32)
    return RolloutBatch(prompts, prompt_valid, responses, steps, lengths)


def select_states_stage(batch: RolloutBatch, key: jax.Array, cfg: StepConfig) -> jnp.ndarray:
    masked = select_states(cfg.selection, batch.step_map, key, cfg.sampler.block_size)
    return masked


def objective_loss(params: Any, student_config: ModelConfig, teacher_config: ModelConfig, teacher_params: Any,
                   batch: RolloutBatch, masked: jnp.ndarray, t_hidden: jnp.ndarray | None, cfg: StepConfig):
    """The loss of one minibatch: KL to the teacher's targets, or the BD3-LM cross-entropy."""
    if cfg.objective == "bd3lm":
        rate = block_mask_fraction(masked, batch.step_map, cfg.sampler.block_size)
        lc = cfg.loss
        return bd3lm_loss(student_config, params, batch, masked, rate, mask_id=cfg.mask_id,
                          stop_ids=cfg.stop_ids, block_size=lc.block_size, alignment=lc.alignment,
                          normalisation=lc.normalisation, chunk_size=lc.chunk_size,
                          vocab_limit=lc.vocab_limit)
    return opd_loss(student_config, params, teacher_config, teacher_params, batch, masked,
                    mask_id=cfg.mask_id, stop_ids=cfg.stop_ids, loss=cfg.loss, teacher_states=t_hidden)


def teacher_stage(config: ModelConfig, params: Any, batch: RolloutBatch, slice_size: int = 0) -> jnp.ndarray:
    return teacher_hidden(*platform_layout(config, params), batch, slice_size)


def update_stage(state: TrainState, student_config: ModelConfig, teacher_config: ModelConfig,
                 teacher_params: Any, batch: RolloutBatch, masked: jnp.ndarray,
                 t_hidden: jnp.ndarray, key: jax.Array, cfg: StepConfig,
                 optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    size = batch.response.shape[0]
    m = cfg.minibatch_size
    num_updates = size // m
    order = jax.random.permutation(key, size)
    if t_hidden is None:  # the bd3lm objective needs no teacher targets
        t_hidden = jnp.zeros((size, 0), jnp.float32)
    shuffled = (RolloutBatch(*(x[order] for x in batch)), masked[order], t_hidden[order])

    def loss_fn(params, minibatch, mb_masked, mb_teacher):
        config, layers = platform_layout(student_config, params)  # unrolled on CPU; grads stay stacked
        return objective_loss(layers, config, teacher_config, teacher_params, minibatch, mb_masked,
                              mb_teacher, cfg)

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
    # The run's guard: a few scalars reduced on device, so no host copy of the state is needed.
    metrics["state_finite"] = (jnp.all(jnp.isfinite(per_update["loss"])) & jnp.all(jnp.isfinite(per_update["grad_norm"]))
                               & tree_is_finite(state.params) & tree_is_finite(state.opt_state))
    return state, metrics


def opd_step(state: TrainState, teacher_params: Any, inputs: StepInputs, key: jax.Array, *,
             student_config: ModelConfig, teacher_config: ModelConfig, cfg: StepConfig,
             optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    """One RL step on a rollout batch described by `inputs` -> (new state, metrics)."""
    prompts, prompt_valid = inputs.prompts, inputs.prompt_valid
    if prompts.shape[0] % cfg.minibatch_size:
        raise ValueError(f"rollout batch {prompts.shape[0]} is not a multiple of "
                         f"minibatch_size={cfg.minibatch_size}")
    k_rollout, k_states, k_order = jax.random.split(key, 3)
    if cfg.rollout_source == "student":
        batch, rollout_stats = rollout_stage(student_config, state.params, prompts, prompt_valid, k_rollout,
                                             cfg, inputs.max_lengths)
    elif cfg.rollout_source == "teacher":
        batch, rollout_stats = teacher_rollout_stage(teacher_config, teacher_params, prompts, prompt_valid,
                                                     k_rollout, cfg, inputs.max_lengths)
    else:
        if inputs.responses is None or inputs.response_lengths is None:
            raise ValueError("rollout_source='given' needs StepInputs.responses and response_lengths")
        lengths = jnp.minimum(inputs.response_lengths, inputs.max_lengths)
        batch = given_rollouts(prompts, prompt_valid, inputs.responses, lengths)
        rollout_stats = {"rollout_nfe": jnp.zeros((), jnp.int32), "rollout_forward_tokens": jnp.zeros((), jnp.int32),
                         "rollout_tokens_per_round": jnp.zeros(())}
    masked = select_states_stage(batch, k_states, cfg)
    t_hidden = (teacher_stage(teacher_config, teacher_params, batch, cfg.teacher_slice_size)
                if cfg.objective == "kl" else None)
    state, metrics = update_stage(state, student_config, teacher_config, teacher_params, batch, masked,
                                  t_hidden, k_order, cfg, optimizer)
    metrics.update(rollout_stats)
    metrics.update(response_length=batch.lengths.mean(), response_tokens=batch.lengths.sum(),
                   response_lengths=batch.lengths)
    return state, metrics


def make_opd_step(student_config: ModelConfig, teacher_config: ModelConfig, cfg: StepConfig,
                  optimizer: optax.GradientTransformation, *, state_shardings=None,
                  teacher_shardings=None, mesh=None):
    """The jitted step `(state, teacher_params, inputs: StepInputs, key) -> (state, metrics)`.

    With a mesh, pass the state and teacher shardings (`train.state.train_state_shardings`,
    `sharding.param_shardings`); the inputs are split over the batch axes and the step runs
    inside the logical-axis rules so the model's activation constraints take effect.
    """
    def step(state, teacher_params, inputs, key):
        return opd_step(state, teacher_params, inputs, key, student_config=student_config,
                        teacher_config=teacher_config, cfg=cfg, optimizer=optimizer)

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    from opdlm_jax.sharding import replicated, rules_context

    rep = replicated(mesh)
    inputs_shardings = step_inputs_shardings(mesh, given=cfg.rollout_source == "given")
    jitted = jax.jit(step, donate_argnums=0,
                     in_shardings=(state_shardings, teacher_shardings, inputs_shardings, rep),
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
