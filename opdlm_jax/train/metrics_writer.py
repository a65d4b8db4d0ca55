"""Metrics to JSONL and TensorBoard event files (tensorboardX: no TensorFlow needed)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping


class MetricsWriter:
    def __init__(self, workdir: str | os.PathLike, tensorboard: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None:
        record = {"step": step, "split": prefix, **{k: float(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{prefix}/{k}", float(v), step)

    def write_data_order(self, step: int, ids: list) -> None:
        """The ids of the records a step trained on (data_order.jsonl), to audit resumes."""
        with open(self.path.parent / "data_order.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "ids": ids}) + "\n")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str | os.PathLike, split: str | None = None) -> list[dict]:
    """The records of metrics.jsonl in step order, one per (split, step).

    A resumed run appends again the steps after its last checkpoint; the later record of a step
    is the one the finished run stands on, so it replaces the earlier one (plots never go back).
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
