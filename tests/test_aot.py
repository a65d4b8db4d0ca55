"""AOT compile and memory report (experiments.aot) on the CPU backend with 8 fake devices.

The real TPU path needs the libtpu wheel (`pip install "jax[tpu]==<jax version>"`); its test is
skipped where libtpu is not installed (the project's test venv does not carry it).
"""
import importlib.util
import json
import time

import pytest

from experiments import aot

TINY_ARGS = ["--preset", "tiny", "--platform", "cpu", "--cpu-devices", "8", "--batch", "8", "--minibatch", "4",
             "--prompt-len", "8", "--max-new-tokens", "8"]


@pytest.fixture(scope="module")
def impossible_budget_run(capsys_module):
    """One compile of the whole OPD step for a tiny config, judged against a 1 kB HBM budget."""
    start = time.perf_counter()
    code = aot.main(TINY_ARGS + ["--hbm-gib", str(1024 / aot.GIB), "--json"])
    seconds = time.perf_counter() - start
    out = capsys_module()
    report = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    return code, report, seconds


@pytest.fixture(scope="module")
def capsys_module():
    """Module-scoped stdout capture (pytest's capsys is function-scoped)."""
    import contextlib
    import io

    buffer = io.StringIO()
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(buffer))

    def read():
        stack.close()
        return buffer.getvalue()
    yield read
    stack.close()


def test_tiny_report_is_fast_and_positive(impossible_budget_run):
    _, r, seconds = impossible_budget_run
    assert seconds < 60, f"the tiny AOT report took {seconds:.0f} s"
    assert r["preset"] == "tiny" and r["platform"] == "cpu" and r["num_devices"] == 8
    assert r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert r["shapes"]["updates"] == 2
    for key in ("argument_bytes", "temp_bytes", "output_bytes", "student_params_bytes",
                "optimizer_state_bytes", "teacher_params_bytes", "total_bytes"):
        assert r[key] > 0, key
    # AdamW keeps two float32 moments per float32 parameter (plus counters).
    assert r["optimizer_state_bytes"] >= 2 * r["student_params_bytes"]
    # The donated train state comes back as the output's aliased buffers.
    assert r["alias_bytes"] > 0
    assert r["lower_seconds"] > 0 and r["compile_seconds"] > 0


def test_impossible_budget_reports_oom(impossible_budget_run):
    code, r, _ = impossible_budget_run
    assert code == aot.EXIT_OOM
    assert r["status"] == "oom_simulated"
    assert r["hbm_bytes"] == 1024
    assert r["required_bytes"] == r["total_bytes"] > r["hbm_bytes"]
    report = aot.AotReport(**{k: v for k, v in r.items() if k in aot.AotReport.__dataclass_fields__})
    text = report.summary()
    assert "OUT OF MEMORY" in text and "requires" in text and "available 1.00 KiB" in text
    assert "**OOM (sim.)**" in aot.table([report])


def test_budget_judgement_fits_with_room(impossible_budget_run):
    _, r, _ = impossible_budget_run
    report = aot.AotReport(**{k: v for k, v in r.items() if k in aot.AotReport.__dataclass_fields__})
    aot.apply_budget(report, 16 * aot.GIB)
    assert report.fits and report.required_bytes is None
    assert "FITS" in report.summary()
    assert "| tiny | cpu cpu x8 | 1,8,1 |" in aot.table([report])


def test_chip_hbm_and_topology_names():
    assert aot.chip_hbm_bytes("v5p:2x2x1") == 95 * aot.GIB
    assert aot.chip_hbm_bytes("v6e:2x4") == 32 * aot.GIB
    assert aot.chip_hbm_bytes("v5e:2x2") == 16 * aot.GIB
    assert aot.chip_hbm_bytes("v4:2x2x1") == 32 * aot.GIB
    assert aot.chip_hbm_bytes("v5e:2x2", override_gib=0.5) == aot.GIB // 2
    with pytest.raises(ValueError, match="unknown TPU generation"):
        aot.chip_hbm_bytes("v9z:2x2")
    assert aot.parse_mesh("1,-1,1") == (1, -1, 1)


def test_parse_tpu_compile_oom_message():
    message = ("XlaRuntimeError: RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in "
               "memory space hbm. Used 120.50G of 95.74G hbm. Exceeded hbm capacity by 24.76G.")
    assert aot.is_hbm_oom(message)
    required, available = aot.parse_hbm_oom(message)
    assert required == int(120.50 * aot.GIB) and available == int(95.74 * aot.GIB)
    # libtpu 0.0.42's wording (measured: Qwen3-4B at the recipe's shapes on v5p:2x2x1).
    message = ("JaxRuntimeError: RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
               "HLO temporaries (176.47G) exceeds available HBM (95.74G).")
    assert aot.is_hbm_oom(message)
    assert aot.parse_hbm_oom(message) == (int(176.47 * aot.GIB), int(95.74 * aot.GIB))
    assert aot.parse_hbm_oom("RESOURCE_EXHAUSTED: something else") == (None, None)
    assert not aot.is_hbm_oom("INVALID_ARGUMENT: bad sharding")


