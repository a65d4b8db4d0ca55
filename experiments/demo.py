"""The embedded-default demo: convert SmolLM2-135M-Instruct on this CPU and compare methods.

Trains, at the same budget (RL steps x prompts x response length), the OPDLM student (the
reference's same-position alignment, and the shifted alignment as an extra row) and the
baselines of Table 4 (OPDLM_off, Off-Policy) and Table 10 (SFT with the BD3LM loss); then evaluates
the AR teacher, the untrained students and every trained student. Writes results.json,
results.md, training-curve and threshold-sweep plots into the workdir and prints the table.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import jax
import numpy as np

from experiments.data.prompts import load_prompt_file
from experiments.evaluation import build_eval_set, evaluate, threshold_sweep
from opdlm_jax.loading import load_model
from opdlm_jax.train.loop import build_setup, train
from opdlm_jax.train.metrics_writer import read_metrics


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_demo(config, workdir: Path) -> dict:
    t_start = time.perf_counter()
    jax.config.update("jax_compilation_cache_dir", str(Path(workdir) / "jax_cache"))
    ev = config.eval
    teacher = load_model(config.train.teacher, dtype=config.train.dtype, scan_layers=config.train.scan_layers)
    teacher.params = jax.device_put(teacher.params)
    _log(f"teacher loaded: {config.train.teacher} ({teacher.config.num_params() / 1e6:.0f}M params)")
    heldout = load_prompt_file(config.train.data.heldout)
    evalset = build_eval_set(teacher, heldout, ev.n_math, ev.n_chat, ev.max_new_tokens)
    common = dict(block_size=config.train.rollout.block_size, max_new_tokens=ev.max_new_tokens)
    rows = []

    def add_row(name, method, model_params, mode, alignment, tokens, seconds):
        t0 = time.perf_counter()
        result = evaluate(teacher, teacher, model_params, evalset, mode=mode,
                          alignment="same_position" if mode == "ar" else alignment, **common)
        rows.append(dict(name=name, method=method, alignment=alignment, tokens=tokens,
                         train_seconds=seconds, **result))
        _log(f"evaluated {name} in {time.perf_counter() - t0:.0f}s: static acc "
             f"{result['static']['accuracy']:.2f}, teacher NLL {result['teacher_nll']:.2f}, "
             f"fixed-state KL {result.get('fixed_state_kl', float('nan')):.2f}")
        _write(workdir, rows, None, config)

    add_row("AR teacher", "teacher", teacher.params, "ar", "-", 0, 0.0)
    for alignment in sorted({r.alignment for r in config.runs}):
        add_row(f"untrained student ({alignment})", "init", teacher.params, "diffusion", alignment, 0, 0.0)
    trained = {}
    for run in config.runs:
        c = copy.deepcopy(config.train)
        c.method, c.rollout.alignment = run.method, run.alignment
        run_dir = Path(workdir) / run.name
        _log(f"training {run.name}: method={run.method} alignment={run.alignment} steps={c.steps}")
        t0 = time.perf_counter()
        out = train(c, run_dir, setup=build_setup(c, teacher=teacher))
        seconds = time.perf_counter() - t0
        trained[run.name] = out["state"].params
        add_row(run.name, run.method, out["state"].params, "diffusion", run.alignment,
                int(out["metrics"].get("tokens", 0)), seconds)
    sweep = None
    if config.sweep.run and config.sweep.run in trained:
        run = next(r for r in config.runs if r.name == config.sweep.run)
        sweep = threshold_sweep(teacher, trained[run.name], evalset, alignment=run.alignment,
                                thresholds=list(config.sweep.thresholds), block_sizes=list(config.sweep.block_sizes),
                                max_new_tokens=ev.max_new_tokens)
    _write(workdir, rows, sweep, config)
    _plots(workdir, config, sweep)
    _log(f"done in {(time.perf_counter() - t_start) / 60:.1f} min; results in {workdir}/results.md")
    print((Path(workdir) / "results.md").read_text())
    return {"rows": rows, "sweep": sweep}


def _fmt(x, digits=2):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _write(workdir: Path, rows: list, sweep, config) -> None:
    (Path(workdir) / "results.json").write_text(json.dumps({"rows": rows, "sweep": sweep}, indent=1, default=float))
    ev = config.eval
    lines = [f"# Demo results: SmolLM2-135M-Instruct, {config.train.steps} RL steps x {config.train.batch_size} "
             f"prompts, responses up to {config.train.curriculum.end} tokens, block {config.train.rollout.block_size}",
             "", f"Held-out: {ev.n_math} math prompts (greedy; static = 1 token/round, dynamic = threshold 0.9), "
             f"{ev.n_chat} chat/continuation prompts (fixed-state KL on the teacher's answers, teacher NLL of "
             "the model's greedy answers). One seed.", "",
             "| model | tokens used | fixed-state KL | teacher NLL | acc static | acc dynamic | tok/round (dyn) "
             "| tok/s static | tok/s dynamic | train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        dyn = r.get("dynamic", {})
        lines.append(f"| {r['name']} | {r['tokens']} | {_fmt(r.get('fixed_state_kl'))} | {_fmt(r['teacher_nll'])} | "
                     f"{_fmt(r['static']['accuracy'])} | {_fmt(dyn.get('accuracy'))} | "
                     f"{_fmt(dyn.get('tokens_per_round'))} | {_fmt(r['static']['tokens_per_second'], 1)} | "
                     f"{_fmt(dyn.get('tokens_per_second'), 1)} | {_fmt(r['train_seconds'], 0)} |")
    lines += ["", "## Samples (greedy, static)", ""]
    for r in rows:
        for s in r["samples"]:
            lines.append(f"- **{r['name']}** — {s['prompt']!r} → {s['completion'][:160]!r}")
    if sweep:
        lines += ["", f"## Threshold sweep ({config.sweep.run})", "", "| decoding | block | accuracy | tok/round | tok/s |",
                  "|---|---|---|---|---|"]
        for s in sweep:
            name = "static" if s["kind"] == "static" else f"dynamic {s['threshold']}"
            lines.append(f"| {name} | {s['block_size']} | {_fmt(s['accuracy'])} | {_fmt(s['tokens_per_round'])} | "
                         f"{_fmt(s['tokens_per_second'], 1)} |")
    (Path(workdir) / "results.md").write_text("\n".join(lines) + "\n")


def _plots(workdir: Path, config, sweep) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in config.runs:
        m = read_metrics(Path(workdir) / run.name, "train")
        if m:
            axes[0].plot([r["step"] for r in m], [r["loss"] for r in m], label=run.name)
            axes[1].plot([r["step"] for r in m], [r["response_length"] for r in m], label=run.name)
    axes[0].set(xlabel="RL step", ylabel="training loss (KL or BD3LM CE)", title="training loss")
    axes[1].set(xlabel="RL step", ylabel="mean response length", title="rollout length")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(Path(workdir) / "training_curves.png", dpi=110)
    plt.close(fig)
    if sweep:
        fig, ax = plt.subplots(figsize=(5, 4))
        for s in sweep:
            label = "static" if s["kind"] == "static" else f"b={s['block_size']} t={s['threshold']}"
            ax.scatter(s["tokens_per_round"], s["accuracy"])
            ax.annotate(label, (s["tokens_per_round"], s["accuracy"]), fontsize=7)
        ax.set(xlabel="tokens per round", ylabel="held-out math accuracy", title=f"parallelism ({config.sweep.run})")
        fig.tight_layout()
        fig.savefig(Path(workdir) / "threshold_sweep.png", dpi=110)
        plt.close(fig)
