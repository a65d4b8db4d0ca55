"""Ahead-of-time compile of the fused OPD step: per-chip memory of a TPU slice without the TPU.

    python -m experiments.aot --config experiments/configs/table1.py:qwen3-4b --topology v5p:2x2x1
    python -m experiments.aot --config experiments/configs/table1.py:qwen3-8b --topology v5p:2x2x2 \
        --config.teacher_slice=0 --json                                 # overrides as experiments.main
    python -m experiments.aot --preset qwen3-0.6b --topology v6e:2x4     # a preset's recipe config
    python -m experiments.aot --all-presets --topology v5p:2x2x1          # the four Qwen3 recipes
    python -m experiments.aot --preset tiny --platform cpu --batch 8 --minibatch 4 --prompt-len 8 \
        --max-new-tokens 8 --hbm-gib 1                                  # smoke test, ~30 s

What is compiled comes from the run's config, through `opdlm_jax.train.setup` like the trainer:
`--config FILE[:ARG]` (plus `--config.x=y` overrides) or `--preset NAME`, which means
`experiments.configs.common.recipe(NAME)` ("tiny" is a few-kB random architecture for smoke
tests). The architecture is the preset named by `config.teacher` (no weights) with the config's
numerics; the StepConfig, optimizer, mesh and shardings are the trainer's. Shapes: the config's
batch and minibatch, the largest response budget the trainer compiles (the curriculum's end,
bucketed) and the widest prompt bucket of `data.max_prompt_tokens`; --batch, --minibatch,
--prompt-len, --max-new-tokens, --mesh and --teacher-slice override them for exploration.

Nothing is materialised: parameters, the train state (AdamW moments) and the frozen teacher are
`jax.eval_shape` results turned into ShapeDtypeStructs that carry their NamedShardings on a
("data", "fsdp", "tensor") mesh; the step from `opdlm_jax.train.step.make_opd_step` (rollout,
state selection, teacher scoring, K minibatch updates, all in one program) is lowered on them and
a StepInputs of ShapeDtypeStructs, and compiled. The report gives, per chip, the argument /
output / temporary bytes from `compiled.memory_analysis()`, their total against the chip's HBM,
compile time and XLA's FLOP count (while-loop bodies are counted once by XLA, so it is a
per-iteration figure, not the step's).

Platforms:
  tpu  compile-only TPU devices from `jax.experimental.topologies.get_topology_desc` (needs the
       `libtpu` wheel matching jax: `pip install "jax[tpu]==<jax version>"`; no TPU needed). A
       step that does not fit fails at compile time (XLA's HBM check, seconds); the report then
       says "OOM" with XLA's temporaries and available HBM, plus the arguments (known exactly
       from the shardings) as the required total.
  cpu  N fake host devices (XLA_FLAGS=--xla_force_host_platform_device_count=N, set here when
       JAX has not started yet). The CPU compiler has no HBM limit and schedules for time, not
       memory, so its temporaries are a rough upper bound; the fit check compares the total with
       the chip's HBM (or --hbm-gib) and reports "OOM (simulated)" when it is exceeded.

Exit status: 0 every configuration fits, 3 at least one does not fit, 1 a compile failed for
another reason (or timed out in --all-presets), 2 bad input (a flag, a config field, a mesh that
does not fit the devices: one line `error: ...`; `--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Any, Sequence

from opdlm_jax.cli_errors import ArgumentParser, config_file_without_overrides, parse_flags, run_cli
from opdlm_jax.errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK, BadInput  # noqa: F401 - EXIT_BAD_INPUT for callers

GIB = 1024 ** 3

# HBM per chip (GiB), as the chip generations are sold (one JAX device per chip; v4 and v5p in
# megacore mode, i.e. both TensorCores of a chip behind one device).
CHIP_HBM_GIB = {"v4": 32.0, "v5e": 16.0, "v5p": 95.0, "v6e": 32.0, "tpu7x": 192.0}
MEGACORE_CHIPS = ("v4", "v5p")
QWEN3_PRESETS = ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b")
TINY = "tiny"  # a few-kB random architecture for smoke tests of this tool (not a real model)
EXIT_OOM = 3  # 2 is bad input, as for every entry point


@dataclasses.dataclass(frozen=True)
class AotSpec:
    """What to compile: a training run's config (overrides applied) on a TPU topology or fake CPU
    devices, at the largest shapes the trainer compiles for it (or the given ones)."""
    config: Any  # the trainer's ml_collections.ConfigDict
    topology: str = "v5p:2x2x1"
    platform: str = "tpu"  # "tpu" (compile-only topology devices) | "cpu" (fake host devices)
    cpu_devices: int = 8
    prompt_len: int | None = None  # None: the widest prompt bucket of config.data.max_prompt_tokens
    max_new_tokens: int | None = None  # None: the curriculum's largest (last) response budget
    teacher_param_dtype: str | None = None  # None: config.teacher_param_dtype, else param_dtype (as the trainer)
    hbm_gib: float | None = None  # None: the chip's HBM (CHIP_HBM_GIB)
    # XLA options for .compile(); on the CPU backend default_compiler_options() lowers the LLVM
    # optimisation level (buffer assignment, hence the memory report, does not depend on it).
    compiler_options: tuple[tuple[str, Any], ...] | None = None

    @property
    def preset(self) -> str:
        return self.config.teacher

    def resolved_compiler_options(self) -> dict:
        if self.compiler_options is not None:
            return dict(self.compiler_options)
        return default_compiler_options(self.platform)

    def label(self) -> str:
        return f"{self.preset} {self.platform}:{self.topology}"

    def shapes(self) -> dict:
        """batch, minibatch, updates (K), prompt width, response budget and block size."""
        from opdlm_jax.decoding.batching import bucket_width
        from opdlm_jax.train.setup import curriculum, updates_per_rl_step

        c, block = self.config, self.config.rollout.block_size
        width = self.prompt_len or bucket_width(c.data.max_prompt_tokens, block, minimum=c.data.prompt_bucket,
                                                ladder=c.data.prompt_ladder)
        budget = self.max_new_tokens or curriculum(c).length(c.steps, block)
        return dict(batch=c.batch_size, minibatch=c.minibatch_size, updates=updates_per_rl_step(c),
                    prompt_len=width, max_new_tokens=budget, block_size=block)

    def step_config(self, teacher_config):
        """The trainer's StepConfig (`opdlm_jax.train.setup.step_config`) at this spec's budget."""
        from opdlm_jax.train.setup import SpecialTokens, step_config

        return step_config(self.config, teacher_config, SpecialTokens.of_config(teacher_config),
                           self.shapes()["max_new_tokens"])


@dataclasses.dataclass
class AotReport:
    preset: str
    platform: str
    topology: str
    device_kind: str
    num_devices: int
    mesh: dict
    shapes: dict
    numerics: dict
    num_params: int
    status: str  # "fits" | "oom" | "oom_simulated" | "error"
    hbm_bytes: int
    student_params_bytes: int = 0  # per chip, from the shardings
    optimizer_state_bytes: int = 0
    teacher_params_bytes: int = 0
    argument_bytes: int | None = None  # per chip, from compiled.memory_analysis()
    output_bytes: int | None = None
    alias_bytes: int | None = None
    temp_bytes: int | None = None
    generated_code_bytes: int | None = None
    total_bytes: int | None = None  # arguments + outputs - aliased + temporaries (+ code)
    required_bytes: int | None = None  # XLA's figure when the compile ran out of HBM
    lower_seconds: float | None = None
    compile_seconds: float | None = None
    flops: float | None = None  # XLA cost_analysis (while bodies counted once)
    error: str | None = None

    @property
    def fits(self) -> bool:
        return self.status == "fits"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """A human-readable multi-line account, OOMs stated as required vs available."""
        g = human_bytes
        mesh = "x".join(f"{k}={v}" for k, v in self.mesh.items())
        lines = [f"{self.preset} on {self.platform}:{self.topology} ({self.num_devices} x {self.device_kind}, "
                 f"mesh {mesh})",
                 f"  shapes {self.shapes}  numerics {self.numerics}",
                 f"  per chip: student params {g(self.student_params_bytes)}, AdamW state "
                 f"{g(self.optimizer_state_bytes)}, teacher params {g(self.teacher_params_bytes)}"]
        if self.argument_bytes is not None:
            lines.append(f"  per chip: arguments {g(self.argument_bytes)}, outputs {g(self.output_bytes)} "
                         f"(aliased {g(self.alias_bytes)}), temporaries {g(self.temp_bytes)}, "
                         f"code {g(self.generated_code_bytes)}")
            lines.append(f"  total {g(self.total_bytes)} of {g(self.hbm_bytes)} HBM")
        if self.lower_seconds is not None:
            comp = "n/a" if self.compile_seconds is None else f"{self.compile_seconds:.1f} s"
            lines.append(f"  lower {self.lower_seconds:.1f} s, compile {comp}"
                         + ("" if self.flops is None else f", XLA flops {self.flops:.3e} (loop bodies once)"))
        if self.status == "fits":
            lines.append("  FITS")
        elif self.status in ("oom", "oom_simulated"):
            how = ("XLA TPU compiler: compile-time HBM OOM" if self.status == "oom"
                   else "simulated on the CPU backend: total exceeds the HBM budget")
            lines.append(f"  OUT OF MEMORY ({how}): requires {g(self.required_bytes)}, "
                         f"available {g(self.hbm_bytes)} per chip")
        else:
            lines.append(f"  COMPILE FAILED: {self.error}")
        if self.error and self.status == "oom":
            lines.append("  XLA: " + self.error.strip().splitlines()[0][:400])
        return "\n".join(lines)


def default_compiler_options(platform: str) -> dict:
    """CPU: no LLVM optimisation (the code never runs; compiles ~2x faster). TPU: XLA's defaults."""
    return {"xla_backend_optimization_level": 0} if platform == "cpu" else {}


