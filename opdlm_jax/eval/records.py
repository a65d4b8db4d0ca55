"""Per-example evaluation records (JSONL) and their summary.

Every line of a records file is one example under one seed, and carries the full decoding
settings it was produced with (mode, strategy, threshold, block size, rounds per block,
alignment, temperature, seed, length budget), so a number can always be traced back to how it
was decoded. `EvalResult.from_records` summarises a file: accuracy mean/std over seeds, tokens per
round, tokens per second and forward passes (NFE).

Batch-level quantities: one decode call serves a whole batch, so its NFE and wall time belong
to the batch, not to an example. Each record therefore carries `batch_index` with the batch's
`nfe` and `seconds`; summaries count every (seed, batch_index) once.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Sequence

from opdlm_jax.eval.answers import mean_and_std

SETTINGS_FIELDS = ("mode", "strategy", "threshold", "block_size", "steps_per_block", "alignment",
                   "temperature", "top_k", "top_p", "seed", "max_new_tokens")


@dataclasses.dataclass(frozen=True)
class DecodingSettings:
    """How a result was decoded. mode "ar" (teacher) leaves the diffusion fields at None."""
    mode: str = "diffusion"
    strategy: str | None = "low_confidence_static"
    threshold: float | None = 0.9
    block_size: int | None = 4
    steps_per_block: int | None = 4
    alignment: str | None = "same_position"
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int | None = None

    @classmethod
    def from_sampler(cls, sampler, *, seed: int, max_new_tokens: int | None = None) -> "DecodingSettings":
        """From a `SamplerConfig` (diffusion decoding)."""
        s = sampler.sampling
        return cls(mode="diffusion", strategy=sampler.strategy, threshold=float(sampler.threshold),
                   block_size=int(sampler.block_size), steps_per_block=int(sampler.steps_per_block),
                   alignment=sampler.alignment, temperature=0.0 if s.is_greedy else float(s.temperature),
                   top_k=int(s.top_k), top_p=float(s.top_p), seed=int(seed), max_new_tokens=max_new_tokens)

    @classmethod
    def from_ar(cls, sampling, *, seed: int, max_new_tokens: int | None = None) -> "DecodingSettings":
        """From `SamplingParams` (autoregressive decoding with the teacher)."""
        return cls(mode="ar", strategy=None, threshold=None, block_size=None, steps_per_block=None,
                   alignment=None, temperature=0.0 if sampling.is_greedy else float(sampling.temperature),
                   top_k=int(sampling.top_k), top_p=float(sampling.top_p), seed=int(seed),
                   max_new_tokens=max_new_tokens)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def without_seed(self) -> dict:
        d = self.to_dict()
        d.pop("seed")
        return d


@dataclasses.dataclass
class ExampleRecord:
    """One example, one seed. `correct` None: not scored (for instance generation only)."""
    task: str
    example_id: str | int
    settings: DecodingSettings
    prompt: str = ""
    completion: str = ""
    extracted: str | None = None
    gold: str | None = None
    correct: bool | None = None
    num_tokens: int = 0  # generated tokens, stop token included
    rounds: int | None = None  # denoising rounds (diffusion) / forward passes (AR) of this example
    batch_index: int = 0
    nfe: int | None = None  # forward passes of the whole batch's decode call
    seconds: float | None = None  # wall time of the whole batch's decode call
    extra: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """A flat JSON object: the settings' fields sit beside the result fields."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("settings", "extra")}
        d.update(self.settings.to_dict())
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExampleRecord":
        d = dict(d)
        settings = DecodingSettings(**{k: d.pop(k) for k in SETTINGS_FIELDS if k in d})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown record fields {sorted(unknown)}")
        return cls(settings=settings, **d)


def records_from_generation(result, *, task: str, settings: DecodingSettings,
                            example_ids: Sequence, prompts: Sequence[str], completions: Sequence[str],
                            golds: Sequence[str | None] | None = None,
                            extracted: Sequence[str | None] | None = None,
                            correct: Sequence[bool | None] | None = None,
                            batch_index: int = 0) -> list[ExampleRecord]:
    """Records for one `GenerationResult` (one decode call over a batch of prompts)."""
    n = len(result.token_ids)
    for name, seq in (("example_ids", example_ids), ("prompts", prompts), ("completions", completions)):
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries for a batch of {n}")
    golds = golds if golds is not None else [None] * n
    extracted = extracted if extracted is not None else [None] * n
    correct = correct if correct is not None else [None] * n
    return [ExampleRecord(task=task, example_id=example_ids[i], settings=settings, prompt=prompts[i],
                          completion=completions[i], extracted=extracted[i], gold=golds[i],
                          correct=None if correct[i] is None else bool(correct[i]),
                          num_tokens=len(result.token_ids[i]), rounds=int(result.rounds[i]),
                          batch_index=batch_index, nfe=int(result.nfe), seconds=float(result.seconds))
            for i in range(n)]


