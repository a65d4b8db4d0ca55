"""On-policy distillation: teacher scoring, divergences, the sequence-chunked vocabulary
projection and the OPD loss. Loss positions and normalisation are in `opdlm_jax.diffusion.loss`."""
from opdlm_jax.distill.chunked import chunked_divergence, with_topk_mass
from opdlm_jax.distill.divergences import (DIVERGENCES, divergence_fn, forward_kl,
                                           generalized_jsd, match_vocab, reverse_kl, teacher_topk,
                                           topk_forward_kl_reference, topk_forward_kl_tail,
                                           topk_mass)

__all__ = ["DIVERGENCES", "chunked_divergence", "divergence_fn", "forward_kl",
           "generalized_jsd", "match_vocab", "reverse_kl", "teacher_topk",
           "topk_forward_kl_reference", "topk_forward_kl_tail", "topk_mass", "with_topk_mass"]
