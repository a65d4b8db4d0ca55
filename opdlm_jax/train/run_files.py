"""Files a run writes into its workdir besides checkpoints, each written atomically.

    config.json          the resolved config (written once the run is accepted)
    run.json             the run's identity (`train.run_identity`)
    train_summary.json   how the last invocation ended: status finished | preempted | stopped
"""
from __future__ import annotations

import json
import os
from urllib.parse import urlparse

from etils import epath

from opdlm_jax.checkpoints.paths import atomic_write_text, is_remote
from opdlm_jax.errors import BadInput

__all__ = ["REMOTE_SCHEMES", "atomic_write_text", "is_remote", "run_directory", "truncate_jsonl", "write_json"]

# Where a run may live: local paths, and Google Cloud Storage (what Orbax, tfds and epath all
# support on a TPU VM; gcsfs is the epath backend without TensorFlow).
REMOTE_SCHEMES = ("gs",)


def run_directory(workdir) -> epath.Path:
    """The workdir as an epath (local or gs://); any other scheme is a BadInput at start-up."""
    text = str(workdir)
    if "://" in text:
        scheme = urlparse(text).scheme
        if scheme not in REMOTE_SCHEMES:
            raise BadInput(f"--workdir {text}: {scheme}:// is not supported; use a local path or "
                           + ", ".join(f"{s}://" for s in REMOTE_SCHEMES))
        return epath.Path(text)
    return epath.Path(os.path.abspath(text))


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
