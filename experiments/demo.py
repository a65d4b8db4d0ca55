"""The embedded-default demo: convert SmolLM2-135M-Instruct on this CPU and compare methods.

Trains, at the same budget (RL steps x prompts x response length), the OPDLM student (the
reference's same-position alignment, and the shifted alignment as an extra row) and the
baselines of Table 4 (OPDLM_off, Off-Policy) and Table 10 (SFT with the BD3LM loss); then evaluates
the AR teacher, the untrained students and every trained student. Writes results.json,
results.md, training-curve, summary and threshold-sweep plots into the workdir and prints the table.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import jax

from experiments.data.prompts import ANSWER_DOMAINS
from experiments.demo_report import seeds_of, write_plots, write_results, write_summary_plot
from experiments.evaluation import build_eval_set, evaluate, threshold_sweep
from opdlm_jax.data.chat_format import chat_format_from_config
from opdlm_jax.data.prompt_records import read_prompt_records
from opdlm_jax.train.loop import train
from opdlm_jax.train.setup import build_setup, load_models, loss_config
from opdlm_jax.train.config import ConfigError, validate_config


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def plan_runs(config) -> list[tuple[str, object, object]]:
    """(label, run, trainer config) for every run x seed, each validated before anything starts."""
    seeds = seeds_of(config)
    planned = []
    for run in config.runs:
        for seed in seeds:
            c = copy.deepcopy(config.train)
            c.method, c.rollout.alignment, c.seed = run.method, run.alignment, seed
            label = run.name if len(seeds) == 1 else f"{run.name}-seed{seed}"
            try:
                validate_config(c)
            except ConfigError as e:
                raise ConfigError(f"demo run {label}: {e}") from None
            planned.append((label, run, c))
    return planned


def run_demo(config, workdir: Path) -> dict:
    t_start = time.perf_counter()
    planned = plan_runs(config)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    ev = config.eval
    teacher, _, _ = load_models(config.train)  # float32 master weights (param_dtype), compute in dtype
    teacher.params = jax.device_put(teacher.params)
    _log(f"teacher loaded: {config.train.teacher} ({teacher.config.num_params() / 1e6:.0f}M params)")
    heldout = read_prompt_records(config.train.data.heldout, require_answer_for=ANSWER_DOMAINS)
    evalset = build_eval_set(teacher, heldout, ev.n_math, ev.n_chat, ev.max_new_tokens,
                             chat_format_from_config(config.train))  # as the runs train
    common = dict(block_size=config.train.rollout.block_size, max_new_tokens=ev.max_new_tokens)
    rows = []

    def loss_for(alignment: str):
        c = copy.deepcopy(config.train)
        c.rollout.alignment = alignment
        return loss_config(c, teacher.config)

    def add_row(name, method, model_params, mode, alignment, tokens, seconds, seed=None):
        t0 = time.perf_counter()
        alignment_used = "same_position" if mode == "ar" else alignment
        result = evaluate(teacher, teacher, model_params, evalset, mode=mode, alignment=alignment_used,
                          loss=loss_for(alignment_used), **common)
        rows.append(dict(name=name, method=method, alignment=alignment, seed=seed, tokens=tokens,
                         train_seconds=seconds, **result))
        which = name if seed is None else f"{name} (seed {seed})"
        _log(f"evaluated {which} in {time.perf_counter() - t0:.0f}s: static acc "
             f"{result['static']['accuracy']:.2f}, teacher NLL {result['teacher_nll']:.2f}, "
             f"fixed-state KL {result.get('fixed_state_kl', float('nan')):.2f}")
        write_results(workdir, rows, None, config)

    add_row("AR teacher", "teacher", teacher.params, "ar", "-", 0, 0.0)
    for alignment in sorted({r.alignment for r in config.runs}):
        add_row(f"untrained student ({alignment})", "init", teacher.params, "diffusion", alignment, 0, 0.0)
    trained, run_dirs = {}, {}
    for label, run, c in planned:
        run_dirs[label] = Path(workdir) / label
        _log(f"training {label}: method={run.method} alignment={run.alignment} seed={c.seed} steps={c.steps}")
        t0 = time.perf_counter()
        out = train(c, run_dirs[label], setup=build_setup(c, teacher=teacher))
        seconds = time.perf_counter() - t0
        trained.setdefault(run.name, out["state"].params)  # the first seed's, for the sweep
        add_row(run.name, run.method, out["state"].params, "diffusion", run.alignment,
                int(out["metrics"].get("tokens", 0)), seconds, c.seed)
    sweep = None
    if config.sweep.run and config.sweep.run in trained:
        run = next(r for r in config.runs if r.name == config.sweep.run)
        _log(f"threshold sweep of {run.name}")
        sweep = threshold_sweep(teacher, trained[run.name], evalset, alignment=run.alignment,
                                thresholds=list(config.sweep.thresholds), block_sizes=list(config.sweep.block_sizes),
                                max_new_tokens=ev.max_new_tokens)
    write_results(workdir, rows, sweep, config)
    write_plots(workdir, run_dirs, sweep, config.sweep.run)
    write_summary_plot(workdir, rows)
    _log(f"done in {(time.perf_counter() - t_start) / 60:.1f} min; results in {workdir}/results.md")
    print((Path(workdir) / "results.md").read_text())
    return {"rows": rows, "sweep": sweep}

