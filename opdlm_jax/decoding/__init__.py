"""Decoding: token sampling, stopping, the AR decoder, the block-diffusion sampler and its
unmasking strategies, and the host-side generate API (padding, bucketing, compile once per shape).

Nothing here knows about training: the training side (states, layouts, losses) sits above it.
"""
from opdlm_jax.decoding.api import GenerationResult, generate_ar, generate_diffusion
from opdlm_jax.decoding.ar_decoder import ARDecodeOutput, ar_decode
from opdlm_jax.decoding.block_diffusion import DiffusionOutput, block_diffusion_decode
from opdlm_jax.decoding.config import ALIGNMENTS, SamplerConfig
from opdlm_jax.decoding.sampling import SamplingParams

__all__ = ["ALIGNMENTS", "ARDecodeOutput", "DiffusionOutput", "GenerationResult", "SamplerConfig",
           "SamplingParams", "ar_decode", "block_diffusion_decode", "generate_ar", "generate_diffusion"]
