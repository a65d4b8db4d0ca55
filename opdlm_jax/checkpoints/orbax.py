"""Orbax checkpoints of a training run: atomic, verified, asynchronous, keep-N, exact resume.

A checkpoint holds four items: `params` and `opt_state` (sharded arrays, restorable onto any
mesh by passing abstract arrays with the target shardings), `data` (the prompt iterator's state)
and `meta` (step, seed, curriculum position, the model's source and config, and a fingerprint of
every array leaf). Params live in their own item so that decoding and export restore them
without the optimizer state.

Checkpoint ids count RL steps (rollout batches); `meta["opt_step"]` counts optimizer updates.
Orbax writes each step into a temporary directory and renames it when complete, so a crash or
SIGKILL mid-save leaves the previous checkpoints untouched. A state with a NaN or inf is never
saved. On restore every leaf is checked against its fingerprint (`checkpoints.integrity`): a
checkpoint that fails to read or to verify is corrupt. Corrupt checkpoints newer than the newest
good one are moved aside to `<dir>_corrupt/` (never deleted) so the run re-saves those steps
cleanly; when no checkpoint is usable, nothing is touched and the run stops.

This module stores plain pytrees (params, optimizer state) and JSON items; it knows nothing of the
trainer, so loading a run for decoding or export needs no training code.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from opdlm_jax.checkpoints.integrity import fingerprint, mismatched_leaves
from opdlm_jax.checkpoints.paths import as_epath
from opdlm_jax.errors import BadInput, RunStopped
from opdlm_jax.sharding import wait_for_all_processes

log = logging.getLogger(__name__)
ITEMS = ("params", "opt_state", "data", "meta")


class CorruptCheckpoint(RuntimeError):
    """A checkpoint that cannot be read or whose arrays differ from the fingerprints saved with it."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def verify_item(meta: dict, name: str, tree: Any, where: str) -> None:
    """Raise CorruptCheckpoint when `tree` (item `name`) holds NaN or inf, or differs from the
    fingerprints in `meta`. Checkpoints written before fingerprints existed have none: they are
    checked for finiteness only, with a warning."""
    actual, finite = fingerprint(tree)
    if not finite:
        raise CorruptCheckpoint(f"{where}: {name} holds NaN or inf")
    expected = meta.get("fingerprints", {}).get(name)
    if expected is None:
        log.warning("%s has no fingerprint for %s (an older checkpoint): not verified", where, name)
        return
    bad = mismatched_leaves(expected, actual)
    if bad:
        raise CorruptCheckpoint(f"{where}: {len(bad)} leaf/leaves of {name} differ from the saved "
                                f"fingerprint, e.g. {bad[0]}")


def _restore_checked(manager: ocp.CheckpointManager, step: int, abstract: dict[str, Any],
                     json_items: tuple[str, ...], where: str) -> dict:
    """Items of checkpoint `step`: the array items of `abstract` (name -> abstract tree; an
    `opt_state` the checkpoint was saved without comes back None), the JSON items, and `meta`.
    Every array item is verified; whatever fails to read or verify is CorruptCheckpoint."""
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        arrays = {name: tree for name, tree in abstract.items()
                  if not (name == "opt_state" and meta.get("params_only"))}
        args = {**{name: ocp.args.StandardRestore(tree) for name, tree in arrays.items()},
                **{name: ocp.args.JsonRestore() for name in json_items}}
        restored = manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # noqa: BLE001 - whatever fails to read is a corrupt checkpoint
        raise CorruptCheckpoint(f"{where} is unreadable ({_first_line(e)})") from e
    for name in arrays:
        verify_item(meta, name, restored[name], where)
    return {**{name: None for name in abstract}, **{name: restored[name] for name in args}, "meta": meta}


