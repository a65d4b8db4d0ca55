"""Test set-up: fake 8 CPU devices before JAX is imported, float32 matmul precision, and one
persistent compilation cache for the session and its subprocesses (identical programs compiled by
different tests, or by the trainer runs of one test, are compiled once)."""
import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A fresh clone starts cold; set OPDLM_COMPILATION_CACHE=off to measure without it.
os.environ.setdefault("OPDLM_COMPILATION_CACHE", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "xla"))

import jax  # noqa: E402

from opdlm_jax.compilation_cache import enable_compilation_cache  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
enable_compilation_cache()
