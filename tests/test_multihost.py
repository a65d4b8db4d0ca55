"""Multi-host for real: the trainer as several JAX processes on this machine (gloo collectives).

A 2-process x 2-device run equals 1 process x 4 devices and 1 process x 1 device step by step;
checkpoints move between process counts; a dead peer stops the survivor; start-up never puts a
whole sharded leaf on one device.
"""
import json
import shutil
import signal
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jax_processes import run, start
from test_trainer import ROOT, tiny_config

pytestmark = pytest.mark.slow  # several processes each compile the step: minutes on 2 cores
LAYOUTS = {"2x2": (2, 2), "1x4": (1, 4)}


def train_argv(assets, workdir, *extra):
    model, prompts = assets
    return ["-m", "experiments.main", f"--config={ROOT}/tests/configs/tiny_train.py", f"--workdir={workdir}",
            f"--config.teacher={model}", f"--config.data.train={prompts}", "--config.steps=3",
            "--config.mesh.devices=0", *extra]


def train_records(workdir) -> list[dict]:
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "train"]


def step_dirs(workdir) -> list[int]:
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def runs(tiny_assets, tmp_path_factory):
    """The toy trainer for 3 steps as 2 processes x 2 devices, 1 x 4 and 1 x 1 (in this process)."""
    from opdlm_jax.train import loop

    root = tmp_path_factory.mktemp("multihost")
    for name, (processes, devices) in LAYOUTS.items():
        run(train_argv(tiny_assets, root / name), processes, devices, root / f"logs_{name}")
    loop.train(tiny_config(tiny_assets, steps=3), root / "1x1", progress=False)  # mesh.devices=1
    return root


def test_two_processes_train_like_one(runs, tiny_assets):
    reference = train_records(runs / "1x4")
    for name in ("2x2", "1x1"):
        records = train_records(runs / name)
        assert [r["step"] for r in records] == [1, 2, 3], (name, records)  # one line per step
        for r, ref in zip(records, reference):
            # The KL is a small difference of O(1) terms (0.009 here): the summation order of
            # one device against four moves it by ~1e-7 absolute, while the gradients agree bitwise.
            np.testing.assert_allclose(r["loss"], ref["loss"], rtol=1e-5, atol=1e-6, err_msg=name)
            np.testing.assert_allclose(r["grad_norm"], ref["grad_norm"], rtol=1e-5, err_msg=name)
        for a, b in zip(host_params(runs / name, tiny_assets), host_params(runs / "1x4", tiny_assets)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    order = [json.loads(line)["ids"] for line in (runs / "2x2" / "data_order.jsonl").read_text().splitlines()]
    assert order == [json.loads(line)["ids"] for line in (runs / "1x1" / "data_order.jsonl").read_text().splitlines()]
    log = (runs / "logs_2x2" / "process1.log").read_text()
    assert "process 1 of 2" in log


@pytest.mark.parametrize("saved,resumed", [("2x2", "1x4"), ("1x4", "2x2")])
def test_a_checkpoint_resumes_under_another_process_count(runs, tiny_assets, tmp_path, saved, resumed):
    """Checkpoint 2 of a run saved by `saved` processes continues under `resumed`: step 3 equals
    the uninterrupted run's."""
    workdir = tmp_path / "run"
    shutil.copytree(runs / saved, workdir)
    shutil.rmtree(workdir / "checkpoints" / "3")
    run(train_argv(tiny_assets, workdir), *LAYOUTS[resumed], tmp_path / "logs")
    records, reference = train_records(workdir), train_records(runs / saved)
    assert [r["step"] for r in records] == [1, 2, 3]
    np.testing.assert_allclose([r["loss"] for r in records], [r["loss"] for r in reference], rtol=1e-5)
    assert "resumed from step 2" in (tmp_path / "logs" / "process0.log").read_text()


def test_a_dead_peer_stops_the_survivor_and_a_restart_resumes(tiny_assets, tmp_path):
    workdir = tmp_path / "run"
    procs = start(train_argv(tiny_assets, workdir, "--config.steps=1000"), 2, 2, tmp_path / "logs",
                  OPDLM_HEARTBEAT_TIMEOUT="10")
    try:
        deadline = time.time() + 600
        while not ((workdir / "checkpoints" / "2").is_dir() and procs[0].poll() is None):
            assert time.time() < deadline and procs[0].poll() is None, (tmp_path / "logs" / "process0.log").read_text()[-3000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.time()
        code = procs[0].wait(timeout=150)
        waited = time.time() - killed_at
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert code != 0 and waited < 120, (code, waited)
    last = step_dirs(workdir)[-1]
    run(train_argv(tiny_assets, workdir, f"--config.steps={last + 1}"), 2, 2, tmp_path / "logs_restart")
    assert [r["step"] for r in train_records(workdir)] == list(range(1, last + 2))
    assert f"resumed from step {last}" in (tmp_path / "logs_restart" / "process0.log").read_text()


def host_params(workdir, assets) -> list:
    """The last checkpoint's params restored onto one device (verified), as numpy leaves: a
    checkpoint written by several processes names devices this process does not have."""
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.checkpoints.orbax import restore_params

    model = load_model(str(assets[0]), scan_layers=True)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), model.params)
    params, _ = restore_params(Path(workdir) / "checkpoints", abstract)
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def _shard_bytes(x) -> int:
    return max(s.data.nbytes for s in x.addressable_shards)


