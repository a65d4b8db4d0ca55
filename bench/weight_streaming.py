"""Decoding against the weight-streaming limit, float32 and bfloat16 weights, ours and transformers.

    .venv/bin/python -m bench.weight_streaming                 # prints; --write BENCHMARKS.md replaces its section

At batch 1-8 a decode forward reads every weight once and does little arithmetic per byte, so its
floor is the weight-streaming time: parameter bytes / memory-read bandwidth. This benchmark
measures both in the same run and places each forward against that floor:

- read bandwidth: the fastest of a 2-thread PyTorch sum and a jitted JAX sum over a 1 GiB float32
  array (a pure streaming read; bytes / seconds);
- ours: one AR step (1 new token per row, the KV cache written) and one block-diffusion round
  (4 tokens per row, block-causal, the cache only read) of SmolLM2-135M-Instruct with a 64-token
  prompt in the cache, each jitted alone (`opdlm_jax.models.extend`), float32 weights and
  bfloat16 weights (bfloat16 compute, float32 accumulation);
- transformers: `generate` (KV cache, greedy, 2 threads) and ours `generate_ar`, 64 forced new
  tokens from the benchmark's chat questions, each in float32 and bfloat16 weights; per-token
  time = seconds / 64.

All candidates of a batch size run in alternation (A B C ... A B C ...) for `--repeats` rounds
in one process (docs/BENCHMARKING.md); ratios are per round, then median (min-max).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

WIDTH, BLOCK = 64, 4


def read_bandwidth_probes(gib: float = 1.0) -> dict:
    """name -> call returning seconds to read `gib` GiB of float32 once."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    n = int(gib * 2 ** 30 / 4)
    host = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    dev = jax.device_put(host)
    tensor = torch.from_numpy(host)
    jsum = jax.jit(jnp.sum)
    jax.block_until_ready(jsum(dev))

    def run(fn):
        def call():
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        return call
    return {"read/torch sum": run(lambda: float(tensor.sum())),
            "read/jax sum": run(lambda: jax.block_until_ready(jsum(dev)))}


