"""The trainer's configuration (ml_collections), its defaults and start-up validation."""
from __future__ import annotations

import math
from pathlib import Path

import ml_collections
from ml_collections import config_dict

from opdlm_jax.decoding.batching import LADDERS
from opdlm_jax.diffusion.loss import NORMALISATIONS
from opdlm_jax.errors import BadInput

METHODS = {
    # method: (rollout source, state selection, objective)
    "opdlm": ("student", None, "kl"),  # selection from config.selection (per_block by default)
    "opdlm_off": ("student", "random", "kl"),  # own rollouts, random masking (Table 4)
    "off_policy": ("teacher", "random", "kl"),  # teacher responses, teacher soft targets (Table 4)
    "sft": ("teacher", "random", "bd3lm"),  # BD3LM loss on teacher responses (Tables 10-11)
    "corpus": ("given", "random", "bd3lm"),  # BD3LM loss on a text corpus (SDAR-style)
}
PROMPT_METHODS = ("opdlm", "opdlm_off", "off_policy", "sft")  # methods that read data.train
# How to make a prompt file a config names by default (experiments/configs/common.py's recipe).
_MAKE_FILE = {"opdlm_prompts.jsonl": "python -m experiments.data.prepare_recipe --src <opdlm_train.json> "
                                     "--out {path}"}


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "opdlm"
    c.teacher = "smollm2-135m"  # HF dir, .gguf file or preset; the frozen AR teacher
    c.teacher_dir = ""  # a local HF directory for a preset without bundled weights (Qwen3)
    c.student = ""  # student init; empty = the teacher's weights (the OPDLM conversion)
    c.dtype = "float32"  # compute dtype; params stay param_dtype (float32 master weights)
    c.param_dtype = "float32"
    # The frozen teacher's stored dtype; empty = param_dtype. "bfloat16" halves its memory and
    # skips casting it on every pass when the compute dtype is bfloat16 (same values then).
    c.teacher_param_dtype = ""
    c.scan_layers = True
    c.remat_policy = "none"
    c.attention = "auto"  # auto: splash kernel on TPU, dense elsewhere | dense | splash (models.config)
    c.seed = 0
    c.steps = 30  # RL steps (rollout batches)
    c.batch_size = 8  # prompts per RL step
    c.minibatch_size = 8  # K = batch_size / minibatch_size optimizer updates per RL step
    c.selection = "per_block"
    # Sequences per teacher forward when scoring a rollout batch: None = minibatch_size, 0 = all at once.
    c.teacher_slice = config_dict.placeholder(int)
    c.data = ml_collections.ConfigDict(dict(
        train="", heldout="", max_prompt_tokens=256, on_too_long="skip",
        data_dir="", corpus="shakespeare", prompt_bucket=16,
        prompt_ladder="pow2_half"))  # rungs at 1x and 1.5x of each power of two (at most 1.5x padding); "pow2": doublings only
    c.rollout = ml_collections.ConfigDict(dict(
        block_size=4, steps_per_block=4, strategy="low_confidence_dynamic", threshold=0.9,
        temperature=1.0, top_k=0, top_p=1.0, alignment="same_position"))
    c.curriculum = ml_collections.ConfigDict(dict(
        start=100, end=4000, ramp_steps=100, ramp="cosine", bucket=64,
        domain_caps=ml_collections.ConfigDict(dict(math=4096, code=2048, chat=2048, science=1024))))
    c.loss = ml_collections.ConfigDict(dict(
        divergence="forward_kl", topk=16, beta=0.5, chunk_size=64,
        # "sequence": the reference (mean over ALL rows, an empty row counting 0);
        # "sequence_nonempty": over rows with a loss position only; "token": global mean.
        normalisation="sequence"))
    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-5, end_learning_rate=1e-6, warmup_rl_steps=5, b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=0.0, clip_norm=1.0))
    # devices: 0 = every device in a Mesh(data, fsdp, tensor); 1 = one device, no mesh.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, devices=0))
    c.log_every = 1
    c.eval_every = 0  # 0 = only at the end
    c.eval_steps = ()  # extra RL steps to evaluate after (e.g. geometric, for log-scale curves)
    # > 0: after this many minutes of this invocation, save and stop as a preemption does (exit 75;
    # rerun the same command to continue): a long run in time-boxed sessions.
    c.stop_after_minutes = 0.0
    c.checkpoint_every = 10
    c.keep_checkpoints = 3
    # True: checkpoints without the optimizer state (with AdamW, a third of the size). A resume then
    # restores parameters, data position and step but restarts the AdamW moments from zero
    # (not an exact resume); the toy configs use it, so a laptop run needs 0.48 GB, not 1.4 GB,
    # per SmolLM2 checkpoint.
    c.checkpoint_params_only = False
    c.async_checkpoints = True
    c.tensorboard = True
    return c


class ConfigError(BadInput):
    """An invalid config value or combination (exit code 2)."""


