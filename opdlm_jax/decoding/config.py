"""Settings of the block-diffusion sampler (hashable: a static argument of the jitted decoder)."""
from __future__ import annotations

import dataclasses

from opdlm_jax.decoding.strategies import STRATEGIES
from opdlm_jax.decoding.sampling import SamplingParams

ALIGNMENTS = ("same_position", "shifted")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """block_size: tokens per block. steps_per_block: rounds per block (the last one unmasks
    whatever is left). alignment: "same_position" (logits at a masked position predict it; the
    reference OPDLM student) or "shifted" (logits at i-1 predict i, as in AR; Dream/Fast-dLLM v2).
    use_cache: False recomputes the whole prefix every round (reference for tests and benches).
    record_states: also return the active block as every forward pass saw it (debugging).
    """
    block_size: int = 4
    steps_per_block: int = 4
    strategy: str = "low_confidence_static"
    threshold: float = 0.9
    entropy_bound: float = 0.5
    sampling: SamplingParams = SamplingParams(greedy=True)
    alignment: str = "same_position"
    use_cache: bool = True
    record_states: bool = False

    def __post_init__(self):
        if self.block_size < 1:
            raise ValueError(f"block_size={self.block_size} must be >= 1")
        if not 1 <= self.steps_per_block <= self.block_size:
            raise ValueError(f"steps_per_block={self.steps_per_block} must be in [1, block_size={self.block_size}]")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.strategy in ("low_confidence_static", "random") and self.block_size % self.steps_per_block:
            raise ValueError(f"strategy {self.strategy!r} unmasks block_size / steps_per_block tokens per "
                             f"round: block_size={self.block_size} is not divisible by "
                             f"steps_per_block={self.steps_per_block}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold} must be in [0, 1]")
        if self.entropy_bound < 0:
            raise ValueError(f"entropy_bound={self.entropy_bound} must be >= 0")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"unknown alignment {self.alignment!r}; expected one of {ALIGNMENTS}")

    def replace(self, **changes) -> "SamplerConfig":
        return dataclasses.replace(self, **changes)
