"""The training loop: data -> fused OPD step -> metrics, checkpoints, evaluation; exact resume.

    train(config, workdir)    config: `train.config.default_config()` with overrides;
                              every object the run needs comes from `train.setup.build_setup`

Resume: the newest checkpoint in workdir/checkpoints that reads and matches its fingerprints
restores parameters, optimizer state, the data iterator and the RL step (corrupt newer ones are
moved aside); step keys are derived from (seed, RL step), so a resumed run repeats exactly what an
uninterrupted one does, and metrics.jsonl / data_order.jsonl are cut back to the restored step.
A workdir holding a run with other settings (`train.run_identity`) is refused before anything
is written. SIGTERM (TPU preemption) finishes the current step, saves and ends `preempted`
(before the first step: exits at once, `train.preemption`). A step whose loss, gradient norm,
parameters or optimizer moments are not finite stops the run; its state is never saved.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from tqdm import tqdm

from opdlm_jax.checkpoints.orbax import RunCheckpointer
from opdlm_jax.decoding.batching import note_shape
from opdlm_jax.errors import RunStopped
from opdlm_jax.sharding import (abstract_with_shardings, host_value, place_global_batch, shard_params,
                                wait_for_all_processes)
from opdlm_jax.train.batch_inputs import step_inputs
from opdlm_jax.train.flops import full_step_flops, paper_flops
from opdlm_jax.train.metrics_writer import MetricsWriter
from opdlm_jax.train.preemption import PreemptionGuard
from opdlm_jax.train.run_files import is_remote, run_directory, truncate_jsonl, write_json
from opdlm_jax.train.run_identity import FILENAME as run_identity_file
from opdlm_jax.train.run_identity import check_same_run, identity_from_meta, run_identity, stored_identity
from opdlm_jax.train.setup import Setup, build_setup
from opdlm_jax.train.state import TrainState, init_train_state
from opdlm_jax.train.step import StepInputs, make_opd_step, step_inputs_shardings

log = logging.getLogger(__name__)
EvalFn = Callable[[Any, int], dict]


def make_data_iterator(config, setup: Setup, workdir: epath.Path):
    tok = setup.teacher.tokenizer
    if config.method == "corpus":
        from opdlm_jax.data.corpus import CorpusWindows, corpus_text

        ids = np.asarray(tok.encode(corpus_text(config.data.corpus), add_special_tokens=False))
        b = config.rollout.block_size
        return CorpusWindows(ids, b * 4, setup.curriculum.length(10**9, b), config.batch_size, config.seed)
    from opdlm_jax.data.chat_format import chat_format_from_config
    from opdlm_jax.data.loader import make_prompt_iterator

    fmt = chat_format_from_config(config)  # the one evaluation uses too
    # Every process walks the same global stream of prompts (shard 0 of 1) and later places only
    # its own rows of each batch: the global batch is then the same prompts in the same order for
    # any number of processes, even when too-long prompts are skipped, and the iterator's state is
    # the same on every process (a checkpoint from 2 processes resumes in 1). Reading a batch's
    # records costs far less than a step; per-process grain shards would make the order depend on
    # the process count.
    # The tfds array_record dataset is built once per data_dir (default: this run's workdir, or
    # for a remote workdir a local cache: derived data, rebuilt in seconds on a new host).
    data_dir = config.data.data_dir or (os.path.expanduser("~/.cache/opdlm_jax/tfds") if is_remote(workdir)
                                        else os.fspath(workdir / "tfds"))
    make = functools.partial(make_prompt_iterator, config.data.train, tok, config.batch_size, seed=config.seed,
                             max_prompt_tokens=config.data.max_prompt_tokens,
                             on_too_long=config.data.on_too_long, data_dir=data_dir, chat_format=fmt,
                             shard_index=0, shard_count=1)
    # The tfds dataset is built once, by process 0; the others open it when it is complete.
    first = make() if jax.process_index() == 0 else None
    wait_for_all_processes("prompt dataset built")
    return first if first is not None else make()


def train(config, workdir: str | os.PathLike | epath.Path, eval_fn: EvalFn | None = None, setup: Setup | None = None,
          progress: bool = True) -> dict:
    """Run (or resume) training in `workdir` -> dict(metrics, state, preempted, status).

    Raises BadInput when `workdir` holds a run with other settings (before anything is written),
    RunStopped when no checkpoint is usable or a step turns non-finite (nothing bad is saved)."""
    workdir = run_directory(workdir)  # local or gs:// (etils.epath); BadInput for anything else
    identity = run_identity(config)
    stored = stored_identity(workdir)
    if stored is not None:
        check_same_run(stored, identity, workdir)
    primary = jax.process_index() == 0  # the one process that writes logs and run files
    with PreemptionGuard() as preemption:
        log.info("start-up in %s: loading models, data and checkpoints (a SIGTERM now exits at once)", workdir)
        setup = setup or build_setup(config)
        teacher = setup.teacher
        ckpt = RunCheckpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints,
                               async_save=config.async_checkpoints,
                               params_only=config.get("checkpoint_params_only", False))
        if stored is None and ckpt.steps():  # a run from before run.json: its checkpoints say what it was
            check_same_run(identity_from_meta(ckpt.read_meta(ckpt.latest_step())), identity, workdir)
        data = make_data_iterator(config, setup, workdir)
        state, teacher_params = _initial_state(setup)
        abstract = (jax.eval_shape(lambda s: s, state) if setup.mesh is None else
                    abstract_with_shardings(state, setup.shardings["state"]))
        start, totals = 0, {"tokens": 0.0, "paper_flops": 0.0, "full_flops": 0.0, "skipped_prompts": 0}
        try:
            restored = ckpt.restore(abstract.params, abstract.opt_state)  # RunStopped: none usable, none touched
        except RunStopped:
            ckpt.close()
            raise
        if restored is not None:
            meta = restored["meta"]
            step = np.asarray(meta["opt_step"], np.int32)
            # Placed like the step's own output, so the first step after a restore compiles once.
            step = jnp.asarray(step) if setup.mesh is None else shard_params(step, setup.shardings["state"].step)
            opt_state = restored["opt_state"]
            if opt_state is None:  # a params-only checkpoint: the AdamW moments start again from zero
                log.warning("checkpoint %d holds no optimizer state (checkpoint_params_only): resuming "
                            "with fresh optimizer moments, so this is not an exact resume", int(meta["step"]))
                opt_state = state.opt_state
            state = TrainState(step, restored["params"], opt_state)
            data.set_state(restored["data"])
            start, totals = int(meta["step"]), dict(meta["totals"])
            log.info("resumed from step %d in %s", start, ckpt.directory)
        if primary:
            _accept_run(workdir, config, identity, start)
        writer = MetricsWriter(workdir, tensorboard=config.tensorboard, enabled=primary)
        meta_base = {"teacher": config.teacher, "student": config.student or config.teacher,
                     "method": config.method, "seed": config.seed, "dtype": config.dtype,
                     "scan_layers": config.scan_layers, "mask_token_id": teacher.mask_token_id,
                     "block_size": config.rollout.block_size, "alignment": config.rollout.alignment}
        steps_cache: dict = {}
        last: dict = dict(totals, rl_step=start)  # what a finished run reports when resumed
        eval_steps = {int(s) for s in config.eval_steps}
        started = time.monotonic()
        bar = tqdm(total=config.steps, initial=start, desc="train", unit="step",
                   disable=not (progress and primary), dynamic_ncols=True, mininterval=0)
        with bar:
            for rl_step in range(start, config.steps):
                batch_in = next(data)
                host = step_inputs(config, setup, batch_in, rl_step)
                budget, width = host.budget, host.inputs.prompts.shape[1]
                inputs = _place_inputs(host.inputs, setup)
                key = jax.random.fold_in(jax.random.PRNGKey(config.seed), rl_step)
                if (budget, width) not in steps_cache:
                    note_shape("opd_step", config.batch_size, budget, width)
                    steps_cache[budget, width] = _compiled_step(setup, budget, state, teacher_params, inputs, key)
                t0 = time.perf_counter()
                state, metrics = steps_cache[budget, width](state, teacher_params, inputs, key)
                metrics = _host_metrics(metrics)
                dt = time.perf_counter() - t0
                if not bool(metrics["state_finite"]):
                    _stop_non_finite(rl_step + 1, metrics, ckpt, abstract, workdir if primary else None)
                preemption.step_completed()
                generated = float(metrics["response_tokens"])
                totals["tokens"] += generated
                totals["paper_flops"] += paper_flops(setup.student_config, teacher.config, generated)
                totals["full_flops"] += full_step_flops(
                    setup.student_config, teacher.config, batch=config.batch_size, prompt_width=width,
                    response_width=budget, rollout_forward_tokens=float(metrics["rollout_forward_tokens"]))
                totals["skipped_prompts"] = int(getattr(data, "num_skipped", 0))
                last = _scalar_metrics(metrics)
                last.update(_lengths_by_domain(batch_in, metrics["response_lengths"]))
                last.update(rl_step=rl_step + 1, step_seconds=dt, tokens_per_second=generated / dt,
                            response_budget=budget,
                            learning_rate=float(setup.schedule(max(int(host_value(state.step)) - 1, 0))), **totals)
                if (rl_step + 1) % config.log_every == 0 or rl_step + 1 == config.steps:
                    writer.write(rl_step + 1, last)
                writer.write_data_order(rl_step + 1, _batch_ids(batch_in))
                bar.set_postfix_str(_progress_line(last), refresh=False)
                bar.update(1)
                done = rl_step + 1 == config.steps
                cadence = config.eval_every and (rl_step + 1) % config.eval_every == 0
                if (cadence or rl_step + 1 in eval_steps) and eval_fn and not done:
                    writer.write(rl_step + 1, eval_fn(state.params, rl_step + 1), prefix="eval")
                if (config.stop_after_minutes and not preemption.requested
                        and _time_is_up(time.monotonic() - started, config.stop_after_minutes)):
                    log.warning("stop_after_minutes=%s reached: saving and stopping; rerun to continue",
                                config.stop_after_minutes)
                    preemption.requested = True  # the preemption path: save, end `preempted`, exit 75
                if (rl_step + 1) % config.checkpoint_every == 0 or done or preemption.requested:
                    ckpt.save(rl_step + 1, state.params, state.opt_state, data.get_state(),
                              dict(meta_base, totals=totals, opt_step=int(host_value(state.step))))
                if preemption.requested:
                    log.warning("preempted: checkpoint saved at step %d; exiting", rl_step + 1)
                    break
        ckpt.close()
    if eval_fn is not None and not preemption.requested:
        last_eval = eval_fn(state.params, int(last.get("rl_step", start)))
        writer.write(int(last.get("rl_step", start)), last_eval, prefix="eval")
        last["eval"] = last_eval
    writer.close()
    status = "preempted" if preemption.requested else "finished"
    if primary:
        write_json(workdir / "train_summary.json",
                   {"status": status, **{k: v for k, v in last.items() if not isinstance(v, (list, dict))}})
    return {"metrics": last, "state": state, "preempted": preemption.requested, "status": status}


def _initial_state(setup: Setup) -> tuple[TrainState, Any]:
    """The student's train state and the teacher's params, created in their shards.

    The loaded weights are host numpy arrays; on a mesh each device receives only its shard of
    each leaf (on several processes each fills its own devices), and the optimizer moments are
    created by a jitted init with the moments' shardings: no device ever holds a whole sharded
    leaf. Student and teacher get separate buffers, so donating the state never frees the teacher."""
    if setup.mesh is None:
        # A copy: the state is donated to the step, and the student may start as the teacher's arrays.
        state = init_train_state(jax.tree.map(lambda x: jnp.array(x, copy=True), setup.student_init), setup.optimizer)
        return state, jax.tree.map(jnp.asarray, setup.teacher.params)
    shardings: TrainState = setup.shardings["state"]
    params = shard_params(setup.student_init, shardings.params)
    opt_state = jax.jit(setup.optimizer.init, out_shardings=shardings.opt_state)(params)
    step = shard_params(np.zeros((), np.int32), shardings.step)
    return TrainState(step, params, opt_state), shard_params(setup.teacher.params, setup.shardings["teacher"])


def _compiled_step(setup: Setup, budget: int, state, teacher_params, inputs, key):
    """The fused step for this response budget. With several processes it is compiled ahead and
    the processes wait for each other before the first run: they finish compiling at different
    times, and a collective entered too early would time out (CPU/gloo) or stall the others."""
    step = make_opd_step(setup.student_config, setup.teacher.config, setup.step_config(budget), setup.optimizer,
                         state_shardings=setup.shardings.get("state"),
                         teacher_shardings=setup.shardings.get("teacher"), mesh=setup.mesh)
    if jax.process_count() == 1:
        return step
    compiled = step.lower(state, teacher_params, inputs, key).compile()
    wait_for_all_processes(f"opd_step compiled for budget {budget}")
    return compiled


def _place_inputs(host_inputs: StepInputs, setup: Setup) -> StepInputs:
    """Every process builds the same global host batch; each places the rows of its devices."""
    if setup.mesh is None:
        return jax.tree.map(jnp.asarray, host_inputs)
    shardings = step_inputs_shardings(setup.mesh, given=host_inputs.responses is not None)
    return place_global_batch(host_inputs, shardings, setup.mesh)


def _time_is_up(elapsed_s: float, minutes: float) -> bool:
    """Process 0's clock decides for every process, so all of them stop after the same step."""
    up = np.bool_(elapsed_s > 60 * minutes)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        up = multihost_utils.broadcast_one_to_all(up)
    return bool(up)


