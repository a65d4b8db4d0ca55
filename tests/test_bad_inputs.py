"""Bad input at every entry point is one line `error: ...` on stderr and exit code 2.

Table-driven: each row names an entry point (experiments.main for training and the evaluation
sweep, generate, export, the AOT tool, experiments.evaluate), its arguments and the exact line.
The entry points run in-process through their error helper (`opdlm_jax.cli_errors.run_cli`), as
the command line runs them; two cases also run as real subprocesses (exit code, stderr, --debug).
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from experiments import aot
from opdlm_jax import cli_errors, export, generate
from opdlm_jax.errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_PREEMPTED, BadInput, Preempted, RunStopped

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = str(ROOT / "tests" / "configs" / "tiny_train.py")
TABLE1 = str(ROOT / "experiments" / "configs" / "table1.py")
FIG3 = str(ROOT / "experiments" / "configs" / "fig3_parallelism.py")
PRESETS = "smollm2-135m, qwen3-0.6b, qwen3-1.7b, qwen3-4b, qwen3-8b"
TOKENIZER_FILES = "tokenizer.json, tokenizer.model, vocab.json, vocab.txt"
# absl / JAX / Python warnings that may share stderr with the error line.
_NOISE = re.compile(r"^(\s|[WI]\d{4} |WARNING|.*Warning: )")


@pytest.fixture(scope="module")
def assets(tiny_assets, tmp_path_factory):
    """Paths the table refers to as {name}: good ones and broken copies of them."""
    model, prompts = tiny_assets
    d = tmp_path_factory.mktemp("bad_inputs")
    no_tokenizer = d / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(model / name, no_tokenizer / name)
    bad_shape = Path(shutil.copytree(model, d / "bad_shape"))
    tensors = load_file(bad_shape / "model.safetensors")
    name = "model.layers.0.self_attn.k_proj.weight"
    tensors[name] = np.zeros((tensors[name].shape[0] // 2, tensors[name].shape[1]), np.float32)
    save_file(tensors, bad_shape / "model.safetensors", metadata={"format": "pt"})
    bad_prompts = d / "bad_prompts.jsonl"
    bad_prompts.write_text('{"prompt": "hi", "domain": "chat"}\n{"prompt": "oops"\n')
    truncated = d / "truncated.gguf"
    from test_gguf import write_tiny_gguf

    write_tiny_gguf(d / "good.gguf")
    data = (d / "good.gguf").read_bytes()
    truncated.write_bytes(data[:-1000])
    empty_run = d / "empty_run" / "checkpoints"
    empty_run.mkdir(parents=True)
    return dict(model=str(model), prompts=str(prompts), no_tokenizer=str(no_tokenizer), bad_shape=str(bad_shape),
                bad_prompts=str(bad_prompts), truncated=str(truncated), gguf_size=len(data),
                empty_run=str(empty_run.parent), workdir=str(d / "workdir"), missing=str(d / "missing"))


def run_experiments_main(argv, monkeypatch):
    """experiments.main as `python -m experiments.main ARGV` runs it (ml_collections reads sys.argv)."""
    from absl import flags

    from experiments import main

    # A process parses its flags once: forget the previous run's values, and the flag that
    # ml_collections defined for each of its --config.x overrides.
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)
    monkeypatch.setattr(sys, "argv", ["experiments.main", *argv])
    return main.run()


ENTRY_POINTS = {
    "experiments.main": run_experiments_main,
    "opdlm_jax.generate": lambda argv, _: generate.main(argv),
    "opdlm_jax.export": lambda argv, _: export.main(argv),
    "experiments.aot": lambda argv, _: aot.main(argv),
    "experiments.evaluate": lambda argv, _: _evaluate_main(argv),
}


def _evaluate_main(argv):
    from experiments import evaluate

    return evaluate.main(argv)

TRAIN = ["--config", TINY_TRAIN, "--config.teacher={model}", "--config.data.train={prompts}", "--workdir={workdir}"]
HELDOUT = str(ROOT / "experiments" / "data" / "demo_prompts" / "heldout.jsonl")
SWEEP = ["--config", FIG3 + ":toy", "--config.model={model}", "--workdir={workdir}"]
SWEEP_HELDOUT = SWEEP + [f"--config.prompts={HELDOUT}"]
GEN = ["--prompt", "hi", "--max-new-tokens", "4"]
AOT = ["--preset", "tiny", "--platform", "cpu"]

# (entry point, arguments, expected stderr line as a regex; {name} is an escaped asset path)
CASES = [
    # experiments.main: training
    ("experiments.main", TRAIN + ["--config.optimizer.learnin_rate=1"],
     r"error: unknown config field --config\.optimizer\.learnin_rate; did you mean "
     r"--config\.optimizer\.learning_rate or --config\.optimizer\.end_learning_rate\?"),
    ("experiments.main", TRAIN + ["--config.learning_rate=1"],
     r"error: unknown config field --config\.learning_rate; did you mean --config\.optimizer\.learning_rate\?"),
    ("experiments.main", TRAIN + ["--wrkdir=x"], r"error: Unknown command line flag 'wrkdir'\. Did you mean: workdir \?"),
    ("experiments.main", ["--config", TINY_TRAIN], r"error: --config and --workdir are required"),
    ("experiments.main", ["--config", "{missing}.py", "--workdir={workdir}"],
     r"error: --config {missing}\.py: no such config file"),
    ("experiments.main", ["--config", str(ROOT / "experiments/configs/demo.py") + ":bogus", "--workdir={workdir}"],
     r"error: flag --config=.*demo\.py:bogus: ValueError: demo\.py takes '', 'quick', 'seeds' or "
     r"'seeds_baselines', got 'bogus'"),
    ("experiments.main", TRAIN + ["--config.batch_size=0"], r"error: batch_size=0 must be >= 1"),
    ("experiments.main", TRAIN + ["--config.minibatch_size=0"], r"error: minibatch_size=0 must be >= 1"),
    ("experiments.main", TRAIN + ["--config.optimizer.learning_rate=-1"],
     r"error: optimizer\.learning_rate=-1\.0 must be finite and > 0"),
    ("experiments.main", TRAIN + ["--config.optimizer.learning_rate=inf"],
     r"error: optimizer\.learning_rate=inf must be finite and > 0"),
    ("experiments.main", TRAIN + ["--config.data.train={missing}"],
     r"error: data\.train='{missing}': prompt file not found"),
    ("experiments.main", ["--config", TABLE1 + ":qwen3-4b", "--workdir={workdir}"],
     r"error: data\.train='data/opdlm_prompts\.jsonl': prompt file not found; make it with: python -m "
     r"experiments\.data\.prepare_recipe --src <opdlm_train\.json> --out data/opdlm_prompts\.jsonl"),
    ("experiments.main", TRAIN + ["--config.data.train={bad_prompts}"],
     r"error: {bad_prompts}:2 \(record 1\): invalid JSON: .* at column \d+"),
    ("experiments.main", TRAIN + ["--config.teacher={missing}"],
     r"error: teacher='{missing}': {missing}: no such file or directory, and not a preset name "
     rf"\(presets: {PRESETS}\)"),
    ("experiments.main", TRAIN + ["--config.teacher=qwen3-9b"],
     r"error: teacher='qwen3-9b': qwen3-9b: no such file or directory, and not a preset name "
     rf"\(presets: {PRESETS}\)"),
    ("experiments.main", TRAIN + ["--config.teacher=qwen3-0.6b"],
     r"error: teacher='qwen3-0\.6b': preset 'qwen3-0\.6b' describes the architecture only; .*"),
    ("experiments.main", TRAIN + ["--config.teacher={no_tokenizer}"],
     r"error: teacher='{no_tokenizer}': model directory {no_tokenizer} has no tokenizer files "
     rf"\(looked for {TOKENIZER_FILES}\); copy the tokenizer of the checkpoint there"),
    # experiments.main: the evaluation sweep (experiments.evaluation's threshold_sweep)
    ("experiments.main", SWEEP + ["--config.prompts={missing}"], r"error: {missing}: prompt file not found"),
    ("experiments.main", SWEEP + ["--config.prompts={bad_prompts}"],
     r"error: {bad_prompts}:2 \(record 1\): invalid JSON: .*"),
    ("experiments.main", SWEEP_HELDOUT + ["--config.model={missing}"],
     r"error: model='{missing}': {missing}: no such file or directory, and not a preset name .*"),
    ("experiments.main", SWEEP_HELDOUT + ["--config.run_dir={missing}"],
     r"error: run_dir='{missing}': no such run directory"),
    # opdlm_jax.generate
    ("opdlm_jax.generate", ["--model", "{missing}"] + GEN,
     rf"error: {{missing}}: no such file or directory, and not a preset name \(presets: {PRESETS}\)"),
    ("opdlm_jax.generate", ["--model", "{no_tokenizer}"] + GEN,
     rf"error: model directory {{no_tokenizer}} has no tokenizer files \(looked for {TOKENIZER_FILES}\); .*"),
    ("opdlm_jax.generate", ["--model", "{bad_shape}"] + GEN,
     r"error: {bad_shape}: shape mismatch for tensor model\.layers\.0\.self_attn\.k_proj\.weight: "
     r"expected \(16, 32\), got \(8, 32\)"),
    ("opdlm_jax.generate", ["--model", "{truncated}"] + GEN,
     r"error: {truncated} is truncated: expected {gguf_size} bytes, found \d+ \(an interrupted download or copy\?\)"),
    ("opdlm_jax.generate", ["--model", "{model}", "--prompt-file", "{missing}"],
     r"error: --prompt-file {missing}: no such file"),
    ("opdlm_jax.generate", ["--model", "{model}", "--temprature", "0.5"] + GEN,
     r"error: unrecognized arguments: --temprature 0\.5 \(see opdlm-generate --help\)"),
    ("opdlm_jax.generate", ["--model", "{model}", "--threshold", "1.5"] + GEN,
     r"error: --threshold 1\.5 is outside \[0, 1\]"),
    # opdlm_jax.export
    ("opdlm_jax.export", ["--checkpoint", "{missing}", "--out", "{workdir}"], r"error: {missing}: no such run directory"),
    ("opdlm_jax.export", ["--checkpoint", "{empty_run}", "--out", "{workdir}"], r"error: no checkpoint in .*checkpoints"),
    ("opdlm_jax.export", ["--checkpoint", "{missing}"],
     r"error: the following arguments are required: --out \(see opdlm-export --help\)"),
    # experiments.aot
    ("experiments.aot", AOT + ["--config.batch_sise=8"],
     r"error: unknown config field --config\.batch_sise; did you mean --config\.batch_size or "
     r"--config\.minibatch_size\?"),
    ("experiments.aot", AOT + ["--config", TINY_TRAIN],
     r"error: give --preset or --config FILE, not both \(see python -m experiments\.aot --help\)"),
    ("experiments.aot", AOT + ["--mesh", "1,2"],
     r"error: argument --mesh: --mesh '1,2': expected data,fsdp,tensor \(e\.g\. 1,-1,1\) "
     r"\(see python -m experiments\.aot --help\)"),
    ("experiments.aot", AOT + ["--batch", "0"], r"error: batch_size=0 must be >= 1"),
    ("experiments.aot", AOT + ["--config.optimizer.learning_rate=nan"],
     r"error: optimizer\.learning_rate=nan must be finite and > 0"),
    # experiments.evaluate (benchmark scoring)
    ("experiments.evaluate", ["--out", "{workdir}"],
     r"error: name what to evaluate: --checkpoint RUN_DIR, --model NAME_OR_PATH or --score FILE"),
    ("experiments.evaluate", ["--out", "{workdir}", "--model", "{model}", "--data-dir", "{missing}", "--datasets", "GSM8K"],
     r"error: --data-dir {missing}: no such directory"),
    ("experiments.evaluate", ["--model", "{model}"],
     r"error: the following arguments are required: --out \(see python -m experiments\.evaluate --help\)"),
]


def _fill(text: str, assets: dict, escape: bool) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: (re.escape if escape else str)(str(assets[m.group(1)]))
                  if m.group(1) in assets else m.group(0), text)


def error_lines(err: str) -> list[str]:
    """stderr without harmless warnings (absl / JAX / Python)."""
    return [line for line in err.splitlines() if line.strip() and not _NOISE.match(line)]


def _id(case) -> str:
    entry, argv, _ = case
    return f"{entry}:{next((a for a in reversed(argv) if a.startswith('-')), '')}"


@pytest.mark.parametrize("entry,argv,expected", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(entry, argv, expected, assets, monkeypatch, capsys):
    monkeypatch.chdir(assets["workdir"].rsplit("/", 1)[0])  # where data/opdlm_prompts.jsonl is absent
    code = ENTRY_POINTS[entry]([_fill(a, assets, escape=False) for a in argv], monkeypatch)
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert re.fullmatch(_fill(expected, assets, escape=True), lines[0]), lines[0]
    assert code == EXIT_BAD_INPUT
    assert not Path(assets["workdir"]).exists()  # nothing was created


def test_table_covers_every_entry_point():
    assert len(CASES) >= 15 and {c[0] for c in CASES} == set(ENTRY_POINTS)


# ---------------------------------------------------------------------------------------------
# The error helper itself, and experiments.main's contract with train().

def _raiser(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("exc,code,line", [
    (BadInput("no such thing"), EXIT_BAD_INPUT, "error: no such thing"),
    (FileNotFoundError("x: missing"), EXIT_BAD_INPUT, "error: x: missing"),
    (RunStopped("step 3 is not finite;\nlast good checkpoint: 2"), EXIT_ERROR,
     "error: step 3 is not finite; last good checkpoint: 2"),
    (Preempted("state saved at step 4"), EXIT_PREEMPTED, "preempted: state saved at step 4"),
    (ZeroDivisionError("division by zero"), EXIT_ERROR,
     "error: ZeroDivisionError: division by zero (rerun with --debug for the traceback)"),
])
def test_run_cli_maps_exceptions(exc, code, line, capsys, monkeypatch):
    monkeypatch.delenv(cli_errors.DEBUG_ENV, raising=False)
    assert cli_errors.run_cli(_raiser(exc), []) == code
    assert capsys.readouterr().err == line + "\n"


def test_debug_shows_the_traceback(capsys, monkeypatch):
    monkeypatch.delenv(cli_errors.DEBUG_ENV, raising=False)
    assert cli_errors.run_cli(_raiser(BadInput("bad")), ["--debug"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "BadInput: bad" in err
    monkeypatch.setenv(cli_errors.DEBUG_ENV, "1")
    assert cli_errors.run_cli(_raiser(RunStopped("stop")), []) == EXIT_ERROR
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("outcome,code", [
    ({"preempted": True, "metrics": {}}, EXIT_PREEMPTED),
    ({"preempted": False, "metrics": {"loss": 1.0}}, 0),
    (Preempted("SIGTERM during compile; nothing to save"), EXIT_PREEMPTED),
    (RunStopped("step 2 is not finite"), EXIT_ERROR),
])
def test_main_exit_codes_from_train(outcome, code, assets, monkeypatch, capsys):
    """train() reports preemption (exit 75) or raises; main leaves config.json to train()."""
    import opdlm_jax.train.loop as loop

    def fake_train(config, workdir, **kwargs):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(loop, "train", fake_train)
    workdir = Path(assets["workdir"]).with_name("train_outcome")
    argv = [_fill(a, assets, escape=False) for a in TRAIN[:-1]] + [f"--workdir={workdir}"]
    assert run_experiments_main(argv, monkeypatch) == code
    assert not (workdir / "config.json").exists()
    if code == EXIT_PREEMPTED:
        assert error_lines(capsys.readouterr().err)[-1].startswith("preempted: ")


# ---------------------------------------------------------------------------------------------
# As real processes: the exit code the shell sees, and --debug.

def _python(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    env.pop(cli_errors.DEBUG_ENV, None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_subprocess_unknown_override_is_one_line(assets, tmp_path):
    proc = _python("-m", "experiments.main", "--config", TINY_TRAIN, "--config.rollout.treshold=0.5",
                   f"--workdir={tmp_path / 'w'}")
    assert proc.returncode == EXIT_BAD_INPUT
    assert error_lines(proc.stderr) == ["error: unknown config field --config.rollout.treshold; "
                                        "did you mean --config.rollout.threshold?"]
    assert not (tmp_path / "w").exists()


def test_subprocess_debug_shows_traceback(assets):
    proc = _python("-m", "opdlm_jax.generate", "--model", assets["missing"], "--prompt", "hi", "--debug")
    assert proc.returncode == EXIT_BAD_INPUT
    assert "Traceback (most recent call last)" in proc.stderr and "FileNotFoundError" in proc.stderr


def test_config_json_is_still_written_for_other_experiments(assets, monkeypatch):
    from experiments import runners

    monkeypatch.setattr(runners, "run", lambda experiment, config, workdir: None)
    workdir = Path(assets["workdir"]).with_name("sweep_run")
    argv = [_fill(a, assets, escape=False) for a in SWEEP_HELDOUT if not a.startswith("--workdir")]
    argv.append(f"--workdir={workdir}")
    assert run_experiments_main(argv, monkeypatch) == 0
    assert json.loads((workdir / "config.json").read_text())["experiment"] == "sweep"
