"""opdlm_jax: on-policy distillation of autoregressive LMs into block-diffusion LMs, in JAX."""
from opdlm_jax.distill.opd_loss import LossConfig, opd_loss, opd_loss_from_rollouts
from opdlm_jax.checkpoints.loading import LoadedModel, load_model
from opdlm_jax.models import ModelConfig, forward, init_params

__all__ = ["LoadedModel", "LossConfig", "ModelConfig", "forward", "init_params", "load_model", "opd_loss",
           "opd_loss_from_rollouts"]
