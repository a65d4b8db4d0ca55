"""The training loop: data -> fused OPD step -> metrics, checkpoints, evaluation; exact resume.

    train(config, workdir)    config: `trainer_config.default_config()` with overrides

Resume: the latest readable checkpoint in workdir/checkpoints restores parameters, optimizer
state, the data iterator and the RL step; step keys are derived from (seed, RL step), so a resumed
run repeats exactly what an uninterrupted one does. SIGTERM (TPU preemption) finishes the current
step, saves and exits. A non-finite loss stops the run naming the step; its state is not saved.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from opdlm_jax.diffusion.config import SamplerConfig
from opdlm_jax.distill.opd_loss import LossConfig, output_vocab_limit
from opdlm_jax.generation.batching import bucket_width, left_pad, note_shape
from opdlm_jax.generation.sampling import SamplingParams
from opdlm_jax.loading import LoadedModel, load_model
from opdlm_jax.train.checkpointing import RunCheckpointer
from opdlm_jax.train.curriculum import Curriculum
from opdlm_jax.train.flops import full_step_flops, paper_flops
from opdlm_jax.train.metrics_writer import MetricsWriter
from opdlm_jax.train.opd_step import (StepConfig, TrainState, init_train_state, make_opd_step,
                                      train_state_shardings)
from opdlm_jax.train.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
from opdlm_jax.train.trainer_config import METHODS, ConfigError, validate_config

log = logging.getLogger(__name__)
EvalFn = Callable[[Any, int], dict]


class NonFiniteLossError(FloatingPointError):
    pass


@dataclasses.dataclass
class Setup:
    """Everything the loop needs, built once from the config."""
    teacher: LoadedModel
    student_config: Any
    student_init: Any
    optimizer: Any
    schedule: Any  # optimizer update -> learning rate
    curriculum: Curriculum
    loss: LossConfig
    sampler: SamplerConfig
    mesh: Any
    shardings: dict


def load_models(config) -> tuple[LoadedModel, Any, Any]:
    """(teacher, student config, student init params); rejects mismatched tokenizers."""
    numerics = dict(scan_layers=config.scan_layers, remat_policy=config.remat_policy)
    teacher = load_model(config.teacher, dtype=config.dtype, param_dtype=config.param_dtype,
                         checkpoint_dir=config.teacher_dir or None, **numerics)
    if not config.student or config.student == config.teacher:
        return teacher, teacher.config, teacher.params
    student = load_model(config.student, dtype=config.dtype, param_dtype=config.param_dtype, **numerics)
    probe = "The quick brown fox, 12 + 7 = 19. <|im_end|>"
    if (len(student.tokenizer) != len(teacher.tokenizer)
            or student.tokenizer.encode(probe) != teacher.tokenizer.encode(probe)):
        raise ConfigError(f"teacher={config.teacher!r} and student={config.student!r} have different "
                          "tokenizers; OPD compares their distributions token by token")
    if student.mask_token_id != teacher.mask_token_id:
        raise ConfigError(f"student mask id {student.mask_token_id} != teacher mask id {teacher.mask_token_id}")
    return teacher, student.config, student.params


def build_setup(config, teacher: LoadedModel | None = None) -> Setup:
    """Everything derived from the config; pass an already loaded `teacher` to skip reloading it
    (the student is then initialised from the teacher's weights)."""
    validate_config(config)
    if teacher is not None:
        student_config, student_init = teacher.config, teacher.params
    else:
        teacher, student_config, student_init = load_models(config)
    mask = teacher.mask_token_id
    if mask is None or not 0 <= mask < student_config.vocab_size:
        raise ConfigError(f"mask token id {mask} is outside the student's vocabulary "
                          f"({student_config.vocab_size})")
    k = config.batch_size // config.minibatch_size
    opt_cfg = OptimizerConfig(
        learning_rate=config.optimizer.learning_rate, end_learning_rate=config.optimizer.end_learning_rate,
        warmup_steps=config.optimizer.warmup_rl_steps * k, total_steps=max(config.steps * k, 1),
        b1=config.optimizer.b1, b2=config.optimizer.b2, eps=config.optimizer.eps,
        weight_decay=config.optimizer.weight_decay, clip_norm=config.optimizer.clip_norm)
    optimizer, schedule = make_optimizer(opt_cfg), learning_rate_schedule(opt_cfg)
    cur = config.curriculum
    curriculum = Curriculum(start=cur.start, end=cur.end, ramp_steps=cur.ramp_steps, ramp=cur.ramp,
                            bucket=cur.bucket, domain_caps=tuple(sorted(cur.domain_caps.to_dict().items())))
    r = config.rollout
    sampling = SamplingParams(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                              greedy=r.temperature == 0)
    sampler = SamplerConfig(block_size=r.block_size, steps_per_block=r.steps_per_block, strategy=r.strategy,
                            threshold=r.threshold, sampling=sampling, alignment=r.alignment)
    div_kwargs = {"topk_forward_kl_reference": (("k", config.loss.topk),),
                  "topk_forward_kl_tail": (("k", config.loss.topk),),
                  "generalized_jsd": (("beta", float(config.loss.beta)),)}.get(config.loss.divergence, ())
    loss = LossConfig(block_size=r.block_size, alignment=r.alignment, divergence=config.loss.divergence,
                      divergence_kwargs=div_kwargs, normalisation=config.loss.normalisation,
                      chunk_size=config.loss.chunk_size, vocab_limit=output_vocab_limit(teacher.config))
    mesh, shardings = None, {}
    if jax.device_count() > 1 and config.mesh.get("devices", 0) != 1:
        from opdlm_jax.sharding import batch_sharding, make_mesh, param_shardings

        mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
        batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
        if config.batch_size % batch_ways:
            raise ConfigError(f"batch_size={config.batch_size} is not divisible by mesh data x fsdp = "
                              f"{batch_ways} (mesh.data={config.mesh.data}, mesh.fsdp={config.mesh.fsdp})")
        p_shard = param_shardings(student_config, mesh)
        abstract = jax.eval_shape(lambda p: init_train_state(p, optimizer), student_init)
        shardings = dict(state=train_state_shardings(abstract, p_shard, optimizer, mesh),
                         teacher=param_shardings(teacher.config, mesh), batch=batch_sharding(mesh, 2))
    return Setup(teacher, student_config, student_init, optimizer, schedule, curriculum, loss, sampler, mesh,
                 shardings)


def step_config(config, setup: Setup, max_new_tokens: int) -> StepConfig:
    source, selection, objective = METHODS[config.method]
    return StepConfig(sampler=setup.sampler, loss=setup.loss, max_new_tokens=max_new_tokens,
                      minibatch_size=config.minibatch_size, mask_id=setup.teacher.mask_token_id,
                      pad_id=_pad_id(setup.teacher), stop_ids=tuple(setup.teacher.stop_token_ids),
                      selection=selection or config.selection, rollout_source=source, objective=objective,
                      teacher_slice=None if config.teacher_slice == -1 else config.teacher_slice)


def _pad_id(model: LoadedModel) -> int:
    pad = model.tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def make_data_iterator(config, setup: Setup, workdir: Path):
    tok = setup.teacher.tokenizer
    if config.method == "corpus":
        from opdlm_jax.data.corpus import CorpusWindows, corpus_text

        ids = np.asarray(tok.encode(corpus_text(config.data.corpus), add_special_tokens=False))
        length = setup.curriculum.length(10**9, setup.sampler.block_size)
        return CorpusWindows(ids, setup.sampler.block_size * 4, length, config.batch_size, config.seed)
    from opdlm_jax.data.chat_format import ChatFormat
    from opdlm_jax.data.loader import make_prompt_iterator

    suffixes = config.data.get("suffixes", None)
    fmt = ChatFormat() if suffixes is None else ChatFormat(suffixes=dict(suffixes))
    data_dir = config.data.data_dir or (str(workdir / "tfds") if config.data.backend == "grain" else None)
    return make_prompt_iterator(config.data.train, tok, config.batch_size, seed=config.seed,
                                max_prompt_tokens=config.data.max_prompt_tokens,
                                on_too_long=config.data.on_too_long, backend=config.data.backend,
                                data_dir=data_dir, chat_format=fmt,
                                shard_index=jax.process_index(), shard_count=jax.process_count())


class _Preemption:
    """SIGTERM sets a flag; the loop saves after the current step and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving after the current step, then exiting")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train(config, workdir: str | Path, eval_fn: EvalFn | None = None, setup: Setup | None = None,
          progress: bool = True) -> dict:
    """Run (or resume) training in `workdir`; returns the last metrics and where things are."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    setup = setup or build_setup(config)
    teacher = setup.teacher
    b = setup.sampler.block_size
    ckpt = RunCheckpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints,
                           async_save=config.async_checkpoints)
    data = make_data_iterator(config, setup, workdir)
    # A copy: the state is donated to the step, and the student may start as the teacher's arrays.
    state = init_train_state(jax.tree.map(lambda x: jnp.array(x, copy=True), setup.student_init), setup.optimizer)
    teacher_params = jax.tree.map(jnp.asarray, teacher.params)
    if setup.mesh is not None:
        state = jax.device_put(state, setup.shardings["state"])
        teacher_params = jax.device_put(teacher_params, setup.shardings["teacher"])
    start, totals = 0, {"tokens": 0.0, "paper_flops": 0.0, "full_flops": 0.0, "skipped_prompts": 0}
    restored = ckpt.restore(jax.eval_shape(lambda s: s, state) if setup.mesh is None else
                            _abstract_with_shardings(state, setup.shardings["state"]))
    if restored is not None:
        state, data_state, meta = restored
        data.set_state(data_state)
        start, totals = int(meta["step"]), dict(meta["totals"])
        log.info("resumed from step %d in %s", start, ckpt.directory)
    meta_base = {"teacher": config.teacher, "student": config.student or config.teacher,
                 "method": config.method, "seed": config.seed, "dtype": config.dtype,
                 "scan_layers": config.scan_layers, "mask_token_id": teacher.mask_token_id}
    writer = MetricsWriter(workdir, tensorboard=config.tensorboard)
    steps_cache: dict = {}
    last: dict = dict(totals, rl_step=start)  # what a finished run reports when resumed
    t_run = time.perf_counter()
    bar = _progress(progress, start, config.steps)
    with _Preemption() as preemption:
        for rl_step in range(start, config.steps):
            batch_in = next(data)
            args, budget, n_tokens_prompt = _step_inputs(config, setup, batch_in, rl_step)
            key = (budget, args[0].shape[1])
            if key not in steps_cache:
                note_shape("opd_step", config.batch_size, *key)
                steps_cache[key] = make_opd_step(
                    setup.student_config, teacher.config, step_config(config, setup, budget), setup.optimizer,
                    state_shardings=setup.shardings.get("state"), teacher_shardings=setup.shardings.get("teacher"),
                    batch_sharding=setup.shardings.get("batch"), mesh=setup.mesh)
            t0 = time.perf_counter()
            new_state, metrics = steps_cache[key](state, teacher_params, *args,
                                                  jax.random.fold_in(jax.random.PRNGKey(config.seed), rl_step),
                                                  *_optional(config, batch_in, budget))
            metrics = jax.device_get(metrics)
            dt = time.perf_counter() - t0
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                ckpt.wait()
                good = ckpt.latest_step()
                raise NonFiniteLossError(
                    f"loss is {loss} at RL step {rl_step + 1}; stopping. The last good checkpoint is "
                    f"step {good} in {ckpt.directory}" if good is not None else
                    f"loss is {loss} at RL step {rl_step + 1}; stopping (no checkpoint saved yet)")
            state = new_state
            generated = float(metrics["response_tokens"])
            totals["tokens"] += generated
            totals["paper_flops"] += paper_flops(setup.student_config, teacher.config, generated)
            totals["full_flops"] += full_step_flops(
                setup.student_config, teacher.config, batch=config.batch_size, prompt_width=args[0].shape[1],
                response_width=budget, rollout_forward_tokens=float(metrics["rollout_forward_tokens"]))
            totals["skipped_prompts"] = int(getattr(data, "num_skipped", 0))
            last = _scalar_metrics(metrics)
            last.update(rl_step=rl_step + 1, step_seconds=dt, tokens_per_second=generated / dt,
                        response_budget=budget, learning_rate=float(setup.schedule(max(int(state.step) - 1, 0))), **totals)
            if (rl_step + 1) % config.log_every == 0 or rl_step + 1 == config.steps:
                writer.write(rl_step + 1, last)
            writer.write_data_order(rl_step + 1, _batch_ids(batch_in))
            bar(rl_step + 1, last, t_run)
            done = rl_step + 1 == config.steps
            if config.eval_every and (rl_step + 1) % config.eval_every == 0 and eval_fn and not done:
                writer.write(rl_step + 1, eval_fn(state.params, rl_step + 1), prefix="eval")
            if (rl_step + 1) % config.checkpoint_every == 0 or done or preemption.requested:
                ckpt.save(rl_step + 1, state, data.get_state(), dict(meta_base, totals=totals))
            if preemption.requested:
                log.warning("preempted: checkpoint saved at step %d; exiting", rl_step + 1)
                break
    ckpt.close()
    if eval_fn is not None and not preemption.requested:
        last_eval = eval_fn(state.params, int(last.get("rl_step", start)))
        writer.write(int(last.get("rl_step", start)), last_eval, prefix="eval")
        last["eval"] = last_eval
    writer.close()
    (workdir / "train_summary.json").write_text(json.dumps(
        {k: v for k, v in last.items() if not isinstance(v, (list, dict))}, indent=1))
    return {"metrics": last, "state": state, "preempted": preemption.requested}