def write_records(path: str | os.PathLike, records: Iterable[ExampleRecord | dict], *,
                  append: bool = True) -> int:
    """Write records as JSON lines (appending by default); returns how many were written."""
    count = 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict() if isinstance(r, ExampleRecord) else r, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_records(path: str | os.PathLike) -> list[ExampleRecord]:
    with open(path, encoding="utf-8") as f:
        return [ExampleRecord.from_dict(json.loads(line)) for line in f if line.strip()]


@dataclasses.dataclass
class EvalResult:
    """Summary of one task under one decoding configuration, over one or more seeds.

    accuracy_mean / accuracy_std: over seeds, of each seed's accuracy (std with ddof=1; 0.0 for a
    single seed). tokens_per_round: generated tokens / denoising rounds. tokens_per_second:
    generated tokens / decode seconds (compile excluded). nfe: forward passes summed over every
    decode call; nfe_per_call: their mean.
    """
    task: str
    settings: dict  # the decoding settings, seed excluded
    seeds: list[int]
    num_examples: int  # per seed
    accuracy_mean: float
    accuracy_std: float
    per_seed_accuracy: dict[int, float]
    tokens_per_round: float
    tokens_per_second: float
    nfe: int
    nfe_per_call: float
    generated_tokens: int

    @classmethod
    def from_records(cls, records: Sequence[ExampleRecord], task: str | None = None) -> "EvalResult":
        records = [r for r in records if task is None or r.task == task]
        if not records:
            raise ValueError(f"no records{'' if task is None else f' for task {task!r}'}")
        tasks = {r.task for r in records}
        if len(tasks) > 1:
            raise ValueError(f"records of several tasks {sorted(tasks)}: pass task=")
        configs = {json.dumps(r.settings.without_seed(), sort_keys=True) for r in records}
        if len(configs) > 1:
            raise ValueError(f"records mix decoding settings (other than the seed): {sorted(configs)}")
        by_seed: dict[int, list[ExampleRecord]] = {}
        for r in records:
            by_seed.setdefault(r.settings.seed, []).append(r)
        per_seed = {}
        for seed, rs in sorted(by_seed.items()):
            scored = [r for r in rs if r.correct is not None]
            per_seed[seed] = (sum(bool(r.correct) for r in scored) / len(scored)) if scored else float("nan")
        scored_seeds = [v for v in per_seed.values() if v == v]
        mean, std = mean_and_std(scored_seeds) if scored_seeds else (float("nan"), float("nan"))
        tokens = sum(r.num_tokens for r in records)
        rounds = sum(r.rounds or 0 for r in records)
        calls: dict[tuple, tuple[int, float]] = {}
        for r in records:
            calls[(r.settings.seed, r.batch_index)] = (r.nfe or 0, r.seconds or 0.0)
        nfe = sum(c[0] for c in calls.values())
        seconds = sum(c[1] for c in calls.values())
        sizes = {len(rs) for rs in by_seed.values()}
        return cls(task=records[0].task, settings=records[0].settings.without_seed(),
                   seeds=sorted(by_seed), num_examples=max(sizes), accuracy_mean=mean,
                   accuracy_std=std, per_seed_accuracy=per_seed,
                   tokens_per_round=tokens / rounds if rounds else float("nan"),
                   tokens_per_second=tokens / seconds if seconds > 0 else float("nan"),
                   nfe=nfe, nfe_per_call=nfe / len(calls), generated_tokens=tokens)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["per_seed_accuracy"] = {str(k): v for k, v in self.per_seed_accuracy.items()}
        return d

    def summary_line(self) -> str:
        return (f"{self.task}: acc {100 * self.accuracy_mean:.1f} ± {100 * self.accuracy_std:.1f} "
                f"({len(self.seeds)} seeds x {self.num_examples}) | tokens/round {self.tokens_per_round:.2f} "
                f"| tokens/s {self.tokens_per_second:.1f} | nfe {self.nfe}")