def test_all_presets_child_arguments():
    argv = ["--all-presets", "--topology", "v6e:2x4", "--timeout", "10", "--json", "--mesh", "1,8,1",
            "--config.teacher_slice=0"]
    assert aot._child_argv(argv, "qwen3-4b") == ["--topology", "v6e:2x4", "--mesh", "1,8,1",
                                                 "--config.teacher_slice=0", "--preset", "qwen3-4b", "--json"]


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason='libtpu is not installed (pip install "jax[tpu]==<jax version>")')
def test_tpu_topology_compile():
    config = aot.load_config([], preset="tiny")
    config.batch_size, config.minibatch_size = 8, 4
    spec = aot.AotSpec(config=config, topology="v5e:2x2", platform="tpu", prompt_len=8, max_new_tokens=8)
    report = aot.run_aot(spec)
    assert report.status == "fits", report.error
    assert report.num_devices == 4 and report.temp_bytes > 0


def test_bad_mesh_is_one_clear_error(capsys):
    code = aot.main(["--preset", "tiny", "--platform", "cpu", "--mesh", "1,3,1"])
    assert code == aot.EXIT_BAD_INPUT
    assert "error: mesh data=1 x fsdp=3 x tensor=1 = 3 devices, but 8 devices" in capsys.readouterr().err


def test_unknown_config_field_is_one_clear_error(capsys):
    code = aot.main(["--preset", "tiny", "--platform", "cpu", "--config.no_such_field=1"])
    assert code == aot.EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: unknown config field --config.no_such_field\n"


def _spec(argv):
    args, config_argv = aot.build_parser().parse_known_args(argv)
    return aot.spec_from_args(args, config_argv)


def test_table1_config_gives_the_trainers_step():
    """Acceptance: the AOT plan of `table1.py:qwen3-4b` compiles the StepConfig the trainer builds
    from the same config, at the config's batch, minibatch and largest response budget."""
    from experiments.configs import table1
    from opdlm_jax.checkpoints.presets import preset_config
    from opdlm_jax.decoding.batching import bucket_width
    from opdlm_jax.train.setup import SpecialTokens, curriculum, step_config

    spec = _spec(["--config", "experiments/configs/table1.py:qwen3-4b", "--topology", "v5p:2x2x1"])
    config = table1.get_config("qwen3-4b")
    block = config.rollout.block_size
    budget = curriculum(config).length(config.steps, block)
    teacher = preset_config(config.teacher, dtype=config.dtype, param_dtype=config.param_dtype,
                            scan_layers=config.scan_layers, remat_policy=config.remat_policy)
    trainer_step = step_config(config, teacher, SpecialTokens.of_config(teacher), budget)

    student_arch, teacher_arch = aot.model_configs(spec)
    assert teacher_arch == teacher and student_arch == teacher
    assert spec.step_config(teacher_arch) == trainer_step
    shapes = spec.shapes()
    assert (shapes["batch"], shapes["minibatch"], shapes["max_new_tokens"]) == (
        config.batch_size, config.minibatch_size, budget)
    assert shapes["updates"] == config.batch_size // config.minibatch_size
    assert shapes["prompt_len"] == bucket_width(config.data.max_prompt_tokens, block,
                                                minimum=config.data.prompt_bucket, ladder=config.data.prompt_ladder)
    assert (budget, shapes["prompt_len"]) == (4096, 1024)  # the recipe: 4000 tokens in buckets of 256


def test_preset_means_its_recipe_and_flags_override():
    from experiments.configs.common import recipe

    assert _spec(["--preset", "qwen3-8b"]).config.to_dict() == recipe("qwen3-8b").to_dict()
    spec = _spec(["--preset", "qwen3-4b", "--config.loss.topk=8", "--config.rollout.threshold", "0.8",
                  "--batch", "64", "--teacher-slice", "0", "--mesh", "1,4,2", "--prompt-len", "512"])
    c = spec.config
    assert (c.loss.topk, c.rollout.threshold, c.batch_size, c.teacher_slice) == (8, 0.8, 64, 0)
    assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) == (1, 4, 2)
    assert spec.shapes()["prompt_len"] == 512 and spec.shapes()["max_new_tokens"] == 4096
