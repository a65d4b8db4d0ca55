"""Score a model on the paper's benchmarks, as the authors do (their eval_utils.py and
reward/domain_reward.py; see opdlm_jax/eval/benchmarks.py and scorers.py for the facts used).

Decode and score (a trained run, or an AR model; `--mode diffusion` decodes any model as an
untrained block-diffusion student):

    python -m experiments.evaluate --checkpoint RUN_DIR --data-dir data/ \\
        --datasets GSM8K MATH500 HumanEval --out eval/opdlm [--strategy dynamic --threshold 0.9]
    python -m experiments.evaluate --model /path/to/Qwen3-4B --data-dir data/ --datasets GSM8K --out eval/ar

Score completions made elsewhere (one JSON object a line: {"index": i, "completion": "..."},
optionally "response" and "tokens"; `index` is the row of NAME.json):

    python -m experiments.evaluate --score completions.jsonl --data-dir data/ --datasets GSM8K --out eval/x

Put several outputs side by side (the paper's Table 1 layout):

    python -m experiments.evaluate --table eval/ar eval/opdlm --out eval/table1

Each run writes OUT/results.json ({NAME: {"accuracy", "n", "tokens_per_round", ...}}),
OUT/results.md, OUT/records/NAME.jsonl (prompt, completion, extracted answer, verdict, tokens,
rounds per response) and OUT/chunks/NAME/ (per-chunk records: a rerun skips finished chunks).
Defaults are the authors': greedy decoding, static low-confidence unmasking, block 4, 4 rounds
per block, per-benchmark budgets, 3 responses per problem, a response that reaches the budget
minus 5 tokens counts as wrong (their rl_reward.py; `--keep-truncated` turns that off).
Greedy responses are decoded once and copied (they are identical).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from opdlm_jax.cli_errors import ArgumentParser, run_cli
from opdlm_jax.errors import BadInput
from opdlm_jax.eval import benchmarks, report, sandbox
from opdlm_jax.eval.chunks import ChunkStore
from opdlm_jax.eval.scorers import canonical_domain, score
from opdlm_jax.text_generation import decode_mesh, is_primary

STRATEGIES = {"static": "low_confidence_static", "dynamic": "low_confidence_dynamic"}
LENGTH_RULE_MARGIN = 5  # the reference: length >= max_token - 5 -> incorrect


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    mode: str  # "ar" | "diffusion"
    block_size: int
    steps_per_block: int
    strategy: str
    threshold: float
    alignment: str
    temperature: float
    batch_size: int
    seed: int
    mesh: Any = None  # decode each batch over these devices (all processes together); None: one device


@dataclasses.dataclass
class Decoded:
    token_ids: list[int]
    rounds: int


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m experiments.evaluate", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="a training run's directory: its student, with the run's block "
                     "size, alignment and mask token")
    src.add_argument("--model", help="a model (HF directory, .gguf, preset name): AR decoding by default")
    src.add_argument("--score", help="score-only: a JSON-lines file of {index, completion}")
    src.add_argument("--table", nargs="+", metavar="OUT", help="combine the results of several OUT dirs")
    p.add_argument("--data-dir", help="directory of the authors' <NAME>.json files")
    p.add_argument("--datasets", nargs="+", default=[], metavar="NAME")
    p.add_argument("--out", required=True)
    p.add_argument("--label", help="the model's name in the table (default: from the source)")
    p.add_argument("--mode", choices=("ar", "diffusion"), help="default: diffusion for --checkpoint, ar for --model")
    p.add_argument("--step", type=int, help="with --checkpoint: this step (default: the latest)")
    p.add_argument("--strategy", choices=tuple(STRATEGIES), default="static")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--block-size", type=int, help="default: the run's, else 4")
    p.add_argument("--steps-per-block", type=int, help="default: the block size")
    p.add_argument("--alignment", help="default: the run's, else same_position")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the authors')")
    p.add_argument("--max-new-tokens", type=int, help="default: each benchmark's budget")
    p.add_argument("--responses-per-task", type=int, default=3)
    p.add_argument("--limit", type=int, help="only the first N rows of each benchmark")
    p.add_argument("--chunk-size", type=int, default=32, help="rows per resumable chunk")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per decode call")
    p.add_argument("--shard", choices=("none", "all"), default="none",
                   help="all: split each batch over this host's devices (several processes always "
                        "split over every device)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=sandbox.DEFAULT_TIMEOUT_S,
                   help="seconds per code solution (wall clock)")
    p.add_argument("--keep-truncated", action="store_true",
                   help="do not count responses that reach the budget as wrong")
    p.add_argument("--no-progress", action="store_true")
    return p


# --------------------------------------------------------------------------- models

def run_meta(run_dir: str, step: Optional[int]) -> dict:
    """The `meta` item a training run saved with its checkpoint (block size, alignment, mask id)."""
    from opdlm_jax.checkpoints.orbax import read_run_meta

    return read_run_meta(run_dir, step)


def pending_everywhere(pending: Optional[list[int]], num_chunks: int) -> list[int]:
    """The chunks still to do as process 0 sees them, on every process (other hosts may not see
    OUT; all of them must decode the same batches together)."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return pending

    todo = np.zeros(num_chunks, np.int32)
    if pending is not None:
        todo[pending] = 1
    return [int(k) for k in np.flatnonzero(multihost_utils.broadcast_one_to_all(todo))]


