"""Seconds from starting a command to the first byte it prints on stdout, and to its end.

    python bench/first_token.py -- python -m opdlm_jax.generate --checkpoint runs/demo/opdlm_shifted \\
        --chat --prompt "In a few words, what is an atom?"

Run it twice with the same OPDLM_COMPILATION_CACHE: the first run on an empty cache directory is
cold (compiles the decoder), the second is warm (loads it from disk).
"""
from __future__ import annotations

import subprocess
import sys
import time


def first_output_seconds(command: list[str]) -> tuple[float, float, str]:
    """(seconds to the first stdout byte, seconds to exit, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    rest = proc.stdout.read()
    proc.wait()
    return t_first, time.perf_counter() - t0, (first + rest).decode("utf-8", "replace")


if __name__ == "__main__":
    argv = sys.argv[1:]
    command = argv[argv.index("--") + 1:] if "--" in argv else argv
    t_first, t_end, out = first_output_seconds(command)
    print(f"first output {t_first:.1f}s, exit {t_end:.1f}s\n{out}")