def test_start_up_never_puts_a_whole_sharded_leaf_on_one_device(tiny_assets, monkeypatch):
    """On a 2x2x2 mesh of 8 fake devices: loading allocates no device buffer, and every array
    created while placing the state and the teacher (jnp.array/asarray, device_put,
    make_array_from_callback, the jitted optimizer init) holds per device at most the largest
    parameter's shard."""
    from opdlm_jax.sharding import param_shardings
    from opdlm_jax.train.loop import _initial_state
    from opdlm_jax.train.setup import build_setup

    config = tiny_config(tiny_assets)
    config.mesh.update(devices=0, data=2, fsdp=2, tensor=2)
    before = {id(x) for x in jax.live_arrays()}
    setup = build_setup(config)
    assert [x for x in jax.live_arrays() if id(x) not in before] == []  # weights stay on the host

    shardings = param_shardings(setup.student_config, setup.mesh)
    leaves = jax.tree.leaves(setup.student_init)
    largest = max(range(len(leaves)), key=lambda i: leaves[i].nbytes)
    shard_shape = jax.tree.leaves(shardings)[largest].shard_shape(leaves[largest].shape)
    bound = int(np.prod(shard_shape)) * leaves[largest].dtype.itemsize
    assert bound < leaves[largest].nbytes  # the largest parameter is really split

    seen = []

    def watched(fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            seen.extend(x for x in jax.tree.leaves(out) if isinstance(x, jax.Array))
            return out
        return wrapper

    for module, name in ((jax.numpy, "array"), (jax.numpy, "asarray"), (jax, "device_put"),
                         (jax, "make_array_from_callback")):
        monkeypatch.setattr(module, name, watched(getattr(module, name)))
    state, teacher = _initial_state(setup)
    monkeypatch.undo()
    created = seen + [x for x in jax.live_arrays() if id(x) not in before]
    too_big = [(x.shape, _shard_bytes(x)) for x in created if _shard_bytes(x) > bound]
    assert not too_big, (bound, too_big)
    assert jax.tree.leaves(state.params)[largest].sharding.shard_shape(leaves[largest].shape) == shard_shape


def test_qwen3_8b_start_up_plans_without_allocating():
    """The start-up of the Qwen3-8B preset (student state with AdamW moments, teacher) on an
    8-device mesh, as the AOT tool plans it: shapes and shardings only, no buffer allocated."""
    from opdlm_jax.checkpoints.presets import preset_config
    from opdlm_jax.sharding import make_mesh
    from opdlm_jax.train.optimizer import OptimizerConfig, make_optimizer
    from opdlm_jax.train.setup import abstract_start_up

    config = preset_config("qwen3-8b")
    mesh = make_mesh(data=1, fsdp=8, tensor=1, devices=jax.devices()[:8])
    before = len(jax.live_arrays())
    state, teacher = abstract_start_up(config, config, make_optimizer(OptimizerConfig()), mesh)
    assert len(jax.live_arrays()) == before
    total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))
    per_device = sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize for x in jax.tree.leaves(state))
    assert total > 90e9  # float32 params + two moments of ~8B parameters
    assert per_device < total / 7  # spread over the 8 devices (a few small leaves replicated)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves((state, teacher)))
