"""The demo's outputs: results.json, results.md (rows averaged over seeds) and the plots.

One row per (model, seed) is kept in results.json; results.md groups the rows of one model and
shows `mean ± sample sd (n)` when it has more than one seed, so the spread is visible next to
the effect. Generative perplexity is exp(teacher NLL of the model's greedy answers).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from experiments.evaluation import sweep_setting_name
from opdlm_jax.train.metrics_writer import read_metrics

# (header, how to read the value from a row, digits)
COLUMNS: list[tuple[str, Callable[[dict], float | None], int]] = [
    ("tokens used", lambda r: r["tokens"], 0),
    ("fixed-state KL", lambda r: r.get("fixed_state_kl"), 2),
    ("teacher NLL", lambda r: r["teacher_nll"], 2),
    ("gen. PPL", lambda r: math.exp(r["teacher_nll"]), 1),
    ("acc static", lambda r: r["static"]["accuracy"], 2),
    ("acc dynamic", lambda r: r.get("dynamic", {}).get("accuracy"), 2),
    ("tok/round (dyn)", lambda r: r.get("dynamic", {}).get("tokens_per_round"), 2),
    ("tok/s static", lambda r: r["static"]["tokens_per_second"], 1),
    ("tok/s dynamic", lambda r: r.get("dynamic", {}).get("tokens_per_second"), 1),
    ("train s", lambda r: r["train_seconds"], 0),
]


def seeds_of(config) -> list:
    """The demo's training seeds (`config.seeds`; the trainer's one seed when absent)."""
    return list(config.get("seeds", [config.train.seed]))


def _present(values: Sequence[float | None]) -> list[float]:
    """The values that were measured (None and NaN mean 'not measured for this row')."""
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def summarize(values: Sequence[float | None], digits: int) -> str:
    """'-' when missing, the value for one seed, 'mean ± sd (n)' (sample sd) for several."""
    xs = _present(values)
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{np.mean(xs):.{digits}f} ± {np.std(xs, ddof=1):.{digits}f} ({len(xs)})"


def group_rows(rows: Sequence[dict]) -> list[tuple[str, list[dict]]]:
    """Rows of the same model (name) together, in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["name"], []).append(r)
    return list(groups.items())


def results_markdown(rows: Sequence[dict], sweep: list | None, config) -> str:
    ev, train = config.eval, config.train
    seeds = seeds_of(config)
    seed_text = "One seed." if len(seeds) == 1 else \
        f"Trained rows over seeds {seeds}: mean ± sample sd (number of seeds)."
    lines = [f"# Demo results: SmolLM2-135M-Instruct, {train.steps} RL steps x {train.batch_size} prompts, "
             f"responses up to {train.curriculum.end} tokens, block {train.rollout.block_size}", "",
             f"Held-out: {ev.n_math} math prompts (greedy; static = 1 token/round, dynamic = threshold 0.9), "
             f"{ev.n_chat} chat/continuation prompts (fixed-state KL on the teacher's answers, teacher NLL and "
             f"generative perplexity of the model's greedy answers). {seed_text}", "",
             "| model | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, group in group_rows(rows):
        lines.append(f"| {name} | " + " | ".join(summarize([get(r) for r in group], d) for _, get, d in COLUMNS)
                     + " |")
    lines += ["", "## Samples (greedy, static; first seed)", ""]
    for name, group in group_rows(rows):
        for s in group[0]["samples"]:
            lines.append(f"- **{name}** — {s['prompt']!r} → {s['completion'][:160]!r}")
    if sweep:
        lines += ["", f"## Threshold sweep ({config.sweep.run}, first seed)", "",
                  "| decoding | block | accuracy | tok/round | tok/s |", "|---|---|---|---|---|"]
        for s in sweep:
            lines.append(f"| {sweep_setting_name(s)} | {s['block_size']} | {s['accuracy']:.2f} | {s['tokens_per_round']:.2f} | "
                         f"{s['tokens_per_second']:.1f} |")
    return "\n".join(lines) + "\n"


def write_results(workdir: Path, rows: Sequence[dict], sweep: list | None, config) -> None:
    workdir = Path(workdir)
    (workdir / "results.json").write_text(json.dumps({"rows": list(rows), "sweep": sweep}, indent=1, default=float))
    (workdir / "results.md").write_text(results_markdown(rows, sweep, config))


def pyplot():
    """matplotlib.pyplot on the file-only backend (the demo runs headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(workdir: Path, run_dirs: dict[str, Path], sweep: list | None, sweep_name: str) -> None:
    """training_curves.png (loss and rollout length per run) and threshold_sweep.png."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, run_dir in run_dirs.items():
        m = read_metrics(run_dir, "train")
        if m:
            axes[0].plot([r["step"] for r in m], [r["loss"] for r in m], label=label)
            axes[1].plot([r["step"] for r in m], [r["response_length"] for r in m], label=label)
    axes[0].set(xlabel="RL step", ylabel="training loss (KL or BD3LM CE)", title="training loss")
    axes[1].set(xlabel="RL step", ylabel="mean response length", title="rollout length")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(Path(workdir) / "training_curves.png", dpi=110)
    plt.close(fig)
    if sweep:
        write_sweep_plot(workdir, sweep, sweep_name)


def sweep_point_labels(sweep: Sequence[dict]) -> dict[tuple[float, float], list[str]]:
    """(tokens per round, accuracy) -> the settings at that point: settings that land on the same
    point share one label instead of printing over each other."""
    points: dict[tuple[float, float], list[str]] = {}
    for s in sweep:
        label = "static" if s["kind"] == "static" else f"block {s['block_size']}, threshold {s['threshold']}"
        points.setdefault((round(s["tokens_per_round"], 3), round(s["accuracy"], 3)), []).append(label)
    return points


def write_sweep_plot(workdir: Path, sweep: Sequence[dict], sweep_name: str) -> None:
    """threshold_sweep.png: accuracy against tokens per round, one labelled point per setting."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    points = sweep_point_labels(sweep)
    middle = (min(x for x, _ in points) + max(x for x, _ in points)) / 2
    for (x, y), labels in points.items():
        right = x > middle  # labels extend towards the middle, so none leaves the axes
        ax.scatter(x, y)
        ax.annotate("\n".join(labels), (x, y), xytext=(-6 if right else 6, 6), textcoords="offset points",
                    fontsize=7, va="bottom", ha="right" if right else "left")
    ax.margins(x=0.3, y=0.3)  # room for the labels inside the axes
    ax.set(xlabel="tokens per round", ylabel="held-out math accuracy", title=f"parallelism ({sweep_name})")
    fig.tight_layout()
    fig.savefig(Path(workdir) / "threshold_sweep.png", dpi=110)
    plt.close(fig)


def write_summary_plot(workdir: Path, rows: Sequence[dict]) -> None:
    """summary.png: fixed-state KL and teacher NLL per model, mean with sample-sd error bars."""
    plt = pyplot()
    groups = group_rows(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (title, key) in zip(axes, (("held-out forward KL, fixed states", "fixed_state_kl"),
                                       ("teacher NLL of own greedy answers", "teacher_nll"))):
        names, means, sds = [], [], []
        for name, group in groups:
            xs = _present([r.get(key) for r in group])
            if xs:
                names.append(name)
                means.append(np.mean(xs))
                sds.append(np.std(xs, ddof=1) if len(xs) > 1 else 0.0)
        ax.barh(range(len(names)), means, xerr=sds, capsize=3)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set(title=title, xlabel="nats per token (lower is closer to the teacher)")
    fig.tight_layout()
    fig.savefig(Path(workdir) / "summary.png", dpi=110)
    plt.close(fig)
