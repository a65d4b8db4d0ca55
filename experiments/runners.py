"""Multi-run experiments, dispatched by `config.experiment` (e.g. the embedded-default demo)."""
from __future__ import annotations

from pathlib import Path


def run(experiment: str, config, workdir: Path) -> None:
    if experiment == "demo":
        from experiments.demo import run_demo

        run_demo(config, workdir)
        return
    raise ValueError(f"unknown experiment {experiment!r}; expected 'train' or 'demo'")
