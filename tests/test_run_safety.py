"""Run safety: a run never trains on, saves, or silently replaces bad state (issue 12).

Non-finite steps are never checkpointed; corrupt checkpoints (truncated or flipped bytes) are
detected by their fingerprints, moved aside and redone with the same losses; a resume with other
settings is refused before anything is written; SIGTERM before the first step exits at once with
the preemption code.
"""
import json
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from test_trainer import ROOT, command, env, final_params, losses, tiny_config

from opdlm_jax.errors import EXIT_PREEMPTED, BadInput, RunStopped


@pytest.fixture(scope="module")
def assets(tiny_assets):
    return tiny_assets


def listing(directory: Path) -> list:
    """Every file and folder under `directory` with its size: 'unchanged' means this is equal."""
    return sorted((str(p.relative_to(directory)), p.stat().st_size if p.is_file() else -1)
                  for p in directory.rglob("*"))


def data_files(step_dir: Path) -> list[Path]:
    """The array data files of a checkpoint's params item (largest first)."""
    files = [p for p in (step_dir / "params").rglob("*") if p.is_file() and "/d/" in str(p)]
    assert files, f"no data files under {step_dir}/params"
    return sorted(files, key=lambda p: -p.stat().st_size)


def truncate(step_dir: Path) -> None:
    for f in data_files(step_dir):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def flip_bytes(step_dir: Path) -> None:
    """XOR 64 bytes in the middle of the largest params file; the size stays the same."""
    f = data_files(step_dir)[0]
    raw = bytearray(f.read_bytes())
    mid = len(raw) // 2
    for i in range(mid, mid + 64):
        raw[i] ^= 0x5A
    f.write_bytes(bytes(raw))


def step_dirs(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_a_step_that_turns_non_finite_is_never_saved(assets, tmp_path):
    """A huge (finite, so valid) learning rate: the parameters overflow within a few steps. The
    run stops naming the step and the newest checkpoint verified finite; every checkpoint on disk
    holds finite values only."""
    from opdlm_jax.train import loop

    config = tiny_config(assets, steps=6)
    config.optimizer.learning_rate = 1e30
    workdir = tmp_path / "overflow"
    with pytest.raises(RunStopped, match=r"non-finite state at RL step (\d+)") as info:
        loop.train(config, workdir, progress=False)
    saved = step_dirs(workdir)
    stopped_at = int(info.value.args[0].split("RL step ")[1].split()[0])
    assert saved == list(range(1, stopped_at)), (saved, stopped_at)
    for step in saved:
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(workdir, step))), step
    if saved:
        assert f"verified finite is step {saved[-1]}" in str(info.value)
    summary = json.loads((workdir / "train_summary.json").read_text())
    assert summary["status"] == "stopped" and summary["rl_step"] == stopped_at


def test_every_checkpoint_corrupt_stops_and_touches_nothing(assets, tmp_path):
    from opdlm_jax.train import loop

    workdir = tmp_path / "allbad"
    loop.train(tiny_config(assets, steps=2), workdir, progress=False)
    for step in step_dirs(workdir):
        truncate(workdir / "checkpoints" / str(step))
    before = listing(workdir)
    config_json = (workdir / "config.json").read_bytes()
    with pytest.raises(RunStopped, match="(?s)none of the 2 checkpoint.*nothing was changed.*new --workdir"):
        loop.train(tiny_config(assets, steps=4), workdir, progress=False)
    assert listing(workdir) == before
    assert (workdir / "config.json").read_bytes() == config_json


@pytest.mark.parametrize("damage", [truncate, flip_bytes], ids=["truncated", "flipped"])
def test_a_corrupt_latest_checkpoint_is_moved_aside_and_redone(assets, tmp_path, damage):
    """Checkpoints 3 and 4 damaged after a finished 4-step run: the rerun restores 2, moves 3 and 4
    to checkpoints_corrupt/, redoes steps 3-4 with the uninterrupted run's losses, and each step
    appears once in metrics.jsonl and data_order.jsonl."""
    from opdlm_jax.checkpoints.orbax import CorruptCheckpoint, RunCheckpointer
    from opdlm_jax.train import loop

    workdir = tmp_path / "run"
    loop.train(tiny_config(assets, steps=4), workdir, progress=False)
    straight = losses(workdir)
    for step in (3, 4):
        damage(workdir / "checkpoints" / str(step))
    # Detected at restore, whichever way the bytes went bad.
    ckpt = RunCheckpointer(workdir / "checkpoints", async_save=False)
    abstract = _abstract_state(assets, workdir)
    with pytest.raises(CorruptCheckpoint):
        ckpt.restore_verified(4, abstract.params, abstract.opt_state)
    ckpt.close()

    out = loop.train(tiny_config(assets, steps=4), workdir, progress=False)
    assert out["status"] == "finished"
    assert step_dirs(workdir) == [1, 2, 3, 4]
    aside = sorted(p.name.split("-")[0] for p in (workdir / "checkpoints_corrupt").iterdir())
    assert aside == ["3", "4"]
    assert losses(workdir) == straight  # bitwise
    for name in ("metrics.jsonl", "data_order.jsonl"):
        steps = [json.loads(line)["step"] for line in (workdir / name).read_text().splitlines()]
        assert steps == [1, 2, 3, 4], (name, steps)


