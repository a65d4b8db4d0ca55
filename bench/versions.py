"""Before/after: the same workload on two git revisions, alternated in one run.

    .venv/bin/python -m bench.versions --base 5317aec --task step --steps float32@128,bfloat16@96
    .venv/bin/python -m bench.versions --base 5317aec --task decode --reps 5 --write BENCHMARKS.md
    .venv/bin/python -m bench.versions --base 5317aec --steps float32@128 --new-steps bfloat16@96@bfloat16

"Faster than before" needs both versions measured side by side on the same machine in the same
minutes (docs/BENCHMARKING.md: ratios from one run, never times from different runs). The base
revision is checked out into a temporary git worktree; one long-lived worker process per version
imports its own copy of `opdlm_jax` (PYTHONPATH), loads the model and compiles every workload
first (compile reported separately), then the driver asks them in turn to run one workload
(base, new, base, new, ...) and collects the seconds each reports. Ratios are base time / new
time of the same round (the speed-up), median (min-max) over rounds.

Tasks (both use only APIs that exist in both revisions):
  step    the demo's fused OPD step (experiments/configs/demo.py, SmolLM2-135M, 8 prompts, its
          length budget, K=1) per compute dtype, prompt width and optionally the teacher's stored
          dtype (`--steps float32@128,bfloat16@96@bfloat16`), each call from a fresh copy of the
          same train state with the same key; seconds = the step's wall time, outputs ready.
          `--new-steps` gives the new version other settings, paired by position with `--steps`
          (the old default against the new best: each version at its own setting).
  decode  SmolLM2-135M-Instruct float32, 8 chat questions, `--new-tokens` forced tokens
          (stop_ids=()), per batch size: AR greedy and static block diffusion (block 4, 4
          rounds); seconds = the decode call's own time (`GenerationResult.seconds`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the new version; workers import theirs from PYTHONPATH


# ----------------------------------------------------------------------------- workers


def parse_steps(text: str) -> list[tuple[str, int, str]]:
    """'float32@128,bfloat16@96@bfloat16' -> [(compute dtype, prompt width, teacher dtype or '')]."""
    out = []
    for spec in filter(None, text.split(",")):
        parts = spec.split("@")
        out.append((parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""))
    return out


def step_label(dtype: str, width: int, teacher: str) -> str:
    return f"OPD step, {dtype} compute, prompt width {width}" + (f", {teacher} teacher" if teacher else "")


def step_workloads(specs: list[tuple[str, int, str]]) -> dict:
    """label -> call returning seconds, for the demo's fused step per (compute dtype, prompt width,
    teacher's stored dtype). Builds the demo's setup itself rather than with
    `bench.common.demo_step_setup`: a worker imports the base revision's packages, whose
    `bench/common.py` may predate that helper."""
    import copy

    import jax
    import jax.numpy as jnp

    from experiments.configs.demo import get_config
    from opdlm_jax.data.chat_format import chat_format_from_config, prompt_token_ids
    from opdlm_jax.data.prompt_records import read_prompt_records
    from opdlm_jax.decoding.batching import left_pad
    from opdlm_jax.train.setup import build_setup
    from opdlm_jax.train.state import init_train_state
    from opdlm_jax.train.step import full_budget_inputs, make_opd_step

    key = jax.random.PRNGKey(0)
    built = {}

    def setup_for(dtype, teacher):
        if (dtype, teacher) not in built:
            config = copy.deepcopy(get_config("").train)
            config.dtype = dtype  # compute dtype; parameters and AdamW moments stay float32
            if teacher:  # only set when asked: older revisions have no such field
                config.teacher_param_dtype = teacher
            setup = build_setup(config)
            budget = setup.curriculum.length(config.steps, config.rollout.block_size)
            step = make_opd_step(setup.student_config, setup.teacher.config, setup.step_config(budget),
                                 setup.optimizer)
            fmt = chat_format_from_config(config)
            ids = [prompt_token_ids(setup.teacher.tokenizer, r, fmt) for r in read_prompt_records(config.data.train)]
            prompts = [p for p in ids if len(p) <= min(w for _, w, _ in specs)][:config.batch_size]
            state = jax.device_put(init_train_state(setup.student_init, setup.optimizer))
            built[dtype, teacher] = (setup, budget, step, prompts, state)
        return built[dtype, teacher]

    def make(dtype, width, teacher):
        setup, budget, step, prompts, base = setup_for(dtype, teacher)
        inputs = full_budget_inputs(*left_pad(prompts, width, setup.tokens.pad_id), budget)

        def call():
            state = jax.tree.map(jnp.copy, base)  # the step donates its state
            jax.block_until_ready(state)
            t0 = time.perf_counter()
            out = step(state, setup.teacher.params, inputs, key)
            jax.block_until_ready(out)
            return time.perf_counter() - t0
        return call

    return {step_label(*spec): make(*spec) for spec in specs}


def decode_workloads(batches: list[int], new_tokens: int) -> dict:
    import jax

    from bench.decode import QUESTIONS  # the decoding benchmark's chat questions
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.data.chat_format import chat_prompt_ids
    from opdlm_jax.decoding.api import generate_ar, generate_diffusion
    from opdlm_jax.decoding.config import SamplerConfig
    from opdlm_jax.decoding.sampling import SamplingParams

    m = load_model("smollm2-135m")
    params = jax.device_put(m.params)
    prompts = [chat_prompt_ids(m.tokenizer, q) for q in QUESTIONS]
    static = SamplerConfig(block_size=4, steps_per_block=4)

    def ar(b):
        return lambda: generate_ar(m.config, params, prompts[:b], sampling=SamplingParams(greedy=True),
                                   max_new_tokens=new_tokens, stop_ids=(), pad_id=m.pad_id,
                                   banned_ids=(m.mask_token_id,)).seconds

    def diffusion(b):
        return lambda: generate_diffusion(m.config, params, prompts[:b], sampler=static,
                                          max_new_tokens=new_tokens, stop_ids=(),
                                          mask_id=m.mask_token_id, pad_id=m.pad_id).seconds

    out = {}
    for b in batches:
        out[f"AR decode, B={b}"] = ar(b)
        out[f"static block diffusion, B={b}"] = diffusion(b)
    return out


def worker(args) -> None:
    """Compile every workload, say so, then run the ones the driver names (one per line)."""
    import opdlm_jax

    print(f"worker imports {Path(opdlm_jax.__file__).parent}", file=sys.stderr, flush=True)
    if args.task == "step":
        loads = step_workloads(parse_steps(args.steps))
    else:
        loads = decode_workloads([int(b) for b in args.batches.split(",")], args.new_tokens)
    compile_s = {}
    for label, call in loads.items():
        t0 = time.perf_counter()
        call()  # compile (+ first run)
        call()  # warm
        compile_s[label] = time.perf_counter() - t0
    print(json.dumps({"ready": list(loads), "compile_and_warm_s": compile_s}), flush=True)
    for line in sys.stdin:
        label = line.strip()
        if not label:
            break
        print(json.dumps({"seconds": loads[label]()}), flush=True)


# ----------------------------------------------------------------------------- driver


class Worker:
    def __init__(self, name: str, tree: Path, args, log: Path, steps: str):
        env = dict(os.environ, PYTHONPATH=str(tree))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--task", args.task,
               "--steps", steps, "--batches", args.batches, "--new-tokens", str(args.new_tokens)]
        self.name = name
        self.proc = subprocess.Popen(cmd, cwd=tree, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        self.ready = self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name} ended early (see its log)")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, label: str) -> float:
        self.proc.stdin.write(label + "\n")
        self.proc.stdin.flush()
        return self._read()["seconds"]

    def close(self):
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=120)


def git(*a, cwd=ROOT) -> str:
    return subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def driver(args) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.common import environment, markdown_table, pair_ratios, replace_section, summarize

    env = environment()
    base_rev = git("rev-parse", "--short", args.base)
    new_rev = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain",
                                                                                      "--untracked-files=no") else "")
    tmp = Path(tempfile.mkdtemp(prefix="opdlm_base_"))
    tree = tmp / "tree"
    git("worktree", "add", "--detach", str(tree), base_rev)
    t_start = time.perf_counter()
    workers = []
    try:
        # One at a time: two compiles side by side would slow each other.
        workers = [Worker("base", tree, args, tmp / "base.log", args.steps),
                   Worker("new", ROOT, args, tmp / "new.log", args.new_steps or args.steps)]
        # Row i: the base's i-th workload against the new version's i-th (the same label unless
        # --new-steps gives the new version other settings).
        pairs = list(zip(workers[0].ready["ready"], workers[1].ready["ready"], strict=True))
        times = {("base", b): [] for b, _ in pairs} | {("new", n): [] for _, n in pairs}
        for rep in range(args.reps):
            for pair in pairs:
                order = [0, 1] if rep % 2 == 0 else [1, 0]  # neither always runs first
                for i in order:
                    times[(workers[i].name, pair[i])].append(workers[i].run(pair[i]))
            print(f"rep {rep + 1}/{args.reps}: " + "; ".join(
                f"{b}: base {times[('base', b)][-1]:.2f}s new {times[('new', n)][-1]:.2f}s"
                for b, n in pairs), flush=True)
    finally:
        for w in workers:
            w.close()
        git("worktree", "remove", "--force", str(tree))
    rows = []
    for b_label, n_label in pairs:
        b, n = summarize(times[("base", b_label)]), summarize(times[("new", n_label)])
        _, speedup = pair_ratios(times[("base", b_label)], times[("new", n_label)])
        label = b_label if b_label == n_label else f"{b_label} -> {n_label.removeprefix('OPD step, ')}"
        rows.append((label, b.fmt(), n.fmt(), f"**{speedup.median:.2f}x** ({speedup.min:.2f}-{speedup.max:.2f})",
                     f"{workers[0].ready['compile_and_warm_s'][b_label]:.0f} / "
                     f"{workers[1].ready['compile_and_warm_s'][n_label]:.0f}"))
    table = markdown_table(("workload", f"base {base_rev}: s, median (min-max)", f"new {new_rev}: s",
                            "speed-up base/new (paired)", "compile + 2 calls s, base / new"), rows)
    body = (f"`{env['command']}`, {env['date']}, {args.reps} alternating rounds, "
            f"{(time.perf_counter() - t_start) / 60:.0f} min. CPU: {env['cpu']}, {env['cores']}; load at start "
            f"{env['load_average']}, at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}. "
            f"JAX {env['jax']}, Python {env['python']}.\n\n{table}\n")
    print(body)
    if args.write:
        replace_section(Path(args.write), args.title or f"Before and after: {args.task}", body)
    if args.json:
        Path(args.json).write_text(json.dumps({f"{k[0]}|{k[1]}": v for k, v in times.items()}, indent=1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="HEAD", help="the git revision to compare against")
    p.add_argument("--task", choices=("step", "decode"), default="step")
    p.add_argument("--steps", default="float32@96,float32@128",
                   help="step: comma-separated COMPUTE_DTYPE@PROMPT_WIDTH[@TEACHER_DTYPE] workloads")
    p.add_argument("--new-steps", default="",
                   help="step: the new version's workloads, paired by position with --steps (default: the same)")
    p.add_argument("--batches", default="1,8", help="decode: batch sizes")
    p.add_argument("--new-tokens", type=int, default=64, help="decode: forced new tokens")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--write", help="replace this section of a markdown file (BENCHMARKS.md)")
    p.add_argument("--title", help="section title (default 'Before and after: TASK')")
    p.add_argument("--json", help="raw seconds per (version, workload)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
