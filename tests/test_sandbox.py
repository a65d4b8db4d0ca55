"""The code sandbox (opdlm_jax.eval.sandbox): what a run sees, its limits, and that nothing it
starts outlives it."""
import os
import time
from pathlib import Path

import pytest

from opdlm_jax.eval import sandbox

FAST = sandbox.Limits(timeout_s=5)


def _py(code, **kw):
    return sandbox.run(["python", "-I", "-c", code], {}, **kw)


def test_fresh_directory_is_cwd_home_and_tmpdir_and_stdin_is_empty():
    r = _py("import os, sys, tempfile\n"
            "print(os.getcwd() == os.environ['HOME'] == tempfile.gettempdir())\n"
            "print(repr(sys.stdin.read()))\n"
            "print(os.listdir('.'))\n"
            "print(os.getcwd())", limits=FAST)
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stderr
    assert lines[:3] == ["True", "''", "[]"]
    assert not Path(lines[3]).exists()  # removed after the run


def test_files_are_written_and_stdin_can_carry_input():
    r = sandbox.run(["python", "-I", "main.py"], {"main.py": "print(input()[::-1])"}, limits=FAST,
                    stdin_text="abc\n")
    assert (r.returncode, r.stdout.strip()) == (0, "cba")


def test_wall_clock_timeout_kills_the_whole_group_including_setsid_escapees():
    token = f"opdlm-sandbox-escapee-{os.getpid()}"
    code = ("import os, subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', '{token}'], start_new_session=True)\n"
            "while True:\n    time.sleep(1)\n")
    t0 = time.monotonic()
    r = _py(code, limits=sandbox.Limits(timeout_s=2))
    assert r.timed_out and r.returncode is None
    assert time.monotonic() - t0 < 10
    time.sleep(0.5)
    survivors = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and token in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                survivors.append(pid)
        except OSError:
            pass
    if survivors and not sandbox.isolation().get("pid_namespace"):
        pytest.skip("no PID namespace here: a process that left the group survives (documented)")
    assert not survivors


def test_cpu_limit_and_output_cap():
    r = _py("while True: pass", limits=sandbox.Limits(timeout_s=20, cpu_seconds=1))
    assert not r.timed_out and r.returncode != 0 and r.seconds < 15
    r = _py("import sys\nwhile True: sys.stdout.write('x' * 65536)",
            limits=sandbox.Limits(timeout_s=20, file_bytes=1 << 20, output_chars=1000))
    assert r.returncode != 0  # SIGXFSZ once the output file reaches the cap
    assert len(r.stdout) < 1100 and r.stdout.endswith("[... output truncated]")


def test_isolation_where_namespaces_exist():
    info = sandbox.isolation()
    assert info["works"], info
    if not info.get("namespaces"):
        pytest.skip(f"no Linux namespaces here: {info.get('errors')}")
    r = _py("import socket\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); print('online')\n"
            "except OSError:\n    print('offline')\n"
            "try:\n    open('/usr/opdlm_sandbox_probe', 'w'); print('writable')\n"
            "except OSError:\n    print('read-only')\n", limits=FAST)
    assert r.stdout.split() == ["offline", "read-only"], r.stderr
    if os.geteuid() == 0:
        assert info["uid"] == sandbox.SANDBOX_UID
