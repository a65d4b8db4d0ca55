"""Rollout-length curriculum: the response budget grows from `start` to `end` over `ramp_steps`.

As the reference trainer: at RL step n (1-based) the progress is p = min(n / ramp_steps, 1), the
budget start + (end - start) * f(p) rounded to the nearest multiple of the block size, with
f(p) = 1 - cos(pi p / 2) for "cosine" (the reference launchers' "cos" schedule, over 100 RL steps)
or f(p) = p for "linear" (the paper's wording, over 10 rollouts). That exact budget, capped per
domain, is what every sequence may generate; the compiled response width is the largest of them
rounded up to a bucket, so only a few shapes are compiled.
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
        """The budget before rounding at RL step `step` (0-based: the reference's step step + 1)."""
        progress = 1.0 if self.ramp_steps <= 0 else min((step + 1) / self.ramp_steps, 1.0)
        frac = 1 - math.cos(math.pi / 2 * progress) if self.ramp == "cosine" else progress
        return self.start + (self.end - self.start) * frac

    def exact_length(self, step: int, block_size: int) -> int:
        """The budget every uncapped sequence gets: the nearest multiple of the block size."""
        return max(int(round(self.raw_length(step) / block_size)) * block_size, block_size)

    def _bucketed(self, length: int, block_size: int) -> int:
        unit = math.lcm(self.bucket, block_size)
        return max(unit, -(-length // unit) * unit)

    def length(self, step: int, block_size: int) -> int:
        """The compiled response width at RL step `step`: the exact budget rounded up to a bucket."""
        return self._bucketed(self.exact_length(step, block_size), block_size)

    def sequence_budgets(self, step: int, domains: Sequence[str], block_size: int) -> tuple[int, np.ndarray]:
        """(compiled batch width, per-sequence budgets [B]): the exact budget with each domain's
        cap applied (rounded down to whole blocks). The width shrinks (to a bucket) when every
        sequence of the batch is capped below the budget."""
        budget = self.exact_length(step, block_size)
        caps: Mapping[str, int] = dict(self.domain_caps)
        per_seq = np.array([min(budget, caps.get(d, budget)) for d in domains], np.int32)
        per_seq = np.maximum(per_seq // block_size * block_size, block_size)
        return self._bucketed(int(per_seq.max()), block_size), per_seq
