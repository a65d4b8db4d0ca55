"""Block-diffusion decoding: sampler, strategies, trajectories."""
from opdlm_jax.diffusion.config import SamplerConfig
from opdlm_jax.diffusion.sampler import DiffusionOutput, block_diffusion_decode
from opdlm_jax.diffusion.trajectory import block_round_state, realised_rounds

__all__ = ["SamplerConfig", "DiffusionOutput", "block_diffusion_decode", "block_round_state",
           "realised_rounds"]
