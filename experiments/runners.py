"""Multi-run experiments, dispatched by `config.experiment` (e.g. the embedded-default demo)."""
from __future__ import annotations

import json
from pathlib import Path

from opdlm_jax.data.chat_format import ChatFormat, chat_format_from_config, prompt_token_ids
from opdlm_jax.data.prompt_records import read_prompt_records
from opdlm_jax.errors import BadInput


EXPERIMENTS = ("train", "demo", "sweep", "long", "long_ablations")


def validate(experiment: str, config) -> None:
    """What a multi-run experiment reads exists, before its workdir is created (BadInput)."""
    if experiment not in EXPERIMENTS:
        raise BadInput(f"unknown experiment {experiment!r}; expected one of {', '.join(EXPERIMENTS)}")
    if experiment in ("demo", "long"):  # every run's prompt files and models, as a single training run checks them
        from opdlm_jax.train.config import validate_config

        validate_config(config.train, check_files=True)
    if experiment == "long_ablations":
        from experiments.long_ablations import validate_ablations

        try:
            validate_ablations(config)
        except ValueError as e:
            raise BadInput(str(e)) from e
    if experiment == "sweep":
        from experiments.data.prompts import ANSWER_DOMAINS
        from opdlm_jax.checkpoints.loading import resolve_model

        read_prompt_records(config.prompts, require_answer_for=ANSWER_DOMAINS)  # names file and line
        if config.run_dir and not Path(config.run_dir).is_dir():
            raise BadInput(f"run_dir={config.run_dir!r}: no such run directory")
        if not config.run_dir:
            try:
                resolve_model(config.model)
            except FileNotFoundError as e:
                raise BadInput(f"model={config.model!r}: {e}") from e


def run(experiment: str, config, workdir: Path) -> bool:
    """Run the experiment; True when it stopped early with its state saved (rerun to continue)."""
    if experiment == "long":
        from experiments.long import run_long

        return run_long(config, workdir)
    if experiment == "long_ablations":
        from experiments.long_ablations import run_ablations

        return run_ablations(config, workdir)
    if experiment == "demo":
        from experiments.demo import run_demo

        run_demo(config, workdir)
        return False
    if experiment == "sweep":
        run_sweep(config, workdir)
        return False
    raise BadInput(f"unknown experiment {experiment!r}; expected one of {', '.join(EXPERIMENTS)}")


def run_sweep(config, workdir: Path) -> None:
    """Decoding-parallelism sweep of one model; writes sweep.json and prints the table."""
    import jax

    from experiments.data.prompts import ANSWER_DOMAINS
    from experiments.evaluation import EvalSet, sweep_setting_name, threshold_sweep
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.checkpoints.orbax import load_model_from_run

    records = read_prompt_records(config.prompts, require_answer_for=ANSWER_DOMAINS)  # before the model: cheap
    model = load_model_from_run(config.run_dir) if config.run_dir else load_model(config.model)
    model.params = jax.device_put(model.params)
    math = [r for r in records if r.domain == "math"][:config.n_math]
    fmt = run_chat_format(config.run_dir)
    evalset = EvalSet([prompt_token_ids(model.tokenizer, r, fmt) for r in math], [r.answer for r in math],
                      [], [], [])
    rows = threshold_sweep(model, model.params, evalset, alignment=config.alignment,
                           thresholds=list(config.thresholds), block_sizes=list(config.block_sizes),
                           max_new_tokens=config.max_new_tokens)
    (Path(workdir) / "sweep.json").write_text(json.dumps(rows, indent=1))
    print("| decoding | block | accuracy | tokens/round | tokens/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {sweep_setting_name(r)} | {r['block_size']} | {r['accuracy']:.3f} | {r['tokens_per_round']:.2f} | "
              f"{r['tokens_per_second']:.1f} |")


def run_chat_format(run_dir: str) -> ChatFormat:
    """The format the run trained with, from the config.json `experiments.main` wrote into its
    workdir; without one (an untrained model, a demo run) the toy configs' format: no suffixes."""
    config_file = Path(run_dir) / "config.json" if run_dir else None
    if config_file is not None and config_file.is_file():
        run_config = json.loads(config_file.read_text())
        if "data" in run_config:  # a training config, not a multi-run experiment's
            return chat_format_from_config(run_config)
    return ChatFormat(suffixes={})
