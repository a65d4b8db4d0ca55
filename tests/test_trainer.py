"""The trainer: exact resume after SIGKILL, SIGTERM, NaN guard, restore on other meshes, baselines."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tiny_assets):
    return tiny_assets  # the session's tiny model and prompts (tests/conftest.py)


def command(assets, workdir, *extra, method=""):
    model, prompts = assets
    config = str(ROOT / "tests/configs/tiny_train.py") + (f":{method}" if method else "")
    return [sys.executable, "-m", "experiments.main", f"--config={config}", f"--workdir={workdir}",
            f"--config.teacher={model}", f"--config.data.train={prompts}", *extra]


def env(devices=1):
    # The same matmul precision as this process (conftest), so in-process and subprocess runs agree bitwise.
    e = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             JAX_DEFAULT_MATMUL_PRECISION="highest")
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run(cmd, devices=1, timeout=600):
    out = subprocess.run(cmd, env=env(devices), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def losses(workdir):
    by_step = {}
    for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["split"] == "train":
            by_step[r["step"]] = r["loss"]  # a resumed run rewrites the steps after its checkpoint
    return by_step


def data_order(workdir):
    by_step = {}
    for line in (Path(workdir) / "data_order.jsonl").read_text().splitlines():
        r = json.loads(line)
        by_step[r["step"]] = r["ids"]
    return by_step


def final_params(workdir, step=None):
    """The saved params of a run as numpy arrays (as stored: no target shardings)."""
    import orbax.checkpoint as ocp

    ckpt_dir = Path(workdir) / "checkpoints"
    mngr = ocp.CheckpointManager(ckpt_dir.absolute(), item_names=("params",),
                                 options=ocp.CheckpointManagerOptions(read_only=True))
    s = step or max(mngr.all_steps())
    return jax.tree.map(np.asarray, mngr.restore(s, args=ocp.args.Composite(params=ocp.args.StandardRestore()))["params"])


def tiny_config(assets, method="", **overrides):
    """tests/configs/tiny_train.py on the session's tiny model and prompts, as `command` runs it."""
    from tests_configs_loader import load_config

    config = load_config(ROOT / "tests/configs/tiny_train.py", method)
    config.teacher, config.data.train = str(assets[0]), str(assets[1])
    config.update(overrides)
    return config


