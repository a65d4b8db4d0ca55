"""Files a run writes into its workdir besides checkpoints, each written atomically.

    config.json          the resolved config (written once the run is accepted)
    run.json             the run's identity (`train.run_identity`)
    train_summary.json   how the last invocation ended: status finished | preempted | stopped
"""
from __future__ import annotations

import json
import os

from etils import epath


def atomic_write_text(path: epath.Path, text: str) -> None:
    """Write to a sibling temporary file, then rename over `path`: readers see old or new, never half."""
    path = epath.Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: epath.Path, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, default=str) + "\n")


def truncate_jsonl(path: epath.Path, last_step: int) -> int:
    """Keep the records of `path` with step <= last_step (atomically) -> how many were dropped.

    A resumed run repeats the steps after its checkpoint; without this they would appear twice."""
    path = epath.Path(path)
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill mid-write
            continue
        if int(record.get("step", 0)) <= last_step:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)
