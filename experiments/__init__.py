"""Experiment entry points and configs (thin layers over the opdlm_jax library)."""