def load_source(args) -> tuple[Any, DecodeSpec, str]:
    """(LoadedModel, decoding settings, label) for --checkpoint / --model."""
    import jax

    from opdlm_jax.decoding.settings import decoding_settings

    if args.checkpoint:
        from opdlm_jax.checkpoints.orbax import load_model_from_run

        model = load_model_from_run(args.checkpoint, step=args.step, dtype=args.dtype)  # the run's mask token
        label = args.label or Path(args.checkpoint).resolve().name
    else:
        from opdlm_jax.checkpoints.loading import load_model

        model = load_model(args.model, dtype=args.dtype)
        label = args.label or Path(args.model).name
    model.params = jax.device_put(model.params)
    mode = args.mode or ("diffusion" if args.checkpoint else "ar")
    # Block size and alignment: the flags, else the run's (or an export's), else 4 / same_position.
    sampler = decoding_settings(model.run_meta, mode=mode, block_size=args.block_size, alignment=args.alignment,
                                steps_per_block=args.steps_per_block, strategy=STRATEGIES[args.strategy],
                                threshold=args.threshold).sampler
    spec = DecodeSpec(mode=mode, block_size=sampler.block_size if mode == "diffusion" else 1,
                      steps_per_block=sampler.steps_per_block, strategy=sampler.strategy,
                      threshold=args.threshold, alignment=sampler.alignment,
                      temperature=args.temperature, batch_size=args.batch_size, seed=args.seed,
                      mesh=decode_mesh(all_local_devices=args.shard == "all"))
    if mode == "diffusion" and model.mask_token_id is None:
        raise BadInput("diffusion decoding needs a mask token; the model's tokenizer has none")
    if mode == "diffusion" and not args.checkpoint and not args.label:
        label += " (diffusion)"
    return model, spec, label


def decode(model, prompts: Sequence[Sequence[int]], spec: DecodeSpec, max_new_tokens: int,
           seed: int) -> list[Decoded]:
    """Decode every prompt once, `spec.batch_size` at a time, over `spec.mesh` when set (every
    process runs the same calls; each gets all completions). The last batch is padded with copies
    of its last prompt, so every call has the same shape and compiles once."""
    from opdlm_jax.decoding import SamplerConfig
    from opdlm_jax.decoding.api import generate_ar, generate_diffusion
    from opdlm_jax.decoding.sampling import SamplingParams

    sampling = SamplingParams(greedy=True) if spec.temperature == 0 else SamplingParams(temperature=spec.temperature)
    out: list[Decoded] = []
    for start in range(0, len(prompts), spec.batch_size):
        batch = [list(p) for p in prompts[start:start + spec.batch_size]]
        real = len(batch)
        batch += [batch[-1]] * (spec.batch_size - real)
        if spec.mode == "ar":
            r = generate_ar(model.config, model.params, batch, sampling=sampling, max_new_tokens=max_new_tokens,
                            stop_ids=model.stop_token_ids, pad_id=model.pad_id,
                            banned_ids=() if model.mask_token_id is None else (model.mask_token_id,), seed=seed,
                            mesh=spec.mesh)
        else:
            sampler = SamplerConfig(block_size=spec.block_size, steps_per_block=spec.steps_per_block,
                                    strategy=spec.strategy, threshold=spec.threshold, sampling=sampling,
                                    alignment=spec.alignment)
            r = generate_diffusion(model.config, model.params, batch, sampler=sampler, max_new_tokens=max_new_tokens,
                                   stop_ids=model.stop_token_ids, mask_id=model.mask_token_id,
                                   pad_id=model.pad_id, seed=seed, mesh=spec.mesh)
        out += [Decoded(r.token_ids[i], int(r.rounds[i])) for i in range(real)]
    return out


def completion_text(model, token_ids: Sequence[int]) -> str:
    stop = set(model.stop_token_ids)
    return model.tokenizer.decode([t for t in token_ids if t not in stop], skip_special_tokens=True)


# --------------------------------------------------------------------------- scoring

