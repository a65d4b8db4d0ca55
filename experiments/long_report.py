"""The long conversion's outputs: curves.json, curves.md and curves.png, rebuilt from a workdir.

x is the cumulative number of rollout (response) tokens the student generated, on a log scale;
the held-out evaluations are placed at the token count of the RL step they followed. Reference
lines: the AR teacher, the untrained student, and the paper's training-rollout level of 1.4-1.5
tokens per step at block 4 (its Fig. 6, Qwen3 after ~0.076B rollout tokens).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from experiments.demo_report import pyplot
from opdlm_jax.train.metrics_writer import read_metrics

PAPER_FIG6_TOKENS_PER_STEP = (1.4, 1.5)


def curve_points(workdir: Path) -> dict:
    """Evaluations joined with the rollout-token count of their RL step, and the per-step
    training-rollout tokens per round."""
    train = read_metrics(workdir, "train")
    tokens_at = {r["step"]: r["tokens"] for r in train}
    evals = [dict(r, rollout_tokens=tokens_at[r["step"]]) for r in read_metrics(workdir, "eval")
             if r["step"] in tokens_at]
    rollouts = [dict(step=r["step"], rollout_tokens=r["tokens"], tokens_per_round=r["rollout_tokens_per_round"],
                     loss=r["loss"], step_seconds=r["step_seconds"]) for r in train]
    reference_file = Path(workdir) / "reference.json"
    reference = json.loads(reference_file.read_text()) if reference_file.is_file() else {}
    return {"evals": evals, "rollouts": rollouts, "reference": reference}


def _moving_average(values: list[float], window: int) -> np.ndarray:
    x = np.asarray(values, float)
    if len(x) < window:
        return x
    kernel = np.ones(window) / window
    head = [x[:i + 1].mean() for i in range(window - 1)]  # the first points average what there is
    return np.concatenate([head, np.convolve(x, kernel, mode="valid")])


def curves_markdown(points: dict, config) -> str:
    thresholds = list(config.eval.thresholds)
    head = (["RL step", "rollout tokens"] + [f"tok/round @{t}" for t in thresholds]
            + [f"acc @{t}" for t in thresholds] + ["fixed-state KL", "teacher NLL static", f"teacher NLL @{thresholds[0]}",
                                                     "train rollout tok/round (T=1)"])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    by_step = {r["step"]: r["tokens_per_round"] for r in points["rollouts"]}
    ref = points["reference"]
    rows = []
    if "untrained" in ref:
        rows.append((0, 0, ref["untrained"], None))
    rows += [(e["step"], e["rollout_tokens"], e, by_step.get(e["step"])) for e in points["evals"]]
    for step, tokens, e, rollout in rows:
        cells = [str(step), f"{tokens:.0f}"]
        cells += [f"{e[f'tokens_per_round_at_{t}']:.3f}" for t in thresholds]
        cells += [f"{e[f'accuracy_at_{t}']:.2f}" for t in thresholds]
        cells += [f"{e['fixed_state_kl']:.3f}", f"{e['teacher_nll_static']:.3f}", f"{e[f'teacher_nll_at_{thresholds[0]}']:.3f}",
                  "-" if rollout is None else f"{rollout:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if "teacher" in ref:
        t = ref["teacher"]
        lines += ["", f"AR teacher (greedy): accuracy {t['accuracy']:.2f}, teacher NLL of its own answers "
                      f"{t['teacher_nll']:.3f}, 1 token per forward."]
    return "\n".join(lines) + "\n"


def write_curves(workdir: Path, config) -> dict:
    """curves.json, curves.md and curves.png in workdir (nothing plotted before the first step)."""
    points = curve_points(workdir)
    (Path(workdir) / "curves.json").write_text(json.dumps(points, indent=1))
    if not points["rollouts"]:
        return points
    (Path(workdir) / "curves.md").write_text(curves_markdown(points, config))
    _plot(points, list(config.eval.thresholds), Path(workdir) / "curves.png",
          title=f"{config.train.rollout.alignment} student, block {config.train.rollout.block_size}")
    return points


def _plot(points: dict, thresholds: list[float], path: Path, title: str) -> None:
    plt = pyplot()
    evals, rollouts, ref = points["evals"], points["rollouts"], points["reference"]
    x_eval = [e["rollout_tokens"] for e in evals]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    x_roll = [r["rollout_tokens"] for r in rollouts]
    ax.plot(x_roll, [r["tokens_per_round"] for r in rollouts], color="0.8", lw=0.8)
    ax.plot(x_roll, _moving_average([r["tokens_per_round"] for r in rollouts], 10), color="0.4",
            label="training rollouts (T=1, 0.9), 10-step mean")
    for t in thresholds:
        ax.plot(x_eval, [e[f"tokens_per_round_at_{t}"] for e in evals], "o-", label=f"held-out greedy @{t}")
    ax.axhspan(*PAPER_FIG6_TOKENS_PER_STEP, color="tab:green", alpha=0.15, label="paper Fig. 6 level (1.4-1.5)")
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="AR: 1 token per forward")
    ax.set(ylabel="tokens per round")
    panels = [(axes[0, 1], "held-out fixed-state KL", [("fixed_state_kl", "fixed-state KL")], None),
              (axes[1, 0], "teacher NLL of greedy answers",
               [("teacher_nll_static", "static"), (f"teacher_nll_at_{thresholds[0]}", f"dynamic @{thresholds[0]}")],
               ref.get("teacher", {}).get("teacher_nll")),
              (axes[1, 1], "held-out math accuracy",
               [(f"accuracy_at_{t}", f"dynamic @{t}") for t in thresholds], ref.get("teacher", {}).get("accuracy"))]
    for ax_i, ylabel, series, teacher_value in panels:
        for key, label in series:
            ax_i.plot(x_eval, [e[key] for e in evals], "o-", label=label)
            if key in ref.get("untrained", {}):
                ax_i.axhline(ref["untrained"][key], color="0.6", ls=":", lw=1)
        if teacher_value is not None:
            ax_i.axhline(teacher_value, color="k", ls="--", lw=0.8, label="AR teacher")
        ax_i.set(ylabel=ylabel)
    for ax_i in axes.flat:
        ax_i.set_xscale("log")
        ax_i.set_xlabel("rollout tokens (log scale); dotted: untrained student")
        ax_i.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare_students(points_by_name: dict[str, dict], path: Path, thresholds: list[float] = (0.9, 0.7)) -> None:
    """One figure for several long runs (e.g. the shifted and the same-position student): held-out
    tokens per round at each threshold with the training rollouts' 10-step mean, fixed-state KL and
    the teacher NLL of greedy answers, all against log-scale rollout tokens; dotted: untrained."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    panels = [(axes[0, 0], f"tokens_per_round_at_{thresholds[0]}", f"held-out tokens per round @{thresholds[0]}"),
              (axes[0, 1], f"tokens_per_round_at_{thresholds[1]}", f"held-out tokens per round @{thresholds[1]}"),
              (axes[1, 0], "fixed_state_kl", "held-out fixed-state KL"),
              (axes[1, 1], f"teacher_nll_at_{thresholds[0]}", f"teacher NLL of greedy answers @{thresholds[0]}")]
    for i, (name, points) in enumerate(points_by_name.items()):
        color = f"C{i}"
        x = [e["rollout_tokens"] for e in points["evals"]]
        for ax, key, _ in panels:
            ax.plot(x, [e[key] for e in points["evals"]], "o-", color=color, label=name)
            untrained = points["reference"].get("untrained", {}).get(key)
            if untrained is not None:
                ax.axhline(untrained, color=color, ls=":", lw=1)
        rollouts = points["rollouts"]
        axes[0, 0].plot([r["rollout_tokens"] for r in rollouts],
                        _moving_average([r["tokens_per_round"] for r in rollouts], 10), color=color, lw=0.8,
                        alpha=0.6, label=f"{name}: training rollouts (T=1), 10-step mean")
    for ax in axes[0]:
        ax.axhspan(*PAPER_FIG6_TOKENS_PER_STEP, color="tab:green", alpha=0.15, label="paper Fig. 6 level (1.4-1.5)")
        ax.axhline(1.0, color="k", lw=0.8, ls="--", label="AR: 1 token per forward")
    teacher = next(iter(points_by_name.values()))["reference"].get("teacher", {}).get("teacher_nll")
    if teacher is not None:
        axes[1, 1].axhline(teacher, color="k", ls="--", lw=0.8, label="AR teacher")
    for ax, _, ylabel in panels:
        ax.set(xscale="log", ylabel=ylabel, xlabel="rollout tokens (log scale); dotted: untrained")
        ax.legend(fontsize=7)
    fig.suptitle("Long conversion of SmolLM2-135M: the students side by side")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Plot several long runs' curves side by side.")
    p.add_argument("--compare", nargs="+", required=True, metavar="NAME=CURVES_JSON",
                   help="e.g. shifted=experiments/results/long/shifted/curves.json")
    p.add_argument("--out", required=True, help="the PNG to write")
    args = p.parse_args(argv)
    points = {}
    for item in args.compare:
        name, sep, file = item.partition("=")
        if not sep or not Path(file).is_file():
            raise SystemExit(f"--compare {item!r}: expected NAME=an existing curves.json")
        points[name] = json.loads(Path(file).read_text())
    compare_students(points, Path(args.out))


if __name__ == "__main__":
    main()
