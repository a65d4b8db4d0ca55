"""Run untrusted code (a model's solution and its tests) in a throw-away process.

Every call gets:
- a fresh temporary directory as its working directory, HOME and TMPDIR, deleted afterwards;
- its own session and process group; on the wall-clock timeout the whole group is SIGKILLed;
- resource limits (setrlimit): CPU seconds, address space, file size (this also caps what it can
  print: stdout and stderr go to files), open files, no core dumps, a process count;
- stdin from /dev/null (or a given input file), a minimal environment;
- where Linux namespaces are available (root, or unprivileged user namespaces): no network (an
  empty network namespace), a read-only view of every mount with private tmpfs on /tmp, /var/tmp
  and /dev/shm (so a file written outside the work directory is gone with the sandbox and the next
  solution cannot see it), and its own PID namespace (killing it kills every descendant, even
  ones that left the process group). Started as root, it also drops to an unprivileged uid.

What it does NOT prevent: reading files the sandbox uid may read (the source tree, the
interpreter; /root is hidden when it has to be bridged for the interpreter), using the CPU and
memory up to the limits, or a solution that inspects the test runner in its own process (the
runner's pass marker is not a secret). Without namespaces (other platforms, or user namespaces
disabled) only the process group, limits and temporary directory apply; `isolation()` says which.
bubblewrap (`bwrap`) is not used: the namespaces above are what it would set up, and it is not
installed on the machines this was written on.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

LAUNCHER = Path(__file__).resolve().parent / "sandbox_launcher.py"
SANDBOX_UID = 65534  # "nobody": the uid a root-started sandbox drops to
DEFAULT_TIMEOUT_S = 20.0  # the authors' TRACERL_CODE_TIMEOUT


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-run limits. cpu_seconds None: the wall-clock timeout rounded up, plus one."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    cpu_seconds: Optional[int] = None
    memory_bytes: int = 2 << 30
    file_bytes: int = 16 << 20  # also the cap on stdout / stderr
    open_files: int = 256
    processes: int = 64
    output_chars: int = 4000  # how much of stdout / stderr is kept in the result


@dataclasses.dataclass
class RunResult:
    returncode: Optional[int]  # None: killed on the wall-clock timeout
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    isolation: dict  # what the launcher achieved (see sandbox_launcher.report)


def _reachable_paths() -> list[str]:
    """Directories the interpreter needs (its prefix, the venv's, their real paths)."""
    out = []
    for p in {sys.prefix, sys.base_prefix, os.path.realpath(sys.executable)}:
        out.append(os.path.realpath(p))
    return sorted(set(out))


def _env(workdir: str, extra: Mapping[str, str]) -> dict:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
           "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONIOENCODING": "utf-8",
           # one thread each: BLAS thread pools reserve address space the memory limit counts
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.update(extra)
    return env


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[... output truncated]" if len(data) > limit else "")


def run(argv: Sequence[str], files: Mapping[str, str], *, limits: Limits = Limits(),
        stdin_text: Optional[str] = None, env: Mapping[str, str] = (), isolate: bool = True) -> RunResult:
    """Write `files` (relative name -> text) into a fresh directory and run `argv` there.

    argv[0] "python" means this interpreter. stdin is /dev/null unless `stdin_text` is given.
    """
    argv = [sys.executable if a == "python" and i == 0 else a for i, a in enumerate(argv)]
    root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="opdlm_sandbox_"))
    try:
        os.chmod(base, 0o711)  # traversable by the sandbox uid, not listable
        work = base / "work"
        work.mkdir()
        for name, text in files.items():
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        if root:
            for p in [work, *work.rglob("*")]:
                os.chown(p, SANDBOX_UID, SANDBOX_UID)
        cpu = limits.cpu_seconds or int(limits.timeout_s) + 1
        spec = {"workdir": str(work), "argv": list(argv), "env": _env(str(work), dict(env)),
                "isolate": isolate, "drop_uid": SANDBOX_UID if root else None,
                "needed_paths": _reachable_paths(),
                "limits": {"cpu_seconds": cpu, "memory_bytes": limits.memory_bytes,
                           "file_bytes": limits.file_bytes, "open_files": limits.open_files,
                           "processes": limits.processes}}
        stdin_path = base / "stdin"
        stdin_path.write_text(stdin_text or "", encoding="utf-8")
        out_path, err_path = base / "stdout", base / "stderr"
        t0 = time.monotonic()
        with open(stdin_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
            proc = subprocess.Popen([sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(spec)],
                                    stdin=fin if stdin_text is not None else subprocess.DEVNULL,
                                    stdout=fout, stderr=ferr, cwd=str(work), close_fds=True,
                                    start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)
            proc.wait()
        seconds = time.monotonic() - t0
        stdout = _read_capped(out_path, limits.output_chars)
        stderr = _read_capped(err_path, limits.output_chars + 2000)
        isolation: dict = {}
        if stderr.startswith("SANDBOX "):
            line, _, stderr = stderr.partition("\n")
            try:
                isolation = json.loads(line[len("SANDBOX "):])
            except ValueError:
                pass
        return RunResult(None if timed_out else proc.returncode, stdout, stderr, timed_out, seconds,
                         isolation)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    """SIGKILL the run's process group (the launcher is its leader: pgid == its pid)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@functools.lru_cache(maxsize=None)
def isolation() -> dict:
    """What the sandbox achieves on this machine (one probe run, cached)."""
    r = run(["python", "-I", "-c", "print('ok')"], {}, limits=Limits(timeout_s=30))
    info = dict(r.isolation)
    info["works"] = r.returncode == 0 and r.stdout.strip() == "ok"
    if not info["works"]:
        info["errors"] = info.get("errors", []) + [f"probe failed: rc={r.returncode} {r.stderr[-300:]}"]
    return info