def human_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------------------
# Chips and devices
# ---------------------------------------------------------------------------------------------

def chip_generation(topology: str) -> str:
    """"v5p:2x2x1" -> "v5p"; "v5litepod-8" style names map onto v5e."""
    name = topology.split(":", 1)[0].lower()
    if name.startswith("v5lite"):
        return "v5e"
    return name


def chip_hbm_bytes(topology: str, override_gib: float | None = None) -> int:
    if override_gib is not None:
        return int(override_gib * GIB)
    gen = chip_generation(topology)
    if gen not in CHIP_HBM_GIB:
        raise BadInput(f"unknown TPU generation {gen!r} in topology {topology!r}; known: "
                         f"{sorted(CHIP_HBM_GIB)} (or pass --hbm-gib)")
    return int(CHIP_HBM_GIB[gen] * GIB)


def tpu_topology_devices(topology: str) -> list:
    """Compile-only devices of a TPU slice (one per chip), from the libtpu wheel; no TPU needed."""
    from jax.experimental import topologies

    # Compile-only use never opens a chip: let several such processes (or one beside a training
    # run on a TPU VM) share libtpu instead of failing on its /tmp/libtpu_lockfile.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    kwargs = {"chip_config_name": "megacore"} if chip_generation(topology) in MEGACORE_CHIPS else {}
    try:
        desc = topologies.get_topology_desc(topology, platform="tpu", **kwargs)
    except Exception as exc:  # noqa: BLE001 - re-raised with the install hint
        raise RuntimeError(f"cannot describe TPU topology {topology!r}: {type(exc).__name__}: {exc}. "
                           "The TPU compiler comes from the libtpu wheel: "
                           "pip install \"jax[tpu]==<your jax version>\"") from exc
    return list(desc.devices)


