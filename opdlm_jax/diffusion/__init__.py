"""The masked-diffusion training side: rollout batches, trajectory states and their selection,
the 2L training layout and the student's forward over it, loss positions and normalisation, the
BD3-LM loss and the ELBO likelihood. Decoding lives in `opdlm_jax.decoding`, below this package.
"""
from opdlm_jax.diffusion.loss import NORMALISATIONS, LossSums, loss_positions, loss_sums, normalise
from opdlm_jax.diffusion.rollout_batch import RolloutBatch
from opdlm_jax.diffusion.states import (SELECTIONS, block_round_state, masked_from_rounds,
                                        realised_rounds, select_states)
from opdlm_jax.diffusion.student import output_logits_fn, output_vocab_limit, student_hidden

__all__ = ["NORMALISATIONS", "LossSums", "RolloutBatch", "SELECTIONS", "block_round_state", "loss_positions",
           "loss_sums", "masked_from_rounds", "normalise", "output_logits_fn", "output_vocab_limit",
           "realised_rounds", "select_states", "student_hidden"]
