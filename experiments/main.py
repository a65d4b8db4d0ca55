"""Entry point: `python -m experiments.main --config experiments/configs/<table>.py[:arg] --workdir DIR`.

Overrides: `--config.steps=10 --config.rollout.threshold=0.8`. Prints the resolved config and the
devices, writes config.json into the workdir, rejects invalid combinations at start-up, then calls
the library: `opdlm_jax.train.loop.train` for a training config, the experiment's own runner for
multi-run experiments (config.experiment names it).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import jax
from absl import app, flags
from ml_collections import config_flags

from opdlm_jax.train.config import ConfigError, validate_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "an ml_collections config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and results go")


def main(argv) -> None:
    del argv
    logging.getLogger().setLevel(logging.INFO)
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = _CONFIG.value
    if config is None or not _WORKDIR.value:
        sys.exit("error: --config and --workdir are required")
    from opdlm_jax.compilation_cache import enable_compilation_cache
    from opdlm_jax.sharding import initialize_distributed

    enable_compilation_cache()  # a resumed or repeated run loads its compiled step from disk
    initialize_distributed()  # a no-op on one host; joins the other workers on a TPU pod slice
    workdir = Path(_WORKDIR.value)
    print("config:\n" + str(config))
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform} "
          f"({jax.process_count()} process(es))", flush=True)
    experiment = config.get("experiment", "train")
    try:
        if experiment == "train":
            validate_config(config)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=1, default=str))
        if experiment == "train":
            from opdlm_jax.train.loop import train

            result = train(config, workdir)
            print(json.dumps({k: v for k, v in result["metrics"].items() if not isinstance(v, dict)}, indent=1))
        else:
            from experiments import runners

            runners.run(experiment, config, workdir)
    except ConfigError as e:
        sys.exit(f"error: invalid config: {e}")


if __name__ == "__main__":
    app.run(main)