class RunCheckpointer:
    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, async_save: bool = True,
                 params_only: bool = False):
        """params_only: save parameters, data state and meta but not the optimizer state (a third
        of the size with AdamW); restoring such a checkpoint gives `opt_state` None."""
        self.params_only = params_only
        self.directory = as_epath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    @property
    def corrupt_directory(self) -> epath.Path:
        return self.directory.parent / f"{self.directory.name}_corrupt"

    def save(self, step: int, params: Any, opt_state: Any, data_state: dict, meta: dict, *,
             force: bool = True) -> None:
        """Checkpoint after `step` RL steps (the id of the checkpoint); asynchronous when enabled.

        meta: JSON-serialisable run facts (the trainer puts the optimizer step count there). The
        fingerprints of params and opt_state are added here; a non-finite state is refused."""
        params_print, params_finite = fingerprint(params)
        opt_print, opt_finite = fingerprint(opt_state)
        if not (params_finite and opt_finite):
            raise RunStopped(f"refusing to checkpoint step {step}: the state holds NaN or inf")
        meta = dict(meta, step=step, fingerprints={"params": params_print, "opt_state": opt_print})
        items = dict(params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
                     data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta))
        if self.params_only:
            del items["opt_state"], meta["fingerprints"]["opt_state"]
            meta["params_only"] = True
        self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_verified(self, step: int, abstract_params: Any, abstract_opt_state: Any) -> dict:
        """-> dict(params, opt_state, data, meta) of `step` (opt_state None for a params-only
        checkpoint); CorruptCheckpoint when it does not read, holds NaN/inf or does not match its
        fingerprints."""
        return _restore_checked(self.manager, step, {"params": abstract_params, "opt_state": abstract_opt_state},
                                ("data",), f"checkpoint step {step} in {self.directory}")

    def restore(self, abstract_params: Any, abstract_opt_state: Any) -> dict | None:
        """The newest checkpoint that reads and verifies -> dict(params, opt_state, data, meta), or
        None when there is no checkpoint. Corrupt checkpoints newer than it are moved aside; when
        every checkpoint is corrupt, RunStopped is raised and nothing is moved."""
        steps = self.steps()
        corrupt: list[tuple[int, str]] = []
        for step in reversed(steps):
            try:
                restored = self.restore_verified(step, abstract_params, abstract_opt_state)
            except CorruptCheckpoint as e:
                log.warning("%s", e)
                corrupt.append((step, str(e)))
                continue
            if corrupt:
                self.move_aside([s for s, _ in corrupt])
            return restored
        if not steps:
            return None
        reasons = "\n  ".join(reason for _, reason in corrupt)
        raise RunStopped(
            f"none of the {len(steps)} checkpoint(s) in {self.directory} is usable; nothing was changed:\n  "
            f"{reasons}\nTo start over, use a new --workdir (or move {self.directory} aside yourself).")

    def newest_good_step(self, abstract_params: Any, abstract_opt_state: Any) -> int | None:
        """The newest checkpoint that reads, is finite and matches its fingerprints (each one is
        restored to check)."""
        self.wait()
        for step in reversed(self.steps()):
            try:
                self.restore_verified(step, abstract_params, abstract_opt_state)
                return step
            except CorruptCheckpoint as e:
                log.warning("%s", e)
        return None

    def move_aside(self, steps: list[int]) -> None:
        """Rename the given step directories into `<dir>_corrupt/` (process 0; every process waits)."""
        if jax.process_index() == 0:
            target_root = self.corrupt_directory
            target_root.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for step in steps:
                source = self.directory / str(step)
                target = target_root / f"{step}-{stamp}"
                source.rename(target)
                log.warning("moved corrupt checkpoint %s aside to %s", source, target)
        wait_for_all_processes("corrupt checkpoints moved aside")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(directory: str | os.PathLike, abstract_params: Any, step: int | None = None) -> tuple[Any, dict]:
    """Params only (no optimizer state) onto the shardings of `abstract_params` -> (params, meta).

    Verified against the checkpoint's fingerprints; without `step`, the newest good checkpoint."""
    manager = _read_only_manager(directory, ("params", "meta"))
    steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {directory}; steps: {steps}")
    problems = []
    for s in ([step] if step is not None else reversed(steps)):
        try:
            restored = _restore_checked(manager, s, {"params": abstract_params}, (),
                                        f"checkpoint step {s} in {directory}")
            return restored["params"], restored["meta"]
        except CorruptCheckpoint as e:
            if step is not None:
                raise
            log.warning("%s; trying the previous one", e)
            problems.append(str(e))
    raise CorruptCheckpoint(f"no usable checkpoint in {directory}: " + "; ".join(problems))


class _DropReadOnlyNotice(logging.Filter):
    """Orbax warns 'Given directory is read only' (and which options read-only mode turns off)
    each time a run is opened for reading: that is what we asked for, so it says nothing to a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Given directory is read only", "CheckpointManagerOptions.read_only"))


logging.getLogger("absl").addFilter(_DropReadOnlyNotice())


def run_checkpoint_dir(run_dir: str | os.PathLike) -> epath.Path:
    """A run's checkpoints folder: `run_dir/checkpoints`, or `run_dir` itself when it is one
    (local or gs://)."""
    run_dir = as_epath(run_dir)
    ckpt_dir = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    if not ckpt_dir.is_dir():
        raise BadInput(f"{run_dir}: no such run directory")
    return ckpt_dir


def _read_only_manager(ckpt_dir: str | os.PathLike, item_names: tuple[str, ...]) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(as_epath(ckpt_dir), item_names=item_names,
                                 options=ocp.CheckpointManagerOptions(read_only=True))


def read_run_meta(run_dir: str | os.PathLike, step: int | None = None) -> dict:
    """The `meta` item a training run saved with a checkpoint (default: the latest).

    It holds what decoding the run's student needs: `block_size`, `alignment`, `mask_token_id`,
    `teacher`, `student` (the base model's source), `dtype`, `scan_layers`, plus the step counts.
    BadInput when the directory, a checkpoint or the given step is missing."""
    ckpt_dir = run_checkpoint_dir(run_dir)
    manager = _read_only_manager(ckpt_dir, ("meta",))
    steps = sorted(manager.all_steps())
    if not steps:
        raise BadInput(f"no checkpoint in {ckpt_dir}")
    if step is not None and step not in steps:
        raise BadInput(f"{run_dir}: no step {step} (steps: {steps})")
    return manager.restore(step if step is not None else steps[-1],
                           args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def load_model_from_run(run_dir: str | os.PathLike, step: int | None = None, dtype: str | None = None):
    """A training run's student as a LoadedModel (tokenizer and config from the run's base model,
    the mask token id the run trained with).

    `run_dir` is the experiment workdir (holding `checkpoints/`) or the checkpoints folder itself.
    The run's decoding settings (block size, alignment) are in `read_run_meta(run_dir)`.
    """
    from opdlm_jax.checkpoints.loading import load_model

    ckpt_dir = run_checkpoint_dir(run_dir)
    meta = read_run_meta(ckpt_dir, step)
    base = load_model(meta["student"], dtype=dtype or meta.get("dtype", "float32"),
                      scan_layers=meta.get("scan_layers", False))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0])),
                            base.params)
    params, _ = restore_params(ckpt_dir, abstract, step=step)
    base.params = params
    if meta.get("mask_token_id") is not None:
        base.mask_token_id = int(meta["mask_token_id"])
    base.run_meta = meta
    return base
