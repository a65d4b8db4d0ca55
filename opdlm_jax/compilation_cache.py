"""JAX's persistent compilation cache, on by default in our entry points and tests.

A compiled XLA program is stored on disk under a key of its HLO and compile options, so the next
process (a resumed run, a second `generate`, a test subprocess) loads it instead of compiling it
again. Set OPDLM_COMPILATION_CACHE to another directory, or to "off" to disable it. Every
command-line entry point enables it (generate, chat, lm_eval, export, experiments.main,
experiments.evaluate), as do the tests.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "OPDLM_COMPILATION_CACHE"


def default_directory() -> Path:
    """The user's cache directory ($XDG_CACHE_HOME, else ~/.cache) / opdlm_jax / xla."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opdlm_jax" / "xla"


# Programs that compile faster than this are not worth a disk round trip.
MIN_COMPILE_SECONDS = 0.2


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Point JAX at a persistent cache directory (default: $OPDLM_COMPILATION_CACHE, else
    `default_directory()`); returns it, or None when disabled with "off".

    Programs with host callbacks (the streaming decoder) are never stored: JAX bakes the callback
    into the program."""
    import jax

    chosen = os.fspath(directory) if directory is not None else os.environ.get(ENV, str(default_directory()))
    if chosen.strip().lower() in ("", "0", "off", "none"):
        return None
    path = Path(chosen).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