def ensure_cpu_devices(count: int) -> None:
    """Ask for `count` fake host devices, when JAX's CPU backend has not started yet."""
    flag = f"--xla_force_host_platform_device_count={count}"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + flag).strip()


def cpu_devices(count: int) -> list:
    import jax

    devices = jax.devices("cpu")
    if len(devices) < count:
        raise RuntimeError(f"{count} CPU devices requested but JAX has {len(devices)}: set "
                           f"XLA_FLAGS=--xla_force_host_platform_device_count={count} before JAX starts")
    return devices[:count]


# ---------------------------------------------------------------------------------------------
# Configurations and abstract inputs
# ---------------------------------------------------------------------------------------------

def tiny_config():
    """A tiny random Qwen3-style architecture (vocabulary 128, 2 layers) for smoke tests."""
    from opdlm_jax.models.config import ModelConfig

    return ModelConfig(family="qwen3", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=16, qk_norm=True, eos_token_ids=(1,),
                       pad_token_id=0, mask_token_id=127)


def model_configs(spec: AotSpec):
    """(student, teacher) ModelConfigs: the architectures of the presets named by config.student
    (default: the teacher's) and config.teacher, with the config's numerics (no weights)."""
    from opdlm_jax.checkpoints.presets import preset_config

    c = spec.config
    numerics = dict(dtype=c.dtype, param_dtype=c.param_dtype, scan_layers=c.scan_layers,
                    remat_policy=c.remat_policy, attention=c.get("attention", "auto"))
    arch = lambda name: tiny_config().replace(**numerics) if name == TINY else preset_config(name, **numerics)  # noqa: E731
    teacher = arch(c.teacher)
    student = arch(c.student) if c.student and c.student != c.teacher else teacher
    from opdlm_jax.train.config import stored_teacher_dtype

    return student, teacher.replace(param_dtype=spec.teacher_param_dtype or stored_teacher_dtype(c))


