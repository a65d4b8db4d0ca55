"""Where a decode step's time goes: XLA's CPU ops of one compiled program, summed by kind.

    .venv/bin/python -m bench.op_profile --what ar_step --batch 1
    .venv/bin/python -m bench.op_profile --what ar_loop --batch 8 --new-tokens 32
    .venv/bin/python -m bench.op_profile --what round --batch 8
    .venv/bin/python -m bench.op_profile --what matmul_dtypes
    .venv/bin/python -m bench.op_profile --what update --dtype bfloat16 --calls 2

ar_step / round / commit: one cached forward of SmolLM2-135M (float32) jitted alone (1 token
causal with the cache written; 4 tokens block-causal not written; 8 tokens written), ar_loop /
diffusion_loop: a whole `ar_decode` / static `block_diffusion_decode`. The program runs a few
times under `jax.profiler.trace`; every op event of XLA's CPU executor (the thunks, on the
Eigen / client threads) is summed by its kind (the HLO name without its numeric suffix: `dot`,
`ynn_fusion` = a YNNPACK matmul fusion, `copy`, `slice_bitcast_fusion`, ...). Thunks of
independent ops run on both cores at once, so the sum is thread time and can exceed the wall time.

rollout / teacher / update: one stage of the demo's OPD step (the trainer's settings, width 96).

matmul_dtypes: 90 matrices of 576 x 1536 (one SmolLM2 MLP stack, 319 MB in float32) multiplied
by M rows, float32 vs bfloat16 inputs with float32 accumulation: the rate at which XLA's CPU
kernels read weights, and whether bfloat16 is a fast path at each M.

The event reader is `jax._src.lib._profile_data` (private, the one JAX's own tests use); a
diagnostic, not a benchmark of record: ratios belong in one alternating run (bench/decode.py).
"""
from __future__ import annotations

import argparse
import collections
import glob
import re
import statistics
import tempfile
import time


def op_thread_time(fn, calls: int) -> tuple[float, dict[str, tuple[float, int]]]:
    """Run fn() `calls` times under the profiler -> (wall s per call, kind -> (ms per call, count per call))."""
    import jax
    from jax._src.lib import _profile_data

    fn()
    directory = tempfile.mkdtemp(prefix="opdlm_profile_")
    with jax.profiler.trace(directory):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        wall = (time.perf_counter() - t0) / calls
    data = _profile_data.ProfileData.from_file(glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)[0])
    total, count = collections.Counter(), collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "Eigen" not in line.name and "PjRtCpuClient" not in line.name:
                continue  # Python and host bookkeeping lines
            for event in line.events:
                if event.name.startswith(("ThunkExecutor", "end:")):
                    continue  # wrappers of the op events, and completion markers
                kind = re.sub(r"\.\d+$", "", event.name)
                total[kind] += event.duration_ns
                count[kind] += 1
    return wall, {k: (v / calls / 1e6, count[k] / calls) for k, v in total.most_common()}


def model_program(what: str, batch: int, new_tokens: int, dtype: str = "float32"):
    import jax
    import jax.numpy as jnp

    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.decoding.ar_decoder import ar_decode
    from opdlm_jax.decoding.block_diffusion import block_diffusion_decode
    from opdlm_jax.decoding.config import SamplerConfig
    from opdlm_jax.decoding.sampling import SamplingParams
    from opdlm_jax.models import extend, init_cache

    m = load_model("smollm2-135m")
    cfg, params = m.config, jax.device_put(m.params)
    if dtype != "float32":  # weights cast once, computed in that dtype (float32 accumulation in dots)
        cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
        params = jax.tree.map(lambda x: x.astype(dtype), params)
    width, b = 64, 4
    prompts, valid = jnp.full((batch, width), 7, jnp.int32), jnp.ones((batch, width), bool)
    key = jax.random.PRNGKey(0)
    if what == "ar_loop":
        f = ar_decode.lower(cfg, params, prompts, valid, key, sampling=SamplingParams(greedy=True),
                            max_new_tokens=new_tokens, stop_ids=(), pad_id=0).compile()
        return lambda: jax.block_until_ready(f(params, prompts, valid, key))
    if what == "diffusion_loop":
        f = block_diffusion_decode.lower(cfg, params, prompts, valid, key,
                                         sampler=SamplerConfig(block_size=b, steps_per_block=b),
                                         max_new_tokens=new_tokens, stop_ids=(), mask_id=m.mask_token_id,
                                         pad_id=0).compile()
        return lambda: jax.block_until_ready(f(params, prompts, valid, key))
    tokens = {"ar_step": 1, "round": b, "commit": 2 * b}[what]
    cache = init_cache(cfg, batch, width + new_tokens + b)
    cache = cache._replace(filled=cache.filled.at[:, :width].set(True))
    positions = jnp.broadcast_to(jnp.arange(width, width + tokens), (batch, tokens))
    mode = "causal" if what == "ar_step" else "block"
    f = jax.jit(lambda p, c: extend(cfg, p, c, jnp.full((batch, tokens), 7, jnp.int32), width, positions,
                                    mode=mode, block_ids=positions // b, return_hidden=True,
                                    commit=what != "round")).lower(params, cache).compile()
    return lambda: jax.block_until_ready(f(params, cache))


