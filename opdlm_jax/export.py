"""Export a training run's student to a HF directory: `python -m opdlm_jax.export --checkpoint RUN --out DIR`.

Writes the weights (safetensors), config.json (with `mask_token_id`), generation_config.json and
the tokenizer including the mask token; `transformers.AutoModelForCausalLM.from_pretrained` loads
it (its causal-mode logits equal ours; block-causal decoding needs this package).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import jax
import numpy as np


def export_run(checkpoint: str, out: str, step: int | None = None) -> Path:
    from opdlm_jax.checkpoints.hf import save_hf_checkpoint
    from opdlm_jax.checkpoints.orbax import load_model_from_run

    model = load_model_from_run(checkpoint, step=step)
    params = jax.tree.map(np.asarray, model.params)
    return save_hf_checkpoint(model.config, params, out, tokenizer=model.tokenizer)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="opdlm-export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a training workdir (or its checkpoints folder)")
    p.add_argument("--out", required=True, help="the HF directory to write")
    p.add_argument("--step", type=int, default=None, help="a given step (default: the latest)")
    args = p.parse_args(argv)
    try:
        path = export_run(args.checkpoint, args.out, args.step)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