def abstract_inputs(spec: AotSpec, mesh, given: bool):
    """The step's StepInputs as ShapeDtypeStructs carrying `step_inputs_shardings`; the responses
    only for a "given" rollout source (corpus data)."""
    import jax
    import jax.numpy as jnp

    from opdlm_jax.sharding import abstract_with_shardings
    from opdlm_jax.train.step import StepInputs, step_inputs_shardings

    s = spec.shapes()
    b, p, n = s["batch"], s["prompt_len"], s["max_new_tokens"]
    sds = jax.ShapeDtypeStruct
    data = (sds((b, n), jnp.int32), sds((b,), jnp.int32)) if given else ()
    inputs = StepInputs(sds((b, p), jnp.int32), sds((b, p), jnp.bool_), sds((b,), jnp.int32), *data)
    return abstract_with_shardings(inputs, step_inputs_shardings(mesh, given=given))


def per_device_bytes(tree) -> int:
    """Bytes one device holds of a pytree of sharded ShapeDtypeStructs (even shardings)."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return int(total)


# ---------------------------------------------------------------------------------------------
# Compile and report
# ---------------------------------------------------------------------------------------------

_SIZE = r"([0-9.]+)\s*([KMGTP]i?B?|[KMGTP]|B)?"


def _to_bytes(value: str, unit: str | None) -> int:
    unit = (unit or "B").upper().rstrip("B").rstrip("I")
    return int(float(value) * 1024 ** " KMGTP".index(unit or " "))


def parse_hbm_oom(message: str) -> tuple[int | None, int | None]:
    """(required, available) bytes per chip from XLA's compile-time HBM OOM text, or Nones.

    Two forms are known: "the total memory required for HLO temporaries (176.47G) exceeds
    available HBM (95.74G)" (libtpu 0.0.42: the figure is the temporaries alone) and "Used
    120.50G of 95.74G hbm". XLA prints binary units ("G" = GiB)."""
    m = re.search(r"required for HLO temporaries \(" + _SIZE + r"\) exceeds available HBM \(" + _SIZE + r"\)",
                  message)
    if m is None:
        m = re.search(r"[Uu]sed\s+" + _SIZE + r"\s+of\s+" + _SIZE + r"\s+hbm", message)
    if m is None:
        return None, None
    return _to_bytes(m.group(1), m.group(2)), _to_bytes(m.group(3), m.group(4))


