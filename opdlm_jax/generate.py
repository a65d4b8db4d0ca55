"""Command-line decoding: `python -m opdlm_jax.generate --model smollm2-135m --prompt "..." --chat`.

`--model` decodes the AR model token by token (the teacher); `--checkpoint RUN` decodes a trained
run's student as block diffusion with the block size, alignment and mask token it was trained
with (flags override them, with a warning). `--mode diffusion` on a plain model decodes the
*unconverted* student, which writes gibberish until it is trained. A completion streams as it is
produced: token by token (AR) or block by block (diffusion). A streaming decoder carries a host
callback, which keeps JAX from caching it on disk (it compiles at every start); `--no-stream`
prints each completion when complete from the cached decoder instead. Then NFE, tokens per round
and tokens per second (or, with `--json`, one JSON object per prompt). Run on every worker of a
pod slice (JAX_COORDINATOR_ADDRESS/... or OPDLM_MULTIHOST=1), the prompts are decoded over all
devices, without streaming, and process 0 prints.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence, TextIO

from opdlm_jax.cli_errors import ArgumentParser, run_cli
from opdlm_jax.decoding.config import ALIGNMENTS
from opdlm_jax.decoding.strategies import STRATEGIES
from opdlm_jax.errors import BadInput
from opdlm_jax.text_generation import (Decoding, TextStreamer, check_length_budget, completion_text, decode_mesh,
                                       is_primary,
                                       decode_ids, decoding_settings, encode, load, sampling_params)


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: X)` where a default is a value; None / False defaults are explained in
    the help text itself (the run's setting, off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="opdlm-generate", description=__doc__.split("\n\n")[1].replace("\n", " "),
                       formatter_class=_DefaultsHelp)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="HF directory, .gguf file or preset name (e.g. smollm2-135m)")
    src.add_argument("--checkpoint", help="a training run's directory (its latest checkpoint)")
    p.add_argument("--step", type=int, default=None, help="with --checkpoint: this step instead of the latest")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    text.add_argument("--prompt-file", help="a file with one prompt per line")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
    p.add_argument("--mode", choices=("ar", "diffusion"), default=None,
                   help="default: ar for --model, diffusion for --checkpoint")
    p.add_argument("--strategy", default="low_confidence_static", metavar="NAME",
                   help=f"diffusion unmasking: {', '.join(STRATEGIES)}")
    p.add_argument("--threshold", type=float, default=0.9, help="low_confidence_dynamic: confidence to unmask")
    p.add_argument("--entropy-bound", type=float, default=0.5, help="entropy_bounded: entropy budget per round")
    p.add_argument("--block-size", type=int, default=None, help="default: the run's, else 4")
    p.add_argument("--steps-per-block", type=int, default=None, help="default: the block size")
    p.add_argument("--alignment", default=None, metavar="NAME",
                   help=f"{', '.join(ALIGNMENTS)}; default: the run's, else same_position")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--max-new-tokens", type=int, default=64, help="length budget (diffusion: whole blocks)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="default: float32, or the run's")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt, no streaming")
    p.add_argument("--no-stream", action="store_true",
                   help="print each completion when it is complete: the decoder then comes from the "
                        "persistent compilation cache (a streaming decoder, with its host callback, "
                        "is compiled at every start)")
    return p


def validate(args: argparse.Namespace, run_meta: dict | None) -> Decoding:
    """Turn arguments (and the run's meta) into settings; BadInput with a one-line reason."""
    try:
        decoding = decoding_settings(
            run_meta, mode=args.mode, block_size=args.block_size, alignment=args.alignment,
            steps_per_block=args.steps_per_block, strategy=args.strategy, threshold=args.threshold,
            entropy_bound=args.entropy_bound, sampling=sampling_params(args.temperature, args.top_k, args.top_p))
        check_length_budget(decoding, args.max_new_tokens)
    except BadInput as e:  # name the flags: "threshold 1.5" -> "--threshold 1.5"
        raise BadInput(_as_flags(str(e))) from None
    return decoding


def _as_flags(message: str) -> str:
    for words, flag in (("threshold ", "--threshold "), ("block size ", "--block-size "),
                        ("max new tokens ", "--max-new-tokens "), ("steps per block ", "--steps-per-block "),
                        ("temperature ", "--temperature ")):
        message = message.replace(words, flag)
    return message


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


def stats_line(result) -> str:
    return (f"[nfe={result.nfe} tokens/round={result.tokens_per_round:.2f} "
            f"tokens/s={result.tokens_per_second:.1f} compile={result.compile_seconds:.1f}s]")


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from opdlm_jax.checkpoints.orbax import read_run_meta

    run_meta = read_run_meta(args.checkpoint, args.step) if args.checkpoint else None  # cheap: before the model
    decoding = validate(args, run_meta)
    prompts = read_prompts(args)
    for note in decoding.notes:
        print(note, file=err, flush=True)
    model = load(model=args.model, checkpoint=args.checkpoint, step=args.step, dtype=args.dtype)
    mesh = decode_mesh(all_local_devices=False)
    if mesh is not None and not is_primary():
        out = open(os.devnull, "w")  # every process decodes; process 0 prints
    for prompt in prompts:
        ids = encode(model, prompt, args.chat)
        streamer = None if args.json else TextStreamer(model, out)
        stream = streamer is not None and not args.no_stream and mesh is None
        on_block: Callable | None = streamer.on_block if stream and decoding.mode == "diffusion" else None
        on_token: Callable | None = streamer.on_token if stream and decoding.mode == "ar" else None
        result = decode_ids(model, [ids], decoding, args.max_new_tokens, seed=args.seed, on_block=on_block,
                            on_token=on_token, mesh=mesh)
        text = completion_text(model, result.token_ids[0])
        if args.json:
            out.write(json.dumps({"prompt": prompt, "completion": text, "token_ids": result.token_ids[0],
                                  "mode": decoding.mode, "nfe": result.nfe,
                                  "tokens_per_round": result.tokens_per_round,
                                  "tokens_per_second": result.tokens_per_second,
                                  "compile_seconds": result.compile_seconds}) + "\n")
        else:
            if not stream:  # --no-stream: the whole completion once decoded
                streamer.write(result.token_ids[0])
            out.write("\n" + stats_line(result) + "\n")
        out.flush()
    return 0


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from opdlm_jax.compilation_cache import enable_compilation_cache

    enable_compilation_cache()  # the second generate loads its decoder from disk instead of compiling
    from opdlm_jax.sharding import initialize_distributed

    initialize_distributed()  # a no-op on one host; on a pod slice every worker joins the decode
    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: bad input is one line `error: ...` and exit 2 (`--debug`: traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