def make_record(name: str, bench: benchmarks.Benchmark, row: dict, index: int, response: int, prompt: str,
                completion: str, tokens: Optional[int], rounds: Optional[int], budget: Optional[int],
                length_rule: bool, limits: sandbox.Limits) -> dict:
    domain = benchmarks.row_domain(row, bench)
    verdict = score(completion, row, domain, letters=bench.letters, code_prefix=bench.code_prefix,
                    limits=limits)
    truncated = bool(tokens is not None and budget is not None and tokens >= budget - LENGTH_RULE_MARGIN)
    correct = verdict.correct and not (length_rule and truncated)
    detail = verdict.detail or ("reached the length budget" if verdict.correct and not correct else "")
    gold = row.get("ground_truth_answer")
    return {"benchmark": name, "index": index, "response": response, "domain": canonical_domain(domain),
            "prompt": prompt, "completion": completion, "extracted": verdict.extracted,
            "gold": gold if isinstance(gold, (str, int, float)) or gold is None else json.dumps(gold)[:2000],
            "correct": bool(correct) if verdict.scorable else None, "scorable": verdict.scorable,
            "detail": detail, "tokens": tokens, "rounds": rounds, "truncated": truncated}


def progress(iterable, total: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="chunk", disable=disable, dynamic_ncols=True)


def evaluate_decoding(args, name: str, model, spec: DecodeSpec, label: str) -> dict:
    bench = benchmarks.resolve(name)
    if not bench.registered:
        print(benchmarks.describe(bench), file=sys.stderr)
    rows = benchmarks.load_rows(benchmarks.data_file(args.data_dir, bench, name))[:args.limit]
    budget = args.max_new_tokens or bench.max_new_tokens
    if spec.mode == "diffusion" and budget % spec.block_size:
        raise BadInput(f"{name}: block size {spec.block_size} does not divide the budget {budget}; "
                       "pass --max-new-tokens")
    settings = {"model": label, "source": args.checkpoint or args.model, "mode": spec.mode,
                "strategy": spec.strategy if spec.mode == "diffusion" else None,
                "threshold": spec.threshold if spec.strategy == "low_confidence_dynamic" else None,
                "block_size": spec.block_size if spec.mode == "diffusion" else None,
                "steps_per_block": spec.steps_per_block if spec.mode == "diffusion" else None,
                "alignment": spec.alignment if spec.mode == "diffusion" else None,
                "temperature": spec.temperature, "max_new_tokens": budget, "seed": spec.seed,
                "responses_per_task": args.responses_per_task, "length_rule": not args.keep_truncated,
                "benchmark": bench.name, "registered": bench.registered}
    return _run_chunks(args, name, bench, rows, settings, lambda idx: _decode_chunk(
        args, name, bench, rows, idx, model, spec, budget))


def _decode_chunk(args, name, bench, rows, idx, model, spec: DecodeSpec, budget: int) -> list[dict]:
    prompts = [benchmarks.prompt_for(model.tokenizer, rows[i], bench) for i in idx]
    ids = [p[1] for p in prompts]
    greedy = spec.temperature == 0
    per_response = [decode(model, ids, spec, budget, spec.seed)] if greedy else \
        [decode(model, ids, spec, budget, spec.seed + j) for j in range(args.responses_per_task)]
    if not is_primary():
        return []
    limits = sandbox.Limits(timeout_s=args.timeout)
    records = []
    for k, i in enumerate(idx):
        for j in range(args.responses_per_task):
            if greedy and j > 0:  # the same completion: copy its verdict instead of running code again
                records.append(dict(records[-1], response=j))
                continue
            d = per_response[0 if greedy else j][k]
            records.append(make_record(name, bench, rows[i], i, j, prompts[k][0], completion_text(model, d.token_ids),
                                       len(d.token_ids), d.rounds if spec.mode == "diffusion" else None,
                                       budget, not args.keep_truncated, limits))
    return records


def read_completions(path: str) -> dict[int, list[dict]]:
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"--score {path}: no such file")
    by_index: dict[int, list[dict]] = {}
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                index, completion = int(obj["index"]), obj["completion"]
            except (ValueError, KeyError, TypeError) as e:
                raise BadInput(f"{path}:{lineno}: expected {{\"index\": int, \"completion\": str}} ({e})") from None
            if not isinstance(completion, str):
                raise BadInput(f"{path}:{lineno}: 'completion' must be a string")
            by_index.setdefault(index, []).append(obj)
    if not by_index:
        raise BadInput(f"--score {path}: no completions in the file")
    return by_index


