"""Shared helpers for the `bench/` scripts, following docs/BENCHMARKING.md.

- `Stats` / `summarize`: median with min and max of a list of timings.
- `time_repeated`: one warm-up (compile) call reported separately, then >= 5 timed calls, each
  ended by `jax.block_until_ready`.
- `alternate`: run several candidates A B C A B C ... in one process and collect their times,
  so that `pair_ratios` can compare each pair measured side by side.
- `matmul_ceiling`: FLOP/s of a large matmul in float32 and in bfloat16 inputs with float32
  accumulation (the compute ceiling MFU is quoted against), measured in the same run.
- `environment`: the record every table carries (command, date, CPU, cores, versions, load).
- `markdown_table`, `replace_section`: output for stdout and `BENCHMARKS.md`.
- `demo_step_setup`: the demo's trainer setup, response budget and first batch of prompts.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

MIN_REPEATS = 5


@dataclasses.dataclass(frozen=True)
class Stats:
    median: float
    min: float
    max: float
    n: int

    def fmt(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        """'median (min-max)' of the values times `scale`."""
        f = lambda x: f"{x * scale:.{digits}f}"
        return f"{f(self.median)}{unit} ({f(self.min)}-{f(self.max)})"


def summarize(values: Sequence[float]) -> Stats:
    if not values:
        raise ValueError("no values to summarize")
    return Stats(statistics.median(values), min(values), max(values), len(values))


def block(x):
    """`jax.block_until_ready` when JAX is importable (torch results pass through)."""
    try:
        import jax
    except ImportError:  # pragma: no cover
        return x
    return jax.block_until_ready(x)


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """Wall time of one call, outputs made ready before the clock stops -> (seconds, output)."""
    t0 = time.perf_counter()
    out = block(fn(*args, **kwargs))
    return time.perf_counter() - t0, out


@dataclasses.dataclass
class Timing:
    warmup_seconds: float  # the first (compiling) call, excluded from `times`
    times: list[float]

    @property
    def stats(self) -> Stats:
        return summarize(self.times)


def time_repeated(fn: Callable, repeats: int = MIN_REPEATS, warmup: int = 1) -> Timing:
    """Call fn() `warmup` times (compile; reported, not counted), then `repeats` timed times."""
    warm = 0.0
    for _ in range(warmup):
        warm += timed(fn)[0]
    return Timing(warm, [timed(fn)[0] for _ in range(repeats)])


def alternate(candidates: Mapping[str, Callable[[], float]], repeats: int,
              only_first: Mapping[str, int] | None = None,
              on_round: Callable[[int, dict], None] | None = None) -> dict[str, list[float]]:
    """Run the candidates in turn, `repeats` rounds (A B C A B C ...), in one process.

    Each candidate returns the seconds it measured (so a decoder can report its own decode time,
    compile excluded). only_first: name -> k runs a slow candidate in the first k rounds only.
    Returns name -> list of seconds, index i = round i.
    """
    only_first = dict(only_first or {})
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for i in range(repeats):
        seen = {}
        for name, fn in candidates.items():
            if i < only_first.get(name, repeats):
                seen[name] = float(fn())
                times[name].append(seen[name])
        if on_round is not None:
            on_round(i, seen)
    return times


def pair_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> tuple[list[float], Stats]:
    """Ratio of each pair measured in the same round (numerator[i] / denominator[i]), and its
    median/min/max. With times, baseline_time / candidate_time is the candidate's speed-up."""
    n = min(len(numerator), len(denominator))
    if n == 0:
        raise ValueError("no pairs to compare")
    ratios = [numerator[i] / denominator[i] for i in range(n)]
    return ratios, summarize(ratios)


CEILING_DTYPES = ("float32", "bfloat16->float32")


def ceiling_candidates(n: int = 2048) -> dict[str, tuple[Callable, float]]:
    """label -> (a call running one n x n x n matmul, its FLOPs 2 n^3), for float32 and for
    bfloat16 inputs with float32 accumulation (`preferred_element_type`). Usable inside an
    `alternate` loop so that the ceiling is measured next to what it is compared with."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    mm = jax.jit(lambda x, y: jax.lax.dot(x, y, preferred_element_type=jnp.float32))
    out = {}
    for label, dtype in zip(CEILING_DTYPES, (jnp.float32, jnp.bfloat16)):
        a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
        b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
        out[label] = ((lambda a=a, b=b: mm(a, b)), 2.0 * n ** 3)
    return out


def matmul_ceiling(n: int = 2048, repeats: int = MIN_REPEATS) -> dict[str, dict]:
    """Measured matmul FLOP/s (2 n^3 / time) in float32, and bfloat16 inputs accumulated in float32.
    Returns label -> plain dict (n, runs, flops_per_s = at the median time, flops_per_s_best,
    flops_per_s_worst, compile_s)."""
    out = {}
    for label, (fn, flops) in ceiling_candidates(n).items():
        t = time_repeated(fn, repeats)
        st = t.stats
        out[label] = dict(n=n, runs=st.n, flops_per_s=flops / st.median, flops_per_s_best=flops / st.min,
                          flops_per_s_worst=flops / st.max, compile_s=t.warmup_seconds)
    return out


def _cpu_model() -> str:
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                fields.setdefault(k, v)
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", "unknown")
    extra = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields]
    flags = fields.get("flags", "").split()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(extra)}; {' '.join(simd)})"


def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "?")
    except ImportError:
        return "not installed"


def environment() -> dict:
    """What every table records: command, date, CPU model and cores, versions, load."""
    import jax

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count()
    return {
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical ({affinity} usable)",
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "backend": f"{jax.default_backend()} ({len(jax.devices())} device(s))",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(path: Path, title: str, body: str, preamble: str = "# Benchmarks\n") -> None:
    """Replace the `## {title}` section of a markdown file (up to the next `## `), or append it."""
    text = path.read_text() if path.exists() else preamble
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def demo_step_setup(dtype: str, max_prompt_tokens: int):
    """The demo's OPD step as the trainer builds it (experiments/configs/demo.py) with compute
    `dtype` (float32 master weights either way) -> (config, setup, response budget, the first
    batch_size of its training prompts with at most `max_prompt_tokens` tokens, as token ids)."""
    import copy

    from experiments.configs.demo import get_config
    from opdlm_jax.data.chat_format import chat_format_from_config, prompt_token_ids
    from opdlm_jax.data.prompt_records import read_prompt_records
    from opdlm_jax.train.setup import build_setup

    config = copy.deepcopy(get_config("").train)
    config.dtype = dtype
    setup = build_setup(config)
    budget = setup.curriculum.length(config.steps, config.rollout.block_size)
    fmt = chat_format_from_config(config)  # the prompts the demo trains on
    ids = (prompt_token_ids(setup.teacher.tokenizer, r, fmt) for r in read_prompt_records(config.data.train))
    prompts = [p for p in ids if len(p) <= max_prompt_tokens][:config.batch_size]
    return config, setup, budget, prompts