def is_hbm_oom(message: str) -> bool:
    """XLA's compile-time HBM check failed (not some other compile error)."""
    return "CompileTimeHbmOom" in message or ("RESOURCE_EXHAUSTED" in message and "hbm" in message.lower())


def _memory(compiled) -> dict:
    ma = compiled.memory_analysis()
    if ma is None:
        return {}
    if isinstance(ma, (list, tuple)):
        ma = ma[0]
    get = lambda name: int(getattr(ma, name, 0) or 0)  # noqa: E731
    mem = dict(argument_bytes=get("argument_size_in_bytes"), output_bytes=get("output_size_in_bytes"),
               alias_bytes=get("alias_size_in_bytes"), temp_bytes=get("temp_size_in_bytes"),
               generated_code_bytes=get("generated_code_size_in_bytes"))
    mem["total_bytes"] = (mem["argument_bytes"] + mem["output_bytes"] - mem["alias_bytes"]
                          + mem["temp_bytes"] + mem["generated_code_bytes"])
    return mem


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def run_aot(spec: AotSpec) -> AotReport:
    """Lower and compile the fused OPD step for `spec`, as the trainer builds it from the config."""
    import jax

    from opdlm_jax.sharding import make_mesh, replicated
    from opdlm_jax.train.config import validate_config
    from opdlm_jax.train.optimizer import make_optimizer
    from opdlm_jax.train.setup import abstract_start_up, optimizer_config, run_mesh
    from opdlm_jax.train.step import make_opd_step

    config = spec.config
    validate_config(config)
    shapes = spec.shapes()
    if shapes["prompt_len"] % shapes["block_size"]:
        raise BadInput(f"prompt_len={shapes['prompt_len']} is not a multiple of block_size={shapes['block_size']}")
    student_config, teacher_config = model_configs(spec)
    step_cfg = spec.step_config(teacher_config)
    if spec.platform == "tpu":
        devices = tpu_topology_devices(spec.topology)
    elif spec.platform == "cpu":
        devices = cpu_devices(spec.cpu_devices)
    else:
        raise BadInput(f"platform={spec.platform!r}: expected 'tpu' or 'cpu'")
    # No mesh (config.mesh.devices=1) is the trainer's one-device run: the same program on one chip.
    try:
        mesh = run_mesh(config, devices) or make_mesh(1, 1, 1, devices=devices[:1])
    except ValueError as exc:  # config.mesh (or --mesh) does not fit the devices
        raise BadInput(str(exc)) from exc
    hbm = chip_hbm_bytes(spec.topology, spec.hbm_gib)

    optimizer = make_optimizer(optimizer_config(config))
    key = jax.random.PRNGKey(0)
    state_in, teacher_in = abstract_start_up(student_config, teacher_config, optimizer, mesh)
    inputs_in = abstract_inputs(spec, mesh, given=step_cfg.rollout_source == "given")
    key_in = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated(mesh))

    report = AotReport(
        preset=spec.preset, platform=spec.platform, topology=spec.topology if spec.platform == "tpu" else
        f"{spec.cpu_devices} fake CPU devices (HBM of {spec.topology})",
        device_kind=str(getattr(devices[0], "device_kind", "?")), num_devices=mesh.size,
        mesh=dict(mesh.shape), num_params=student_config.num_params(), shapes=shapes,
        numerics=dict(dtype=config.dtype, param_dtype=config.param_dtype,
                      teacher_param_dtype=teacher_config.param_dtype, remat=config.remat_policy,
                      scan_layers=config.scan_layers, divergence=config.loss.divergence,
                      chunk_size=config.loss.chunk_size, teacher_slice=config.teacher_slice),
        status="error", hbm_bytes=hbm, student_params_bytes=per_device_bytes(state_in.params),
        optimizer_state_bytes=per_device_bytes(state_in.opt_state) + per_device_bytes(state_in.step),
        teacher_params_bytes=per_device_bytes(teacher_in))

    step = make_opd_step(student_config, teacher_config, step_cfg, optimizer,
                         state_shardings=jax.tree.map(lambda x: x.sharding, state_in),
                         teacher_shardings=jax.tree.map(lambda x: x.sharding, teacher_in), mesh=mesh)
    t0 = time.perf_counter()
    try:
        lowered = step.lower(state_in, teacher_in, inputs_in, key_in)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report.error = f"lowering failed: {type(exc).__name__}: {exc}"
        return report
    report.lower_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        compiled = lowered.compile(compiler_options=spec.resolved_compiler_options() or None)
    except Exception as exc:  # noqa: BLE001 - an HBM OOM is a result, anything else an error
        report.compile_seconds = time.perf_counter() - t0
        message = f"{type(exc).__name__}: {exc}"
        report.error = message[:4000]
        if is_hbm_oom(message):
            report.status = "oom"
            required, available = parse_hbm_oom(message)
            if "HLO temporaries" in message and required is not None:
                # XLA names the temporaries; the arguments (known from the shardings) come on top.
                report.temp_bytes = required
                required += (report.student_params_bytes + report.optimizer_state_bytes
                             + report.teacher_params_bytes)
            report.required_bytes = required
            if available:
                report.hbm_bytes = available
        return report
    report.compile_seconds = time.perf_counter() - t0
    for name, value in _memory(compiled).items():
        setattr(report, name, value)
    report.flops = _flops(compiled)
    return apply_budget(report, hbm)


