"""The one configuration path: an ml_collections ConfigDict -> every object a run needs.

    setup = build_setup(config)           # loads the models, builds everything below once
    step_cfg = setup.step_config(budget)  # the StepConfig of one compiled response budget

The pieces are also usable without weights (the AOT memory plan compiles the step from a
preset's architecture): `sampler_config`, `loss_config`, `optimizer_config`, `curriculum`,
`step_config(config, teacher_config, tokens, max_new_tokens)` and `run_mesh`. Nobody else
translates config fields into these objects, so a setting means the same thing in the trainer,
the AOT tool, the benchmarks and the demo.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from opdlm_jax.checkpoints.loading import LoadedModel, load_model
from opdlm_jax.decoding.config import SamplerConfig
from opdlm_jax.decoding.sampling import SamplingParams
from opdlm_jax.diffusion.student import output_vocab_limit
from opdlm_jax.distill.opd_loss import LossConfig
from opdlm_jax.models.config import ModelConfig
from opdlm_jax.models.layer_stack import cast_floating
from opdlm_jax.train.config import METHODS, ConfigError, stored_teacher_dtype, validate_config
from opdlm_jax.train.curriculum import Curriculum
from opdlm_jax.train.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
from opdlm_jax.train.state import init_train_state, train_state_shardings
from opdlm_jax.train.step import StepConfig

_TOKENIZER_PROBE = "The quick brown fox, 12 + 7 = 19. <|im_end|>"


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """The token ids the step needs: the mask token, padding and the stop tokens."""
    mask_id: int
    pad_id: int
    stop_ids: tuple[int, ...]

    @classmethod
    def of_model(cls, model: LoadedModel) -> "SpecialTokens":
        return cls(int(model.mask_token_id), model.pad_id, tuple(model.stop_token_ids))

    @classmethod
    def of_config(cls, config: ModelConfig) -> "SpecialTokens":
        """From the architecture alone (no tokenizer): what a preset declares."""
        if config.mask_token_id is None:
            raise ConfigError(f"model config {config.family} has no mask_token_id")
        return cls(int(config.mask_token_id), int(config.pad_token_id or 0),
                   tuple(config.eos_token_ids) or (0,))


def sampler_config(config: ml_collections.ConfigDict) -> SamplerConfig:
    """The rollout policy (config.rollout)."""
    r = config.rollout
    sampling = SamplingParams(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p, greedy=r.temperature == 0)
    return SamplerConfig(block_size=r.block_size, steps_per_block=r.steps_per_block, strategy=r.strategy,
                         threshold=r.threshold, sampling=sampling, alignment=r.alignment)


def loss_config(config: ml_collections.ConfigDict, teacher_config: ModelConfig) -> LossConfig:
    """The divergence, its options, normalisation and chunking (config.loss)."""
    lc = config.loss
    options = {"topk_forward_kl_reference": (("k", lc.topk),), "topk_forward_kl_tail": (("k", lc.topk),),
               "generalized_jsd": (("beta", float(lc.beta)),)}.get(lc.divergence, ())
    return LossConfig(block_size=config.rollout.block_size, alignment=config.rollout.alignment,
                      divergence=lc.divergence, divergence_kwargs=options, normalisation=lc.normalisation,
                      chunk_size=lc.chunk_size, vocab_limit=output_vocab_limit(teacher_config))


def updates_per_rl_step(config: ml_collections.ConfigDict) -> int:
    return config.batch_size // config.minibatch_size


def optimizer_config(config: ml_collections.ConfigDict) -> OptimizerConfig:
    """AdamW and its schedule; schedule lengths count optimizer updates (K per RL step)."""
    o, k = config.optimizer, updates_per_rl_step(config)
    return OptimizerConfig(learning_rate=o.learning_rate, end_learning_rate=o.end_learning_rate,
                           warmup_steps=o.warmup_rl_steps * k, total_steps=max(config.steps * k, 1), b1=o.b1,
                           b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, clip_norm=o.clip_norm)


def curriculum(config: ml_collections.ConfigDict) -> Curriculum:
    """The response-length curriculum with its per-domain caps (config.curriculum)."""
    cur = config.curriculum
    return Curriculum(start=cur.start, end=cur.end, ramp_steps=cur.ramp_steps, ramp=cur.ramp, bucket=cur.bucket,
                      domain_caps=tuple(sorted(cur.domain_caps.to_dict().items())))


def step_config(config: ml_collections.ConfigDict, teacher_config: ModelConfig, tokens: SpecialTokens,
                max_new_tokens: int) -> StepConfig:
    """The fused step's static settings for one response budget."""
    source, selection, objective = METHODS[config.method]
    return StepConfig(sampler=sampler_config(config), loss=loss_config(config, teacher_config),
                      max_new_tokens=max_new_tokens, minibatch_size=config.minibatch_size,
                      mask_id=tokens.mask_id, pad_id=tokens.pad_id, stop_ids=tokens.stop_ids,
                      selection=selection or config.selection, rollout_source=source, objective=objective,
                      teacher_slice=config.teacher_slice)


def run_mesh(config: ml_collections.ConfigDict, devices=None):
    """Mesh(data, fsdp, tensor) over the devices, or None for a single-device run."""
    devices = jax.devices() if devices is None else devices
    if len(devices) == 1 or config.mesh.get("devices", 0) == 1:
        return None
    from opdlm_jax.sharding import make_mesh

    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.batch_size % batch_ways:
        raise ConfigError(f"batch_size={config.batch_size} is not divisible by mesh data x fsdp = "
                          f"{batch_ways} (mesh.data={config.mesh.data}, mesh.fsdp={config.mesh.fsdp})")
    return mesh


