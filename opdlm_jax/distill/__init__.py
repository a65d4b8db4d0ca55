"""On-policy distillation loss: divergences, sequence-chunked evaluation, loss positions."""
from opdlm_jax.distill.chunked import chunked_divergence, with_topk_mass
from opdlm_jax.distill.divergences import (DIVERGENCES, divergence_fn, forward_kl,
                                           generalized_jsd, match_vocab, reverse_kl, teacher_topk,
                                           topk_forward_kl_reference, topk_forward_kl_tail,
                                           topk_mass)
from opdlm_jax.distill.loss import LossSums, loss_positions, loss_sums, normalise, safe_divide

__all__ = ["DIVERGENCES", "LossSums", "chunked_divergence", "divergence_fn", "forward_kl",
           "generalized_jsd", "loss_positions", "loss_sums", "match_vocab", "normalise",
           "reverse_kl", "safe_divide", "teacher_topk", "topk_forward_kl_reference",
           "topk_forward_kl_tail", "topk_mass", "with_topk_mass"]