def stored_teacher_dtype(c: ml_collections.ConfigDict) -> str:
    """The dtype the frozen teacher's weights are stored in: teacher_param_dtype, else param_dtype
    (configs written before the field existed have no teacher_param_dtype)."""
    return c.get("teacher_param_dtype") or c.param_dtype


def validate_config(c: ml_collections.ConfigDict, *, check_files: bool = False) -> None:
    """Reject invalid values and combinations at start-up, naming the fields. check_files: also
    the inputs (`check_input_files`), for a run about to start (not for AOT planning)."""
    _check_numbers(c)
    _check_combinations(c)
    if check_files:
        check_input_files(c)


def _check_numbers(c: ml_collections.ConfigDict) -> None:
    for field in ("batch_size", "minibatch_size", "steps"):
        if c[field] < 1:
            raise ConfigError(f"{field}={c[field]} must be >= 1")
    if not (math.isfinite(c.stop_after_minutes) and c.stop_after_minutes >= 0):
        raise ConfigError(f"stop_after_minutes={c.stop_after_minutes} must be finite and >= 0 (0 = no limit)")
    if any(int(s) < 1 for s in c.eval_steps):
        raise ConfigError(f"eval_steps={tuple(c.eval_steps)} must all be >= 1")
    o = c.optimizer
    if not (math.isfinite(o.learning_rate) and o.learning_rate > 0):
        raise ConfigError(f"optimizer.learning_rate={o.learning_rate} must be finite and > 0")
    # The schedule may decay to zero, never below.
    if not (math.isfinite(o.end_learning_rate) and o.end_learning_rate >= 0):
        raise ConfigError(f"optimizer.end_learning_rate={o.end_learning_rate} must be finite and >= 0")
    if not (math.isfinite(o.clip_norm) and o.clip_norm > 0):
        raise ConfigError(f"optimizer.clip_norm={o.clip_norm} must be finite and > 0")


def _check_combinations(c: ml_collections.ConfigDict) -> None:
    if c.method not in METHODS:
        raise ConfigError(f"method={c.method!r}: expected one of {sorted(METHODS)}")
    b = c.rollout.block_size
    if b < 1:
        raise ConfigError(f"rollout.block_size={b} must be >= 1")
    for field in ("start", "end", "bucket"):
        value = c.curriculum[field]
        if field != "bucket" and value % b:
            raise ConfigError(f"rollout.block_size={b} does not divide curriculum.{field}={value} "
                              "(the length budget)")
    if c.curriculum.start > c.curriculum.end:
        raise ConfigError(f"curriculum.start={c.curriculum.start} > curriculum.end={c.curriculum.end}")
    if c.batch_size % c.minibatch_size:
        raise ConfigError(f"minibatch_size={c.minibatch_size} does not divide batch_size={c.batch_size}")
    ts = c.teacher_slice
    if ts is not None and (ts < 0 or (ts > 0 and c.batch_size % ts)):
        raise ConfigError(f"teacher_slice={ts} must be None (minibatch_size), 0 (the whole batch) "
                          f"or divide batch_size={c.batch_size}")
    if c.loss.normalisation not in NORMALISATIONS:
        raise ConfigError(f"loss.normalisation={c.loss.normalisation!r}: expected one of {NORMALISATIONS}")
    if not 0.0 <= c.rollout.threshold <= 1.0:
        raise ConfigError(f"rollout.threshold={c.rollout.threshold} is outside [0, 1]")
    if c.teacher_param_dtype not in ("", "float32", "bfloat16"):
        raise ConfigError(f"teacher_param_dtype={c.teacher_param_dtype!r}: expected '' (param_dtype), "
                          "'float32' or 'bfloat16'")
    if c.data.prompt_ladder not in LADDERS:
        raise ConfigError(f"data.prompt_ladder={c.data.prompt_ladder!r}: expected one of {LADDERS}")
    if c.method in PROMPT_METHODS and not c.data.train:
        raise ConfigError(f"method={c.method!r} needs data.train (a prompt file)")


def check_input_files(c: ml_collections.ConfigDict) -> None:
    """The prompt files and models the run reads exist (before anything is created or loaded)."""
    from opdlm_jax.checkpoints.loading import resolve_model
    from opdlm_jax.data.prompt_records import read_prompt_records

    files = [("data.train", c.data.train)] if c.method in PROMPT_METHODS else []
    files += [("data.heldout", c.data.heldout)] if c.data.get("heldout") else []
    for field, path in files:
        if not Path(path).is_file():
            make = _MAKE_FILE.get(Path(path).name)
            hint = f"; make it with: {make.format(path=path)}" if make else ""
            raise ConfigError(f"{field}={path!r}: prompt file not found{hint}")
        read_prompt_records(path)  # a malformed record fails now, naming the file and line
    models = [("teacher", c.teacher, c.teacher_dir or None)]
    if c.student and c.student != c.teacher:
        models.append(("student", c.student, None))
    for field, name, checkpoint_dir in models:
        try:
            resolve_model(name, checkpoint_dir)
        except (BadInput, FileNotFoundError) as e:
            raise ConfigError(f"{field}={name!r}: {e}") from e
