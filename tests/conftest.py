"""Test set-up: fake 8 CPU devices before JAX is imported, float32 matmul precision, and the
persistent compilation cache for the session, its xdist workers and its subprocesses: a program
that another test, worker, subprocess or an earlier run already compiled is loaded from disk."""
import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The user-level cache of the CLIs (~/.cache/opdlm_jax/xla) unless OPDLM_COMPILATION_CACHE says
# otherwise: the first run on a machine is cold, later ones (any clone) are warm. "off" disables it.

import jax  # noqa: E402

from opdlm_jax.compilation_cache import enable_compilation_cache  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
enable_compilation_cache()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """(tiny HF model directory, prompt file) shared by every test that trains or loads a run."""
    from tiny_hf import make_tiny_hf_dir, write_prompts

    d = tmp_path_factory.mktemp("tiny_assets")
    return make_tiny_hf_dir(d / "model"), write_prompts(d / "prompts.jsonl")


@pytest.fixture(scope="session")
def tiny_run(tiny_assets, tmp_path_factory):
    """ONE finished 2-step run of tests/configs/tiny_train.py (checkpoints at steps 1 and 2),
    trained once per session for the tests that only read a run (decoding, export, parity)."""
    from opdlm_jax.train.loop import train
    from tests_configs_loader import load_config

    config = load_config(Path(__file__).resolve().parent / "configs" / "tiny_train.py")
    config.teacher, config.data.train = str(tiny_assets[0]), str(tiny_assets[1])
    config.data.max_prompt_tokens = 512
    config.steps = 2
    workdir = tmp_path_factory.mktemp("tiny_run") / "run"
    train(config, workdir, progress=False)
    return workdir
