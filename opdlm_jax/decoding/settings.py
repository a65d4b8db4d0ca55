"""How a model decodes when the caller does not say: the settings a training run was trained
with (its checkpoint meta, or an export's `opdlm` section), else the defaults.

One resolver for every entry point (`opdlm-generate`, `opdlm-chat`, the lm-eval adapter,
`experiments.evaluate`, `opdlm_jax.generate_text`), so they agree on what "the run's settings" are.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from opdlm_jax.decoding.config import ALIGNMENTS, SamplerConfig
from opdlm_jax.decoding.sampling import SamplingParams
from opdlm_jax.decoding.strategies import STRATEGIES
from opdlm_jax.errors import BadInput

MODES = ("ar", "diffusion")
DEFAULT_BLOCK_SIZE = 4  # the paper's block size, for a model that brings none
DEFAULT_ALIGNMENT = "same_position"  # the reference's student
UNTRAINED_NOTE = ("note: decoding a plain model as block diffusion: this is the unconverted student, "
                  "expect gibberish until it is trained with OPD (--mode ar decodes the teacher; "
                  "--checkpoint RUN decodes a trained student)")


@dataclasses.dataclass(frozen=True)
class Decoding:
    """Resolved decoding settings: mode, the sampler (diffusion; its `sampling` serves AR too) and
    one-line notes for the user (an override of the run's setting, an untrained student)."""
    mode: str
    sampler: SamplerConfig
    notes: tuple[str, ...] = ()

    @property
    def sampling(self) -> SamplingParams:
        return self.sampler.sampling


def sampling_params(temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0) -> SamplingParams:
    """Greedy at temperature 0, else temperature / top-k / top-p sampling."""
    if temperature < 0:
        raise BadInput(f"temperature {temperature} must be >= 0")
    return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, greedy=temperature == 0)


def decoding_settings(run_meta: Mapping | None, *, mode: str | None = None, block_size: int | None = None,
                      alignment: str | None = None, steps_per_block: int | None = None,
                      strategy: str = "low_confidence_static", threshold: float = 0.9,
                      entropy_bound: float = 0.5, sampling: SamplingParams | None = None) -> Decoding:
    """What the caller chose, else what the run was trained with (`run_meta`), else the defaults.

    mode: diffusion for a run, ar for a plain model (run_meta None). block_size / alignment: the
    run's (else 4 / same_position). steps_per_block: the block size (one token per round, the
    authors' static decoding). A chosen alignment or block size that differs from the run's is
    kept and noted. BadInput for an unknown mode, strategy or alignment, a threshold outside [0, 1]."""
    meta = dict(run_meta or {})
    mode = mode or ("diffusion" if run_meta is not None else "ar")
    if mode not in MODES:
        raise BadInput(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if strategy not in STRATEGIES:
        raise BadInput(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if alignment is not None and alignment not in ALIGNMENTS:
        raise BadInput(f"unknown alignment {alignment!r}; choose from {', '.join(ALIGNMENTS)}")
    if not 0.0 <= threshold <= 1.0:
        raise BadInput(f"threshold {threshold} is outside [0, 1]")
    if block_size is not None and block_size < 1:
        raise BadInput(f"block size {block_size} must be >= 1")
    notes = []
    if mode == "diffusion":
        for name, chosen in (("alignment", alignment), ("block size", block_size)):
            trained = meta.get(name.replace(" ", "_"))
            if chosen is not None and trained is not None and chosen != trained:
                notes.append(f"warning: {name} {chosen} differs from the {trained} the run was trained "
                             f"with; decoding with {chosen}")
        if run_meta is None:
            notes.append(UNTRAINED_NOTE)
    block = int(block_size or meta.get("block_size", DEFAULT_BLOCK_SIZE))
    steps = steps_per_block or block
    if not 1 <= steps <= block:
        raise BadInput(f"steps per block {steps} must be in [1, block size {block}]")
    sampler = SamplerConfig(block_size=block, steps_per_block=steps, strategy=strategy, threshold=threshold,
                            entropy_bound=entropy_bound, sampling=sampling or SamplingParams(greedy=True),
                            alignment=alignment or meta.get("alignment", DEFAULT_ALIGNMENT))
    return Decoding(mode, sampler, tuple(notes))


def check_length_budget(decoding: Decoding, max_new_tokens: int) -> None:
    """BadInput unless max_new_tokens >= 1 and (diffusion) a multiple of the block size."""
    if max_new_tokens < 1:
        raise BadInput(f"max new tokens {max_new_tokens} must be >= 1")
    block = decoding.sampler.block_size
    if decoding.mode == "diffusion" and max_new_tokens % block:
        raise BadInput(f"block size {block} does not divide max new tokens {max_new_tokens}")