def _step_inputs(config, setup: Setup, batch_in, rl_step: int):
    b = setup.sampler.block_size
    if config.method == "corpus":
        prompts, responses = batch_in
        budget = setup.curriculum.length(rl_step, b)
        valid = np.ones(prompts.shape, bool)
        return (jnp.asarray(prompts), jnp.asarray(valid)), budget, prompts.size
    budget, per_seq = setup.curriculum.sequence_budgets(rl_step, batch_in.domains, b)
    width = bucket_width(max(len(t) for t in batch_in.token_ids), b, minimum=config.data.prompt_bucket,
                         ladder=config.data.prompt_ladder)
    tokens, valid = left_pad(batch_in.token_ids, width, _pad_id(setup.teacher))
    return (jnp.asarray(tokens), jnp.asarray(valid)), budget, int(valid.sum())


def _batch_ids(batch_in) -> list:
    """What the step saw, for auditing data order across resumes: record indices or window starts."""
    if hasattr(batch_in, "indices"):
        return [int(i) for i in batch_in.indices]
    return [int(x) for x in np.asarray(batch_in[0])[:, 0]]


def _optional(config, batch_in, budget: int):
    """Per-sequence inputs after the key: caps (student rollouts) or corpus responses."""
    if config.method == "corpus":
        responses = batch_in[1][:, :budget]
        return (None, jnp.asarray(responses), jnp.full((responses.shape[0],), budget, jnp.int32))
    return ()


def _scalar_metrics(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in metrics.items() if np.asarray(v).ndim == 0}


def _abstract_with_shardings(state, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def _progress(enabled: bool, start: int, total: int):
    """A one-line progress report per step: step, loss, tokens/s, ETA."""
    def report(step: int, m: dict, t_run: float):
        if not enabled:
            return
        done = step - start
        eta = (time.perf_counter() - t_run) / max(done, 1) * (total - step)
        print(f"[train] step {step}/{total} loss {m.get('loss', float('nan')):.4f} "
              f"len {m.get('response_length', 0):.1f} tok/round {m.get('rollout_tokens_per_round', 0):.2f} "
              f"{m.get('tokens_per_second', 0):.1f} tok/s step {m.get('step_seconds', 0):.1f}s "
              f"ETA {eta / 60:.1f} min", flush=True)
    return report
