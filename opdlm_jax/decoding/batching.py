"""Left-padding ragged prompts into bucketed static shapes, so that recompiles stay few."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)
_seen_shapes: set = set()


LADDERS = ("pow2", "pow2_half")


def bucket_width(n: int, multiple: int, minimum: int = 16, ladder: str = "pow2") -> int:
    """The smallest rung >= n, rounded up to a multiple of `multiple`.

    Rungs: "pow2" = minimum * 2^k; "pow2_half" also puts a rung half-way up each doubling
    (16, 24, 32, 48, 64, 96, ...): at most 1.5x padding instead of 2x, for one more compiled shape
    per doubling.
    """
    if ladder not in LADDERS:
        raise ValueError(f"unknown bucket ladder {ladder!r}; expected one of {LADDERS}")
    width = minimum
    while width < n:
        half = width + width // 2
        width = half if ladder == "pow2_half" and half >= n else width * 2
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
