"""Orbax checkpoints of a training run: atomic, asynchronous, keep-N, exact resume.

A checkpoint holds four items: `params` and `opt_state` (sharded arrays, restorable onto any
mesh by passing abstract arrays with the target shardings), `data` (the prompt iterator's state)
and `meta` (step, seed, curriculum position, the model's source and config). Params live in their
own item so that decoding and export restore them without the optimizer state.

Checkpoint ids count RL steps (rollout batches); `meta["opt_step"]` counts optimizer updates.
Orbax writes each step into a temporary directory and renames it when complete, so a crash or
SIGKILL mid-save leaves the previous checkpoints untouched. A latest checkpoint that is
nevertheless unreadable (truncated or corrupted files) is skipped with a warning and the one
before it is used.

This module stores plain pytrees (params, optimizer state) and JSON items; it knows nothing of the
trainer, so loading a run for decoding or export needs no training code.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class RunCheckpointer:
    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("params", "opt_state", "data", "meta"))

    def save(self, step: int, params: Any, opt_state: Any, data_state: dict, meta: dict, *,
             force: bool = True) -> None:
        """Checkpoint after `step` RL steps (the id of the checkpoint); asynchronous when enabled.

        meta: JSON-serialisable run facts (the trainer puts the optimizer step count there)."""
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
            data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(dict(meta, step=step))), force=force)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def restore(self, abstract_params: Any, abstract_opt_state: Any, step: int | None = None):
        """-> dict(params, opt_state, data, meta) of `step` (default: the latest readable one), or
        None when there is none. The abstract trees give shapes, dtypes and target shardings."""
        candidates = [step] if step is not None else list(reversed(self.steps()))
        for i, s in enumerate(candidates):
            try:
                restored = self.manager.restore(s, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_params),
                    opt_state=ocp.args.StandardRestore(abstract_opt_state),
                    data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back
                if step is not None:
                    raise RuntimeError(f"checkpoint step {s} in {self.directory} is unreadable: {e}") from e
                log.warning("checkpoint step %d in %s is unreadable (%s: %s); trying the previous one",
                            s, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
                continue
            return {name: restored[name] for name in ("params", "opt_state", "data", "meta")}
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(directory: str | os.PathLike, abstract_params: Any, step: int | None = None) -> tuple[Any, dict]:
    """Params only (no optimizer state) onto the shardings of `abstract_params` -> (params, meta)."""
    manager = ocp.CheckpointManager(Path(directory).absolute(), item_names=("params", "meta"),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {directory}; steps: {steps}")
    for s in ([step] if step is not None else reversed(steps)):
        try:
            restored = manager.restore(s, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_params), meta=ocp.args.JsonRestore()))
            return restored["params"], restored["meta"]
        except Exception as e:  # noqa: BLE001
            if step is not None:
                raise
            log.warning("checkpoint step %d in %s is unreadable (%s); trying the previous one", s, directory, e)
    raise RuntimeError(f"no readable checkpoint in {directory}")


def load_model_from_run(run_dir: str | os.PathLike, step: int | None = None, dtype: str | None = None):
    """A training run's student as a LoadedModel (tokenizer and config from the run's base model).

    `run_dir` is the experiment workdir (holding `checkpoints/`) or the checkpoints folder itself.
    """
    from opdlm_jax.checkpoints.loading import load_model

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    manager = ocp.CheckpointManager(ckpt_dir.absolute(), item_names=("meta",),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {ckpt_dir}")
    meta = manager.restore(step if step is not None else steps[-1],
                           args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    base = load_model(meta["student"], dtype=dtype or meta.get("dtype", "float32"),
                      scan_layers=meta.get("scan_layers", False))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
                            base.params)
    params, _ = restore_params(ckpt_dir, abstract, step=step)
    base.params = params
    return base
