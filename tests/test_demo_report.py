"""The demo's results table: per-seed rows grouped per model, mean ± sample sd, generative PPL."""
import math

import ml_collections

from experiments.demo_report import results_markdown, summarize


def _row(name, seed, kl, nll, acc, tokens=100):
    return dict(name=name, seed=seed, tokens=tokens, train_seconds=10.0, fixed_state_kl=kl, teacher_nll=nll,
                static=dict(accuracy=acc, tokens_per_second=5.0),
                dynamic=dict(accuracy=acc, tokens_per_round=1.0, tokens_per_second=6.0),
                samples=[dict(prompt=f"p-{name}", completion=f"c-{name}-{seed}")])


def _config(seeds):
    return ml_collections.ConfigDict(dict(
        seeds=seeds, eval=dict(n_math=4, n_chat=2),
        train=dict(steps=3, batch_size=2, seed=0, curriculum=dict(end=8), rollout=dict(block_size=4)),
        sweep=dict(run="")))


def test_summarize_by_hand():
    assert summarize([None, float("nan")], 2) == "-"
    assert summarize([1.234], 2) == "1.23"
    # mean 2, sample sd of (1, 2, 3) = 1
    assert summarize([1.0, 2.0, 3.0], 2) == "2.00 ± 1.00 (3)"
    assert summarize([1.0, None, 3.0], 1) == "2.0 ± 1.4 (2)"  # sd of (1, 3) = sqrt(2)


def test_rows_of_one_model_are_averaged_over_seeds():
    rows = [_row("teacher", None, None, 0.5, 0.5),
            _row("opdlm", 0, 2.0, 1.0, 0.0), _row("opdlm", 1, 4.0, 2.0, 0.5)]
    md = results_markdown(rows, None, _config([0, 1]))
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].split(" | ")[1:5] == ["tokens used", "fixed-state KL", "teacher NLL", "gen. PPL"]
    teacher, opdlm = table[1].split(" | "), table[2].split(" | ")
    assert teacher[2] == "-" and teacher[4] == f"{math.exp(0.5):.1f}"
    assert opdlm[0] == "| opdlm" and opdlm[2] == "3.00 ± 1.41 (2)" and opdlm[3] == "1.50 ± 0.71 (2)"
    ppl = [math.exp(1.0), math.exp(2.0)]
    assert opdlm[4].startswith(f"{sum(ppl) / 2:.1f} ± ")
    assert "seeds [0, 1]" in md
    # samples come from the first seed of each model only
    assert "c-opdlm-0" in md and "c-opdlm-1" not in md


def test_one_seed_reads_plainly():
    md = results_markdown([_row("opdlm", 0, 2.0, 1.0, 0.25)], None, _config([0]))
    assert "One seed." in md and "±" not in md and "| opdlm | 100 | 2.00 | 1.00 |" in md


def test_resumed_run_metrics_read_forward(tmp_path):
    """A run resumed from its step-2 checkpoint appends steps 3-4 again: the curves read each step
    once, the resumed value, in step order (never plotted backwards)."""
    import json

    from opdlm_jax.train.metrics_writer import read_metrics

    lines = [(1, 5.0), (2, 4.0), (3, 3.0), (4, 2.5), (3, 3.1), (4, 2.4), (5, 2.0)]
    records = [dict(step=s, split="train", loss=v) for s, v in lines] + [dict(step=4, split="eval", kl=1.0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train = read_metrics(tmp_path, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in train] == [5.0, 4.0, 3.1, 2.4, 2.0]
    assert [r["split"] for r in read_metrics(tmp_path)] == ["train", "train", "train", "eval", "train", "train"]


def test_sweep_points_on_the_same_spot_share_one_label(tmp_path):
    from experiments.demo_report import sweep_point_labels, write_sweep_plot

    sweep = [{"kind": "static", "block_size": 4, "threshold": None, "accuracy": 0.1, "tokens_per_round": 0.9457},
             {"kind": "dynamic", "block_size": 4, "threshold": 0.9, "accuracy": 0.1, "tokens_per_round": 0.94571},
             {"kind": "dynamic", "block_size": 8, "threshold": 0.9, "accuracy": 0.0, "tokens_per_round": 0.93}]
    assert sweep_point_labels(sweep) == {(0.946, 0.1): ["static", "block 4, threshold 0.9"],
                                         (0.93, 0.0): ["block 8, threshold 0.9"]}
    write_sweep_plot(tmp_path, sweep, "run")
    assert (tmp_path / "threshold_sweep.png").stat().st_size > 0