def evaluate_completions(args, name: str) -> dict:
    bench = benchmarks.resolve(name)
    if not bench.registered:
        print(benchmarks.describe(bench), file=sys.stderr)
    rows = benchmarks.load_rows(benchmarks.data_file(args.data_dir, bench, name))
    by_index = read_completions(args.score)
    bad = [i for i in by_index if not 0 <= i < len(rows)]
    if bad:
        raise BadInput(f"--score {args.score}: index {bad[0]} is outside {name}.json's {len(rows)} rows")
    indices = sorted(by_index)[:args.limit] if args.limit else sorted(by_index)
    budget = args.max_new_tokens or bench.max_new_tokens
    responses = max(len(v) for v in by_index.values())
    settings = {"model": args.label or Path(args.score).stem, "source": str(args.score), "mode": "scored",
                "max_new_tokens": budget, "responses_per_task": responses, "length_rule": not args.keep_truncated,
                "benchmark": bench.name, "registered": bench.registered}
    limits = sandbox.Limits(timeout_s=args.timeout)

    def chunk(idx):
        records = []
        for i in (indices[k] for k in idx):
            for j, obj in enumerate(by_index[i]):
                records.append(make_record(name, bench, rows[i], i, int(obj.get("response", j)),
                                           obj.get("prompt", ""), obj["completion"], obj.get("tokens"),
                                           obj.get("rounds"), budget, not args.keep_truncated, limits))
        return records

    return _run_chunks(args, name, bench, indices, settings, chunk)


def _run_chunks(args, name, bench, rows, settings: dict, run_chunk) -> dict:
    out = Path(args.out)
    primary = is_primary()
    store = ChunkStore(out / "chunks" / name, settings, len(rows), args.chunk_size) if primary else None
    size = args.chunk_size
    pending = pending_everywhere(store.pending() if primary else None, -(-len(rows) // size))
    if primary and len(pending) < store.num_chunks:
        print(f"{name}: {store.num_chunks - len(pending)} of {store.num_chunks} chunks already done in {store.directory}",
              file=sys.stderr)
    for k in progress(pending, len(pending), name, args.no_progress or not primary):
        records = run_chunk(range(k * size, min((k + 1) * size, len(rows))))
        if primary:
            store.write(k, records)
    if not primary:
        return {}
    records = store.records()
    (out / "records").mkdir(parents=True, exist_ok=True)
    with open(out / "records" / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    summary = report.summarize(records, settings)
    acc = summary["accuracy"]
    print(f"{name}: accuracy {'n/a' if acc is None else f'{100 * acc:.1f}%'} over {summary['n']} responses"
          + ("" if summary["tokens_per_round"] is None else f", {summary['tokens_per_round']:.2f} tokens/round"))
    return summary


# --------------------------------------------------------------------------- entry point

def write_outputs(out: Path, new: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results = report.merge_results(out / "results.json", new)
    (out / "results.md").write_text(report.markdown_table({report.model_label(results, out.name): results}),
                                    encoding="utf-8")
    return results


def combine_tables(dirs: Sequence[str], out: Path) -> None:
    columns = {}
    for d in dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise BadInput(f"--table {d}: no results.json there")
        results = json.loads(path.read_text(encoding="utf-8"))
        label = report.model_label(results, Path(d).name)
        while label in columns:
            label += "'"
        columns[label] = results
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(report.markdown_table(columns), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(columns, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out / 'results.md'}")


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.table:
        combine_tables(args.table, out)
        return 0
    if not (args.checkpoint or args.model or args.score):
        raise BadInput("name what to evaluate: --checkpoint RUN_DIR, --model NAME_OR_PATH or --score FILE")
    if not args.data_dir:
        raise BadInput("--data-dir DIR is required (the authors' <NAME>.json files)")
    if not args.datasets:
        raise BadInput("--datasets NAME [NAME ...] is required")
    for flag, value, low in (("--limit", args.limit, 1), ("--responses-per-task", args.responses_per_task, 1),
                             ("--batch-size", args.batch_size, 1), ("--max-new-tokens", args.max_new_tokens, 1)):
        if value is not None and value < low:
            raise BadInput(f"{flag} must be >= {low}, got {value}")
    if not 0 <= args.threshold <= 1:
        raise BadInput(f"--threshold {args.threshold} is outside [0, 1]")
    for name in args.datasets:  # fail on a missing file before loading any model
        benchmarks.data_file(args.data_dir, benchmarks.resolve(name), name)
    if args.score:
        if len(args.datasets) != 1:
            raise BadInput("--score scores one benchmark: pass exactly one --datasets NAME")
        write_outputs(out, {args.datasets[0]: evaluate_completions(args, args.datasets[0])})
    else:
        from opdlm_jax.compilation_cache import enable_compilation_cache

        enable_compilation_cache()
        from opdlm_jax.sharding import initialize_distributed

        initialize_distributed()  # a pod slice: every worker runs this command and decodes its share
        model, spec, label = load_source(args)
        for name in args.datasets:  # results.json is updated after each benchmark
            summary = evaluate_decoding(args, name, model, spec, label)
            if is_primary():
                write_outputs(out, {name: summary})
    if is_primary():
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
