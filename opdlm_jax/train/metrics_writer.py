"""Metrics to JSONL and TensorBoard event files (tensorboardX: no TensorFlow needed)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping


class MetricsWriter:
    """Appends metrics records; a disabled writer (processes other than 0) writes nothing."""

    def __init__(self, workdir: str | os.PathLike, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": prefix, **{k: float(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{prefix}/{k}", float(v), step)

    def write_data_order(self, step: int, ids: list) -> None:
        """The ids of the records a step trained on (data_order.jsonl), to audit resumes."""
        if not self.enabled:
            return
        with open(self.path.parent / "data_order.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "ids": ids}) + "\n")

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str | os.PathLike, split: str | None = None) -> list[dict]:
    """The records of metrics.jsonl in step order, one per (split, step).

    The trainer cuts the file back to the restored step when it resumes; should a step still
    appear twice (a file from an older version), the later record replaces the earlier one.
    """
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    latest: dict = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if split is None or r.get("split") == split:
                latest[r.get("split"), r["step"]] = r
    return sorted(latest.values(), key=lambda r: (r["step"], str(r.get("split"))))
