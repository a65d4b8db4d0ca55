"""What a run or a command-line tool can end with, and the exit code each gets.

    0   finished
    1   error (a bug, a non-finite step, no usable checkpoint)
    2   bad input (config, paths, model files, flags): one line `error: ...`
    75  preempted (SIGTERM), state saved; restart to resume (EX_TEMPFAIL, what tpu/babysit.sh
        restarts on)

Exceptions carry their exit code so every entry point maps them the same way.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 75


class BadInput(ValueError):
    """Something the user gave is wrong (a path, a flag, a config value, a model file)."""

    exit_code = EXIT_BAD_INPUT


class RunStopped(RuntimeError):
    """The run stopped on purpose with nothing bad saved (non-finite step, no usable checkpoint,
    a resume whose settings differ from the run's); the message says what to do."""

    exit_code = EXIT_ERROR


class Preempted(Exception):
    """SIGTERM arrived; whatever could be saved is saved. Restarting resumes."""

    exit_code = EXIT_PREEMPTED
