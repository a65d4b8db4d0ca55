"""Export a training run's student to a HF directory: `python -m opdlm_jax.export --checkpoint RUN --out DIR`.

Writes the weights (safetensors), config.json, generation_config.json, the tokenizer including the
mask token, and a README.md. config.json carries `mask_token_id` and an `opdlm` section: the
run's block size, alignment, mask token and decoding defaults.

What the export is for: loading the student's weights with `transformers` (sharing, inspection,
AR-style analysis: `AutoModelForCausalLM.from_pretrained` gives causal-mode logits equal to ours).
transformers cannot decode it as a block-diffusion model (that needs the block-causal mask, the
mask token and the sampler); `opdlm-generate --model DIR` does, with the settings of the `opdlm`
section, and so does any block-diffusion sampler given those settings.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from opdlm_jax.cli_errors import ArgumentParser, run_cli
from opdlm_jax.text_generation import decoding_settings

_README = """\
# {name}: a block-diffusion student converted by OPDLM

Exported by `opdlm_jax.export` from the training run `{run}` (step {step}): the {method}
student of `{student}` (teacher `{teacher}`). Block size {block_size}, logit alignment
`{alignment}`, mask token `{mask_token}` (id {mask_token_id}).

## What this directory is for

The weights in the HF layout of the base model. `transformers.AutoModelForCausalLM.from_pretrained`
loads them and computes causal-mode logits (equal to opdlm_jax's; for analysis, or as an AR
model). It does NOT decode the model as it was trained: block-diffusion decoding needs a
block-causal attention mask (bidirectional inside a block of {block_size}, causal across
blocks), the mask token, and the sampler.

## Decoding it as a block-diffusion model

    pip install opdlm_jax
    opdlm-generate --model {out} --chat --prompt "What is an atom?"

reads the `opdlm` section of config.json (block size, alignment, mask token) and decodes as the
run did: {strategy}, {steps_per_block} rounds per block, greedy. Elsewhere, use the same
settings: blocks of {block_size} tokens aligned to the response start, filled with
`{mask_token}`; attention bidirectional inside the current block and causal to earlier blocks;
alignment `{alignment}` ({alignment_meaning}); unmask the most confident masked positions
each round; never sample the mask token; stop at the end-of-turn token.
"""
_ALIGNMENT_MEANING = {"same_position": "the logits at a masked position predict that position",
                      "shifted": "the logits at position i-1 predict position i, as in AR decoding"}


def opdlm_section(meta: dict) -> dict:
    """The `opdlm` fields of an exported config.json: the run's decoding settings (the keys of a
    run's checkpoint meta, so `load_model` on the export decodes it as the run does)."""
    sampler = decoding_settings(meta).sampler
    return {"block_size": sampler.block_size, "alignment": sampler.alignment,
            "mask_token_id": meta.get("mask_token_id"), "teacher": meta.get("teacher"),
            "student": meta.get("student"), "method": meta.get("method"), "step": meta.get("step"),
            "decoding": {"mode": "diffusion", "strategy": sampler.strategy,
                         "steps_per_block": sampler.steps_per_block, "threshold": sampler.threshold,
                         "temperature": 0.0}}


def export_run(checkpoint: str, out: str, step: int | None = None) -> Path:
    import jax
    import numpy as np

    from opdlm_jax.checkpoints.hf import save_hf_checkpoint
    from opdlm_jax.checkpoints.orbax import load_model_from_run

    model = load_model_from_run(checkpoint, step=step)
    params = jax.tree.map(np.asarray, model.params)
    path = save_hf_checkpoint(model.config, params, out, tokenizer=model.tokenizer)
    section = opdlm_section(model.run_meta or {})
    config_file = path / "config.json"
    hf_config = json.loads(config_file.read_text(encoding="utf-8"))
    hf_config["opdlm"] = section  # transformers keeps unknown keys as config attributes
    config_file.write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    mask_id = section["mask_token_id"]
    (path / "README.md").write_text(_README.format(
        name=path.name, run=Path(checkpoint).resolve(), out=path, mask_token_id=mask_id,
        mask_token=model.tokenizer.convert_ids_to_tokens(mask_id) if mask_id is not None else None,
        alignment_meaning=_ALIGNMENT_MEANING.get(section["alignment"], ""),
        **{k: v for k, v in section.items() if k not in ("mask_token_id", "decoding")},
        **{k: v for k, v in section["decoding"].items()}), encoding="utf-8")
    return path


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="opdlm-export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a training workdir (or its checkpoints folder)")
    p.add_argument("--out", required=True, help="the HF directory to write")
    p.add_argument("--step", type=int, default=None, help="a given step (default: the latest)")
    return p


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from opdlm_jax.compilation_cache import enable_compilation_cache

    enable_compilation_cache()  # every entry point shares the on-disk cache (little compiles here)
    print(f"wrote {export_run(args.checkpoint, args.out, args.step)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: bad input is one line `error: ...` and exit 2 (`--debug`: traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