def _abstract_state(assets, workdir):
    from opdlm_jax.train.loop import _initial_state
    from opdlm_jax.train.setup import build_setup

    setup = build_setup(tiny_config(assets, steps=4))
    state, _ = _initial_state(setup)
    return jax.eval_shape(lambda s: s, state)


@pytest.mark.parametrize("field,override", [
    ("method", {"method": "opdlm_off"}),
    ("teacher", {"teacher": "another-model"}),
    ("rollout.alignment", {"rollout.alignment": "shifted"}),
])
def test_resume_with_other_settings_is_refused(assets, tmp_path, field, override):
    from opdlm_jax.train import loop

    workdir = tmp_path / "run"
    loop.train(tiny_config(assets, steps=1), workdir, progress=False)
    before = listing(workdir)
    config_json = (workdir / "config.json").read_bytes()
    config = tiny_config(assets, steps=2)
    for key, value in override.items():
        parent = config
        *path, last = key.split(".")
        for part in path:
            parent = parent[part]
        parent[last] = value
    with pytest.raises(BadInput, match=f"(?s)refusing to resume.*{field}: run has"):
        loop.train(config, workdir, progress=False)
    assert (workdir / "config.json").read_bytes() == config_json
    assert listing(workdir) == before


def test_steps_and_cadence_may_change_on_resume(assets, tmp_path):
    from opdlm_jax.train import loop

    workdir = tmp_path / "run"
    loop.train(tiny_config(assets, steps=1), workdir, progress=False)
    out = loop.train(tiny_config(assets, steps=2, log_every=2, checkpoint_every=2), workdir, progress=False)
    assert out["metrics"]["rl_step"] == 2 and step_dirs(workdir) == [1, 2]


def test_an_interrupted_save_is_ignored(assets, tmp_path):
    """What a kill -9 in the middle of a save leaves (an orbax temporary directory with part of
    the files) does not count as a checkpoint: the run resumes from the last complete one."""
    from opdlm_jax.train import loop

    workdir = tmp_path / "run"
    loop.train(tiny_config(assets, steps=2), workdir, progress=False)
    partial = workdir / "checkpoints" / "3.orbax-checkpoint-tmp-1700000000000000"
    partial.mkdir()
    (partial / "params").mkdir()
    (partial / "params" / "junk").write_bytes(b"\0" * 100)
    out = loop.train(tiny_config(assets, steps=3), workdir, progress=False)
    assert out["metrics"]["rl_step"] == 3 and 3 in step_dirs(workdir)


def test_sigterm_during_start_up_exits_at_once_with_the_preemption_code(assets, tmp_path):
    workdir = tmp_path / "early"
    proc = subprocess.Popen(command(assets, workdir), env=env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # wait until the trainer's start-up has begun
        seen.append(line)
        if "start-up in" in line:
            break
    else:
        pytest.fail("".join(seen)[-3000:])
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, "".join(seen)[-2000:] + rest[-2000:]
    assert time.time() - t0 < 30
    assert "nothing to save" in rest
    assert not (workdir / "checkpoints").exists() or step_dirs(workdir) == []


def test_fingerprints_are_the_same_on_any_mesh():
    """The integrity check must pass for a checkpoint restored onto another sharding."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from opdlm_jax.checkpoints.integrity import fingerprint
    from opdlm_jax.sharding import make_mesh

    x = jax.random.normal(jax.random.PRNGKey(0), (16, 24))
    tree = {"w": x, "b": x[0].astype(jax.numpy.bfloat16), "n": jax.numpy.arange(5)}
    reference, finite = fingerprint(tree)
    assert finite
    mesh = make_mesh(data=2, fsdp=2, tensor=2, devices=jax.devices()[:8])
    sharded = dict(tree, w=jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp"), "tensor"))))
    assert fingerprint(sharded)[0] == reference
    changed = dict(tree, w=x.at[3, 5].set(x[3, 5] * (1 + 2 ** -20)))  # one element, lowest bits
    assert fingerprint(changed)[0]["['w']"] != reference["['w']"]
    swapped = dict(tree, w=x.at[0, 0].set(x[0, 1]).at[0, 1].set(x[0, 0]))  # same values, moved
    assert fingerprint(swapped)[0]["['w']"] != reference["['w']"]
    assert not fingerprint(dict(tree, w=x.at[0, 0].set(np.nan)))[1]


def test_a_checkpoint_holding_nan_is_not_restored(tmp_path):
    """An older checkpoint (no fingerprints) holding NaN, as runs before the guard could save:
    restore treats it as corrupt instead of training on it."""
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from opdlm_jax.checkpoints.orbax import CorruptCheckpoint, RunCheckpointer

    ckpt = RunCheckpointer(tmp_path / "checkpoints", async_save=False)
    params, opt = {"w": jnp.array([1.0, jnp.nan])}, {"m": jnp.zeros(2)}
    ckpt.manager.save(1, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt),
        data=ocp.args.JsonSave({}), meta=ocp.args.JsonSave({"step": 1})))
    abstract = jax.eval_shape(lambda t: t, (params, opt))
    with pytest.raises(CorruptCheckpoint, match="params holds NaN or inf"):
        ckpt.restore_verified(1, *abstract)
    with pytest.raises(RunStopped, match="none of the 1 checkpoint"):
        ckpt.restore(*abstract)
    ckpt.close()
