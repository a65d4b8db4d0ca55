"""Entry point: `python -m experiments.main --config experiments/configs/<table>.py[:arg] --workdir DIR`.

Overrides: `--config.steps=10 --config.rollout.threshold=0.8`. Rejects invalid configs and
missing input files before anything is created, prints the resolved config and the devices, then
calls the library: `opdlm_jax.train.loop.train` for a training config (which writes config.json
once it has accepted the run), the experiment's own runner for multi-run experiments
(config.experiment names it; config.json is written here for those).

Exit codes (opdlm_jax/errors.py): 0 finished, 1 error, 2 bad input (one line `error: ...`;
`--debug` shows the traceback), 75 preempted with its state saved (rerun to resume).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from opdlm_jax.cli_errors import DEBUG_HELP, config_file_without_overrides, parse_flags, run_cli
from opdlm_jax.errors import EXIT_OK, EXIT_PREEMPTED, BadInput

_CONFIG = config_flags.DEFINE_config_file("config", None, "an ml_collections config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and results go")
flags.DEFINE_bool("debug", False, DEBUG_HELP)  # read by run_cli from argv


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with a bad flag or an unknown --config.x as one line (exit 2)."""
    return parse_flags(lambda: flags.FLAGS(argv), argv, lambda: config_file_without_overrides(argv))


def _validate(config) -> None:
    """Everything checkable before a file is written or a model is loaded."""
    experiment = config.get("experiment", "train")
    if experiment == "train":
        from opdlm_jax.train.config import validate_config

        validate_config(config, check_files=True)
    else:
        from experiments import runners

        runners.validate(experiment, config)


def main(argv) -> int:
    del argv
    logging.getLogger().setLevel(logging.INFO)
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = _CONFIG.value
    if config is None or not _WORKDIR.value:
        raise BadInput("--config and --workdir are required")
    _validate(config)
    from opdlm_jax.train.run_files import is_remote, run_directory

    workdir = run_directory(_WORKDIR.value)  # local or gs://; any other scheme is bad input
    import jax

    from opdlm_jax.compilation_cache import enable_compilation_cache
    from opdlm_jax.sharding import initialize_distributed

    enable_compilation_cache()  # a resumed or repeated run loads its compiled step from disk
    initialize_distributed()  # a no-op on one host; joins the other workers on a TPU pod slice
    if jax.process_index() == 0:  # the other workers' logs carry only what is theirs
        print("config:\n" + str(config))
    print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local of "
          f"{jax.device_count()} x {jax.devices()[0].platform} devices", flush=True)
    experiment = config.get("experiment", "train")
    if experiment == "train":
        return _train(config, workdir)
    from experiments import runners

    if is_remote(workdir):
        raise BadInput(f"--workdir {workdir}: experiment {experiment!r} writes to a local directory only")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=1, default=str))
    if runners.run(experiment, config, workdir):
        print("stopped early: the run saved its state; rerun the same command to continue", file=sys.stderr)
        return EXIT_PREEMPTED
    return EXIT_OK


def _train(config, workdir) -> int:
    """train() writes config.json itself once the run is accepted; preemption is exit 75."""
    from opdlm_jax.train.loop import train

    result = train(config, workdir)
    metrics = result.get("metrics") or {}
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=1))
    if result.get("preempted"):
        print("preempted: the run saved its state; rerun the same command to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    return EXIT_OK


def run() -> int:
    """The command line (sys.argv: ml_collections reads its overrides from there)."""
    return run_cli(lambda args: app.run(main, [sys.argv[0], *args], flags_parser=_parse_flags))


if __name__ == "__main__":
    sys.exit(run())