def step_stage_program(what: str, dtype: str, width: int):
    """One stage of the demo's OPD step (experiments/configs/demo.py, its prompts, length budget
    and K=1) jitted alone: `rollout`, `teacher` or `update`; `dtype` is the compute dtype
    (parameters and AdamW moments stay float32)."""
    import jax
    import jax.numpy as jnp

    from bench.common import demo_step_setup
    from opdlm_jax.decoding.batching import left_pad
    from opdlm_jax.train.state import init_train_state
    from opdlm_jax.train.step import rollout_stage, select_states_stage, teacher_stage, update_stage

    _, setup, budget, ids = demo_step_setup(dtype, width)
    cfg = setup.step_config(budget)
    prompts, valid = (jnp.asarray(a) for a in left_pad(ids, width, setup.tokens.pad_id))
    student, teacher = setup.student_config, setup.teacher.config
    state = jax.device_put(init_train_state(setup.student_init, setup.optimizer))
    t_params = jax.device_put(setup.teacher.params)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    rollout = jax.jit(lambda p, x, v, k: rollout_stage(student, p, x, v, k, cfg))
    if what == "rollout":
        return lambda: jax.block_until_ready(rollout(state.params, prompts, valid, k1))
    batch, _ = rollout(state.params, prompts, valid, k1)
    masked = select_states_stage(batch, k2, cfg)
    teach = jax.jit(lambda p, b: teacher_stage(teacher, p, b, cfg.teacher_slice_size))
    if what == "teacher":
        return lambda: jax.block_until_ready(teach(t_params, batch))
    t_hidden = teach(t_params, batch)
    update = jax.jit(lambda st, b, m, th, k: update_stage(st, student, teacher, t_params, b, m, th, k, cfg,
                                                          setup.optimizer))
    return lambda: jax.block_until_ready(update(state, batch, masked, t_hidden, k3))


def matmul_dtypes(rows: tuple[int, ...] = (1, 2, 4, 8, 16, 32), repeats: int = 7) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    w32 = [jnp.asarray(np.random.default_rng(i).standard_normal((576, 1536), np.float32)) for i in range(90)]
    w16 = [w.astype(jnp.bfloat16) for w in w32]
    mb = sum(w.nbytes for w in w32) / 1e6
    f32 = jax.jit(lambda x, ws: sum((x @ w).sum() for w in ws))
    bf16 = jax.jit(lambda x, ws: sum(jax.lax.dot(x.astype(jnp.bfloat16), w,
                                                 preferred_element_type=jnp.float32).sum() for w in ws))

    def median_s(fn, *a):
        jax.block_until_ready(fn(*a))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*a))
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    print("| rows M | float32 ms | float32 GB/s of weights | bf16 -> f32 ms | float32 / bf16 time |\n|---|---|---|---|---|")
    for m in rows:
        x = jnp.ones((m, 576), jnp.float32)
        a, b = median_s(f32, x, w32), median_s(bf16, x, w16)
        print(f"| {m} | {a * 1e3:.1f} | {mb / 1e3 / a:.1f} | {b * 1e3:.1f} | {a / b:.2f}x |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--what", choices=("ar_step", "round", "commit", "ar_loop", "diffusion_loop", "matmul_dtypes",
                                      "rollout", "teacher", "update"), default="ar_step")
    p.add_argument("--width", type=int, default=96, help="prompt width of the OPD step's stages")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--dtype", default="float32", help="weights and compute dtype of the model programs")
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args(argv)
    if args.what == "matmul_dtypes":
        matmul_dtypes()
        return
    if args.what in ("rollout", "teacher", "update"):
        program = step_stage_program(args.what, args.dtype, args.width)
    else:
        program = model_program(args.what, args.batch, args.new_tokens, args.dtype)
    wall, kinds = op_thread_time(program, args.calls)
    total = sum(ms for ms, _ in kinds.values())
    print(f"{args.what}, B={args.batch}, {args.dtype}: wall {wall * 1e3:.1f} ms per call; op thread time {total:.1f} ms")
    print("| op kind | ms per call | ops per call |\n|---|---|---|")
    for kind, (ms, n) in list(kinds.items())[:args.top]:
        print(f"| {kind} | {ms:.2f} | {n:.0f} |")


if __name__ == "__main__":
    main()