def run_shardings(mesh, student_config: ModelConfig, teacher_config: ModelConfig, abstract_params: Any,
                  optimizer) -> dict:
    """{"state": TrainState shardings, "teacher": teacher param shardings} on `mesh`."""
    from opdlm_jax.sharding import param_shardings

    abstract_state = jax.eval_shape(lambda p: init_train_state(p, optimizer), abstract_params)
    return dict(state=train_state_shardings(abstract_state, param_shardings(student_config, mesh), optimizer, mesh),
                teacher=param_shardings(teacher_config, mesh))


def abstract_start_up(student_config: ModelConfig, teacher_config: ModelConfig, optimizer, mesh) -> tuple[Any, Any]:
    """(train state, teacher params) as ShapeDtypeStructs carrying the run's shardings: what the
    trainer's start-up creates, planned without allocating anything (the AOT tool's inputs)."""
    from opdlm_jax.models.forward import init_params
    from opdlm_jax.sharding import abstract_with_shardings

    key = jax.random.PRNGKey(0)
    abstract_params = jax.eval_shape(lambda r: init_params(student_config, r), key)
    abstract_state = jax.eval_shape(lambda p: init_train_state(p, optimizer), abstract_params)
    abstract_teacher = jax.eval_shape(lambda r: init_params(teacher_config, r), key)
    shardings = run_shardings(mesh, student_config, teacher_config, abstract_params, optimizer)
    return (abstract_with_shardings(abstract_state, shardings["state"]),
            abstract_with_shardings(abstract_teacher, shardings["teacher"]))


def load_models(config: ml_collections.ConfigDict) -> tuple[LoadedModel, ModelConfig, Any]:
    """(teacher, student config, student init params); rejects mismatched tokenizers."""
    numerics = dict(scan_layers=config.scan_layers, remat_policy=config.remat_policy)
    teacher = load_model(config.teacher, dtype=config.dtype, param_dtype=config.param_dtype,
                         checkpoint_dir=config.teacher_dir or None, **numerics)
    teacher = dataclasses.replace(teacher, config=teacher.config.replace(attention=config.attention))
    if not config.student or config.student == config.teacher:
        return teacher, teacher.config, teacher.params
    student = load_model(config.student, dtype=config.dtype, param_dtype=config.param_dtype, **numerics)
    student = dataclasses.replace(student, config=student.config.replace(attention=config.attention))
    if (len(student.tokenizer) != len(teacher.tokenizer)
            or student.tokenizer.encode(_TOKENIZER_PROBE) != teacher.tokenizer.encode(_TOKENIZER_PROBE)):
        raise ConfigError(f"teacher={config.teacher!r} and student={config.student!r} have different "
                          "tokenizers; OPD compares their distributions token by token")
    if student.mask_token_id != teacher.mask_token_id:
        raise ConfigError(f"student mask id {student.mask_token_id} != teacher mask id {teacher.mask_token_id}")
    return teacher, student.config, student.params


def teacher_storage(teacher: LoadedModel, param_dtype: str) -> LoadedModel:
    """The frozen teacher with its floating-point weights stored in `param_dtype` (a new tree:
    the student keeps the arrays it was given)."""
    if teacher.config.param_dtype == param_dtype:
        return teacher
    return dataclasses.replace(teacher, config=teacher.config.replace(param_dtype=param_dtype),
                               params=cast_floating(teacher.params, param_dtype))


@dataclasses.dataclass
class Setup:
    """Everything the loop needs, built once from the config."""
    config: ml_collections.ConfigDict
    teacher: LoadedModel
    student_config: ModelConfig
    student_init: Any
    tokens: SpecialTokens
    optimizer: Any
    schedule: Any  # optimizer update -> learning rate
    curriculum: Curriculum
    mesh: Any
    shardings: dict

    def step_config(self, max_new_tokens: int) -> StepConfig:
        return step_config(self.config, self.teacher.config, self.tokens, max_new_tokens)


def build_setup(config: ml_collections.ConfigDict, teacher: LoadedModel | None = None) -> Setup:
    """Validate the config and build everything from it; pass an already loaded `teacher` to skip
    reloading it (the student then starts from the teacher's weights)."""
    validate_config(config)
    if teacher is not None:
        stored = {str(x.dtype) for x in jax.tree.leaves(teacher.params)}
        if stored != {config.param_dtype}:  # the student's master weights start as these very arrays
            raise ConfigError(f"the teacher passed to build_setup holds {sorted(stored)} parameters but "
                              f"param_dtype={config.param_dtype!r}; load it with train.setup.load_models(config)")
        student_config, student_init = teacher.config, teacher.params
    else:
        teacher, student_config, student_init = load_models(config)
    teacher = teacher_storage(teacher, stored_teacher_dtype(config))
    mask = teacher.mask_token_id
    if mask is None or not 0 <= mask < student_config.vocab_size:
        raise ConfigError(f"mask token id {mask} is outside the student's vocabulary ({student_config.vocab_size})")
    opt_cfg = optimizer_config(config)
    optimizer = make_optimizer(opt_cfg)
    mesh = run_mesh(config)
    shardings = {}
    if mesh is not None:
        shardings = run_shardings(mesh, student_config, teacher.config,
                                  jax.eval_shape(lambda p: p, student_init), optimizer)
    setup = Setup(config, teacher, student_config, student_init, SpecialTokens.of_model(teacher), optimizer,
                  learning_rate_schedule(opt_cfg), curriculum(config), mesh, shardings)
    setup.step_config(setup.curriculum.length(0, config.rollout.block_size))  # invalid combinations fail now
    return setup
