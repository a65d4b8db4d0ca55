"""The OPD step in a plain loop on SmolLM2-135M (CPU): does one conversion run move the student?

    python -m experiments.opd_smoke --steps 30 --alignment same_position --lr 5e-5

Before and after training it measures, on held-out prompts: forward KL on fixed states (teacher
greedy answers, random masks), on-policy KL (the student's own greedy rollouts), the teacher NLL of
the student's greedy generations, and prints two samples.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from opdlm_jax.checkpoints.loading import load_model
from opdlm_jax.data.chat_format import chat_prompt_ids
from opdlm_jax.decoding import SamplerConfig
from opdlm_jax.decoding.api import generate_ar, generate_diffusion
from opdlm_jax.decoding.batching import left_pad
from opdlm_jax.decoding.sampling import SamplingParams
from opdlm_jax.eval.distill_metrics import fixed_state_kl, on_policy_kl, teacher_nll
from opdlm_jax.train.config import default_config
from opdlm_jax.train.setup import build_setup
from opdlm_jax.train.state import init_train_state
from opdlm_jax.train.step import full_budget_inputs, make_opd_step

TOPICS = ("the ocean", "a good breakfast", "learning to code", "autumn", "friendship", "the moon",
          "trains", "music", "a rainy day", "mountains", "coffee", "libraries")
INSTRUCTIONS = ("Write one sentence about {}.", "Give one tip about {}.", "Describe {} in a few words.",
                "Name two facts about {}.")


def smoke_prompts(seed: int = 0) -> tuple[list[str], list[str]]:
    """A small, deterministic list: arithmetic and short instructions; a disjoint held-out part."""
    rng = np.random.default_rng(seed)
    prompts = [f"What is {a} + {b}? Answer with just the number." for a, b in rng.integers(1, 50, (60, 2))]
    prompts += [t.format(topic) for t in INSTRUCTIONS for topic in TOPICS]
    prompts = list(dict.fromkeys(prompts))
    rng.shuffle(prompts)
    return prompts[16:], prompts[:16]


def evaluate(model, teacher_params, student_params, config, heldout_ids, teacher_answers, sampler, loss, max_new):
    stop = model.stop_token_ids
    gen = generate_diffusion(config, student_params, heldout_ids, sampler=sampler, max_new_tokens=max_new,
                             stop_ids=stop, mask_id=model.mask_token_id, pad_id=0)
    # The step maps cover whole blocks; on_policy_kl re-pads responses to block multiples.
    kl_fixed = fixed_state_kl(config, student_params, model.config, teacher_params, heldout_ids, teacher_answers,
                              mask_id=model.mask_token_id, stop_ids=stop, loss=loss)
    kl_on = on_policy_kl(config, student_params, model.config, teacher_params, heldout_ids, gen.token_ids,
                         gen.step_maps, mask_id=model.mask_token_id, stop_ids=stop, loss=loss)
    nll = teacher_nll(model.config, teacher_params, heldout_ids, gen.token_ids)
    samples = [model.tokenizer.decode(t, skip_special_tokens=True) for t in gen.token_ids[:2]]
    return {"fixed_state_kl": kl_fixed, "on_policy_kl": kl_on, "teacher_nll": nll,
            "mean_length": float(np.mean([len(t) for t in gen.token_ids])),
            "tokens_per_round": gen.tokens_per_round, "samples": samples}


def smoke_config(args) -> ml_collections.ConfigDict:
    """The trainer's config for this loop: one path from settings to the step (train.setup)."""
    c = default_config()
    c.teacher, c.scan_layers, c.dtype, c.seed = "smollm2-135m", True, args.dtype, args.seed
    c.steps, c.batch_size, c.minibatch_size = args.steps, args.batch, args.minibatch
    c.data.train = "<smoke prompts>"  # prompts come from smoke_prompts(), not a file
    c.rollout.update(alignment=args.alignment, strategy="low_confidence_dynamic", threshold=0.9, temperature=1.0)
    c.curriculum.update(start=args.max_new_tokens, end=args.max_new_tokens, bucket=args.max_new_tokens)
    c.loss.update(divergence="forward_kl", chunk_size=64)
    c.optimizer.update(learning_rate=args.lr, end_learning_rate=args.lr, warmup_rl_steps=0)
    c.mesh.devices = 1
    return c


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--minibatch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--alignment", default="same_position")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the before/after record as JSON here")
    args = ap.parse_args(argv)

    # Scanned layers: one layer body in the compiled step instead of 30 copies (compile time).
    model = load_model("smollm2-135m", scan_layers=True)
    setup = build_setup(smoke_config(args), teacher=model)
    teacher_params = jax.device_put(model.params)
    config = model.config.replace(dtype=args.dtype)
    student_params = jax.tree.map(jnp.copy, teacher_params)
    encode = lambda p: chat_prompt_ids(model.tokenizer, p)  # noqa: E731
    train_prompts, heldout = smoke_prompts(args.seed)
    train_ids, heldout_ids = [encode(p) for p in train_prompts], [encode(p) for p in heldout]
    stop = model.stop_token_ids
    teacher_answers = generate_ar(model.config, teacher_params, heldout_ids, sampling=SamplingParams(greedy=True),
                                  max_new_tokens=args.max_new_tokens, stop_ids=stop, pad_id=0,
                                  banned_ids=(model.mask_token_id,)).token_ids
    eval_sampler = SamplerConfig(alignment=args.alignment)  # greedy, static
    cfg = setup.step_config(args.max_new_tokens)
    loss = cfg.loss
    before = evaluate(model, teacher_params, student_params, config, heldout_ids, teacher_answers,
                      eval_sampler, loss, args.max_new_tokens)
    print("before:", json.dumps(before, indent=1))

    step = make_opd_step(config, model.config, cfg, setup.optimizer)
    state = init_train_state(student_params, setup.optimizer)
    rng = np.random.default_rng(args.seed)
    width = 64
    history = []
    t_start = time.perf_counter()
    for i in range(args.steps):
        batch = [train_ids[j] for j in rng.choice(len(train_ids), args.batch, replace=False)]
        tokens, valid = left_pad(batch, width, 0)
        t0 = time.perf_counter()
        state, metrics = step(state, teacher_params, full_budget_inputs(tokens, valid, args.max_new_tokens),
                              jax.random.PRNGKey(args.seed * 100003 + i))
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items() if np.ndim(v) == 0}
        dt = time.perf_counter() - t0
        history.append(metrics)
        eta = (time.perf_counter() - t_start) / (i + 1) * (args.steps - i - 1)
        print(f"step {i + 1}/{args.steps} loss {metrics['loss']:.3f} len {metrics['response_length']:.1f} "
              f"tok/round {metrics['rollout_tokens_per_round']:.2f} {dt:.1f}s "
              f"({metrics['response_tokens'] / dt:.0f} rollout tok/s) ETA {eta:.0f}s", flush=True)
    after = evaluate(model, teacher_params, state.params, config, heldout_ids, teacher_answers,
                     eval_sampler, loss, args.max_new_tokens)
    print("after:", json.dumps(after, indent=1))
    record = {"args": vars(args), "before": before, "after": after, "history": history}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
