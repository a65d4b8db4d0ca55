"""Every experiment config parses, and each runs one toy step (a tiny random teacher)."""
from pathlib import Path

import numpy as np
import pytest

from opdlm_jax.errors import BadInput
from opdlm_jax.train.config import ConfigError, validate_config
from tests_configs_loader import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
TRAIN_CONFIGS = {  # file: (args that must parse, the arg run for one toy step)
    "table1.py": (["qwen3-4b", "qwen3-8b,/models/Qwen3-8B", "toy"], "toy"),
    "table6_small.py": (["qwen3-0.6b", "qwen3-1.7b,/m", "toy"], "toy"),
    "table4_ablation.py": (["off_policy", "opdlm_off", "opdlm", "off_policy,toy"], "off_policy,toy"),
    "table10_sft.py": (["sft", "opdlm", "sft,toy"], "sft,toy"),
}


def test_every_config_file_is_covered():
    files = {p.name for p in CONFIGS.glob("*.py")} - {"__init__.py", "common.py"}
    assert files == set(TRAIN_CONFIGS) | {"demo.py", "fig3_parallelism.py", "long.py"}


@pytest.mark.parametrize("name", sorted(TRAIN_CONFIGS))
def test_configs_parse_and_validate(name):
    for arg in TRAIN_CONFIGS[name][0]:
        config = load_config(CONFIGS / name, arg)
        validate_config(config)
        assert config.rollout.block_size == 4 and config.steps >= 1
    recipe = load_config(CONFIGS / name, TRAIN_CONFIGS[name][0][0])
    if name != "table4_ablation.py" or recipe.method == "opdlm":
        assert recipe.batch_size == 128 and recipe.minibatch_size == 8 and recipe.rollout.threshold == 0.9


def test_invalid_combinations_are_named():
    config = load_config(CONFIGS / "table1.py", "toy")
    config.curriculum.end = 30
    with pytest.raises(ConfigError, match="block_size=4 does not divide curriculum.end=30"):
        validate_config(config)
    config = load_config(CONFIGS / "table1.py", "toy")
    config.minibatch_size = 3
    with pytest.raises(ConfigError, match="minibatch_size=3 does not divide batch_size=8"):
        validate_config(config)


@pytest.fixture(scope="module")
def tiny_teacher(tiny_assets):
    return tiny_assets[0]


def _toy(config, teacher):
    config.teacher = str(teacher)
    config.steps, config.batch_size, config.minibatch_size = 1, 2, 2
    config.data.max_prompt_tokens = 512
    config.curriculum.update(start=8, end=8, bucket=8)
    config.tensorboard = False
    config.async_checkpoints = False
    return config


@pytest.mark.parametrize("name", sorted(TRAIN_CONFIGS))
def test_each_config_runs_one_toy_step(name, tiny_teacher, tmp_path):
    from opdlm_jax.train.loop import train

    config = _toy(load_config(CONFIGS / name, TRAIN_CONFIGS[name][1]), tiny_teacher)
    out = train(config, tmp_path / "run", progress=False)
    assert out["metrics"]["rl_step"] == 1 and out["metrics"]["loss"] >= -1e-6
    assert (tmp_path / "run" / "metrics.jsonl").exists() and (tmp_path / "run" / "checkpoints" / "1").is_dir()


def test_demo_and_sweep_configs_run_at_toy_size(tiny_teacher, tmp_path):
    from experiments import runners

    demo = load_config(CONFIGS / "demo.py", "quick")
    _toy(demo.train, tiny_teacher)
    demo.runs = demo.runs[:1]
    demo.seeds = [0, 1]
    demo.eval.update(n_math=2, n_chat=2, max_new_tokens=8)
    runners.run("demo", demo, tmp_path / "demo")
    results = (tmp_path / "demo" / "results.md").read_text()
    assert "untrained student" in results and "(2) |" in results  # the trained row over 2 seeds
    assert (tmp_path / "demo" / "training_curves.png").exists() and (tmp_path / "demo" / "summary.png").exists()
    for seed in (0, 1):
        assert (tmp_path / "demo" / f"{demo.runs[0].name}-seed{seed}" / "metrics.jsonl").exists()
    assert [load_config(CONFIGS / "demo.py", a).seeds for a in ("", "quick", "seeds")] == [[0], [0], [0, 1, 2]]
    with pytest.raises(ValueError, match="demo.py takes"):
        load_config(CONFIGS / "demo.py", "fast")

    sweep = load_config(CONFIGS / "fig3_parallelism.py", "toy")
    sweep.run_dir = str(tmp_path / "demo" / f"{demo.runs[0].name}-seed0")
    sweep.n_math, sweep.max_new_tokens, sweep.block_sizes = 2, 16, [4, 8]
    runners.run("sweep", sweep, tmp_path / "demo")
    assert (tmp_path / "demo" / "sweep.json").exists()


