"""Command-line decoding: `python -m opdlm_jax.generate --model smollm2-135m --prompt "..." --chat`.

Decodes with the AR teacher (`--mode ar`) or as a block-diffusion student (`--mode diffusion`),
streams the completion block by block, then prints NFE, tokens per round and tokens per second
(or, with `--json`, one JSON object per prompt).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from opdlm_jax.cli_errors import ArgumentParser, run_cli
from opdlm_jax.data.chat_format import chat_prompt_ids
from opdlm_jax.decoding.config import ALIGNMENTS, SamplerConfig
from opdlm_jax.decoding.strategies import STRATEGIES
from opdlm_jax.decoding.sampling import SamplingParams
from opdlm_jax.errors import BadInput


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="opdlm-generate", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="HF directory, .gguf file or preset name (e.g. smollm2-135m)")
    src.add_argument("--checkpoint", help="Orbax run directory of a training run (latest step)")
    p.add_argument("--step", type=int, default=None, help="with --checkpoint: a given step")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    text.add_argument("--prompt-file", help="a file with one prompt per line")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
    p.add_argument("--mode", choices=("ar", "diffusion"), default="diffusion")
    p.add_argument("--strategy", default="low_confidence_static")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--entropy-bound", type=float, default=0.5)
    p.add_argument("--block-size", type=int, default=4)
    p.add_argument("--steps-per-block", type=int, default=None, help="default: the block size")
    p.add_argument("--alignment", default="same_position")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt, no streaming")
    return p


def validate(args: argparse.Namespace) -> tuple[SamplerConfig, SamplingParams]:
    """Turn arguments into settings; raise BadInput with a one-line reason."""
    if args.strategy not in STRATEGIES:
        raise BadInput(f"unknown strategy {args.strategy!r}; choose from {', '.join(STRATEGIES)}")
    if args.alignment not in ALIGNMENTS:
        raise BadInput(f"unknown alignment {args.alignment!r}; choose from {', '.join(ALIGNMENTS)}")
    if not 0.0 <= args.threshold <= 1.0:
        raise BadInput(f"--threshold {args.threshold} is outside [0, 1]")
    if args.block_size < 1:
        raise BadInput(f"--block-size {args.block_size} must be >= 1")
    if args.mode == "diffusion" and args.max_new_tokens % args.block_size:
        raise BadInput(f"--block-size {args.block_size} does not divide --max-new-tokens "
                         f"{args.max_new_tokens}")
    if args.max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens {args.max_new_tokens} must be >= 1")
    sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              greedy=args.temperature == 0)
    steps = args.steps_per_block or args.block_size
    sampler = SamplerConfig(block_size=args.block_size, steps_per_block=steps, strategy=args.strategy,
                            threshold=args.threshold, entropy_bound=args.entropy_bound,
                            sampling=sampling, alignment=args.alignment)
    return sampler, sampling


def load(args: argparse.Namespace):
    if args.checkpoint:
        from opdlm_jax.checkpoints.orbax import load_model_from_run

        return load_model_from_run(args.checkpoint, step=args.step, dtype=args.dtype)
    import jax

    from opdlm_jax.checkpoints.loading import load_model

    model = load_model(args.model, dtype=args.dtype)
    model.params = jax.device_put(model.params)  # once, not on every decode call
    return model


def read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompt:
        return list(args.prompt)
    if not os.path.isfile(args.prompt_file):
        raise BadInput(f"--prompt-file {args.prompt_file}: no such file")
    with open(args.prompt_file, encoding="utf-8") as f:
        prompts = [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        raise BadInput(f"--prompt-file {args.prompt_file} holds no prompt")
    return prompts


def encode(model, prompt: str, chat: bool) -> list[int]:
    if chat:  # formatted as training formats a chat record (no suffix)
        return chat_prompt_ids(model.tokenizer, prompt)
    return list(model.tokenizer.encode(prompt, add_special_tokens=False))


def _streamer(model, out):
    """Host callback printing each finished block of sequence 0 as it arrives."""
    stop = set(model.stop_token_ids)
    state = {"done": False}

    def on_block(block_index, block_tokens, was_active):
        if state["done"] or not bool(was_active[0]):
            return
        ids = []
        for t in block_tokens[0].tolist():
            if t in stop:
                state["done"] = True
                break
            ids.append(t)
        out.write(model.tokenizer.decode(ids, skip_special_tokens=True))
        out.flush()

    return on_block


def run(args: argparse.Namespace, out=sys.stdout) -> int:
    from opdlm_jax.decoding.api import generate_ar, generate_diffusion

    sampler, sampling = validate(args)
    prompts = read_prompts(args)
    model = load(args)
    if args.mode == "diffusion" and model.mask_token_id is None:
        raise BadInput("diffusion decoding needs a mask token; the tokenizer has none")
    pad_id = model.pad_id
    for prompt in prompts:
        ids = encode(model, prompt, args.chat)
        if args.mode == "ar":
            result = generate_ar(model.config, model.params, [ids], sampling=sampling,
                                 max_new_tokens=args.max_new_tokens, stop_ids=model.stop_token_ids,
                                 pad_id=pad_id, banned_ids=(model.mask_token_id,), seed=args.seed)
        else:
            result = generate_diffusion(
                model.config, model.params, [ids], sampler=sampler, max_new_tokens=args.max_new_tokens,
                stop_ids=model.stop_token_ids, mask_id=model.mask_token_id, pad_id=pad_id,
                seed=args.seed, on_block=None if args.json else _streamer(model, out))
        completion_ids = [t for t in result.token_ids[0] if t not in set(model.stop_token_ids)]
        text = model.tokenizer.decode(completion_ids, skip_special_tokens=True)
        if args.json:
            out.write(json.dumps({"prompt": prompt, "completion": text, "token_ids": result.token_ids[0],
                                  "nfe": result.nfe, "tokens_per_round": result.tokens_per_round,
                                  "tokens_per_second": result.tokens_per_second,
                                  "compile_seconds": result.compile_seconds}) + "\n")
        else:
            if args.mode == "ar":
                out.write(text)
            out.write(f"\n[nfe={result.nfe} tokens/round={result.tokens_per_round:.2f} "
                      f"tokens/s={result.tokens_per_second:.1f} compile={result.compile_seconds:.1f}s]\n")
        out.flush()
    return 0


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from opdlm_jax.compilation_cache import enable_compilation_cache

    enable_compilation_cache()  # the second generate loads its decoder from disk instead of compiling
    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: bad input is one line `error: ...` and exit 2 (`--debug`: traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
