"""Multi-run experiments, dispatched by `config.experiment` (e.g. the embedded-default demo)."""
from __future__ import annotations

from pathlib import Path


def run(experiment: str, config, workdir: Path) -> None:
    if experiment == "demo":
        from experiments.demo import run_demo

        run_demo(config, workdir)
        return
    if experiment == "sweep":
        run_sweep(config, workdir)
        return
    raise ValueError(f"unknown experiment {experiment!r}; expected 'train', 'demo' or 'sweep'")


def run_sweep(config, workdir: Path) -> None:
    """Decoding-parallelism sweep of one model; writes sweep.json and prints the table."""
    import json

    import jax

    from experiments.data.prompts import load_prompt_file
    from experiments.evaluation import EvalSet, encode, sweep_setting_name, threshold_sweep
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.checkpoints.orbax import load_model_from_run

    model = load_model_from_run(config.run_dir) if config.run_dir else load_model(config.model)
    model.params = jax.device_put(model.params)
    math = [r for r in load_prompt_file(config.prompts) if r["domain"] == "math"][:config.n_math]
    evalset = EvalSet([encode(model.tokenizer, r["prompt"]) for r in math], [r["answer"] for r in math],
                      [], [], [])
    rows = threshold_sweep(model, model.params, evalset, alignment=config.alignment,
                           thresholds=list(config.thresholds), block_sizes=list(config.block_sizes),
                           max_new_tokens=config.max_new_tokens)
    (Path(workdir) / "sweep.json").write_text(json.dumps(rows, indent=1))
    print("| decoding | block | accuracy | tokens/round | tokens/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {sweep_setting_name(r)} | {r['block_size']} | {r['accuracy']:.3f} | {r['tokens_per_round']:.2f} | "
              f"{r['tokens_per_second']:.1f} |")
