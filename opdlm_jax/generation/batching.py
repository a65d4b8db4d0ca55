"""Left-padding ragged prompts into bucketed static shapes, so that recompiles stay few."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)
_seen_shapes: set = set()


def bucket_width(n: int, multiple: int, minimum: int = 16) -> int:
    """Smallest power of two >= max(n, minimum), rounded up to a multiple of `multiple`."""
    width = minimum
    while width < n:
        width *= 2
    return -(-width // multiple) * multiple


def left_pad(prompts: Sequence[Sequence[int]], width: int, pad_id: int):
    """-> tokens [B, width] int32, valid [B, width] bool; prompts end at the last column."""
    if not prompts:
        raise ValueError("no prompts given")
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    valid = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
        if len(p) > width:
            raise ValueError(f"prompt {i} has {len(p)} tokens, more than the width {width}")
        tokens[i, width - len(p):] = p
        valid[i, width - len(p):] = True
    return tokens, valid


def note_shape(kind: str, *shape) -> None:
    """Log the first time a decode function sees a shape (each new shape is one compile)."""
    key = (kind, *shape)
    if key not in _seen_shapes:
        _seen_shapes.add(key)
        log.info("compiling %s for shape %s (%d shapes so far)", kind, shape, len(_seen_shapes))
