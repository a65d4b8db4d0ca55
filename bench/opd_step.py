"""Benchmark of the fused OPD step on SmolLM2-135M: stage split, tokens/s, MFU, memory.

    .venv/bin/python -m bench.opd_step                      # the full protocol (all parts below)
    .venv/bin/python -m bench.opd_step --configs bfloat16:1,bfloat16:4,float32:1 --parts update

Workload: 8 chat-templated short questions per step, left-padded to a prompt width of 64,
64-token responses, block 4, dynamic 0.9 rollout at temperature 1.0, forward KL, per-block state
selection. Student and frozen teacher are both SmolLM2-135M-Instruct (with the mask row);
parameters and AdamW moments are float32, the compute dtype is the config's `dtype` (float32, or
bfloat16 with float32 master parameters). A configuration is `dtype:K` (K optimizer updates per
rollout batch, minibatch 8 / K).

Measured, following docs/BENCHMARKING.md (shared):
- parts: `stages` = rollout, state selection and teacher, each jitted on its own with the shapes
  it has inside the fused step (per dtype); `update` = `update_stage` with those states (per
  configuration); `fused` = `make_opd_step` (per configuration); `components` = diagnostics of
  the first configuration's dtype: the optimizer alone (clip + AdamW + apply + the logged grad
  norm, on gradient-shaped arrays) and the loss head alone (teacher and student vocabulary
  projections, forward KL, gradient to the student's hidden states and parameters) with and
  without the logged top-k masses, on random hidden states. Compile (lower + compile) is
  timed and reported separately; `--warmup` adds one untimed call after it.
- all timed calls run in ONE round-robin loop (per repetition: both matmul ceilings, then per
  dtype the stages, then per configuration update and fused step), so compared things alternate;
  median (min-max) over repetitions; ratios per repetition pair, then their median.
- every update / fused call starts from a fresh copy of the same train state (the step donates
  it) with the same key, so every repetition does identical work (the rollout's cost depends on
  the sampled tokens).
- model FLOPs of the update: 3 x (2 N_params + 4 x layers x d_model x T) per token, T = P + 2L,
  tokens = T x batch; MFU against the matmul ceiling (2 n^3 / time) of the same loop. Also
  reported: process CPU seconds per call (getrusage), the cores the call obtained (CPU s / wall
  s; the machine is shared) and a CPU-time MFU (model FLOP per CPU-second over ceiling FLOP per
  CPU-second), which is less sensitive to time-slicing by other processes.
- peak memory: the process peak RSS (getrusage, over the whole run), the RSS high-water mark
  during each call (/proc/self/status VmHWM after a reset via /proc/self/clear_refs), and
  `compiled.memory_analysis()` of every compiled function.

Shared helpers come from `bench/common.py`; the interleaved ceiling and the memory/CPU-time
probes are local, because the common `matmul_ceiling` times its own block of calls.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

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
TITLE = "OPD step"
ALL_CONFIGS = "float32:1,float32:4,bfloat16:1,bfloat16:4"


def bench_config(args):
    """The workload above as a trainer config: the step's settings are built from it by
    `opdlm_jax.train.setup`, as in training (set explicitly so that new defaults do not move it)."""
    from opdlm_jax.train.config import default_config

    c = default_config()
    c.teacher, c.seed = "smollm2-135m", args.seed
    c.dtype = c.param_dtype = "float32"  # each row sets its compute dtype on the model config
    c.remat_policy = args.remat
    c.batch_size = c.minibatch_size = args.batch
    c.data.train = "bench:QUESTIONS"  # validate_config wants a prompt source; the bench feeds QUESTIONS
    c.rollout.update(block_size=BLOCK, steps_per_block=BLOCK, strategy="low_confidence_dynamic", threshold=0.9,
                     temperature=1.0, alignment="same_position")
    c.curriculum.update(start=RESPONSE_LENGTH, end=RESPONSE_LENGTH, ramp_steps=0, bucket=RESPONSE_LENGTH)
    c.loss.update(divergence="forward_kl", chunk_size=args.chunk_size)
    c.selection = "per_block"
    c.mesh.devices = 1
    return c


class Probe:
    """Per-call wall time, process CPU time and RSS high-water mark; running process peak RSS."""

    def __init__(self):
        self.process_peak_kb = 0
        self.can_reset = True

    def _usage(self):
        u = resource.getrusage(resource.RUSAGE_SELF)
        self.process_peak_kb = max(self.process_peak_kb, u.ru_maxrss)
        return u.ru_utime + u.ru_stime

    def start(self):
        cpu = self._usage()  # the reset below lowers the kernel's mark: keep the running maximum
        if self.can_reset:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.can_reset = False
        return cpu, time.perf_counter()

    def stop(self, started):
        wall = time.perf_counter() - started[1]
        cpu = self._usage() - started[0]
        hwm = None
        if self.can_reset:
            with open("/proc/self/status") as f:
                hwm = next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), None)
        return wall, cpu, hwm


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (>= 5 for a result)")
    parser.add_argument("--configs", default=ALL_CONFIGS, help="comma-separated dtype:K")
    parser.add_argument("--parts", default="stages,update,fused")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                        help="one untimed call of update / fused after compiling")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=64, help="config.loss.chunk_size")
    parser.add_argument("--remat", default="none", help="ModelConfig.remat_policy of the student")
    parser.add_argument("--ceiling-n", type=int, default=2048)
    parser.add_argument("--ceiling-calls", type=int, default=3, help="ceiling matmuls per repetition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", help="replace the '## OPD step' section of this markdown file")
    parser.add_argument("--json", help="raw measurements (rewritten after every repetition)")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from bench.common import environment, markdown_table, pair_ratios, replace_section, summarize
    from opdlm_jax.data.chat_format import chat_prompt_ids
    from opdlm_jax.decoding.batching import left_pad
    from opdlm_jax.train.setup import build_setup, step_config
    from opdlm_jax.train.state import init_train_state
    from opdlm_jax.train.step import (full_budget_inputs, make_opd_step, rollout_stage, select_states_stage,
                                      teacher_stage, update_stage)

    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs.split(",") if c]
    dtypes = list(dict.fromkeys(dt for dt, _ in configs))
    parts = set(args.parts.split(","))
    env = environment()
    try:
        import subprocess
        root = Path(__file__).resolve().parents[1]
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "opdlm_jax"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        env["git"] = head + (" + uncommitted changes in opdlm_jax/" if dirty else "")
    except OSError:
        env["git"] = "unknown"
    t_start = time.perf_counter()
    probe = Probe()
    rec: dict = {"env": env, "args": vars(args), "compile_s": {}, "first_call": {}, "memory_analysis": {},
                 "xla_flops": {}, "wall": {}, "cpu": {}, "hwm_kb": {}, "rollout": {}, "fused_metrics": {},
                 "ceiling_wall": {"float32": [], "bfloat16": []}, "ceiling_cpu": {"float32": [], "bfloat16": []}}

    def log(msg):
        print(f"[{time.perf_counter() - t_start:.0f}s, load {os.getloadavg()[0]:.1f}] {msg}", flush=True)

    def dump():
        if args.json:
            Path(args.json).write_text(json.dumps(rec, indent=1, default=str))

    t0 = time.perf_counter()
    config = bench_config(args)
    setup = build_setup(config)  # loads the model; optimizer and special tokens as the trainer builds them
    model, optimizer = setup.teacher, setup.optimizer
    params = jax.device_put(model.params)  # float32 master parameters, on the device once
    rec["load_s"] = time.perf_counter() - t0
    base = setup.student_config
    ids = [chat_prompt_ids(model.tokenizer, q) for q in QUESTIONS]
    ids = [ids[i % len(ids)] for i in range(args.batch)]
    rec["prompt_lengths"] = [len(p) for p in ids]
    tokens_np, valid_np = left_pad(ids, PROMPT_WIDTH, setup.tokens.pad_id)
    prompts, prompt_valid = jnp.asarray(tokens_np), jnp.asarray(valid_np)
    step_inputs = full_budget_inputs(prompts, prompt_valid, RESPONSE_LENGTH)
    key = jax.random.PRNGKey(args.seed)
    k_rollout, k_states, k_order = jax.random.split(key, 3)  # as inside opd_step
    state0 = jax.block_until_ready(init_train_state(jax.tree.map(jnp.copy, params), optimizer))
    teacher_params = params  # never donated; state0 is only ever copied

    def fresh_state():
        return jax.block_until_ready(jax.tree.map(jnp.copy, state0))

    def updates_config(k: int):
        """The step's settings with K = k updates per rollout batch (minibatch batch / k)."""
        c = config.copy_and_resolve_references()
        c.minibatch_size = args.batch // k
        return step_config(c, model.config, setup.tokens, RESPONSE_LENGTH)

    def compile_timed(name, jitted, *a):
        t = time.perf_counter()
        compiled = jitted.lower(*a).compile()
        rec["compile_s"][name] = time.perf_counter() - t
        m = compiled.memory_analysis()
        rec["memory_analysis"][name] = {} if m is None else {
            k: int(getattr(m, k + "_size_in_bytes", 0) or 0) for k in ("argument", "output", "temp", "alias")}
        try:
            ca = compiled.cost_analysis()
            ca = ca[0] if isinstance(ca, (list, tuple)) else ca
            rec["xla_flops"][name] = float(ca["flops"])
        except Exception:  # noqa: BLE001 - optional diagnostics
            rec["xla_flops"][name] = None
        return compiled

    def call(name, fn, *a, timed=True):
        started = probe.start()
        out = jax.block_until_ready(fn(*a))
        wall, cpu, hwm = probe.stop(started)
        if timed:
            for k, v in (("wall", wall), ("cpu", cpu), ("hwm_kb", hwm)):
                rec[k].setdefault(name, []).append(v)
        else:
            rec["first_call"][name] = {"wall": wall, "cpu": cpu, "hwm_kb": hwm}
        return out

    # ---------------------------------------------------------------- matmul ceilings
    n = args.ceiling_n
    ka, kb = jax.random.split(jax.random.PRNGKey(123))
    mm = jax.jit(lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.float32))
    ceil_fns = {}
    for dt, jdt in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        a = jax.random.normal(ka, (n, n), jnp.float32).astype(jdt)
        b = jax.random.normal(kb, (n, n), jnp.float32).astype(jdt)
        fn = mm.lower(a, b).compile()
        jax.block_until_ready(fn(a, b))
        ceil_fns[dt] = (fn, (a, b))

    # ---------------------------------------------------------------- compile, first calls, inputs
    compiled, inputs = {}, {}
    rollout_dtype = dtypes[0]
    batch = None
    for dt in (dtypes if parts & {"stages", "update", "fused"} else []):
        mcfg = base.replace(dtype=dt)  # float32 parameters, `dt` compute; teacher alike
        cfg = updates_config(configs[0][1])
        if "stages" in parts or batch is None:
            name = f"rollout/{dt}"
            compiled[name] = compile_timed(name, jax.jit(
                lambda p, x, v, k, c=mcfg, s=cfg: rollout_stage(c, p, x, v, k, s)),
                state0.params, prompts, prompt_valid, k_rollout)
            batch, stats = call(name, compiled[name], state0.params, prompts, prompt_valid, k_rollout, timed=False)
            lengths = np.asarray(batch.lengths)
            rec["rollout"][dt] = dict({k: np.asarray(v).tolist() for k, v in stats.items()},
                                      lengths=lengths.tolist(), rollout_tokens=int(lengths.sum()))
            name = f"select/{dt}"
            compiled[name] = compile_timed(name, jax.jit(lambda b, k, s=cfg: select_states_stage(b, k, s)),
                                           batch, k_states)
            masked = call(name, compiled[name], batch, k_states, timed=False)
            rollout_dtype = dt
        name = f"teacher/{dt}"
        compiled[name] = compile_timed(name, jax.jit(lambda p, b, c=mcfg: teacher_stage(c, p, b)),
                                       teacher_params, batch)
        t_hidden = call(name, compiled[name], teacher_params, batch, timed=False)
        inputs[dt] = (batch, masked, t_hidden)
        for cdt, k in configs:
            if cdt != dt:
                continue
            cfg = updates_config(k)
            if "update" in parts:
                name = f"update/{dt}/K{k}"
                compiled[name] = compile_timed(name, jax.jit(
                    lambda st, tp, b, m, th, kk, c=mcfg, s=cfg: update_stage(st, c, c, tp, b, m, th, kk, s,
                                                                             optimizer),
                    donate_argnums=0), state0, teacher_params, batch, masked, t_hidden, k_order)
                if args.warmup:
                    call(name, compiled[name], fresh_state(), teacher_params, batch, masked, t_hidden, k_order,
                         timed=False)
            if "fused" in parts:
                name = f"fused/{dt}/K{k}"
                compiled[name] = compile_timed(name, make_opd_step(mcfg, mcfg, cfg, optimizer),
                                               state0, teacher_params, step_inputs, key)
                if args.warmup:
                    _, m = call(name, compiled[name], fresh_state(), teacher_params, step_inputs, key,
                                timed=False)
                    rec["fused_metrics"][name] = {k2: np.asarray(v).tolist() for k2, v in m.items()}
        log(f"compiled {dt}: " + ", ".join(f"{k} {v:.1f}s" for k, v in rec["compile_s"].items() if f"/{dt}" in k))
        dump()

    comp_fns = {}
    if "components" in parts:
        import functools

        import optax

        from opdlm_jax.distill.chunked import chunked_divergence, with_topk_mass
        from opdlm_jax.distill.divergences import divergence_fn
        from opdlm_jax.models import unembed

        cdt = configs[0][0]
        mcfg = base.replace(dtype=cdt)
        grads = jax.tree.map(lambda x: x * 1e-3, params)

        def adamw(state, g):  # what one update does after the gradient, as in update_stage
            updates, opt_state = optimizer.update(g, state.opt_state, state.params)
            return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                                  step=state.step + 1), optax.tree.norm(g)

        kh1, kh2 = jax.random.split(jax.random.PRNGKey(7))
        shape = (args.batch, RESPONSE_LENGTH, base.hidden_size)
        th = jax.random.normal(kh1, shape, jnp.float32).astype(mcfg.jnp_dtype)
        sh = jax.random.normal(kh2, shape, jnp.float32).astype(mcfg.jnp_dtype)
        kl = divergence_fn("forward_kl")

        def head(topk):
            def loss(p, h, tp, t_h):  # everything an argument: closed-over arrays get constant-folded
                div = with_topk_mass(kl, 16) if topk else (lambda t, s_: {"divergence": kl(t, s_)})
                out = chunked_divergence(div, functools.partial(unembed, mcfg, tp),
                                         functools.partial(unembed, mcfg, p), t_h, h, args.chunk_size)
                return out["divergence"].mean(), out
            return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)

        name = f"component/adamw/{cdt}"
        comp_fns[name] = (compile_timed(name, jax.jit(adamw, donate_argnums=0), state0, grads),
                          lambda: (fresh_state(), grads))
        for topk in (True, False):
            name = f"component/loss_head{'' if topk else '_no_topk'}/{cdt}"
            comp_fns[name] = (compile_timed(name, jax.jit(head(topk)), params, sh, teacher_params, th),
                              lambda: (params, sh, teacher_params, th))
        for name, (fn, make_args) in comp_fns.items():
            call(name, fn, *make_args(), timed=False)
        log("compiled components: " + ", ".join(f"{k} {rec['compile_s'][k]:.1f}s" for k in comp_fns))

    # ---------------------------------------------------------------- the timed round-robin loop
    for rep in range(args.reps):
        for dt, (fn, ab) in ceil_fns.items():
            for _ in range(args.ceiling_calls):
                started = (probe._usage(), time.perf_counter())
                jax.block_until_ready(fn(*ab))
                wall, cpu = time.perf_counter() - started[1], probe._usage() - started[0]
                rec["ceiling_wall"][dt].append(wall)
                rec["ceiling_cpu"][dt].append(cpu)
        for name, (fn, make_args) in comp_fns.items():
            call(name, fn, *make_args())
        for dt in inputs:
            batch, masked, t_hidden = inputs[dt]
            if "stages" in parts:
                call(f"rollout/{dt}", compiled[f"rollout/{dt}"], state0.params, prompts, prompt_valid, k_rollout)
                call(f"select/{dt}", compiled[f"select/{dt}"], batch, k_states)
                call(f"teacher/{dt}", compiled[f"teacher/{dt}"], teacher_params, batch)
            for cdt, k in configs:
                if cdt != dt:
                    continue
                if "update" in parts:
                    call(f"update/{dt}/K{k}", compiled[f"update/{dt}/K{k}"], fresh_state(), teacher_params,
                         batch, masked, t_hidden, k_order)
                if "fused" in parts:
                    call(f"fused/{dt}/K{k}", compiled[f"fused/{dt}/K{k}"], fresh_state(), teacher_params,
                         step_inputs, key)
        log(f"repetition {rep + 1}/{args.reps}: " + ", ".join(
            f"{k} {v[-1]:.1f}s" for k, v in rec["wall"].items()))
        dump()
    probe._usage()
    rec["process_peak_rss_mib"] = probe.process_peak_kb / 1024
    rec["total_s"] = time.perf_counter() - t_start
    rec["load_average_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    dump()

    section = report(rec, args, base, configs, dtypes, parts, rollout_dtype, summarize, pair_ratios,
                     markdown_table)
    print(f"## {TITLE}\n\n{section}")
    if args.json:
        Path(args.json).write_text(json.dumps(rec, indent=1, default=str))
    if args.write:
        replace_section(Path(args.write), TITLE, section)  # re-reads the file just before writing


def report(rec, args, base, configs, dtypes, parts, rollout_dtype, summarize, pair_ratios, markdown_table) -> str:
    n = args.ceiling_n
    reps = args.reps
    T = PROMPT_WIDTH + 2 * RESPONSE_LENGTH
    update_tokens = T * args.batch
    fwd_per_token = 2 * base.num_params() + 4 * base.num_layers * base.hidden_size * T
    train_flops = 3 * fwd_per_token * update_tokens
    rec["train_flops"] = train_flops
    wall, cpu = rec["wall"], rec["cpu"]
    ceil = {dt: 2 * n ** 3 / statistics.median(v) for dt, v in rec["ceiling_wall"].items()}
    ceil_cpu = {dt: 2 * n ** 3 / statistics.median(v) for dt, v in rec["ceiling_cpu"].items()}
    cs = {dt: summarize([2 * n ** 3 / t / 1e9 for t in v]) for dt, v in rec["ceiling_wall"].items()}
    e = rec["env"]
    s = lambda name: summarize(wall[name])
    loop = ["matmul ceilings"] + (["components"] if "components" in parts else [])
    if "stages" in parts:
        loop.append("per dtype: rollout, select, teacher")
    per_cfg = [p for p in ("update", "fused step") if p.split()[0] in parts]
    if per_cfg:
        loop.append("per configuration: " + " and ".join(per_cfg))
    out = [
        f"Command: `{e['command']}`  ",
        f"Date: {e['date']}; run time {rec['total_s']:.0f} s (model load {rec['load_s']:.0f} s); load average "
        f"at start {e['load_average']}, at end {rec['load_average_end']} (the benchmark's own "
        f"two threads load the machine to ~2; the cores-obtained column shows what each call got).  ",
        f"Machine: {e['cpu']}, {e['cores']}; backend {e['backend']}; Python {e['python']}, JAX {e['jax']}, "
        f"jaxlib {e['jaxlib']}, flax {e['flax']}, torch {e['torch']} (unused); XLA_FLAGS="
        f"`{e['XLA_FLAGS'] or '(unset)'}`; code at git {e.get('git', 'unknown')}.  ",
        f"Workload: SmolLM2-135M-Instruct ({base.num_params() / 1e6:.1f}M params, vocabulary {base.vocab_size} "
        f"with the mask row) as student and frozen teacher; float32 parameters and AdamW moments; compute "
        f"dtype per row (teacher in the same dtype). {args.batch} chat-templated questions per step (prompt "
        f"lengths {min(rec['prompt_lengths'])}-{max(rec['prompt_lengths'])} tokens, left-padded to "
        f"P = {PROMPT_WIDTH}); responses L = {RESPONSE_LENGTH}; block {BLOCK}; rollout `low_confidence_dynamic`, "
        f"threshold 0.9, at most 4 rounds per block, temperature 1.0, KV cache; forward KL; per-block state "
        f"selection; LossConfig.chunk_size = {args.chunk_size} (>= L means the vocabulary projection runs in "
        f"one piece: no chunk loop, no remat); remat_policy `{base.remat_policy}`, scan_layers "
        f"{base.scan_layers}. Update layout [prompt | x0 | x_t]: T = P + 2L = {T}, {update_tokens} tokens "
        f"per rollout batch (K updates of {args.batch}/K sequences).  ",
        f"Protocol: {reps} repetitions of one round-robin loop ({'; '.join(loop)}), every update / fused "
        f"call from a fresh copy of the same train state with the same key (identical work each repetition); "
        f"median (min-max). Compile = lower + compile, excluded"
        f"{'; then one untimed warm-up call' if args.warmup else ''}.",
        ""]
    for dt, ro in rec["rollout"].items():
        fwd = f", {ro['rollout_forward_tokens']:.0f} token-forwards" if "rollout_forward_tokens" in ro else ""
        out.append(f"Rollout ({dt} compute): {ro['rollout_tokens']:.0f} tokens generated (response lengths "
                   f"{ro['lengths']}), NFE {ro['rollout_nfe']:.0f}{fwd}, {ro['rollout_tokens_per_round']:.2f} "
                   f"tokens per round per sequence.  ")
    if "stages" not in parts and parts & {"update", "fused"}:
        out.append(f"(The stages were not timed in this run; the update's inputs come from one {rollout_dtype} "
                   f"rollout and the teacher of each dtype.)  ")
    out += ["", f"Matmul ceiling in the same loop ({n}x{n}, 2 n^3 / time, {len(rec['ceiling_wall']['float32'])} "
            f"calls each): float32 {cs['float32'].fmt(digits=1)} GFLOP/s; bfloat16 inputs with float32 "
            f"accumulation {cs['bfloat16'].fmt(digits=1)} GFLOP/s.", ""]

    if "stages" in parts and "update" in parts:
        rows = []
        for dt, k in configs:
            r, se, te = (wall[f"{p}/{dt}"] for p in ("rollout", "select", "teacher"))
            u = wall[f"update/{dt}/K{k}"]
            sums = [r[i] + se[i] + te[i] + u[i] for i in range(reps)]
            share = lambda x: f" **{100 * statistics.median([x[i] / sums[i] for i in range(reps)]):.0f}%**"
            row = [dt, f"{k} ({args.batch // k})"] + [summarize(x).fmt() + share(x) for x in (r, se, te, u)]
            row.append(summarize(sums).fmt())
            if "fused" in parts:
                f = wall[f"fused/{dt}/K{k}"]
                row += [summarize(f).fmt(), pair_ratios(f, sums)[1].fmt()]
            rows.append(row)
        header = ["compute", "K (minibatch)", "rollout", "select", "teacher", "update", "sum of stages"]
        if "fused" in parts:
            header += ["fused step", "fused / sum"]
        out += ["Step time split, seconds, median (min-max); bold: share of the sum of stages (median over "
                "repetitions):", "", markdown_table(header, rows), ""]
    elif "fused" in parts:
        out += ["Fused step, seconds: " + "; ".join(f"{dt} K={k}: {s(f'fused/{dt}/K{k}').fmt()}"
                                                    for dt, k in configs), ""]

    if "update" in parts:
        rows = []
        for dt, k in configs:
            name = f"update/{dt}/K{k}"
            u, uc = wall[name], cpu[name]
            mfu = summarize([train_flops / t / ceil[dt] for t in u])
            mfu_cpu = summarize([train_flops / c / ceil_cpu[dt] for c in uc])
            cores = summarize([uc[i] / u[i] for i in range(reps)])
            xla = rec["xla_flops"].get(name)
            xla = None if xla is None else xla * k  # cost analysis counts the scan body once
            row = [dt, k]
            if "stages" in parts:
                ro = rec["rollout"][dt]["rollout_tokens"]
                row.append(f"{ro / statistics.median(wall[f'rollout/{dt}']):.1f}")
                if "fused" in parts:
                    row.append(f"{ro / statistics.median(wall[f'fused/{dt}/K{k}']):.1f}")
            row += [f"{update_tokens / statistics.median(u):.0f}", f"{train_flops / statistics.median(u) / 1e9:.1f}",
                    f"**{mfu.fmt(100, 1, '%')}**", f"{100 * train_flops / statistics.median(u) / max(ceil.values()):.1f}%",
                    cores.fmt(digits=2), mfu_cpu.fmt(100, 1, "%"),
                    "-" if xla is None else f"{xla / statistics.median(u) / 1e9:.1f}"]
            rows.append(row)
        header = ["compute", "K"]
        if "stages" in parts:
            header.append("rollout tok/s (rollout stage)")
            if "fused" in parts:
                header.append("rollout tok/s (whole fused step)")
        header += ["update train tok/s", "update model GFLOP/s", "MFU vs own-dtype ceiling",
                   "MFU vs best ceiling", "cores obtained", "CPU-time MFU", "XLA-counted GFLOP/s"]
        out += ["Throughput and utilisation of the student update (forward + backward + AdamW over K minibatches):",
                "", markdown_table(header, rows), "",
                f"Model FLOPs per rollout batch: 3 x (2 x {base.num_params() / 1e6:.1f}M + 4 x {base.num_layers} x "
                f"{base.hidden_size} x {T}) x {update_tokens} tokens = {train_flops / 1e12:.3f} TFLOP. MFU: median "
                f"(min-max over repetitions, each repetition's update time over the median ceiling). XLA-counted: "
                f"`compiled.cost_analysis()['flops']` of the update stage x K (XLA counts the body of the K-update scan once) / median time (counts what is "
                f"executed: the vocabulary projection only at the L loss positions, the teacher's projection "
                f"in the loss).", ""]
    comps = [k for k in wall if k.startswith("component/")]
    if comps:
        rows = [[k.split("/", 1)[1], summarize(wall[k]).fmt(), summarize(cpu[k]).fmt(),
                 summarize([cpu[k][i] / wall[k][i] for i in range(len(wall[k]))]).fmt()] for k in comps]
        out += ["Components (diagnostics, random hidden states; optimizer = clip + AdamW + apply + logged grad "
                f"norm over all {base.num_params() / 1e6:.1f}M float32 parameters; loss head = teacher and student vocabulary "
                f"projections of {args.batch} x {RESPONSE_LENGTH} positions, forward KL, value and gradient to "
                "the student's parameters and hidden states), seconds, median (min-max):", "",
                markdown_table(["component/dtype", "wall s", "CPU s", "cores obtained"], rows), ""]
        for dtn in {k.rsplit("/", 1)[1] for k in comps}:
            a, b = f"component/loss_head/{dtn}", f"component/loss_head_no_topk/{dtn}"
            if a in wall and b in wall:
                out += [f"- loss head, {dtn}: with / without the logged top-k masses, wall time = "
                        f"{pair_ratios(wall[a], wall[b])[1].fmt()}; CPU time = {pair_ratios(cpu[a], cpu[b])[1].fmt()}", ""]
    ratio_lines = []
    ks_by_dt = {}
    for dt, k in configs:
        ks_by_dt.setdefault(dt, []).append(k)
    for part in ("update", "fused"):
        if part not in parts:
            continue
        for dt, ks in ks_by_dt.items():
            if len(ks) > 1:
                ratio_lines.append(f"- {part}, {dt}: K={ks[-1]} / K={ks[0]} time = "
                                   f"{pair_ratios(wall[f'{part}/{dt}/K{ks[-1]}'], wall[f'{part}/{dt}/K{ks[0]}'])[1].fmt()}")
        for k in sorted({k for _, k in configs}):
            if ("float32", k) in configs and ("bfloat16", k) in configs:
                ratio_lines.append(f"- {part}, K={k}: bfloat16 / float32 time = "
                                   f"{pair_ratios(wall[f'{part}/bfloat16/K{k}'], wall[f'{part}/float32/K{k}'])[1].fmt()}")
    if "stages" in parts and len(dtypes) > 1 and "float32" in dtypes and "bfloat16" in dtypes:
        for p in ("rollout", "teacher"):
            ratio_lines.append(f"- {p}: bfloat16 / float32 time = "
                               f"{pair_ratios(wall[f'{p}/bfloat16'], wall[f'{p}/float32'])[1].fmt()}")
    if ratio_lines:
        out += ["Paired ratios (per repetition, then the median; min-max):", ""] + ratio_lines + [""]
    mib = 2 ** -20
    rows = []
    for name, c in rec["compile_s"].items():
        ma = rec["memory_analysis"].get(name, {})
        hwm = [h for h in rec["hwm_kb"].get(name, []) + [rec["first_call"].get(name, {}).get("hwm_kb")] if h]
        first = rec["first_call"].get(name, {}).get("wall")
        rows.append([name, f"{c:.1f}", "-" if first is None else f"{first:.1f}",
                     f"{ma.get('argument', 0) * mib:.0f}", f"{ma.get('output', 0) * mib:.0f}",
                     f"{ma.get('temp', 0) * mib:.0f}", f"{ma.get('alias', 0) * mib:.0f}",
                     f"{max(hwm) / 1024:.0f}" if hwm else "-"])
    out += ["Compile and memory: `compiled.memory_analysis()` in MiB (alias = donated input buffers reused "
            "for outputs); RSS high-water during the function's calls (MiB; includes the resident teacher, "
            "state template, its fresh copy and the executables):", "",
            markdown_table(["function", "compile s", "first call s", "arguments", "outputs", "temporaries",
                            "alias", "RSS high-water"], rows), "",
            f"Process peak RSS (getrusage, whole run): {rec['process_peak_rss_mib']:.0f} MiB.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
