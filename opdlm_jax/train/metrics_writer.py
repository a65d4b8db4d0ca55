"""Metrics to JSONL and TensorBoard event files (tensorboardX: no TensorFlow needed).

The workdir may be local or remote (`gs://`, through etils.epath). Local files are appended to;
a remote object cannot be appended to, so there each JSONL file is rewritten whole (atomically)
after every record: a few hundred kB for a recipe-length run. TensorBoard events are written only
for a local workdir (metrics.jsonl holds the same numbers).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Mapping

from etils import epath

from opdlm_jax.train.run_files import atomic_write_text, is_remote

log = logging.getLogger(__name__)


class _JsonlFile:
    """One JSONL file: appended locally, rewritten whole when remote."""

    def __init__(self, path: epath.Path):
        self.path = path
        self._remote = is_remote(path)
        self._lines = (path.read_text().splitlines(keepends=True) if self._remote and path.exists() else [])
        self._file = None if self._remote else open(os.fspath(path), "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        line = json.dumps(record) + "\n"
        if self._remote:
            self._lines.append(line)
            atomic_write_text(self.path, "".join(self._lines))
        else:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class MetricsWriter:
    """Appends metrics records; a disabled writer (processes other than 0) writes nothing."""

    def __init__(self, workdir: str | os.PathLike, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        workdir = epath.Path(workdir)
        self.path = workdir / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        self._metrics = _JsonlFile(self.path)
        self._order = _JsonlFile(workdir / "data_order.jsonl")
        if tensorboard and is_remote(workdir):
            log.warning("TensorBoard events are written for local workdirs only; %s/metrics.jsonl has "
                        "every metric", workdir)
        elif tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.fspath(workdir / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        self._metrics.append({"step": step, "split": prefix, **{k: float(v) for k, v in metrics.items()}})
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{prefix}/{k}", float(v), step)

    def write_data_order(self, step: int, ids: list) -> None:
        """The ids of the records a step trained on (data_order.jsonl), to audit resumes."""
        if self.enabled:
            self._order.append({"step": step, "ids": ids})

    def close(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        self._order.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str | os.PathLike, split: str | None = None) -> list[dict]:
    """The records of metrics.jsonl in step order, one per (split, step).

    The trainer cuts the file back to the restored step when it resumes; should a step still
    appear twice (a file from an older version), the later record replaces the earlier one.
    """
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    latest: dict = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if split is None or r.get("split") == split:
                latest[r.get("split"), r["step"]] = r
    return sorted(latest.values(), key=lambda r: (r["step"], str(r.get("split"))))
