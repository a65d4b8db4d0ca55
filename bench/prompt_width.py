"""What prompt padding costs the demo's OPD step: the fused step at prompt widths 64 / 96 / 128.

    .venv/bin/python -m bench.prompt_width --reps 5

The demo's chat-templated prompts are 35-89 tokens; `bucket_width` pads a batch to the next power
of two (128 for almost every batch of 8). This times the demo's fused step (SmolLM2-135M, 8
prompts, 32-token budget, K=1; float32 compute unless `--dtype bfloat16`) on the same 8 prompts left-padded to each width,
interleaved round-robin, each call from a fresh copy of the train state with the same key
(identical work per repetition); it reports median seconds and per-repetition ratios to width 128
(shared/docs/BENCHMARKING.md: ratios in one run, never absolute times across runs).
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import demo_step_setup, summarize, timed
from opdlm_jax.decoding.batching import left_pad
from opdlm_jax.train.state import init_train_state
from opdlm_jax.train.step import full_budget_inputs, make_opd_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--widths", default="64,96,128")
    parser.add_argument("--dtype", default="float32", help="compute dtype (float32 master weights either way)")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    # the demo's teacher, optimizer and step settings, as the trainer builds them
    _, setup, budget, prompts = demo_step_setup(args.dtype, min(widths))
    teacher = setup.teacher
    step = make_opd_step(setup.student_config, teacher.config, setup.step_config(budget), setup.optimizer)
    print(f"{len(prompts)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, budget {budget}, "
          f"{args.dtype} compute")
    inputs = {w: full_budget_inputs(*left_pad(prompts, w, setup.tokens.pad_id), budget) for w in widths}
    base = jax.device_put(init_train_state(setup.student_init, setup.optimizer))
    key = jax.random.PRNGKey(0)

    def call(w):
        state = jax.tree.map(jnp.copy, base)  # the step donates its state
        out = step(state, teacher.params, inputs[w], key)
        return jax.block_until_ready(out[1]["loss"])

    for w in widths:  # compile + one warm-up call each, untimed
        call(w)
        call(w)
    times = {w: [] for w in widths}
    for rep in range(args.reps):
        for w in widths:
            seconds, _ = timed(call, w)
            times[w].append(seconds)
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(f"{w}: {times[w][-1]:.2f}s" for w in widths), flush=True)
    ref = max(widths)
    print(f"\n| prompt width | tokens per sequence in the update (P + 2L) | step s, median (min-max) | "
          f"time / width {ref}, median of pairs |\n|---|---|---|---|")
    for w in widths:
        s = summarize(times[w])
        r = summarize(list(np.asarray(times[w]) / np.asarray(times[ref])))
        print(f"| {w} | {w + 2 * budget} | {s.median:.2f} ({s.min:.2f}-{s.max:.2f}) | {r.median:.2f}x |")


if __name__ == "__main__":
    main()
