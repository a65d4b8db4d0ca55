"""Tiny random model configurations shared by the tests."""
import jax

from opdlm_jax.models import ModelConfig, init_params


def tiny_config(family: str = "qwen3", **overrides) -> ModelConfig:
    fields = dict(family=family, vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=16 if family == "qwen3" else 8,
                  qk_norm=family == "qwen3", attention_bias=family == "qwen2",
                  rope_theta=10000.0, eos_token_ids=(1,), mask_token_id=96)
    fields.update(overrides)
    return ModelConfig(**fields)


def tiny_model(family: str = "qwen3", seed: int = 0, **overrides):
    config = tiny_config(family, **overrides)
    return config, init_params(config, jax.random.PRNGKey(seed))
