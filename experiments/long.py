"""The long conversion: one student trained far past the demo, evaluated on held-out prompts as it goes.

Does block diffusion's parallelism appear, and at how many rollout tokens? `run_long` trains one
student (`config.train`, resumable and time-boxed by `train.stop_after_minutes`) with an
evaluation after the RL steps in `train.eval_steps` and every `train.eval_every`:

- dynamic decoding (greedy, block 4) of the held-out math prompts at each threshold in
  `config.eval.thresholds`: tokens per round and accuracy;
- fixed-state forward KL(teacher || student) on the teacher's greedy answers to held-out chat prompts;
- the teacher's NLL (and so the generative perplexity) of the student's greedy answers to the same
  chat prompts, static and at the first threshold.

The training rollouts' tokens per round (temperature 1, the paper's Fig. 6) are in the trainer's
own metrics. Before training, the teacher (AR) and the untrained student are evaluated once into
reference.json (kept across restarts). After each invocation curves.json and curves.png are
(re)written from the workdir (`experiments.long_report`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import jax

from experiments.data.prompts import ANSWER_DOMAINS
from experiments.evaluation import (EvalSet, build_eval_set, chat_decode, dynamic_sampler, math_accuracy,
                                    static_sampler)
from experiments.long_report import write_curves
from opdlm_jax.data.chat_format import chat_format_from_config
from opdlm_jax.data.prompt_records import read_prompt_records
from opdlm_jax.distill.opd_loss import LossConfig
from opdlm_jax.eval.distill_metrics import fixed_state_kl, teacher_nll
from opdlm_jax.train.loop import train
from opdlm_jax.train.setup import build_setup, load_models, loss_config

REFERENCE_FILE = "reference.json"


def _log(msg: str) -> None:
    print(f"[long {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def student_metrics(teacher, params, evalset: EvalSet, *, alignment: str, block_size: int,
                    thresholds: list[float], max_new_tokens: int, loss: LossConfig) -> dict:
    """The held-out numbers of one student checkpoint, as flat scalars (they go to metrics.jsonl)."""
    out: dict[str, float] = {}
    for t in thresholds:
        r = math_accuracy(teacher, teacher.config, params, evalset, "diffusion",
                          dynamic_sampler(block_size, alignment, t), max_new_tokens)
        out[f"accuracy_at_{t}"] = r["accuracy"]
        out[f"tokens_per_round_at_{t}"] = r["tokens_per_round"]
    static = static_sampler(block_size, alignment)
    for name, sampler in (("static", static), (f"at_{thresholds[0]}", dynamic_sampler(block_size, alignment,
                                                                                    thresholds[0]))):
        answers = chat_decode(teacher, teacher.config, params, evalset, "diffusion", sampler, max_new_tokens)
        out[f"teacher_nll_{name}"] = teacher_nll(teacher.config, teacher.params, evalset.chat_ids, answers)
    out["fixed_state_kl"] = fixed_state_kl(teacher.config, params, teacher.config, teacher.params,
                                           evalset.chat_ids, evalset.teacher_answers,
                                           mask_id=teacher.mask_token_id, stop_ids=teacher.stop_token_ids,
                                           loss=loss)
    return out


def teacher_metrics(teacher, evalset: EvalSet, max_new_tokens: int) -> dict:
    """The AR teacher's values of the same columns (greedy; one token per forward)."""
    r = math_accuracy(teacher, teacher.config, teacher.params, evalset, "ar", None, max_new_tokens)
    # build_eval_set already decoded the teacher's greedy chat answers (the fixed states): reuse them
    return {"accuracy": r["accuracy"], "tokens_per_round": 1.0,
            "teacher_nll": teacher_nll(teacher.config, teacher.params, evalset.chat_ids, evalset.teacher_answers)}


def make_eval_fn(teacher, evalset: EvalSet, config) -> Callable[[object, int], dict]:
    ev, c = config.eval, config.train
    # The curve's "fixed-state KL" is always the forward KL, whatever divergence the student trains
    # on, so runs with different divergences (experiments.long_ablations) compare on one scale.
    loss = dataclasses.replace(loss_config(c, teacher.config), divergence="forward_kl", divergence_kwargs=())

    def eval_fn(params, step: int) -> dict:
        t0 = time.perf_counter()
        m = student_metrics(teacher, params, evalset, alignment=c.rollout.alignment,
                            block_size=c.rollout.block_size, thresholds=list(ev.thresholds),
                            max_new_tokens=ev.max_new_tokens, loss=loss)
        m["eval_seconds"] = time.perf_counter() - t0
        _log(f"eval after RL step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
        return m

    return eval_fn


def run_long(config, workdir: Path) -> bool:
    """Train (or continue) the configured student in workdir; True when it stopped early (saved;
    rerun the same command to continue)."""
    c = copy.deepcopy(config.train)
    ev = config.eval
    teacher, _, _ = load_models(c)  # float32 master weights (param_dtype), compute in c.dtype
    teacher.params = jax.device_put(teacher.params)
    heldout = read_prompt_records(c.data.heldout, require_answer_for=ANSWER_DOMAINS)
    evalset = build_eval_set(teacher, heldout, ev.n_math, ev.n_chat, ev.max_new_tokens, chat_format_from_config(c))
    _log(f"held-out: {len(evalset.math_ids)} math prompts, {len(evalset.chat_ids)} chat prompts, "
         f"{ev.max_new_tokens} new tokens; student alignment {c.rollout.alignment}")
    eval_fn = make_eval_fn(teacher, evalset, config)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    reference_path = Path(workdir) / REFERENCE_FILE
    if not reference_path.is_file():  # once per run: the curves' starting point and reference lines
        reference = {"teacher": teacher_metrics(teacher, evalset, ev.max_new_tokens),
                     "untrained": eval_fn(teacher.params, 0)}
        reference_path.write_text(json.dumps(reference, indent=1))
    t0 = time.perf_counter()
    out = train(c, workdir, eval_fn=eval_fn, setup=build_setup(c, teacher=teacher))
    _log(f"{out['status']} after RL step {out['metrics'].get('rl_step')} "
         f"({out['metrics'].get('tokens', 0):.0f} rollout tokens) in {(time.perf_counter() - t0) / 60:.1f} min")
    write_curves(Path(workdir), config)
    return bool(out["preempted"])
