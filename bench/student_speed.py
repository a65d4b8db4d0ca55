"""The payoff of a converted student: its block-diffusion decoding speed vs our AR decoder on the teacher.

    .venv/bin/python bench/student_speed.py --run runs/long_shifted --out experiments/results/long/speed

Per batch size (bench/decode.py's chat-templated questions, float32 weights and compute for both,
the best setting of this CPU at batch 1): the teacher with our AR decoder (KV cache, greedy) and
the student from the run's newest checkpoint with dynamic block diffusion (greedy, block 4, the
run's alignment) at each threshold, alternated A B C ... in one process (docs/BENCHMARKING.md),
every sequence forced to exactly --new-tokens tokens (stop_ids=()) so tokens/s compares equal work.
Speed-ups are per-round ratios against AR, median (min-max).

Also: tokens per round of the same prompts with the real stop tokens (what a chat user sees);
per-forward costs of an AR step, a 4-token round and a commit (bench.decode.forward_probes), and
from them the tokens per round the student needs to break even with AR:
a block of b tokens costs one commit (which also runs the next block's first round) plus
(b / r - 1) rounds at r tokens per round, so diffusion beats AR when
r > b / (1 + (b * t_AR - t_commit) / t_round).
Quality at each setting: held-out math accuracy and the teacher's NLL of greedy chat answers
(experiments.evaluation, --quality-new-tokens).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.decode import QUESTIONS, Decoder, Runner, forward_probes  # noqa: E402


def break_even_tokens_per_round(t_ar: float, t_round: float, t_commit: float, b: int) -> float:
    """Tokens per round above which block diffusion is faster than AR (inf: never at block b)."""
    saved = (b * t_ar - t_commit) / t_round  # rounds a block may take besides its commit
    return float("inf") if saved <= 0 else b / (1 + saved)


def _decoders(thresholds: list[float], alignment: str) -> list[Decoder]:
    from experiments.evaluation import dynamic_sampler

    return [Decoder("ar", "teacher, our AR decoder (KV cache)", "ar")] + [
        Decoder(f"d{t}", f"student, dynamic {t}", "diffusion", dynamic_sampler(4, alignment, t)) for t in thresholds]


def _probe_costs(model, batch: int, width: int, new_tokens: int, repeats: int) -> dict:
    probes = forward_probes(model, batch, width, 4, new_tokens, uncached=False)
    calls = {name: fn for name, (fn, _, _) in probes.items() if "prefill" not in name}
    for fn in calls.values():
        common.block(fn())  # compile
    times = common.alternate({k: (lambda f=f: common.timed(f)[0]) for k, f in calls.items()}, repeats)
    return {name: common.summarize(ts).median for name, ts in times.items()}


def quality(teacher, student, thresholds: list[float], alignment: str, n_math: int, n_chat: int,
            new_tokens: int, heldout: str, run_dir: str) -> list[dict]:
    """Accuracy, tokens per round and teacher NLL per setting, prompts formatted as the run trained."""
    from experiments.data.prompts import ANSWER_DOMAINS
    from experiments.evaluation import build_eval_set, chat_decode, math_accuracy
    from experiments.evaluation import dynamic_sampler
    from experiments.runners import run_chat_format
    from opdlm_jax.data.prompt_records import read_prompt_records
    from opdlm_jax.eval.distill_metrics import teacher_nll

    records = read_prompt_records(heldout, require_answer_for=ANSWER_DOMAINS)
    evalset = build_eval_set(teacher, records, n_math, n_chat, new_tokens, run_chat_format(run_dir))
    rows = []
    settings = [("AR teacher", teacher, "ar", None)] + [
        (f"student dynamic {t}", student, "diffusion", dynamic_sampler(4, alignment, t)) for t in thresholds]
    for name, model, mode, sampler in settings:
        acc = math_accuracy(model, model.config, model.params, evalset, mode, sampler, new_tokens)
        answers = chat_decode(model, model.config, model.params, evalset, mode, sampler, new_tokens)
        rows.append(dict(setting=name, accuracy=acc["accuracy"], math_tokens_per_round=acc["tokens_per_round"],
                         teacher_nll=teacher_nll(teacher.config, teacher.params, evalset.chat_ids, answers)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="training workdir of the student (newest checkpoint)")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.json and OUT.md")
    p.add_argument("--batches", default="1,4,8")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--thresholds", default="0.9,0.8,0.7")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--probe-repeats", type=int, default=7)
    p.add_argument("--quality-math", type=int, default=50)
    p.add_argument("--quality-chat", type=int, default=16)
    p.add_argument("--quality-new-tokens", type=int, default=128)
    args = p.parse_args(argv)
    import jax

    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.checkpoints.orbax import load_model_from_run
    from opdlm_jax.data.chat_format import chat_prompt_ids
    from opdlm_jax.decoding.batching import bucket_width

    env = common.environment()
    teacher = load_model("smollm2-135m")  # float32 params and compute
    teacher.params = jax.device_put(teacher.params)
    student = load_model_from_run(args.run, dtype="float32")
    student.params = jax.device_put(student.params)
    meta = student.run_meta
    alignment = meta["alignment"]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    prompts = [chat_prompt_ids(teacher.tokenizer, q) for q in QUESTIONS]
    decs = _decoders(thresholds, alignment)
    runners = {"ar": Runner(teacher, None, prompts, args.new_tokens, 0),
               "diffusion": Runner(student, None, prompts, args.new_tokens, 0)}
    result = {"environment": env, "run": args.run, "step": int(meta["step"]),
              "rollout_tokens": meta.get("totals", {}).get("tokens"), "alignment": alignment,
              "new_tokens": args.new_tokens, "batches": {}}
    for batch in batches:
        for d in decs:  # compile + warm
            runners[d.kind].run(d, batch, stop=False)
        times = common.alternate({d.key: (lambda d=d: runners[d.kind].run(d, batch, stop=False)) for d in decs},
                                 args.repeats,
                                 on_round=lambda i, seen, batch=batch: print(f"batch {batch} round {i + 1}: " + ", ".join(
                                     f"{k} {v:.2f}s" for k, v in seen.items()), flush=True))
        rows = {}
        for d in decs:
            stats = common.summarize(times[d.key])
            _, ratio = common.pair_ratios(times["ar"], times[d.key])
            forced = runners[d.kind].last[(d.key, batch, False)]
            runners[d.kind].run(d, batch, stop=True)
            stopped = runners[d.kind].last[(d.key, batch, True)]
            rows[d.key] = dict(name=d.name, seconds=stats.__dict__, tokens_per_second=batch * args.new_tokens / stats.median,
                               speedup_vs_ar=ratio.__dict__, tokens_per_round_forced=forced["tokens_per_round"],
                               tokens_per_round_real_stops=stopped["tokens_per_round"],
                               tokens_real_stops=stopped["tokens"])
        width = bucket_width(max(len(p) for p in prompts[:batch]), 4)
        costs = _probe_costs(teacher, batch, width, args.new_tokens, args.probe_repeats)
        t_ar, t_round, t_commit = (costs["AR step (1 token)"], costs["diffusion round (4 tokens)"],
                                   costs["commit (8 tokens)"])
        result["batches"][batch] = dict(decoders=rows, forward_seconds=costs,
                                        break_even_tokens_per_round=break_even_tokens_per_round(t_ar, t_round, t_commit, 4))
        print(json.dumps(result["batches"][batch], indent=1, default=str), flush=True)
    heldout = json.loads((Path(args.run) / "config.json").read_text())["data"]["heldout"]
    result["quality"] = quality(teacher, student, thresholds, alignment, args.quality_math, args.quality_chat,
                                args.quality_new_tokens, heldout, args.run)
    result["quality_settings"] = dict(math=args.quality_math, chat=args.quality_chat, new_tokens=args.quality_new_tokens)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    out.with_suffix(".md").write_text(speed_markdown(result))
    print(speed_markdown(result))
    return 0


def speed_markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"Student: {result['run']} at RL step {result['step']} ({result['rollout_tokens']:.0f} rollout tokens, "
             f"{result['alignment']}); {result['new_tokens']} forced new tokens per sequence; float32.", "",
             f"`{env['command']}` — {env['date']}, {env['cpu']}, {env['cores']}, load {env['load_average']}, "
             f"jax {env['jax']}.", "",
             "| batch | decoder | tokens/s | speed-up vs AR (median, min-max) | tok/round (forced) | "
             "tok/round (real stops) | break-even tok/round |", "|---|---|---|---|---|---|---|"]
    for batch, b in result["batches"].items():
        for key, r in b["decoders"].items():
            s = r["speedup_vs_ar"]
            lines.append(f"| {batch} | {r['name']} | {r['tokens_per_second']:.1f} | "
                         f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f}) | "
                         f"{r['tokens_per_round_forced']:.2f} | {r['tokens_per_round_real_stops']:.2f} | "
                         f"{'-' if key == 'ar' else format(b['break_even_tokens_per_round'], '.2f')} |")
    lines += ["", "Per-forward costs (ms, median): " + "; ".join(
        f"batch {batch}: " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in b["forward_seconds"].items())
        for batch, b in result["batches"].items())]
    q = result.get("quality")
    if q:
        qs = result["quality_settings"]
        lines += ["", f"Quality ({qs['math']} held-out math prompts, {qs['chat']} chat prompts, {qs['new_tokens']} new tokens, "
                      "real stops):", "", "| setting | math accuracy | tok/round (math) | teacher NLL of chat answers | gen. PPL |",
                  "|---|---|---|---|---|"]
        import math

        for r in q:
            lines.append(f"| {r['setting']} | {r['accuracy']:.2f} | {r['math_tokens_per_round']:.2f} | "
                         f"{r['teacher_nll']:.3f} | {math.exp(r['teacher_nll']):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