def _host_metrics(metrics: dict) -> dict:
    return jax.tree.map(host_value, metrics)


def _accept_run(workdir: epath.Path, config, identity: dict, start: int) -> None:
    """The run is accepted: record what it is and cut the logs back to the step it starts from."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / run_identity_file, identity)
    write_json(workdir / "config.json", config.to_dict())
    for name in ("metrics.jsonl", "data_order.jsonl"):
        dropped = truncate_jsonl(workdir / name, start)
        if dropped:
            log.info("%s: dropped %d record(s) after step %d (they are redone)", name, dropped, start)


def _stop_non_finite(rl_step: int, metrics: dict, ckpt: RunCheckpointer, abstract: TrainState,
                     summary_dir: epath.Path | None) -> None:
    """Stop the run: step `rl_step` produced NaN/inf; nothing of it is saved."""
    good = ckpt.newest_good_step(abstract.params, abstract.opt_state)
    where = (f"the newest checkpoint verified finite is step {good} in {ckpt.directory}" if good is not None
             else "no verified checkpoint exists yet")
    message = (f"non-finite state at RL step {rl_step} (loss {float(metrics['loss'])}, grad_norm "
               f"{float(metrics['grad_norm'])}); it was not saved and the run stops. {where}. "
               f"A restart resumes from there and will meet the same step: lower the learning rate or "
               f"check the data before restarting.")
    if summary_dir is not None:
        write_json(summary_dir / "train_summary.json",
                   {"status": "stopped", "reason": message, "rl_step": rl_step, "good_checkpoint": good})
    ckpt.close()
    raise RunStopped(message)


def _batch_ids(batch_in) -> list:
    """What the step saw, for auditing data order across resumes: record indices or window starts."""
    if hasattr(batch_in, "indices"):
        return [int(i) for i in batch_in.indices]
    return [int(x) for x in np.asarray(batch_in[0])[:, 0]]


def _lengths_by_domain(batch_in, lengths) -> dict:
    """Mean response length per prompt domain (response_length/math, ...): the domain caps at work."""
    domains = getattr(batch_in, "domains", None)
    if domains is None:
        return {}
    lengths = np.asarray(lengths)
    return {f"response_length/{d}": float(np.mean([n for n, dd in zip(lengths, domains) if dd == d]))
            for d in sorted(set(domains))}


def _scalar_metrics(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in metrics.items() if np.asarray(v).ndim == 0}


def _progress_line(m: dict) -> str:
    """What the progress bar shows beside steps, step time and ETA."""
    return (f"loss {m.get('loss', float('nan')):.4f} len {m.get('response_length', 0):.1f} "
            f"tok/round {m.get('rollout_tokens_per_round', 0):.2f} {m.get('tokens_per_second', 0):.1f} tok/s")
