"""Rollout-length curriculum: the response budget grows from `start` to `end` over `ramp_steps`.

Lengths are rounded up to a bucket (a multiple of the block size) so that only a few shapes are
compiled; per-domain caps bound each sequence's own budget.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Curriculum:
    start: int = 100
    end: int = 4000
    ramp_steps: int = 100
    ramp: str = "cosine"  # "linear" (paper, over 10 rollouts) | "cosine" (reference, 100 RL steps)
    bucket: int = 64
    domain_caps: tuple = ()  # ((domain, cap), ...)

    def __post_init__(self):
        if self.ramp not in ("linear", "cosine"):
            raise ValueError(f"curriculum ramp {self.ramp!r} must be 'linear' or 'cosine'")
        if not 0 < self.start <= self.end:
            raise ValueError(f"curriculum start={self.start} and end={self.end} must satisfy 0 < start <= end")
        if self.bucket < 1:
            raise ValueError(f"curriculum bucket={self.bucket} must be >= 1")

    def raw_length(self, step: int) -> float:
        frac = 1.0 if self.ramp_steps <= 0 else min(step / self.ramp_steps, 1.0)
        if self.ramp == "cosine":
            frac = 0.5 * (1 - math.cos(math.pi * frac))
        return self.start + (self.end - self.start) * frac

    def length(self, step: int, block_size: int) -> int:
        """The bucketed batch budget at RL step `step` (a multiple of bucket and block size)."""
        unit = math.lcm(self.bucket, block_size)
        return max(unit, int(math.ceil(self.raw_length(step) / unit)) * unit)

    def sequence_budgets(self, step: int, domains: Sequence[str], block_size: int) -> tuple[int, np.ndarray]:
        """(batch budget, per-sequence budgets [B]) with the per-domain caps applied.

        The batch budget shrinks (to a bucket) when every sequence of the batch is capped below it.
        """
        budget = self.length(step, block_size)
        caps: Mapping[str, int] = dict(self.domain_caps)
        per_seq = np.array([min(budget, caps.get(d, budget)) for d in domains], np.int32)
        per_seq = np.maximum(per_seq // block_size * block_size, block_size)
        unit = math.lcm(self.bucket, block_size)
        batch_budget = min(budget, int(math.ceil(per_seq.max() / unit)) * unit)
        return batch_budget, per_seq