def apply_budget(report: AotReport, hbm_bytes: int) -> AotReport:
    """Judge a compiled report against an HBM budget per chip: "fits", or an OOM with the
    required bytes (on CPU "oom_simulated": the CPU compiler itself has no HBM limit)."""
    report.hbm_bytes = int(hbm_bytes)
    if report.total_bytes is None:
        raise ValueError("the report has no memory analysis to judge")
    if report.total_bytes > hbm_bytes:
        report.status = "oom_simulated" if report.platform == "cpu" else "oom"
        report.required_bytes = report.total_bytes
    else:
        report.status, report.required_bytes = "fits", None
    return report


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------

TABLE_HEADER = ("| preset | platform / topology | mesh (d,f,t) | student params | AdamW state | teacher params "
                "| arguments | temporaries | total / HBM per chip | status | compile s |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")


def table_row(r: AotReport | dict) -> str:
    d = r.to_dict() if isinstance(r, AotReport) else r
    g = lambda b: "-" if b is None else f"{b / GIB:.2f}"  # noqa: E731
    mesh = ",".join(str(v) for v in d["mesh"].values()) if d.get("mesh") else "-"
    total = d.get("total_bytes") if d.get("total_bytes") is not None else d.get("required_bytes")
    status = {"fits": "fits", "oom": "**OOM**", "oom_simulated": "**OOM (sim.)**"}.get(d["status"], "error")
    comp = "-" if d.get("compile_seconds") is None else f"{d['compile_seconds']:.0f}"
    topo = d["topology"] if d["platform"] == "tpu" else f"cpu x{d['num_devices']}"
    return (f"| {d['preset']} | {d['platform']} {topo} | {mesh} | {g(d.get('student_params_bytes'))} "
            f"| {g(d.get('optimizer_state_bytes'))} | {g(d.get('teacher_params_bytes'))} "
            f"| {g(d.get('argument_bytes'))} | {g(d.get('temp_bytes'))} "
            f"| {g(total)} / {g(d.get('hbm_bytes'))} | {status} | {comp} |")


