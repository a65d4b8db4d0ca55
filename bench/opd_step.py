"""Benchmark of the fused OPD step on SmolLM2-135M: stage split, tokens/s, MFU, memory.

    .venv/bin/python -m bench.opd_step [--reps 5] [--dtypes float32,bfloat16] [--ks 1,4]
                                       [--write BENCHMARKS.md] [--json out.json]

Workload: 8 chat-templated short questions per step, left-padded to a prompt width of 64,
64-token responses, block 4, dynamic 0.9 rollout at temperature 1.0, forward KL, per-block state
selection. The student and the (frozen) teacher are both SmolLM2-135M-Instruct (the student's
vocabulary has the extra mask row); parameters are float32, the compute dtype is the config's
`dtype` (float32, or bfloat16 with float32 master parameters).

Measured, following docs/BENCHMARKING.md (shared):
- each stage jitted on its own with the shapes it has inside the fused step (rollout, state
  selection, teacher, update with K optimizer updates), and the fused `make_opd_step`; compile
  (lower + compile) is timed and reported separately, then one untimed warm-up call;
- every timed run in ONE round-robin loop (per repetition: matmul ceilings, then for each dtype
  the stages and, per K, update and fused step), so that all compared things alternate; median,
  min and max over the repetitions, and ratios of each repetition's pair, then their median;
- every timed call of the update and the fused step starts from a fresh copy of the same train
  state (the step donates it), with the same key, so every repetition does identical work
  (the rollout's length depends on the sampled tokens);
- model FLOPs of the update: 3 x (2 N_params + 4 x layers x d_model x T) per token, T = P + 2L,
  tokens = T x batch; MFU against the matmul ceiling of the same repetition loop;
- peak memory: the process peak RSS (getrusage, maximum over the whole run), the RSS high-water
  mark during each call (/proc/self/status VmHWM after resetting it via /proc/self/clear_refs),
  and `compiled.memory_analysis()` of every compiled function.

The timing helpers live here (small, self-contained); `bench/common.py` was not available when
this file was written.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time

QUESTIONS = (
    "What is the capital of France?",
    "Give me three tips for staying focused.",
    "What is 12 + 7? Answer with just the number.",
    "Why is the sky blue?",
    "Name a fruit that is yellow.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish.",
    "What does a thermometer measure?",
)
PROMPT_WIDTH, RESPONSE_LENGTH, BLOCK = 64, 64, 4
SECTION = "## OPD step"


# ----------------------------------------------------------------------------- small helpers

def median_min_max(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt_t(xs, scale=1.0, digits=2):
    med, lo, hi = median_min_max([x * scale for x in xs])
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


class Memory:
    """Process peak RSS (getrusage) and per-call RSS high-water marks (VmHWM after a reset)."""

    def __init__(self):
        self.process_peak_kb = 0
        self.can_reset = True

    def _maxrss(self):
        self.process_peak_kb = max(self.process_peak_kb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    def reset(self):
        self._maxrss()  # the reset lowers the kernel's high-water mark: keep the running maximum
        if self.can_reset:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.can_reset = False

    def hwm_kb(self) -> int | None:
        self._maxrss()
        if not self.can_reset:
            return None
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (>= 5 for a result)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--ks", default="1,4", help="updates per rollout batch (minibatch = 8 / K)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=64, help="LossConfig.chunk_size")
    parser.add_argument("--ceiling-n", type=int, default=2048)
    parser.add_argument("--ceiling-calls", type=int, default=3, help="ceiling matmuls per repetition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", help="replace the '## OPD step' section of this markdown file")
    parser.add_argument("--json", help="write the raw measurements here")
    args = parser.parse_args(argv)
    command = "XLA_FLAGS=" + repr(os.environ["XLA_FLAGS"]) + " " if os.environ.get("XLA_FLAGS") else ""
    command += ".venv/bin/python -m bench.opd_step " + " ".join(sys.argv[1:] if argv is None else argv)

    import jax
    import jax.numpy as jnp
    import jaxlib
    import numpy as np

    from opdlm_jax.diffusion import SamplerConfig
    from opdlm_jax.distill.opd_loss import LossConfig
    from opdlm_jax.generation.batching import left_pad
    from opdlm_jax.generation.sampling import SamplingParams
    from opdlm_jax.loading import load_model
    from opdlm_jax.train.opd_step import (StepConfig, init_train_state, make_opd_step, rollout_stage,
                                          select_states_stage, teacher_stage, update_stage)
    from opdlm_jax.train.optimizer import OptimizerConfig, make_optimizer

    dtypes = [d for d in args.dtypes.split(",") if d]
    ks = [int(k) for k in args.ks.split(",") if k]
    t_start = time.perf_counter()
    mem = Memory()

    t0 = time.perf_counter()
    model = load_model("smollm2-135m")
    params = jax.device_put(model.params)  # float32 master parameters, on the device once
    load_s = time.perf_counter() - t0
    base = model.config
    tok = model.tokenizer
    ids = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                   tokenize=True, return_dict=False) for q in QUESTIONS]
    ids = [ids[i % len(ids)] for i in range(args.batch)]
    prompt_lengths = [len(p) for p in ids]
    tokens_np, valid_np = left_pad(ids, PROMPT_WIDTH, 0)
    prompts, prompt_valid = jnp.asarray(tokens_np), jnp.asarray(valid_np)
    key = jax.random.PRNGKey(args.seed)
    k_rollout, k_states, k_order = jax.random.split(key, 3)  # as inside opd_step
    optimizer = make_optimizer(OptimizerConfig())
    state0 = init_train_state(jax.tree.map(jnp.copy, params), optimizer)  # never donated itself
    teacher_params = params
    jax.block_until_ready(state0)

    def fresh_state():
        s = jax.tree.map(jnp.copy, state0)
        return jax.block_until_ready(s)

    def step_config(k: int) -> StepConfig:
        return StepConfig(
            sampler=SamplerConfig(block_size=BLOCK, steps_per_block=BLOCK, strategy="low_confidence_dynamic",
                                  threshold=0.9, sampling=SamplingParams(temperature=1.0)),
            loss=LossConfig(block_size=BLOCK, chunk_size=args.chunk_size),
            max_new_tokens=RESPONSE_LENGTH, minibatch_size=args.batch // k, mask_id=model.mask_token_id,
            pad_id=0, stop_ids=tuple(model.stop_token_ids))

    def compile_timed(jitted, *a):
        t = time.perf_counter()
        compiled = jitted.lower(*a).compile()
        return compiled, time.perf_counter() - t

    def mem_analysis(compiled) -> dict:
        m = compiled.memory_analysis()
        if m is None:
            return {}
        return {k: int(getattr(m, k + "_size_in_bytes", 0) or 0)
                for k in ("argument", "output", "temp", "alias", "generated_code")}

    def xla_flops(compiled) -> float | None:
        try:
            ca = compiled.cost_analysis()
            if isinstance(ca, (list, tuple)):
                ca = ca[0]
            return float(ca.get("flops")) if ca and "flops" in ca else None
        except Exception:  # noqa: BLE001 - optional diagnostics
            return None

    # ------------------------------------------------------------------ matmul ceilings
    n = args.ceiling_n
    ka, kb = jax.random.split(jax.random.PRNGKey(123))
    a32 = jax.random.normal(ka, (n, n), jnp.float32)
    b32 = jax.random.normal(kb, (n, n), jnp.float32)
    a16, b16 = a32.astype(jnp.bfloat16), b32.astype(jnp.bfloat16)
    mm32 = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    mm16 = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    ceil_fns = {"float32": (mm32.lower(a32, b32).compile(), (a32, b32)),
                "bfloat16": (mm16.lower(a16, b16).compile(), (a16, b16))}
    for fn, ab in ceil_fns.values():
        jax.block_until_ready(fn(*ab))

    # ------------------------------------------------------------------ compile everything
    records: dict = {"compile_s": {}, "first_call_s": {}, "memory_analysis": {}, "xla_flops": {},
                     "times": {}, "hwm_kb": {}, "rollout": {}, "ceiling_s": {"float32": [], "bfloat16": []}}
    compiled: dict = {}
    inputs: dict = {}

    def first_call(name, fn, *a):
        mem.reset()
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*a))
        records["first_call_s"][name] = time.perf_counter() - t
        records["hwm_kb"].setdefault(name, []).append(mem.hwm_kb())
        return out

    for dt in dtypes:
        scfg = base.replace(dtype=dt)  # float32 parameters, `dt` compute
        tcfg = scfg
        cfg1 = step_config(ks[0])
        rollout_j = jax.jit(lambda p, x, v, k, c=scfg, s=cfg1: rollout_stage(c, p, x, v, k, s))
        select_j = jax.jit(lambda b, k, s=cfg1: select_states_stage(b, k, s))
        teacher_j = jax.jit(lambda p, b, c=tcfg: teacher_stage(c, p, b))
        name = f"rollout/{dt}"
        compiled[name], records["compile_s"][name] = compile_timed(rollout_j, state0.params, prompts,
                                                                   prompt_valid, k_rollout)
        batch, stats = first_call(name, compiled[name], state0.params, prompts, prompt_valid, k_rollout)
        records["rollout"][dt] = {k: float(v) for k, v in stats.items()}
        records["rollout"][dt]["lengths"] = np.asarray(batch.lengths).tolist()
        name = f"select/{dt}"
        compiled[name], records["compile_s"][name] = compile_timed(select_j, batch, k_states)
        masked = first_call(name, compiled[name], batch, k_states)
        name = f"teacher/{dt}"
        compiled[name], records["compile_s"][name] = compile_timed(teacher_j, teacher_params, batch)
        t_hidden = first_call(name, compiled[name], teacher_params, batch)
        inputs[dt] = (batch, masked, t_hidden)
        for name in (f"rollout/{dt}", f"select/{dt}", f"teacher/{dt}"):
            records["memory_analysis"][name] = mem_analysis(compiled[name])
        for k in ks:
            cfg = step_config(k)
            update_j = jax.jit(
                lambda st, tp, b, m, th, kk, c=scfg, s=cfg: update_stage(st, c, c, tp, b, m, th, kk, s, optimizer),
                donate_argnums=0)
            name = f"update/{dt}/K{k}"
            compiled[name], records["compile_s"][name] = compile_timed(
                update_j, state0, teacher_params, batch, masked, t_hidden, k_order)
            records["memory_analysis"][name] = mem_analysis(compiled[name])
            records["xla_flops"][name] = xla_flops(compiled[name])
            first_call(name, compiled[name], fresh_state(), teacher_params, batch, masked, t_hidden, k_order)
            name = f"fused/{dt}/K{k}"
            fused_j = make_opd_step(scfg, tcfg, cfg, optimizer)
            compiled[name], records["compile_s"][name] = compile_timed(fused_j, state0, teacher_params, prompts,
                                                                       prompt_valid, key)
            records["memory_analysis"][name] = mem_analysis(compiled[name])
            _, fused_metrics = first_call(name, compiled[name], fresh_state(), teacher_params, prompts,
                                          prompt_valid, key)
            records["rollout"][f"fused/{dt}/K{k}"] = {k2: float(v) for k2, v in fused_metrics.items()}
        print(f"[{time.perf_counter() - t_start:.0f}s] compiled {dt}: "
              + ", ".join(f"{k} {v:.1f}s" for k, v in records["compile_s"].items() if f"/{dt}" in k),
              flush=True)

    # ------------------------------------------------------------------ the timed round-robin loop
    def timed(name, fn, *a):
        mem.reset()
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*a))
        records["times"].setdefault(name, []).append(time.perf_counter() - t)
        records["hwm_kb"].setdefault(name, []).append(mem.hwm_kb())
        return out

    for rep in range(args.reps):
        for dt, (fn, ab) in ceil_fns.items():
            for _ in range(args.ceiling_calls):
                t = time.perf_counter()
                jax.block_until_ready(fn(*ab))
                records["ceiling_s"][dt].append(time.perf_counter() - t)
        for dt in dtypes:
            batch, masked, t_hidden = inputs[dt]
            timed(f"rollout/{dt}", compiled[f"rollout/{dt}"], state0.params, prompts, prompt_valid, k_rollout)
            timed(f"select/{dt}", compiled[f"select/{dt}"], batch, k_states)
            timed(f"teacher/{dt}", compiled[f"teacher/{dt}"], teacher_params, batch)
            for k in ks:
                timed(f"update/{dt}/K{k}", compiled[f"update/{dt}/K{k}"], fresh_state(), teacher_params,
                      batch, masked, t_hidden, k_order)
                timed(f"fused/{dt}/K{k}", compiled[f"fused/{dt}/K{k}"], fresh_state(), teacher_params,
                      prompts, prompt_valid, key)
        print(f"[{time.perf_counter() - t_start:.0f}s] repetition {rep + 1}/{args.reps} done", flush=True)

    mem._maxrss()
    records["process_peak_rss_mb"] = mem.process_peak_kb / 1024
    records["load_s"] = load_s
    records["total_s"] = time.perf_counter() - t_start

    # ------------------------------------------------------------------ derived figures
    T = PROMPT_WIDTH + 2 * RESPONSE_LENGTH
    update_tokens = T * args.batch
    fwd_per_token = 2 * base.num_params() + 4 * base.num_layers * base.hidden_size * T
    train_flops = 3 * fwd_per_token * update_tokens
    ceil = {dt: 2 * n ** 3 / statistics.median(v) for dt, v in records["ceiling_s"].items()}
    ceil_rng = {dt: (2 * n ** 3 / max(v), 2 * n ** 3 / min(v)) for dt, v in records["ceiling_s"].items()}
    times = records["times"]
    reps = args.reps

    def per_rep(name):
        return times[name]

    rows = []
    summary = {}
    for dt in dtypes:
        for k in ks:
            r, s, te = per_rep(f"rollout/{dt}"), per_rep(f"select/{dt}"), per_rep(f"teacher/{dt}")
            u, f = per_rep(f"update/{dt}/K{k}"), per_rep(f"fused/{dt}/K{k}")
            sums = [r[i] + s[i] + te[i] + u[i] for i in range(reps)]
            fused_over_sum = statistics.median([f[i] / sums[i] for i in range(reps)])
            med_sum = statistics.median(sums)
            ro_tokens = records["rollout"][dt]["rollout_tokens"]
            mfu_own = [train_flops / u[i] / ceil[dt] for i in range(reps)]
            summary[(dt, k)] = dict(
                rollout=median_min_max(r), select=median_min_max(s), teacher=median_min_max(te),
                update=median_min_max(u), fused=median_min_max(f), sum=median_min_max(sums),
                fused_over_sum=fused_over_sum,
                share={name: statistics.median([x[i] / sums[i] for i in range(reps)])
                       for name, x in (("rollout", r), ("select", s), ("teacher", te), ("update", u))},
                rollout_tok_s_stage=ro_tokens / statistics.median(r),
                rollout_tok_s_step=ro_tokens / statistics.median(f),
                train_tok_s=update_tokens / statistics.median(u),
                update_flop_s=train_flops / statistics.median(u),
                mfu=train_flops / statistics.median(u) / ceil[dt],
                mfu_best_ceiling=train_flops / statistics.median(u) / max(ceil.values()),
                mfu_reps=median_min_max(mfu_own),
                xla_flop_s=(records["xla_flops"][f"update/{dt}/K{k}"] or float("nan")) / statistics.median(u),
            )
    k_ratios = {}
    if len(ks) > 1:
        for dt in dtypes:
            for name in ("update", "fused"):
                a, b = per_rep(f"{name}/{dt}/K{ks[-1]}"), per_rep(f"{name}/{dt}/K{ks[0]}")
                k_ratios[(dt, name)] = median_min_max([a[i] / b[i] for i in range(reps)])
    dt_ratios = {}
    if "float32" in dtypes and "bfloat16" in dtypes:
        for name in ["rollout", "teacher"] + [f"update/K{k}" for k in ks] + [f"fused/K{k}" for k in ks]:
            stage, *rest = name.split("/")
            suffix = ("/" + rest[0]) if rest else ""
            a, b = per_rep(f"{stage}/bfloat16{suffix}"), per_rep(f"{stage}/float32{suffix}")
            dt_ratios[name] = median_min_max([a[i] / b[i] for i in range(reps)])

    # ------------------------------------------------------------------ report
    today = datetime.date.today().isoformat()
    try:
        import torch
        torch_v = torch.__version__
    except ImportError:
        torch_v = "not installed"
    import flax
    import optax
    env = (f"{cpu_model()}, {os.cpu_count()} cores ({jax.devices()[0].platform}, "
           f"{jax.device_count()} device); JAX {jax.__version__}, jaxlib {jaxlib.__version__}, "
           f"flax {flax.__version__}, optax {optax.__version__}, torch {torch_v} (unused); "
           f"Python {platform.python_version()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(unset)'}")
    lines = [SECTION, "",
             f"Command: `{command}`  ",
             f"Date: {today}; total run time {records['total_s']:.0f} s (model load {load_s:.0f} s).  ",
             f"Machine: {env}.  ",
             f"Workload: SmolLM2-135M-Instruct ({base.num_params() / 1e6:.1f}M params, vocabulary "
             f"{base.vocab_size} with the mask row) as student and frozen teacher; float32 parameters and "
             f"AdamW moments; compute dtype per row. {args.batch} chat-templated questions per step "
             f"(prompt lengths {min(prompt_lengths)}-{max(prompt_lengths)} tokens, left-padded to P = "
             f"{PROMPT_WIDTH}); responses L = {RESPONSE_LENGTH}; block {BLOCK}; rollout "
             f"`low_confidence_dynamic` threshold 0.9, 4 rounds max per block, temperature 1.0, KV cache; "
             f"forward KL; per-block state selection; LossConfig.chunk_size = {args.chunk_size} "
             f"(>= L: the vocabulary projection runs in one piece, no chunk loop, no remat); "
             f"remat_policy '{base.remat_policy}', scan_layers {base.scan_layers}. Update layout "
             f"[prompt | x0 | x_t], T = P + 2L = {T}, {update_tokens} tokens per rollout batch "
             f"(K updates of {args.batch}/K sequences).  ",
             f"Timing: {reps} repetitions of one round-robin loop (ceilings, then per dtype: rollout, "
             f"select, teacher, and per K: update, fused step), each call from a fresh copy of the same "
             f"train state and the same key, so every repetition does identical work; median (min-max). "
             f"Compile = lower + compile, excluded; one untimed warm-up call after it.",
             ""]
    for dt in dtypes:
        ro = records["rollout"][dt]
        lines.append(f"Rollout ({dt} compute): {ro['rollout_tokens']:.0f} tokens generated "
                     f"(response lengths {ro['lengths']}), NFE {ro['rollout_nfe']:.0f}, "
                     f"{ro['rollout_tokens_per_round']:.2f} tokens per round per sequence.  ")
    lines += ["",
              f"Matmul ceiling, measured in the same loop ({n}x{n}, 2 n^3 / time, "
              f"{len(records['ceiling_s']['float32'])} calls each): "
              + "; ".join(f"{dt}{' inputs, float32 accumulation' if dt == 'bfloat16' else ''}: "
                          f"{ceil[dt] / 1e9:.1f} GFLOP/s ({ceil_rng[dt][0] / 1e9:.1f}-{ceil_rng[dt][1] / 1e9:.1f})"
                          for dt in ceil) + ".",
              "",
              "Step time, seconds, median (min-max):",
              "",
              "| compute | K (minibatch) | rollout | select | teacher | update | sum of stages | fused step | fused / sum |",
              "|---|---|---|---|---|---|---|---|---|"]
    for (dt, k), s in summary.items():
        def c(key, share=True):
            med, lo, hi = s[key]
            sh = f" **{100 * s['share'][key]:.0f}%**" if share else ""
            return f"{med:.2f} ({lo:.2f}-{hi:.2f}){sh}"
        lines.append(f"| {dt} | {k} ({args.batch // k}) | {c('rollout')} | {c('select')} | {c('teacher')} | "
                     f"{c('update')} | {c('sum', False)} | {c('fused', False)} | {s['fused_over_sum']:.2f} |")
    lines += ["", "(percent: the stage's share of the sum of stages, median over repetitions.)", "",
              "Throughput and utilisation of the student update (forward + backward + AdamW):", "",
              "| compute | K | rollout tok/s (rollout stage) | rollout tok/s (of fused step) | "
              "update train tok/s | model GFLOP/s | MFU vs own-dtype ceiling | MFU vs best ceiling | "
              "XLA-counted GFLOP/s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for (dt, k), s in summary.items():
        lo, hi = s["mfu_reps"][1], s["mfu_reps"][2]
        lines.append(f"| {dt} | {k} | {s['rollout_tok_s_stage']:.1f} | {s['rollout_tok_s_step']:.1f} | "
                     f"{s['train_tok_s']:.0f} | {s['update_flop_s'] / 1e9:.1f} | "
                     f"{100 * s['mfu']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}) | "
                     f"{100 * s['mfu_best_ceiling']:.1f}% | {s['xla_flop_s'] / 1e9:.1f} |")
    lines += ["",
              f"Model FLOPs per update (rollout batch): 3 x (2 x {base.num_params() / 1e6:.1f}M + 4 x "
              f"{base.num_layers} x {base.hidden_size} x {T}) x {update_tokens} tokens = "
              f"{train_flops / 1e12:.3f} TFLOP. MFU per repetition in parentheses uses that "
              f"repetition's update time and the median ceiling. XLA-counted = "
              f"`compiled.cost_analysis()['flops']` of the update stage / its median time.", ""]
    if k_ratios or dt_ratios:
        lines.append("Paired ratios (each repetition's pair, then the median; min-max):")
        lines.append("")
        for (dt, name), (med, lo, hi) in k_ratios.items():
            lines.append(f"- {name}, {dt}: K={ks[-1]} / K={ks[0]} time = {med:.2f} ({lo:.2f}-{hi:.2f})")
        for name, (med, lo, hi) in dt_ratios.items():
            lines.append(f"- {name}: bfloat16 / float32 time = {med:.2f} ({lo:.2f}-{hi:.2f})")
        lines.append("")
    lines += ["Compile (lower + compile, s) and memory (`compiled.memory_analysis()`, MiB; RSS high-water "
              "during the call, MiB, includes the resident parameters, states and executables):", "",
              "| function | compile s | first call s | arguments | outputs | temporaries | RSS high-water |",
              "|---|---|---|---|---|---|---|"]
    mib = 1 / 2 ** 20
    for name, cs in records["compile_s"].items():
        ma = records["memory_analysis"].get(name, {})
        hwm = [h for h in records["hwm_kb"].get(name, []) if h is not None]
        lines.append(f"| {name} | {cs:.1f} | {records['first_call_s'][name]:.2f} | "
                     f"{ma.get('argument', 0) * mib:.0f} | {ma.get('output', 0) * mib:.0f} | "
                     f"{ma.get('temp', 0) * mib:.0f} | {(max(hwm) / 1024 if hwm else float('nan')):.0f} |")
    lines += ["", f"Process peak RSS (getrusage, whole run, all configurations resident): "
              f"{records['process_peak_rss_mb']:.0f} MiB.", ""]
    section = "\n".join(lines)
    print(section)

    if args.json:
        raw = dict(records)
        raw["summary"] = {f"{dt}/K{k}": v for (dt, k), v in summary.items()}
        raw["ceiling_flop_s"] = ceil
        raw["train_flops"] = train_flops
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1, default=str)
    if args.write:
        write_section(args.write, section)


def write_section(path: str, section: str) -> None:
    """Replace (or append) only the '## OPD step' section; re-read the file right before writing."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    lines = text.split("\n")
    start = next((i for i, l in enumerate(lines) if l.strip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + section.rstrip("\n").split("\n") + [""] + lines[end:])
        new = new.rstrip("\n") + "\n"
    with open(path, "w") as f:
        f.write(new)


if __name__ == "__main__":
    main()
