"""Training-side factors of the long conversion: does the learning rate, the rollout temperature
or the divergence move tokens per round?

    python -m experiments.main --config experiments/configs/long.py:ablations --workdir runs/long_ablations

Each variant is the long run's student (`config.train`, the shifted one) with one change
(`config.variants`: name -> dotted train-config overrides), trained from scratch for
`config.steps` RL steps, then evaluated as the long run is (`experiments.long`: held-out tokens
per round and accuracy at 0.9 / 0.7, fixed-state forward KL, teacher NLL) and probed
(`experiments.parallelism_probe`: the student's confidence per position of a fully masked block,
first-round yield). The same budget for every variant, so each row is a point of its own curve at
the same rollout-token scale; `baseline` (no change) is the long run itself up to that step.

Each variant lives in `<workdir>/<name>` (resumable like a long run; a variant whose probe.json
exists is done and skipped on a rerun). `config.reference`: a reference.json of a long run with
the same student alignment and evaluation (AR teacher, untrained student) copied into each
variant instead of evaluating them again. Writes ablations.json / ablations.md / ablations.png.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import ml_collections
import numpy as np

from experiments.demo_report import pyplot
from experiments.long import REFERENCE_FILE, run_long
from experiments.parallelism_probe import per_position, probe_run
from opdlm_jax.train.metrics_writer import read_metrics

PROBE_FILE = "probe.json"


def selected_variants(config) -> list[str]:
    names = list(config.variants.keys())
    only = [n.strip() for n in config.only.split(",") if n.strip()] if config.only else names
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ValueError(f"only={config.only!r}: no variant named {unknown}; the variants are {names}")
    return only


def variant_config(config, name: str) -> ml_collections.ConfigDict:
    """The long-run config of one variant: config.train with the variant's overrides, a fixed number
    of steps, one evaluation after the last one and no time box (a budget, not a wall clock)."""
    train = copy.deepcopy(config.train)
    for key, value in config.variants[name]:
        *parents, leaf = key.split(".")
        node = train
        try:  # only existing fields: a misspelt key is an error, not a new field
            for part in parents:
                node = node[part]
            if leaf not in node:
                raise KeyError(leaf)
            node[leaf] = value
        except (KeyError, TypeError) as e:
            raise ValueError(f"variant {name!r}: bad override {key}={value!r}: {type(e).__name__} {e}") from None
    train.update(steps=config.steps, eval_steps=(config.steps,), eval_every=0, stop_after_minutes=0.0)
    return ml_collections.ConfigDict(dict(experiment="long", train=train, eval=copy.deepcopy(config.eval)))


def validate_ablations(config) -> None:
    from opdlm_jax.train.config import validate_config

    for name in selected_variants(config):
        validate_config(variant_config(config, name).train, check_files=True)
    if config.reference and not Path(config.reference).is_file():
        raise ValueError(f"reference={config.reference!r}: no such file")


def run_ablations(config, workdir: Path) -> bool:
    """Train, evaluate and probe each selected variant; True when one stopped early (rerun to continue)."""
    for name in selected_variants(config):
        vdir = Path(workdir) / name
        if (vdir / PROBE_FILE).is_file():
            continue
        vconfig = variant_config(config, name)
        vdir.mkdir(parents=True, exist_ok=True)
        if config.reference and not (vdir / REFERENCE_FILE).is_file():
            shutil.copyfile(config.reference, vdir / REFERENCE_FILE)
        print(f"[ablations {time.strftime('%H:%M:%S')}] {name}: {dict(config.variants[name]) or 'no change'}",
              flush=True)
        if run_long(vconfig, vdir):
            return True
        probe = probe_run(vdir, n=config.probe.n, max_new_tokens=config.eval.max_new_tokens,
                          block_sizes=(vconfig.train.rollout.block_size,), thresholds=tuple(config.probe.thresholds),
                          untrained=False)
        (vdir / PROBE_FILE).write_text(json.dumps(probe, indent=1))
    write_ablations(Path(workdir), config)
    return False


def ablation_row(vdir: Path, thresholds, block_size: int) -> dict:
    """One variant's numbers: its last evaluation, its training rollouts and its math probe."""
    train = read_metrics(vdir, "train")
    evals = read_metrics(vdir, "eval")
    if not train or not evals:
        raise ValueError(f"{vdir}: no training or evaluation metrics yet")
    last_half = [r["rollout_tokens_per_round"] for r in train[len(train) // 2:]]
    probe = json.loads((vdir / PROBE_FILE).read_text())["by_domain"]["math"][f"trained, block {block_size}"]
    e = evals[-1]
    row = {"step": e["step"], "rollout_tokens": train[-1]["tokens"],
           "train_rollout_tokens_per_round": float(np.mean(last_half)),
           "fixed_state_kl": e["fixed_state_kl"], "teacher_nll": e[f"teacher_nll_at_{thresholds[0]}"],
           "student_confidence": probe["student_confidence"], "student_top_is_text": probe["student_top_is_text"],
           "teacher_confidence": probe["teacher_confidence"]}
    for t in thresholds:
        row[f"tokens_per_round_at_{t}"] = e[f"tokens_per_round_at_{t}"]
        row[f"accuracy_at_{t}"] = e[f"accuracy_at_{t}"]
    for key, value in probe.items():
        if key.startswith("first_round_tokens_at_"):
            row[key] = value
    return row


def write_ablations(workdir: Path, config) -> dict:
    thresholds = list(config.eval.thresholds)
    block = config.train.rollout.block_size
    rows = {name: dict(ablation_row(workdir / name, thresholds, block), overrides=dict(config.variants[name]))
            for name in config.variants.keys() if (workdir / name / PROBE_FILE).is_file()}
    (workdir / "ablations.json").write_text(json.dumps(rows, indent=1))
    (workdir / "ablations.md").write_text(ablations_markdown(rows, thresholds, list(config.probe.thresholds)))
    _plot(rows, workdir / "ablations.png")
    return rows


def ablations_markdown(rows: dict, thresholds, probe_thresholds) -> str:
    head = (["variant", "change", "RL steps", "rollout tokens", "train rollout tok/round (2nd half)"]
            + [f"held-out tok/round @{t}" for t in thresholds] + [f"acc @{t}" for t in thresholds]
            + ["fixed-state KL", f"teacher NLL @{thresholds[0]}", "probe conf. j=1..b", "probe top = text"]
            + [f"first-round tokens @{t}" for t in probe_thresholds])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in rows.items():
        change = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "-"
        cells = ([name, change, str(r["step"]), f"{r['rollout_tokens']:.0f}", f"{r['train_rollout_tokens_per_round']:.3f}"]
                 + [f"{r[f'tokens_per_round_at_{t}']:.3f}" for t in thresholds]
                 + [f"{r[f'accuracy_at_{t}']:.2f}" for t in thresholds]
                 + [f"{r['fixed_state_kl']:.3f}", f"{r['teacher_nll']:.3f}",
                    per_position(r["student_confidence"]), per_position(r["student_top_is_text"])]
                 + [f"{r[f'first_round_tokens_at_{t}']:.2f}" for t in probe_thresholds])
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        teacher = next(iter(rows.values()))["teacher_confidence"]
        lines += ["", f"Teacher's own next-token confidence on the probed text (j=1..b): {per_position(teacher)}. "
                  "Probe: math held-out prompts, every block of the teacher's greedy text fully masked."]
    return "\n".join(lines) + "\n"


def _plot(rows: dict, path: Path) -> None:
    """Confidence per position of a fully masked block, one line per variant, the teacher's dashed."""
    if not rows:
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in rows.items():
        j = np.arange(1, len(r["student_confidence"]) + 1)
        axes[0].plot(j, r["student_confidence"], "o-", label=name)
        axes[1].plot(j, r["student_top_is_text"], "o-", label=name)
    j = np.arange(1, len(next(iter(rows.values()))["teacher_confidence"]) + 1)
    axes[0].plot(j, next(iter(rows.values()))["teacher_confidence"], "k--", label="teacher (next token)")
    axes[0].set(xlabel="position in the fully masked block", ylabel="student confidence (top probability)")
    axes[1].set(xlabel="position in the fully masked block", ylabel="student top token = text")
    for ax in axes:
        ax.set_xticks(j)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.suptitle("Training-side factors after the same RL steps (math held-out)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
