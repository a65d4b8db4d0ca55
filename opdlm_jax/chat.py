"""Interactive chat with a block-diffusion student and its AR teacher, side by side.

    opdlm-chat --checkpoint runs/demo/opdlm_shifted     # a trained student (the run's settings)
    opdlm-chat                                          # the untrained student of smollm2-135m
    make chat CHECKPOINT=runs/demo/opdlm_shifted

Each line you type is a user turn: the teacher answers autoregressively, then the student as block
diffusion (streamed block by block), each followed by its decoding statistics. The conversation
is multi-turn: each model sees the earlier turns with its own answers. `/reset` starts a new
conversation, `/quit` (or end of input) leaves. Input can be piped (one turn per line).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence, TextIO

from opdlm_jax.cli_errors import ArgumentParser, run_cli
from opdlm_jax.text_generation import (Decoding, TextStreamer, check_length_budget, completion_text, decode_ids,
                                       decoding_settings, encode, load, sampling_params)

QUIT, RESET = "/quit", "/reset"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="opdlm-chat", description=__doc__.split("\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="a training run's directory: its student, decoded with the run's "
                     "block size and alignment")
    src.add_argument("--model", help="a plain model, converted but untrained (default: smollm2-135m)")
    p.add_argument("--teacher", help="the AR model to compare with (default: the run's teacher, or --model)")
    p.add_argument("--no-teacher", action="store_true", help="the student only")
    p.add_argument("--strategy", default="low_confidence_static", help="the student's unmasking strategy")
    p.add_argument("--threshold", type=float, default=0.9, help="low_confidence_dynamic: confidence to unmask")
    p.add_argument("--alignment", help="default: the run's, else same_position")
    p.add_argument("--max-new-tokens", type=int, default=64, help="per answer (the student: whole blocks)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    return p


class Speaker:
    """One model in the chat: its settings and its own side of the conversation."""

    def __init__(self, name: str, model, decoding: Decoding):
        self.name, self.model, self.decoding = name, model, decoding
        self.history: list[dict] = []

    def answer(self, text: str, max_new_tokens: int, out: TextIO, seed: int) -> None:
        self.history.append({"role": "user", "content": text})
        out.write(f"{self.name}> ")
        out.flush()
        streamer = TextStreamer(self.model, out)
        stream = streamer.on_block if self.decoding.mode == "diffusion" else None
        result = decode_ids(self.model, [encode(self.model, self.history)], self.decoding, max_new_tokens,
                            seed=seed, on_block=stream)
        if stream is None:
            streamer.write(result.token_ids[0])
        self.history.append({"role": "assistant", "content": completion_text(self.model, result.token_ids[0])})
        out.write(f"\n  [{self.decoding.mode}: {len(result.token_ids[0])} tokens, "
                  f"{result.tokens_per_round:.2f} tokens/round, {result.tokens_per_second:.1f} tokens/s]\n")
        out.flush()


def speakers(args: argparse.Namespace, err: TextIO) -> list[Speaker]:
    sampling = sampling_params(args.temperature)
    student = load(model=None if args.checkpoint else (args.model or "smollm2-135m"), checkpoint=args.checkpoint)
    student_decoding = decoding_settings(student.run_meta or None, mode="diffusion", alignment=args.alignment,
                                         strategy=args.strategy, threshold=args.threshold, sampling=sampling)
    check_length_budget(student_decoding, args.max_new_tokens)
    for note in student_decoding.notes:
        print(note, file=err, flush=True)
    chosen = [Speaker("student", student, student_decoding)]
    if not args.no_teacher:
        source = args.teacher or (student.run_meta or {}).get("teacher")
        teacher = student if source is None else load(model=source)  # an untrained student IS the teacher's weights
        chosen.insert(0, Speaker("teacher", teacher, decoding_settings(None, mode="ar", sampling=sampling)))
    return chosen


def chat(args: argparse.Namespace, inp: TextIO = sys.stdin, out: TextIO = sys.stdout,
         err: TextIO = sys.stderr) -> int:
    chosen = speakers(args, err)
    interactive = inp.isatty()
    if interactive:
        out.write(f"Chat with {' and '.join(s.name for s in chosen)}; {RESET} starts over, {QUIT} leaves.\n")
    turn = 0
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = inp.readline()
        if not line or line.strip() == QUIT:
            return 0
        text = line.strip()
        if not text:
            continue
        if text == RESET:
            for s in chosen:
                s.history.clear()
            out.write("(new conversation)\n")
            continue
        if not interactive:
            out.write(f"you> {text}\n")
        for s in chosen:
            s.answer(text, args.max_new_tokens, out, seed=turn)
        turn += 1


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from opdlm_jax.compilation_cache import enable_compilation_cache

    enable_compilation_cache()  # the second chat starts without compiling its decoders
    return chat(args)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: bad input is one line `error: ...` and exit 2 (`--debug`: traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
