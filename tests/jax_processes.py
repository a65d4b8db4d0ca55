"""Several JAX processes on this machine forming one mesh, as the workers of a pod slice do.

Each process gets the project's start-up environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID) and `devices` fake CPU devices; `sharding.initialize_distributed` joins them
with gloo collectives.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def process_env(devices: int, process_id: int | None = None, num_processes: int = 1, port: int | None = None,
                **extra: str) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               JAX_DEFAULT_MATMUL_PRECISION="highest", **extra)
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    if num_processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(num_processes),
                   JAX_PROCESS_ID=str(process_id))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start(argv: list[str], num_processes: int, devices: int, log_dir: Path, **extra: str) -> list[subprocess.Popen]:
    """Start `python argv...` as `num_processes` processes of `devices` devices each; logs in log_dir."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(num_processes):
        log = open(log_dir / f"process{i}.log", "w")
        procs.append(subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                      env=process_env(devices, i, num_processes, port, **extra)))
    return procs


def run(argv: list[str], num_processes: int, devices: int, log_dir: Path, timeout: float = 900, **extra: str) -> None:
    """Run to completion; every process must exit 0 (their logs are shown otherwise)."""
    procs = start(argv, num_processes, devices, log_dir, **extra)
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(codes):
        logs = "\n".join(f"--- process {i} (exit {c}) ---\n" + (log_dir / f"process{i}.log").read_text()[-3000:]
                         for i, c in enumerate(codes))
        raise AssertionError(f"exit codes {codes}\n{logs}")
