"""opdlm_jax: on-policy distillation of autoregressive LMs into block-diffusion LMs, in JAX.

Text generation: `generate_text(load_model("smollm2-135m"), "...")` (AR, the teacher) or
`generate_text(load_run("runs/x"), "...")` (a trained block-diffusion student, decoded with its
run's settings); token ids: `generate_ar`, `generate_diffusion`. Training loss on rollouts from
elsewhere: `opd_loss_from_rollouts`. The model: `forward`, `ModelConfig`, `init_params`.
"""
from opdlm_jax.distill.opd_loss import LossConfig, opd_loss, opd_loss_from_rollouts
from opdlm_jax.checkpoints.loading import LoadedModel, load_model
from opdlm_jax.decoding import GenerationResult, SamplerConfig, SamplingParams, generate_ar, generate_diffusion
from opdlm_jax.models import ModelConfig, forward, init_params
from opdlm_jax.text_generation import generate_text, load_run

__all__ = ["GenerationResult", "LoadedModel", "LossConfig", "ModelConfig", "SamplerConfig", "SamplingParams",
           "forward", "generate_ar", "generate_diffusion", "generate_text", "init_params", "load_model",
           "load_run", "opd_loss", "opd_loss_from_rollouts"]
