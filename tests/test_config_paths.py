"""Shipped configs find their data files from any working directory; every input file is checked
before the workdir exists; a params-only checkpoint (the toy runs' default) resumes and decodes."""
import os
import subprocess
import sys
from pathlib import Path

from opdlm_jax.errors import EXIT_BAD_INPUT

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"


def _main(argv, cwd, timeout=600):
    """experiments.main as a user runs it, from `cwd` (the package is installed, not on the path)."""
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run([sys.executable, "-m", "experiments.main", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_shipped_data_paths_are_absolute_and_exist():
    from experiments.configs import demo, fig3_parallelism, table1

    for path in (table1.get_config("toy").data.train, table1.get_config("toy").data.heldout,
                 demo.get_config("quick").train.data.heldout, fig3_parallelism.get_config("toy").prompts):
        assert Path(path).is_absolute() and Path(path).is_file(), path


def test_a_toy_config_trains_from_another_directory(tiny_assets, tmp_path):
    """table1.py:toy by absolute path from an unrelated directory, on the tiny model, 1 step;
    its params-only checkpoint has no optimizer state, resumes for a second step and decodes."""
    model, _ = tiny_assets
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ["--config", f"{CONFIGS / 'table1.py'}:toy", f"--config.teacher={model}", "--config.steps=1",
            "--config.batch_size=2", "--config.minibatch_size=2", "--config.curriculum.start=8",
            "--config.curriculum.end=8", "--config.curriculum.bucket=8", "--config.data.max_prompt_tokens=512",
            "--config.checkpoint_every=1", "--config.tensorboard=False", "--workdir", "run"]
    proc = _main(args, elsewhere)
    assert proc.returncode == 0, proc.stderr[-2000:]
    step_dir = elsewhere / "run" / "checkpoints" / "1"
    assert (step_dir / "params").is_dir() and not (step_dir / "opt_state").exists()
    proc = _main([a if a != "--config.steps=1" else "--config.steps=2" for a in args], elsewhere)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not an exact resume" in proc.stderr
    assert sorted(p.name for p in (elsewhere / "run" / "checkpoints").iterdir()) == ["2"]  # keep 1
    from opdlm_jax import generate_text, load_run

    assert isinstance(generate_text(load_run(elsewhere / "run"), "Hi", max_new_tokens=4), str)


def test_demo_checks_its_prompt_files_before_creating_the_workdir(tmp_path):
    missing = tmp_path / "nope.jsonl"
    proc = _main(["--config", f"{CONFIGS / 'demo.py'}:quick", f"--config.train.data.heldout={missing}",
                  "--workdir", str(tmp_path / "w")], tmp_path, timeout=300)
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines()[-1] == f"error: data.heldout='{missing}': prompt file not found"
    assert not (tmp_path / "w").exists()