def our_forwards(model, batch: int) -> dict:
    """(dtype, pass) -> call returning seconds of one jitted forward."""
    import jax
    import jax.numpy as jnp

    from opdlm_jax.models import extend, init_cache
    from opdlm_jax.models.layer_stack import decoding_layout

    out = {}
    for dtype in ("float32", "bfloat16"):
        cfg, params = decoding_layout(model.config.replace(dtype=dtype), model.params)
        params = jax.device_put(params)
        cache = init_cache(cfg, batch, WIDTH + 2 * BLOCK)
        cache = cache._replace(filled=cache.filled.at[:, :WIDTH].set(True))
        for name, tokens in (("AR step", 1), ("round", BLOCK)):
            pos = jnp.broadcast_to(jnp.arange(WIDTH, WIDTH + tokens), (batch, tokens))
            mode = "causal" if tokens == 1 else "block"
            fn = jax.jit(lambda p, c, cfg=cfg, pos=pos, tokens=tokens, mode=mode: extend(
                cfg, p, c, jnp.full((batch, tokens), 7, jnp.int32), WIDTH, pos, mode=mode,
                block_ids=pos // BLOCK, commit=mode == "causal")[0])
            jax.block_until_ready(fn(params, cache))

            def call(fn=fn, params=params, cache=cache):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(params, cache))
                return time.perf_counter() - t0
            out[dtype, name] = call
    return out


def generate_calls(model, torch_models, prompts, new_tokens: int) -> dict:
    """(system, dtype) -> call returning the seconds of one `new_tokens`-token greedy decode."""
    import torch

    from opdlm_jax.decoding.api import generate_ar
    from opdlm_jax.decoding.sampling import SamplingParams
    from opdlm_jax.models.layer_stack import compute_dtype_weights

    out = {}
    for dtype in ("float32", "bfloat16"):
        cfg, params = compute_dtype_weights(model.config.replace(dtype=dtype), model.params)

        def ours(cfg=cfg, params=params):
            r = generate_ar(cfg, params, prompts, sampling=SamplingParams(greedy=True), max_new_tokens=new_tokens,
                            stop_ids=(), pad_id=model.pad_id, banned_ids=(model.mask_token_id,))
            return r.seconds
        ours()  # compile
        out["ours", dtype] = ours
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), model.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding, as generate expects for decoder-only models
            ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1

        def theirs(m=torch_models[dtype]):
            with torch.inference_mode():
                t0 = time.perf_counter()
                m.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, use_cache=True, pad_token_id=model.pad_id)
                return time.perf_counter() - t0
        theirs()  # warm-up
        out["transformers", dtype] = theirs
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", default="1,4,8")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--write", help="replace the section of this markdown file (BENCHMARKS.md)")
    args = p.parse_args(argv)

    import jax
    import torch

    from bench import common
    from bench.decode import QUESTIONS, load_torch
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.data.chat_format import chat_prompt_ids

    t_start = time.perf_counter()
    env = common.environment()
    torch.set_num_threads(2)
    model = load_model("smollm2-135m")
    model.params = jax.device_put(model.params)
    param_bytes = sum(x.size for x in jax.tree.leaves(model.params)) * 4  # float32
    torch32, how, _ = load_torch(2)
    torch_models = {"float32": torch32, "bfloat16": load_torch(2)[0].to(torch.bfloat16)}
    prompts = [chat_prompt_ids(model.tokenizer, q) for q in QUESTIONS]
    bandwidth = common.alternate(read_bandwidth_probes(), args.repeats)
    gbps = {k: [2 ** 30 / s / 1e9 for s in v] for k, v in bandwidth.items()}
    best_read = max(common.summarize(v).median for v in gbps.values())
    stream_ms = {"float32": param_bytes / best_read / 1e6, "bfloat16": param_bytes / 2 / best_read / 1e6}
    lines = [f"`{env['command']}`, {env['date']}. CPU: {env['cpu']}, {env['cores']}; load at start "
             f"{env['load_average']}. JAX {env['jax']}, torch {env['torch']}, transformers {env['transformers']}; "
             f"transformers model: {how}.", "",
             "Memory-read bandwidth (1 GiB float32, median (min-max) over rounds): " + "; ".join(
                 f"{k.split('/')[1]} {common.summarize(v).fmt(digits=1)} GB/s" for k, v in gbps.items())
             + f". Weight-streaming time at the best median ({best_read:.1f} GB/s): "
             f"{param_bytes / 1e6:.0f} MB float32 -> **{stream_ms['float32']:.1f} ms**, bfloat16 "
             f"{stream_ms['bfloat16']:.1f} ms per forward.", ""]
    fwd_rows, gen_rows = [], []
    for b in [int(x) for x in args.batches.split(",")]:
        forwards = our_forwards(model, b)
        gens = generate_calls(model, torch_models, prompts[:b], args.new_tokens)
        cands = {f"{d}/{n}": f for (d, n), f in forwards.items()} | {f"gen/{s}/{d}": f for (s, d), f in gens.items()}
        times = common.alternate(cands, args.repeats)
        for dtype in ("float32", "bfloat16"):
            ar, rnd = times[f"{dtype}/AR step"], times[f"{dtype}/round"]
            _, over_stream = common.pair_ratios(ar, [stream_ms[dtype] / 1e3] * len(ar))
            _, round_vs_ar = common.pair_ratios(rnd, ar)
            fwd_rows.append((b, dtype, common.summarize(ar).fmt(1e3, 1), f"{over_stream.median:.2f}x",
                             common.summarize(rnd).fmt(1e3, 1), f"{round_vs_ar.fmt()}"))
        for dtype in ("float32", "bfloat16"):
            ours, theirs = times[f"gen/ours/{dtype}"], times[f"gen/transformers/{dtype}"]
            _, speedup = common.pair_ratios(theirs, ours)
            gen_rows.append((b, dtype, common.summarize(ours).fmt(1e3 / args.new_tokens, 1),
                             common.summarize(theirs).fmt(1e3 / args.new_tokens, 1), f"**{speedup.fmt()}x**"))
        best_ours = min(("float32", "bfloat16"), key=lambda d: common.summarize(times[f"gen/ours/{d}"]).median)
        best_theirs = min(("float32", "bfloat16"), key=lambda d: common.summarize(times[f"gen/transformers/{d}"]).median)
        _, best = common.pair_ratios(times[f"gen/transformers/{best_theirs}"], times[f"gen/ours/{best_ours}"])
        gen_rows.append((b, f"best of each: ours {best_ours}, transformers {best_theirs}", "", "",
                         f"**{best.fmt()}x**"))
        print(f"[{time.perf_counter() - t_start:.0f}s] batch {b} done", flush=True)
    lines += ["One forward, jitted alone (64-token prompt in the cache), ms per forward:", "",
              common.markdown_table(("B", "weights", "AR step ms", "AR step / streaming time", "round (4 tokens) ms",
                                     "round / AR step (paired)"), fwd_rows), "",
              f"Greedy decoding, {args.new_tokens} forced new tokens, ms per generated position (per row):", "",
              common.markdown_table(("B", "weights", "ours generate_ar", "transformers generate (2 threads)",
                                     "ours speed-up (paired)"), gen_rows), "",
              f"Total {(time.perf_counter() - t_start) / 60:.1f} min."]
    body = "\n".join(lines)
    print(body)
    if args.write:
        common.replace_section(Path(args.write), "Decoding against the weight-streaming limit", body)


if __name__ == "__main__":
    main()
