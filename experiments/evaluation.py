"""Evaluation of a model for the experiment tables: quality, parallelism and speed in one place.

`evaluate` decodes held-out math prompts under static and dynamic decoding (accuracy, tokens per
round, tokens/s), measures held-out forward KL on fixed states, and the teacher NLL of greedy
generations on held-out chat prompts, with a few samples.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from opdlm_jax.data.chat_format import ChatFormat, prompt_token_ids
from opdlm_jax.data.prompt_records import PromptRecord
from opdlm_jax.decoding import SamplerConfig
from opdlm_jax.distill.opd_loss import LossConfig
from opdlm_jax.eval.answers import score_math
from opdlm_jax.eval.distill_metrics import fixed_state_kl, teacher_nll
from opdlm_jax.decoding.api import generate_ar, generate_diffusion
from opdlm_jax.decoding.sampling import SamplingParams


def static_sampler(block_size: int, alignment: str) -> SamplerConfig:
    """Static block diffusion: one token per round, block_size rounds per block."""
    return SamplerConfig(block_size=block_size, steps_per_block=block_size, alignment=alignment)


def dynamic_sampler(block_size: int, alignment: str, threshold: float) -> SamplerConfig:
    """Greedy dynamic decoding: every masked position above `threshold` is kept, at least one per round."""
    return static_sampler(block_size, alignment).replace(strategy="low_confidence_dynamic", threshold=threshold)


@dataclasses.dataclass
class EvalSet:
    math_ids: list  # chat-templated prompt ids
    math_answers: list
    chat_ids: list
    chat_prompts: list
    teacher_answers: list  # the teacher's greedy responses to chat_ids (the fixed states)


def build_eval_set(teacher, records: Sequence[PromptRecord], n_math: int, n_chat: int, max_new_tokens: int,
                   fmt: ChatFormat) -> EvalSet:
    """fmt: the run's training format (`chat_format_from_config(train_config)`), so that an
    evaluation prompt is the prompt training feeds for the same record."""
    math = [r for r in records if r.domain == "math"][:n_math]
    chat = [r for r in records if r.domain != "math"][:n_chat]
    tok = teacher.tokenizer
    chat_ids = [prompt_token_ids(tok, r, fmt) for r in chat]
    answers = generate_ar(teacher.config, teacher.params, chat_ids, sampling=SamplingParams(greedy=True),
                          max_new_tokens=max_new_tokens, stop_ids=teacher.stop_token_ids, pad_id=0,
                          banned_ids=(teacher.mask_token_id,)).token_ids
    return EvalSet([prompt_token_ids(tok, r, fmt) for r in math], [r.answer for r in math], chat_ids,
                   [r.prompt for r in chat], answers)


def _decode(model, config, params, ids, mode, sampler, max_new_tokens):
    if mode == "ar":
        return generate_ar(config, params, ids, sampling=SamplingParams(greedy=True), max_new_tokens=max_new_tokens,
                           stop_ids=model.stop_token_ids, pad_id=0, banned_ids=(model.mask_token_id,))
    return generate_diffusion(config, params, ids, sampler=sampler, max_new_tokens=max_new_tokens,
                              stop_ids=model.stop_token_ids, mask_id=model.mask_token_id, pad_id=0)


def _text(model, ids):
    return model.tokenizer.decode([t for t in ids if t not in set(model.stop_token_ids)], skip_special_tokens=True)


def math_accuracy(model, config, params, evalset: EvalSet, mode: str, sampler: SamplerConfig | None,
                  max_new_tokens: int) -> dict:
    r = _decode(model, config, params, evalset.math_ids, mode, sampler, max_new_tokens)
    correct = [score_math(_text(model, ids), gold) for ids, gold in zip(r.token_ids, evalset.math_answers)]
    return {"accuracy": float(np.mean(correct)), "tokens_per_round": r.tokens_per_round,
            "tokens_per_second": r.tokens_per_second, "nfe": r.nfe}


def chat_decode(model, config, params, evalset: EvalSet, mode: str, sampler: SamplerConfig | None,
                max_new_tokens: int) -> list:
    """The model's greedy answers (token ids) to the held-out chat prompts."""
    return _decode(model, config, params, evalset.chat_ids, mode, sampler, max_new_tokens).token_ids


def evaluate(model, teacher, params, evalset: EvalSet, *, mode: str, alignment: str, block_size: int,
             max_new_tokens: int, loss: LossConfig | None = None, threshold: float = 0.9,
             samples: int = 2) -> dict:
    """All the table's columns for one model (mode "ar" for the teacher, "diffusion" for students).

    loss: the run's LossConfig (`train.setup.loss_config`), used for the fixed-state KL of students."""
    config = model.config
    static = static_sampler(block_size, alignment)
    dynamic = dynamic_sampler(block_size, alignment, threshold)
    out = {"static": math_accuracy(model, config, params, evalset, mode, static, max_new_tokens)}
    if mode == "diffusion":
        out["dynamic"] = math_accuracy(model, config, params, evalset, mode, dynamic, max_new_tokens)
    chat = chat_decode(model, config, params, evalset, mode, static, max_new_tokens)
    out["teacher_nll"] = teacher_nll(teacher.config, teacher.params, evalset.chat_ids, chat)
    out["samples"] = [{"prompt": p, "completion": _text(model, ids)}
                      for p, ids in zip(evalset.chat_prompts[:samples], chat[:samples])]
    if mode == "diffusion":
        if loss is None:
            raise ValueError("evaluate(mode='diffusion') needs the run's LossConfig for the fixed-state KL")
        out["fixed_state_kl"] = fixed_state_kl(config, params, teacher.config, teacher.params, evalset.chat_ids,
                                               evalset.teacher_answers, mask_id=model.mask_token_id,
                                               stop_ids=model.stop_token_ids, loss=loss)
    return out


def sweep_setting_name(row: dict) -> str:
    """How a `threshold_sweep` row's decoding is named in tables: 'static' or 'dynamic <threshold>'."""
    return "static" if row["kind"] == "static" else f"dynamic {row['threshold']}"


def threshold_sweep(model, params, evalset: EvalSet, *, alignment: str, thresholds: Sequence[float],
                    block_sizes: Sequence[int], max_new_tokens: int) -> list[dict]:
    """Accuracy vs tokens per round (Fig. 3/5): thresholds at block 4, block sizes at 0.9, static."""
    rows = []
    settings = [("static", 4, None)] + [("dynamic", 4, t) for t in thresholds] + \
        [("dynamic", b, 0.9) for b in block_sizes if b != 4]
    for kind, b, t in settings:
        budget = -(-max_new_tokens // b) * b
        s = dynamic_sampler(b, alignment, t) if kind == "dynamic" else static_sampler(b, alignment)
        r = math_accuracy(model, model.config, params, evalset, "diffusion", s, budget)
        rows.append(dict(kind=kind, block_size=b, threshold=t, **r))
    return rows
