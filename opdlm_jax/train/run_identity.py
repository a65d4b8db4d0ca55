"""The settings that define a run, stored with it so that a resume with other settings is refused.

A run is its method, models, conversion (alignment, block size), objective, data, seed and batch
shape; steps, logging, evaluation and checkpoint cadence may change between restarts. Data files
are identified by a hash of their content, so a moved copy of the same file still resumes.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from etils import epath

from opdlm_jax.errors import BadInput

FILENAME = "run.json"
FIELDS = ("method", "teacher", "student", "rollout.alignment", "rollout.block_size", "loss.divergence",
          "selection", "data.train", "data.corpus", "seed", "batch_size", "minibatch_size")
# What checkpoints written before run.json existed recorded in their meta (same meaning).
_LEGACY_META = {"method": "method", "teacher": "teacher", "student": "student", "seed": "seed",
                "rollout.block_size": "block_size", "rollout.alignment": "alignment"}


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with epath.Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()[:16]


def _get(config, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def run_identity(config) -> dict:
    """field -> value for every FIELDS entry (data.train as a content hash)."""
    identity = {}
    for field in FIELDS:
        value = _get(config, field)
        if field == "student":
            value = value or config.teacher
        if field == "data.train":
            value = _file_digest(value) if value and config.method != "corpus" else ""
        if field == "data.corpus" and config.method != "corpus":
            value = ""
        identity[field] = value
    return identity


def stored_identity(workdir: epath.Path) -> dict | None:
    path = workdir / FILENAME
    return json.loads(path.read_text()) if path.exists() else None


def identity_from_meta(meta: dict) -> dict:
    """The part of a run's identity an older checkpoint's meta holds."""
    return {field: meta[key] for field, key in _LEGACY_META.items() if key in meta}


def check_same_run(stored: dict, identity: dict, workdir: epath.Path) -> None:
    """BadInput naming every field whose value differs from the run stored in `workdir`."""
    changed = [f"{field}: run has {stored[field]!r}, this config {identity.get(field)!r}"
               for field in stored if field in identity and stored[field] != identity[field]]
    if changed:
        raise BadInput(f"{workdir} holds a different run; refusing to resume (" + "; ".join(changed)
                       + "). Use a new --workdir, or the run's own settings.")
