"""lm-evaluation-harness with our block-diffusion student: `python -m opdlm_jax.lm_eval` (`opdlm-lm-eval`).

    python -m opdlm_jax.lm_eval --checkpoint runs/demo/opdlm_shifted --tasks gsm8k --limit 20 --batch_size 8
    python -m opdlm_jax.lm_eval --pretrained smollm2-135m --tasks arc_easy --limit 50   # untrained student

lm-eval's own command line (`lm-eval run ...`: --tasks, --limit, --batch_size, --output_path,
--apply_chat_template, --gen_kwargs, ...) with the adapter of `opdlm_jax.eval.lm_eval_adapter`
registered as `--model opdlm_jax`, which plain `lm-eval` cannot find (it has no plugin mechanism
for models). `--checkpoint RUN` evaluates a training run's student with the run's block size,
alignment and mask token (no export needed); `--pretrained NAME` a model (HF directory, .gguf,
preset). Further adapter settings go in `--model_args` (e.g. `strategy=low_confidence_dynamic,
threshold=0.9`; see the adapter's docstring); they are appended to ours.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from opdlm_jax.cli_errors import DEBUG_FLAG, ArgumentParser, run_cli
from opdlm_jax.errors import BadInput


def _own_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="opdlm-lm-eval", description=__doc__.split("\n")[0], add_help=False,
                       allow_abbrev=False)  # lm-eval's --model must not read as our --model_args
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="a training run's directory (its student, with the run's settings)")
    src.add_argument("--pretrained", help="a model: HF directory, .gguf file or preset name")
    p.add_argument("--step", type=int, help="with --checkpoint: this checkpoint instead of the latest")
    p.add_argument("--model_args", default="", help="more adapter settings, k=v,k=v")
    return p


def harness_argv(argv: Sequence[str]) -> list[str]:
    """Our flags -> lm-eval's `run --model opdlm_jax --model_args ...` and the rest unchanged."""
    own, rest = _own_parser().parse_known_args([a for a in argv if a != DEBUG_FLAG])
    if "--model" in rest or any(a.startswith("--model=") for a in rest):
        raise BadInput("--model is always opdlm_jax here; name the weights with --checkpoint RUN or --pretrained NAME")
    if own.checkpoint is None and own.pretrained is None:
        raise BadInput("name what to evaluate: --checkpoint RUN_DIR or --pretrained NAME_OR_PATH")
    if own.checkpoint is not None:
        from opdlm_jax.checkpoints.orbax import read_run_meta

        read_run_meta(own.checkpoint, own.step)  # a missing run or step fails here, in one line
        args = [f"checkpoint={own.checkpoint}"] + ([f"step={own.step}"] if own.step is not None else [])
    else:
        from opdlm_jax.checkpoints.loading import resolve_model

        resolve_model(own.pretrained)
        args = [f"pretrained={own.pretrained}"]
    if own.model_args:
        args.append(own.model_args)
    if rest and rest[0] == "run":  # lm-eval's subcommand, given or not
        rest = rest[1:]
    return ["run", "--model", "opdlm_jax", "--model_args", ",".join(args), *rest]


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    harness = harness_argv(argv)
    from opdlm_jax.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    import opdlm_jax.eval.lm_eval_adapter  # noqa: F401 - registers "opdlm_jax" with lm-eval
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *harness]  # lm-eval's parser reads sys.argv
    cli_evaluate()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: bad input is one line `error: ...` and exit 2 (`--debug`: traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
