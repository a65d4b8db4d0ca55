"""Resumable evaluation: per-example records written one chunk of rows at a time.

A benchmark's rows are cut into consecutive chunks of `chunk_size`; each finished chunk is one
JSON-lines file, written to a temporary name and renamed, so a file that exists is complete. A
rerun skips the chunks whose file exists: a preempted evaluation loses at most the chunk in
progress (the reference's `--num_chunks`). The settings the records were made with are stored
beside them; a rerun with other settings is refused rather than mixing the two.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from opdlm_jax.checkpoints.paths import atomic_write_text
from opdlm_jax.errors import BadInput


class ChunkStore:
    def __init__(self, directory: str | os.PathLike, settings: Mapping[str, Any], num_rows: int,
                 chunk_size: int):
        if chunk_size < 1:
            raise BadInput(f"--chunk-size must be >= 1, got {chunk_size}")
        self.directory = Path(directory)
        self.num_rows, self.chunk_size = num_rows, chunk_size
        self.num_chunks = (num_rows + chunk_size - 1) // chunk_size
        self.settings = dict(settings, num_rows=num_rows, chunk_size=chunk_size)
        self.directory.mkdir(parents=True, exist_ok=True)
        stored = self.directory / "settings.json"
        if stored.is_file():
            before = json.loads(stored.read_text(encoding="utf-8"))
            if before != json.loads(json.dumps(self.settings)):
                diff = sorted(k for k in set(before) | set(self.settings)
                              if before.get(k) != json.loads(json.dumps(self.settings.get(k))))
                raise BadInput(f"{self.directory} holds records made with other settings (differing: "
                               f"{', '.join(diff)}); use another --out or delete that directory")
        else:
            atomic_write_text(stored, json.dumps(self.settings, indent=1, sort_keys=True))

    def rows_of(self, k: int) -> range:
        return range(k * self.chunk_size, min((k + 1) * self.chunk_size, self.num_rows))

    def path(self, k: int) -> Path:
        return self.directory / f"chunk_{k:05d}_of_{self.num_chunks:05d}.jsonl"

    def done(self, k: int) -> bool:
        return self.path(k).is_file()

    def pending(self) -> list[int]:
        return [k for k in range(self.num_chunks) if not self.done(k)]

    def write(self, k: int, records: Iterable[Mapping[str, Any]]) -> None:
        atomic_write_text(self.path(k), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def records(self) -> list[dict]:
        """Every finished chunk's records, in row order."""
        out = []
        for k in range(self.num_chunks):
            if self.done(k):
                with open(self.path(k), encoding="utf-8") as f:
                    out.extend(json.loads(line) for line in f if line.strip())
        return out
