"""Export a run's checkpoint to a HF directory and compare transformers' causal logits with ours.

    python -m experiments.export_parity --checkpoint runs/demo/opdlm_shifted   # needs torch ('.[test]')

A float32 difference alone cannot tell a real mismatch from rounding, which grows with depth and
logit scale (SmolLM2: 30 layers, |logit| ~ 40). So transformers also runs in float64, and the
report puts our float32 error against that reference next to transformers' own float32 error: a
correct export shows the two at the same size.
"""
from __future__ import annotations

import argparse
import tempfile
from typing import Sequence

import numpy as np

PROMPTS = ("In a few words, what is an atom?", "What is 12 times 7? Answer with just the number.",
           "Continue: To be, or not to be, that is the question:")


def compare(checkpoint: str, out_dir: str, prompts: Sequence[str] = PROMPTS) -> list[dict]:
    """Per prompt: max |Δlogit| of ours-f32 vs HF-f32, ours-f32 vs HF-f64, HF-f32 vs HF-f64."""
    import jax.numpy as jnp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opdlm_jax.export import export_run
    from opdlm_jax.models.forward import forward
    from opdlm_jax.checkpoints.orbax import load_model_from_run
    from opdlm_jax.data.chat_format import chat_prompt_ids

    export_run(checkpoint, out_dir)
    ours = load_model_from_run(checkpoint)
    tok = AutoTokenizer.from_pretrained(out_dir)
    mask_token = ours.tokenizer.convert_ids_to_tokens(ours.mask_token_id)
    if tok.convert_tokens_to_ids(mask_token) != ours.mask_token_id:
        raise ValueError(f"the exported tokenizer lost the mask token {mask_token!r} (id {ours.mask_token_id})")
    hf32 = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    hf64 = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float64).eval()
    rows = []
    for prompt in prompts:
        ids = chat_prompt_ids(tok, prompt)
        mine = np.asarray(forward(ours.config, ours.params, jnp.asarray([ids]), mode="causal"), np.float64)
        with torch.no_grad():
            r32 = hf32(torch.tensor([ids])).logits.double().numpy()
            r64 = hf64(torch.tensor([ids])).logits.numpy()
        rows.append(dict(tokens=len(ids), ours_vs_hf32=float(np.abs(mine - r32).max()),
                         ours_vs_hf64=float(np.abs(mine - r64).max()), hf32_vs_hf64=float(np.abs(r32 - r64).max()),
                         max_abs_logit=float(np.abs(r64).max())))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a training run directory")
    p.add_argument("--out", default="", help="where to export (default: a temporary directory)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = compare(args.checkpoint, args.out or tmp)
    print("| prompt tokens | ours f32 vs HF f32 | ours f32 vs HF f64 | HF f32 vs HF f64 | max |logit| |\n"
          "|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokens']} | {r['ours_vs_hf32']:.2e} | {r['ours_vs_hf64']:.2e} | {r['hf32_vs_hf64']:.2e} | "
              f"{r['max_abs_logit']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
