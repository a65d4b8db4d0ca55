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

from opdlm_jax.cli_errors import ArgumentParser, run_cli


def export_run(checkpoint: str, out: str, step: int | None = None) -> Path:
    from opdlm_jax.checkpoints.hf import save_hf_checkpoint
    from opdlm_jax.checkpoints.orbax import load_model_from_run

    model = load_model_from_run(checkpoint, step=step)
    params = jax.tree.map(np.asarray, model.params)
    return save_hf_checkpoint(model.config, params, out, tokenizer=model.tokenizer)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="opdlm-export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a training workdir (or its checkpoints folder)")
    p.add_argument("--out", required=True, help="the HF directory to write")
    p.add_argument("--step", type=int, default=None, help="a given step (default: the latest)")
    return p


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    print(f"wrote {export_run(args.checkpoint, args.out, args.step)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: bad input is one line `error: ...` and exit 2 (`--debug`: traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