def test_long_conversion_runs_at_toy_size_and_writes_its_curves(tiny_teacher, tmp_path):
    """experiments/long.py: reference (teacher, untrained student), held-out evaluations during
    training, the time box (stopped early = True) and the continuation, curves.{json,md,png}."""
    import json

    from experiments import runners

    for arg in ("shifted", "same_position"):
        full = load_config(CONFIGS / "long.py", arg)
        validate_config(full.train)
        assert full.train.rollout.alignment == arg and full.train.stop_after_minutes == 90
        assert not full.train.checkpoint_params_only  # exact resume across the time boxes
    with pytest.raises(ValueError, match="long.py takes"):
        load_config(CONFIGS / "long.py", "long")
    config = load_config(CONFIGS / "long.py", "smoke")
    _toy(config.train, tiny_teacher)
    config.train.update(steps=2, eval_steps=(1,), stop_after_minutes=1e-9)
    workdir = tmp_path / "long"
    assert runners.run("long", config, workdir) is True  # stopped by the time box after step 1
    config.train.stop_after_minutes = 0.0
    assert runners.run("long", config, workdir) is False  # continued to the end
    reference = json.loads((workdir / "reference.json").read_text())
    assert set(reference) == {"teacher", "untrained"} and reference["teacher"]["tokens_per_round"] == 1.0
    curves = json.loads((workdir / "curves.json").read_text())
    assert [e["step"] for e in curves["evals"]] == [1, 2] and [r["step"] for r in curves["rollouts"]] == [1, 2]
    for e in curves["evals"]:
        for key in ("tokens_per_round_at_0.9", "tokens_per_round_at_0.7", "accuracy_at_0.9", "fixed_state_kl",
                    "teacher_nll_static", "teacher_nll_at_0.9"):
            assert np.isfinite(e[key]), key
        assert e["rollout_tokens"] == next(r["rollout_tokens"] for r in curves["rollouts"] if r["step"] == e["step"])
    table = (workdir / "curves.md").read_text().splitlines()
    assert [row.split("|")[1].strip() for row in table[2:5]] == ["0", "1", "2"]  # untrained, then each eval
    assert (workdir / "curves.png").stat().st_size > 10_000
    from experiments import long_report

    long_report.main(["--compare", f"a={workdir / 'curves.json'}", f"b={workdir / 'curves.json'}",
                      "--out", str(tmp_path / "students.png")])
    assert (tmp_path / "students.png").stat().st_size > 10_000
    with pytest.raises(SystemExit, match="expected NAME=an existing curves.json"):
        long_report.main(["--compare", str(workdir / "curves.json"), "--out", str(tmp_path / "x.png")])


def test_demo_runs_are_validated_before_anything_starts():
    from experiments.demo import plan_runs

    for arg, n in (("", 5), ("quick", 2), ("seeds", 6), ("seeds_baselines", 6)):
        planned = plan_runs(load_config(CONFIGS / "demo.py", arg))
        assert len(planned) == n and len({label for label, _, _ in planned}) == n
    demo = load_config(CONFIGS / "demo.py", "seeds")
    assert [(label, c.seed) for label, _, c in plan_runs(demo)][:3] == [
        ("opdlm_same_position-seed0", 0), ("opdlm_same_position-seed1", 1), ("opdlm_same_position-seed2", 2)]
    demo.train.curriculum.end = 30
    with pytest.raises(ConfigError, match="demo run opdlm_same_position-seed0: .*does not divide curriculum.end=30"):
        plan_runs(demo)


def test_long_ablations_train_each_variant_evaluate_probe_and_tabulate(tiny_teacher, tmp_path):
    """experiments/long_ablations.py at toy size: each variant's overrides reach its run, every
    variant's fixed-state KL is the forward KL (so rows compare across divergences), a finished
    variant is skipped on a rerun, and the table and plot are written."""
    import json

    from experiments import runners
    from experiments.long_ablations import variant_config

    config = load_config(CONFIGS / "long.py", "ablations")
    assert config.steps == 40 and set(config.variants) == {"baseline", "reverse_kl", "lr_4x", "temperature_06"}
    for name in config.variants:
        validate_config(variant_config(config, name).train)
    assert variant_config(config, "lr_4x").train.optimizer.learning_rate == 2e-4
    bad = load_config(CONFIGS / "long.py", "ablations")
    bad.variants.typo = (("optimizer.learnig_rate", 1e-4),)
    with pytest.raises(ValueError, match="variant 'typo': bad override"):
        variant_config(bad, "typo")
    bad.only = "baseline,nope"
    with pytest.raises(BadInput, match="no variant named"):
        runners.validate("long_ablations", bad)

    smoke = load_config(CONFIGS / "long.py", "smoke")
    config.train, config.eval = _toy(smoke.train, tiny_teacher), smoke.eval
    config.update(steps=1, only="baseline,reverse_kl", reference="")
    config.probe.n = 2
    workdir = tmp_path / "ablations"
    assert runners.run("long_ablations", config, workdir) is False
    run_config = json.loads((workdir / "reverse_kl" / "config.json").read_text())
    assert run_config["loss"]["divergence"] == "reverse_kl"  # the trainer's config.json of the variant
    untrained = [json.loads((workdir / n / "reference.json").read_text())["untrained"]["fixed_state_kl"]
                 for n in ("baseline", "reverse_kl")]
    assert untrained[0] == pytest.approx(untrained[1], rel=1e-6)  # the same student scored by the same KL
    rows = json.loads((workdir / "ablations.json").read_text())
    assert list(rows) == ["baseline", "reverse_kl"] and rows["reverse_kl"]["overrides"] == {
        "loss.divergence": "reverse_kl"}
    for r in rows.values():
        assert r["step"] == 1 and len(r["student_confidence"]) == 4
        for key in ("tokens_per_round_at_0.9", "fixed_state_kl", "first_round_tokens_at_0.9",
                    "train_rollout_tokens_per_round"):
            assert np.isfinite(r[key]), key
    assert rows["baseline"]["fixed_state_kl"] != rows["reverse_kl"]["fixed_state_kl"]  # trained differently
    table = (workdir / "ablations.md").read_text().splitlines()
    assert [row.split("|")[1].strip() for row in table[2:4]] == ["baseline", "reverse_kl"]
    assert (workdir / "ablations.png").stat().st_size > 10_000
    stamp = (workdir / "baseline" / "metrics.jsonl").stat().st_mtime_ns
    assert runners.run("long_ablations", config, workdir) is False  # both done: nothing retrained
    assert (workdir / "baseline" / "metrics.jsonl").stat().st_mtime_ns == stamp