def test_resume_after_sigkill_is_exact(assets, tmp_path):
    from opdlm_jax.train import loop

    straight = tmp_path / "straight"  # uninterrupted, in this process (the same program as the CLI's)
    loop.train(tiny_config(assets), straight, progress=False)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(assets, killed), env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        if (killed / "checkpoints" / "3").is_dir():
            break
        if proc.poll() is not None:
            pytest.fail("training finished before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_before = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    assert 3 <= max(steps_before) < 6, steps_before
    run(command(assets, killed))  # resumes from the latest checkpoint and finishes
    assert losses(killed) == losses(straight)  # bitwise, step by step
    for name in ("metrics.jsonl", "data_order.jsonl"):  # the redone steps replaced, not appended
        steps = [json.loads(line)["step"] for line in (killed / name).read_text().splitlines()]
        assert steps == sorted(set(steps)), (name, steps)
    assert data_order(killed) == data_order(straight)  # same prompts in the same order
    for a, b in zip(jax.tree.leaves(final_params(killed)), jax.tree.leaves(final_params(straight))):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_sigterm_saves_a_usable_checkpoint(assets, tmp_path):
    workdir = tmp_path / "term"
    proc = subprocess.Popen(command(assets, workdir, "--config.steps=1000", "--config.checkpoint_every=1000"),
                            env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and not ((workdir / "metrics.jsonl").exists()
                                          and (workdir / "metrics.jsonl").read_text().strip()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out[-2000:]  # EXIT_PREEMPTED: babysit restarts it
    assert json.loads((workdir / "train_summary.json").read_text())["status"] == "preempted"
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(steps) == 1 and 1 <= steps[0] < 1000  # saved by the SIGTERM, not by the schedule
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(workdir)))


def test_time_box_stops_saved_and_the_rerun_continues(assets, tmp_path):
    """stop_after_minutes ends an invocation like a preemption (saved, `preempted`); the same call
    continues to the configured steps; eval_steps adds evaluations after those RL steps."""
    from opdlm_jax.train import loop

    evaluated = []

    def eval_fn(params, step):
        evaluated.append(step)
        return {"step_seen": float(step)}

    workdir = tmp_path / "boxed"
    boxed = tiny_config(assets, steps=3, stop_after_minutes=1e-9, eval_steps=(1, 2))
    first = loop.train(boxed, workdir, eval_fn=eval_fn, progress=False)
    assert first["preempted"] and first["status"] == "preempted" and first["metrics"]["rl_step"] == 1
    assert evaluated == [1]  # after step 1 (eval_steps); no end-of-run evaluation when stopped early
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [1]
    second = loop.train(tiny_config(assets, steps=3, eval_steps=(1, 2)), workdir, eval_fn=eval_fn, progress=False)
    assert not second["preempted"] and second["metrics"]["rl_step"] == 3
    assert evaluated == [1, 2, 3]  # 2 from eval_steps, 3 the end of the run
    assert sorted(losses(workdir)) == [1, 2, 3]
    for bad in (dict(stop_after_minutes=-1.0), dict(eval_steps=(0,))):
        from opdlm_jax.train.config import ConfigError, validate_config

        with pytest.raises(ConfigError, match=next(iter(bad))):
            validate_config(tiny_config(assets, **bad))


def test_a_passed_teacher_must_hold_master_weight_dtype(assets):
    """build_setup(teacher=...) starts the student from the teacher's arrays: bf16-stored ones would
    make the AdamW master weights bf16 (updates below bf16's resolution vanish), so it is refused."""
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.train.config import ConfigError
    from opdlm_jax.train.setup import build_setup, load_models

    config = tiny_config(assets, dtype="bfloat16", param_dtype="float32")
    with pytest.raises(ConfigError, match="param_dtype='float32'; load it with train.setup.load_models"):
        build_setup(config, teacher=load_model(config.teacher, dtype="bfloat16"))
    setup = build_setup(config, teacher=load_models(config)[0])
    assert {str(x.dtype) for x in jax.tree.leaves(setup.student_init)} == {"float32"}


def test_bfloat16_stored_teacher(assets, tmp_path):
    """teacher_param_dtype="bfloat16": the frozen teacher is stored in bfloat16 (the student's
    master weights and AdamW moments stay float32) and, with bfloat16 compute, a step computes
    the same loss as with the float32-stored teacher, which it casts to bfloat16 on every use."""
    from opdlm_jax.train import loop
    from opdlm_jax.train.config import ConfigError
    from opdlm_jax.train.setup import build_setup

    with pytest.raises(ConfigError, match="teacher_param_dtype='float16'"):
        build_setup(tiny_config(assets, teacher_param_dtype="float16"))
    setup = build_setup(tiny_config(assets, dtype="bfloat16", teacher_param_dtype="bfloat16"))
    assert {str(x.dtype) for x in jax.tree.leaves(setup.teacher.params)} == {"bfloat16"}
    assert setup.teacher.config.param_dtype == "bfloat16" and setup.student_config.param_dtype == "float32"
    assert {str(x.dtype) for x in jax.tree.leaves(setup.student_init)} == {"float32"}
    loss = {}
    for stored in ("", "bfloat16"):
        config = tiny_config(assets, steps=1, dtype="bfloat16", teacher_param_dtype=stored)
        loss[stored] = loop.train(config, tmp_path / (stored or "master"), progress=False)["metrics"]["loss"]
    assert loss["bfloat16"] == loss[""]  # bfloat16 compute casts the float32 teacher to these very values


def test_checkpoint_from_8_devices_restores_on_1_and_4(assets, tmp_path):
    """Trained on a 2x2x2 mesh of the 8 (fake) devices, the params restore onto meshes of 1 and 4
    devices, each array resharded to its target, with the saved values bit for bit."""
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.checkpoints.orbax import restore_params
    from opdlm_jax.sharding import abstract_with_shardings, make_mesh, param_shardings
    from opdlm_jax.train import loop

    config = tiny_config(assets, steps=2)
    config.mesh.update(devices=0, data=2, fsdp=2, tensor=2)
    workdir = tmp_path / "mesh8"
    loop.train(config, workdir, progress=False)
    reference = jax.tree.leaves(final_params(workdir))
    model = load_model(str(assets[0]), scan_layers=True)
    for n in (1, 4):
        mesh = make_mesh(data=-1, fsdp=1, tensor=2 if n >= 2 else 1, devices=jax.devices()[:n])
        abstract = abstract_with_shardings(model.params, param_shardings(model.config, mesh))
        params, meta = restore_params(workdir / "checkpoints", abstract)
        leaves = jax.tree.leaves(params)
        assert meta["step"] == 2 and len(leaves) == len(reference)
        for x, ref in zip(leaves, reference):
            assert x.sharding.mesh.size == n
            np.testing.assert_array_equal(np.asarray(x), ref)


def test_nan_loss_stops_with_the_step_and_last_checkpoint_restores(assets, tmp_path, monkeypatch):
    from opdlm_jax.train import loop

    config = tiny_config(assets, steps=4)
    real_make = loop.make_opd_step
    calls = {"n": 0}  # across every compiled step (should the curriculum compile several shapes)

    def poisoned(*args, **kwargs):
        step = real_make(*args, **kwargs)

        def wrapped(*a):
            state, metrics = step(*a)
            calls["n"] += 1
            if calls["n"] == 3:  # the third RL step reports a NaN loss (as the step's guard would)
                metrics = dict(metrics, loss=jnp.asarray(jnp.nan), state_finite=jnp.asarray(False))
            return state, metrics
        return wrapped

    monkeypatch.setattr(loop, "make_opd_step", poisoned)
    from opdlm_jax.errors import RunStopped

    with pytest.raises(RunStopped, match="non-finite state at RL step 3.*verified finite is step 2"):
        loop.train(config, tmp_path / "nan", progress=False)
    assert final_params(tmp_path / "nan", step=2) is not None
    steps = sorted(int(p.name) for p in (tmp_path / "nan" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1, 2]


@pytest.mark.parametrize("method", ["corpus", "off_policy", "sft", "opdlm_off"])
def test_baselines_run_one_step(assets, tmp_path, method):
    from opdlm_jax.train import loop
    config = tiny_config(assets, method, steps=1)
    config.data.corpus = "pydoc"
    out = loop.train(config, tmp_path / method, progress=False)
    m = out["metrics"]
    assert m["rl_step"] == 1 and np.isfinite(m["loss"]) and m["loss"] > 0
    assert m["tokens"] > 0 and m["paper_flops"] > 0 and m["full_flops"] > m["paper_flops"]
    assert (tmp_path / method / "checkpoints" / "1").is_dir()


def test_domain_caps_reach_the_rollouts(assets, tmp_path):
    """The recipe's per-domain caps: math capped at 8 new tokens below the batch budget of 16;
    math rollouts stop at 8 while chat rollouts run the full 16 (no stop token can be sampled:
    the stop id is set to the mask token, which the sampler never emits)."""
    import dataclasses

    from opdlm_jax.train import loop
    from opdlm_jax.train.setup import build_setup

    config = tiny_config(assets, steps=2, checkpoint_every=2)
    config.curriculum.update(start=16, end=16, bucket=8)
    config.curriculum.domain_caps = {"math": 8}
    config.data.max_prompt_tokens = 256  # math prompts carry the recipe suffix; keep them all
    setup = build_setup(config)
    setup = dataclasses.replace(setup, tokens=dataclasses.replace(setup.tokens, stop_ids=(setup.tokens.mask_id,)))
    out = loop.train(config, tmp_path / "caps", setup=setup, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "caps" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # the tiny prompt set alternates chat and math, so both are in every batch
        assert r["response_budget"] == 16
        assert r["response_length/math"] == 8 and r["response_length/chat"] == 16, r
    assert out["metrics"]["loss"] > 0
