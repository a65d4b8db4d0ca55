"""Why a student decodes about one token per round: its confidence inside a fully masked block.

    python -m experiments.parallelism_probe --run runs/long_shifted --out experiments/results/long/probe_shifted.json

Dynamic decoding keeps, in a round, every masked position whose confidence (the student's top
probability there) is above the threshold, and at least the most confident one. The first round
of a block is the one that can gain most: all its positions are masked. This probe builds that
state for every block of fixed text (the teacher's greedy answers to held-out prompts): each block
masked in full, the true text before it (the 2L training layout with every position masked, so
block k sees the clean blocks before it and only masks in its own). For each position j of the
block it reports

- the student's confidence, the share above each threshold, and whether its top token is the text's;
- the teacher's own next-token confidence at the same token, given the true text up to it
  (what a perfect causal predictor with the block's earlier tokens would know);
- the first round's expected yield at each threshold: max(1, positions above it), and how many of
  the kept tokens agree with the text.

For the untrained student too (the teacher's weights under the block-causal mask), and at the
block sizes given (a block-4 student probed at block 2 is a decoding-time change only).
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from opdlm_jax.diffusion.student import output_logits_fn, output_vocab_limit, student_hidden
from opdlm_jax.distill.opd_loss import rollout_batch_from_lists
from opdlm_jax.distill.teacher import teacher_hidden
from opdlm_jax.models.config import ModelConfig


def _top_and_true(logits: jnp.ndarray, tokens: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(top probability, top token, probability of `tokens`) per position, float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    true = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    return jnp.exp(logp.max(-1)), logp.argmax(-1), jnp.exp(true)


@functools.partial(jax.jit, static_argnames=("student_config", "teacher_config", "mask_id", "block_size", "alignment"))
def _masked_block_predictions(student_config: ModelConfig, student_params, teacher_config: ModelConfig,
                              teacher_params, batch, *, mask_id: int, block_size: int, alignment: str) -> dict:
    masked = jnp.ones(batch.response.shape, bool)  # every block fully masked, clean text before it
    hidden = student_hidden(student_config, student_params, batch, masked, mask_id, block_size, alignment)
    s_conf, s_top, s_true = _top_and_true(
        output_logits_fn(student_config, student_params, output_vocab_limit(student_config))(hidden), batch.response)
    t_hidden = teacher_hidden(teacher_config, teacher_params, batch)
    t_conf, t_top, t_true = _top_and_true(
        output_logits_fn(teacher_config, teacher_params, output_vocab_limit(teacher_config))(t_hidden), batch.response)
    return dict(student_conf=s_conf, student_correct=s_top == batch.response, student_p_true=s_true,
                teacher_conf=t_conf, teacher_correct=t_top == batch.response, teacher_p_true=t_true)


def masked_block_confidence(student_config: ModelConfig, student_params, teacher_config: ModelConfig, teacher_params,
                            prompt_ids: Sequence[Sequence[int]], texts: Sequence[Sequence[int]], *, mask_id: int,
                            stop_ids: Sequence[int], block_size: int, alignment: str, pad_id: int = 0) -> dict:
    """Per full block of each text: arrays [blocks, block_size] of the student's and the teacher's
    predictions (see the module docstring). Blocks reaching past a text's end are left out."""
    full = [list(t)[:len(t) // block_size * block_size] for t in texts]
    keep = [i for i, t in enumerate(full) if t]
    batch = rollout_batch_from_lists([prompt_ids[i] for i in keep], [full[i] for i in keep],
                                     [[0] * len(full[i]) for i in keep], block_size=block_size, pad_id=pad_id,
                                     stop_ids=stop_ids)
    out = jax.device_get(_masked_block_predictions(student_config, student_params, teacher_config, teacher_params,
                                                   batch, mask_id=mask_id, block_size=block_size,
                                                   alignment=alignment))
    rows = {k: [] for k in out}
    for row, i in enumerate(keep):
        n = len(full[i]) // block_size
        for k, v in out.items():
            rows[k].append(np.asarray(v[row, :n * block_size]).reshape(n, block_size))
    return {k: np.concatenate(v) for k, v in rows.items()}


def summarize(blocks: dict, thresholds: Sequence[float]) -> dict:
    """Means per block position and the first round's yield at each threshold."""
    conf, correct = blocks["student_conf"], blocks["student_correct"]
    out = {"blocks": int(conf.shape[0]),
           "student_confidence": conf.mean(0).tolist(), "student_top_is_text": correct.mean(0).tolist(),
           "student_p_text": blocks["student_p_true"].mean(0).tolist(),
           "teacher_confidence": blocks["teacher_conf"].mean(0).tolist(),
           "teacher_top_is_text": blocks["teacher_correct"].mean(0).tolist()}
    for t in thresholds:
        above = conf > t
        kept = np.where(above.any(1, keepdims=True), above, conf == conf.max(1, keepdims=True))  # at least one
        out[f"student_above_{t}"] = above.mean(0).tolist()
        out[f"teacher_above_{t}"] = (blocks["teacher_conf"] > t).mean(0).tolist()
        out[f"first_round_tokens_at_{t}"] = float(kept.sum(1).mean())
        out[f"first_round_kept_agree_at_{t}"] = float((kept & correct).sum() / kept.sum())
    return out


def _teacher_texts(teacher, records, n: int, max_new_tokens: int, fmt) -> tuple[list, list]:
    from opdlm_jax.data.chat_format import prompt_token_ids
    from opdlm_jax.decoding.api import generate_ar
    from opdlm_jax.decoding.sampling import SamplingParams

    prompts = [prompt_token_ids(teacher.tokenizer, r, fmt) for r in records[:n]]
    texts = generate_ar(teacher.config, teacher.params, prompts, sampling=SamplingParams(greedy=True),
                        max_new_tokens=max_new_tokens, stop_ids=teacher.stop_token_ids, pad_id=0,
                        banned_ids=(teacher.mask_token_id,)).token_ids
    return prompts, texts


def probe_run(run: str | Path, *, n: int = 48, max_new_tokens: int = 64, block_sizes: Sequence[int] = (4, 2),
              thresholds: Sequence[float] = (0.9, 0.7, 0.5), untrained: bool = True) -> dict:
    """The probe of a training workdir's newest checkpoint on `n` held-out prompts per domain (math,
    chat); with `untrained`, the teacher's weights under the student's mask as well."""
    import ml_collections

    from experiments.runners import run_chat_format
    from opdlm_jax.checkpoints.orbax import load_model_from_run
    from opdlm_jax.data.prompt_records import read_prompt_records
    from opdlm_jax.train.setup import load_models

    run_config = json.loads((Path(run) / "config.json").read_text())
    train_config = run_config.get("train", run_config)
    teacher, _, _ = load_models(ml_collections.ConfigDict(train_config))
    student = load_model_from_run(run, dtype=train_config["dtype"])
    meta = student.run_meta
    records = read_prompt_records(train_config["data"]["heldout"])
    fmt = run_chat_format(run)
    result = {"run": str(run), "step": int(meta["step"]), "rollout_tokens": meta.get("totals", {}).get("tokens"),
              "alignment": meta["alignment"], "by_domain": {}}
    models = [("trained", student.params)] + ([("untrained", teacher.params)] if untrained else [])
    for domain in ("math", "chat"):
        chosen = [r for r in records if (r.domain == "math") == (domain == "math")]
        prompts, texts = _teacher_texts(teacher, chosen, n, max_new_tokens, fmt)
        by_model = {}
        for name, params in models:
            for b in block_sizes:
                blocks = masked_block_confidence(student.config, params, teacher.config, teacher.params, prompts, texts,
                                                 mask_id=teacher.mask_token_id, stop_ids=teacher.stop_token_ids,
                                                 block_size=b, alignment=meta["alignment"])
                by_model[f"{name}, block {b}"] = summarize(blocks, thresholds)
        result["by_domain"][domain] = by_model
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a training workdir (its newest checkpoint is the student)")
    p.add_argument("--out", required=True, help="where to write the JSON summary")
    p.add_argument("--n", type=int, default=48, help="held-out prompts per domain (math, chat)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--block-sizes", default="4,2")
    p.add_argument("--thresholds", default="0.9,0.7,0.5")
    args = p.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    result = probe_run(args.run, n=args.n, max_new_tokens=args.max_new_tokens, thresholds=thresholds,
                       block_sizes=[int(x) for x in args.block_sizes.split(",")])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(probe_markdown(result, thresholds))
    return result


def per_position(values: Sequence[float]) -> str:
    """Per-block-position values as one table cell: '0.64 / 0.41 / 0.30 / 0.24'."""
    return " / ".join(f"{x:.2f}" for x in values)


def probe_markdown(result: dict, thresholds: Sequence[float]) -> str:
    """One table per domain: per block position, student vs teacher confidence and the yield."""
    lines = [f"Probe of {result['run']} (RL step {result['step']}, {result['alignment']}): fully masked blocks "
             "of the teacher's greedy text; per block position j = 1..b.", ""]
    for domain, by_model in result["by_domain"].items():
        lines += [f"**{domain}**", "", "| student | blocks | student conf. (j=1..b) | top = text | teacher conf. | "
                  + " | ".join(f"first-round tokens @{t} (agree)" for t in thresholds) + " |",
                  "|---" * (4 + len(thresholds)) + "|"]
        for name, s in by_model.items():
            lines.append(f"| {name} | {s['blocks']} | {per_position(s['student_confidence'])} | {per_position(s['student_top_is_text'])} | "
                         f"{per_position(s['teacher_confidence'])} | "
                         + " | ".join(f"{s[f'first_round_tokens_at_{t}']:.2f} ({s[f'first_round_kept_agree_at_{t}']:.2f})"
                                      for t in thresholds) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
