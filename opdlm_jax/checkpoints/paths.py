"""Paths of runs and results, local or in Cloud Storage (etils.epath), and atomic file writes."""
from __future__ import annotations

import os
from pathlib import Path

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
    """A URL-style path (gs://...) rather than a local one."""
    return "://" in (path if isinstance(path, str) else str(path))


def as_epath(path: str | os.PathLike) -> epath.Path:
    """Local paths made absolute (Orbax wants them so), URLs (gs://) as they are."""
    return epath.Path(path) if is_remote(path) else epath.Path(Path(path).absolute())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` so that readers see the old or the new file, never half of it.

    Locally: written and fsynced to a sibling temporary file, then renamed over `path`. Remote
    objects (gs://) are replaced whole by one upload, which is atomic by itself (and a rename
    there is a copy)."""
    if is_remote(path):
        epath.Path(path).write_text(text)
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