def table(reports: Sequence[AotReport | dict]) -> str:
    return "\n".join([TABLE_HEADER] + [table_row(r) for r in reports]) + "\n(sizes in GiB per chip)"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def parse_mesh(text: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--mesh {text!r}: expected data,fsdp,tensor (e.g. 1,-1,1)")
    try:
        return tuple(int(p) for p in parts)  # type: ignore[return-value]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--mesh {text!r}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    """The tool's own flags; `--config FILE[:ARG]` and `--config.x=y` are left to ml_collections."""
    p = ArgumentParser(prog="python -m experiments.aot", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                                epilog="--config FILE[:ARG]  a training config, as experiments.main takes it; "
                                       "--config.x=y overrides any field of it (or of --preset's recipe), e.g. "
                                       "--config.dtype=float32 --config.loss.chunk_size=128")
    p.add_argument("--preset", default=None,
                   help=f"without --config: the recipe config of this preset (default qwen3-0.6b; {TINY!r}: a "
                        "few-kB smoke-test architecture)")
    p.add_argument("--all-presets", action="store_true",
                   help=f"the recipes of {', '.join(QWEN3_PRESETS)}, one subprocess each (see --timeout)")
    p.add_argument("--topology", default="v5p:2x2x1",
                   help="TPU slice, e.g. v5p:2x2x1 (v5p-8), v6e:2x4, v5e:2x2, v4:2x2x1")
    p.add_argument("--platform", choices=("tpu", "cpu"), default="tpu")
    p.add_argument("--cpu-devices", type=int, default=8, help="fake host devices for --platform cpu")
    # Overrides of the config's shapes, for exploration.
    p.add_argument("--mesh", type=parse_mesh, default=None, help="data,fsdp,tensor (default: config.mesh)")
    p.add_argument("--batch", type=int, default=None, help="default: config.batch_size")
    p.add_argument("--minibatch", type=int, default=None, help="default: config.minibatch_size")
    p.add_argument("--teacher-slice", type=int, default=None,
                   help="sequences per teacher forward (default: config.teacher_slice; 0: the whole batch)")
    p.add_argument("--prompt-len", type=int, default=None,
                   help="default: the widest prompt bucket of config.data.max_prompt_tokens")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: the curriculum's largest response budget")
    p.add_argument("--teacher-param-dtype", default=None, help="default: config.teacher_param_dtype, else param_dtype (as the trainer)")
    p.add_argument("--hbm-gib", type=float, default=None, help="HBM budget per chip (default: the chip's)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per preset with --all-presets")
    p.add_argument("--json", action="store_true", help="print one JSON object per configuration")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    return p


def _has_config_file(config_argv: Sequence[str]) -> bool:
    return any(a == "--config" or a.startswith("--config=") for a in config_argv)


def load_config(config_argv: Sequence[str], preset: str | None = None):
    """The ConfigDict of `--config FILE[:ARG]` or, without one, of `recipe(preset)`, with the
    `--config.x=y` overrides applied: ml_collections' config flags, as experiments.main uses them."""
    from absl import flags
    from ml_collections import config_flags

    from experiments.configs.common import recipe

    argv = ["experiments.aot", *config_argv]
    values = flags.FlagValues()  # a private flag registry: main() may run several times per process
    from_file = _has_config_file(config_argv)

    def parse():  # ml_collections may apply the overrides already when the flag is defined
        if from_file:
            config_flags.DEFINE_config_file("config", None, flag_values=values, sys_argv=argv)
        else:
            config_flags.DEFINE_config_dict("config", recipe(preset or "qwen3-0.6b"), flag_values=values,
                                            sys_argv=argv)
        return values(argv)

    base = (lambda: config_file_without_overrides(argv)) if from_file else (lambda: recipe(preset or "qwen3-0.6b"))
    rest = parse_flags(parse, argv, base)
    if len(rest) > 1:
        raise BadInput(f"unexpected arguments: {' '.join(rest[1:])}")
    config = values.config
    if config.get("experiment", "train") != "train":  # a multi-run experiment: plan its training runs
        if "train" not in config:
            raise BadInput(f"config experiment={config.experiment!r} has no training config to plan")
        config = config.train
    return config


def spec_from_args(args, config_argv: Sequence[str]) -> AotSpec:
    config = load_config(config_argv, args.preset)
    for flag, field in (("batch", "batch_size"), ("minibatch", "minibatch_size"), ("teacher_slice", "teacher_slice")):
        if getattr(args, flag) is not None:
            config[field] = getattr(args, flag)
    if args.mesh is not None:
        config.mesh.update(data=args.mesh[0], fsdp=args.mesh[1], tensor=args.mesh[2], devices=0)
    return AotSpec(config=config, topology=args.topology, platform=args.platform, cpu_devices=args.cpu_devices,
                   prompt_len=args.prompt_len, max_new_tokens=args.max_new_tokens,
                   teacher_param_dtype=args.teacher_param_dtype, hbm_gib=args.hbm_gib)


def _child_argv(argv: Sequence[str], preset: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--all-presets" or a in ("--json", "--markdown"):
            continue
        if a in ("--preset", "--timeout"):
            skip = True
            continue
        if a.startswith(("--preset=", "--timeout=")):
            continue
        out.append(a)
    return out + ["--preset", preset, "--json"]


def _run_child(argv: Sequence[str], preset: str, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "experiments.aot", *_child_argv(argv, preset)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"preset": preset, "status": "error", "error": f"timed out after {timeout:.0f} s (not compiled)",
                "wall_seconds": time.perf_counter() - t0}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            result["wall_seconds"] = time.perf_counter() - t0
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"preset": preset, "status": "error", "error": f"exit {proc.returncode}: " + " | ".join(tail),
            "wall_seconds": time.perf_counter() - t0}


def _print(result: dict | AotReport, as_json: bool) -> None:
    if as_json:
        d = result.to_dict() if isinstance(result, AotReport) else result
        print(json.dumps(d), flush=True)
    elif isinstance(result, AotReport):
        print(result.summary(), flush=True)
    elif "mesh" in result and "num_devices" in result:
        print(AotReport(**{k: v for k, v in result.items() if k in AotReport.__dataclass_fields__}).summary(),
              flush=True)
    else:
        print(f"{result['preset']}: FAILED: {result.get('error')}", flush=True)


def _exit_code(statuses: Sequence[str]) -> int:
    if any(s == "error" for s in statuses):
        return EXIT_ERROR
    return EXIT_OOM if any(s.startswith("oom") for s in statuses) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: bad input is one line `error: ...` and exit 2 (`--debug`: traceback)."""
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args, config_argv = parser.parse_known_args(argv)
    if args.preset and _has_config_file(config_argv):
        parser.error("give --preset or --config FILE, not both")
    if args.all_presets and (args.preset or _has_config_file(config_argv)):
        parser.error("--all-presets plans the recipes of the Qwen3 presets: no --preset or --config file")
    if args.all_presets:
        results = []
        for preset in QWEN3_PRESETS:
            result = _run_child(argv, preset, args.timeout)
            results.append(result)
            _print(result, args.json)
        if args.markdown or not args.json:
            rows = [r for r in results if "mesh" in r]
            print(table(rows))
            for r in results:
                if "mesh" not in r:
                    print(f"{r['preset']}: {r.get('error')}")
        return _exit_code([r["status"] for r in results])
    if args.platform == "cpu":
        ensure_cpu_devices(args.cpu_devices)
    # The TPU compiler runs inside the CPU-platform process; keep JAX from probing for a real TPU.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.platform == "tpu":
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    report = run_aot(spec_from_args(args, config_argv))
    _print(report, args.json)
    if args.markdown:
        print(table([report]))
    return _exit_code([report.status])


if __name__ == "__main__":
    sys.exit(main())
