"""How every command-line entry point ends (the codes of `opdlm_jax.errors`).

`run_cli(main, argv)` runs an entry point's main and turns what it raises into one line on
stderr and an exit code:

    BadInput, FileNotFoundError, a bad flag   `error: <message>`                      exit 2
    RunStopped                                `error: <message>`                      exit 1
    Preempted                                 `preempted: <message>`                  exit 75
    anything else                             `error: <Type>: <message> (rerun ...)`  exit 1

`--debug` on the command line (every entry point declares it) or OPDLM_DEBUG=1 prints the full
traceback instead of the one line; the exit code stays the same.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
import traceback
from typing import Any, Callable, Sequence

from opdlm_jax.errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK, BadInput, Preempted, RunStopped

DEBUG_FLAG = "--debug"
DEBUG_ENV = "OPDLM_DEBUG"
DEBUG_HELP = "on an error, print the full traceback instead of one line (or set OPDLM_DEBUG=1)"
# What a user gets wrong: the path they named does not exist or is not the right kind.
_USER_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def debug_requested(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, (BadInput, RunStopped, Preempted)):
        return exc.exit_code
    if isinstance(exc, _USER_PATH_ERRORS):
        return EXIT_BAD_INPUT
    return EXIT_ERROR


def one_line(text: str) -> str:
    """A message on one line: its non-empty lines joined."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def error_line(exc: BaseException) -> str:
    """The single line a user sees for `exc`."""
    message = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, Preempted):
        return f"preempted: {message}"
    if exit_code_of(exc) == EXIT_BAD_INPUT or isinstance(exc, RunStopped):
        return f"error: {message}"
    # An unexpected failure: the type helps, the traceback is one flag away.
    return f"error: {type(exc).__name__}: {message} (rerun with {DEBUG_FLAG} for the traceback)"


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """main(argv) -> its exit code; an exception -> one line on stderr and its exit code.

    A SystemExit with an integer code (argparse --help, absl's app.run) is returned as that code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = main(argv)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or EXIT_OK
        raise
    except Exception as e:  # noqa: BLE001 - every failure gets its exit code and one line
        if debug_requested(argv):
            traceback.print_exc()
        else:
            print(error_line(e), file=sys.stderr, flush=True)
        return exit_code_of(e)
    return EXIT_OK if code is None else int(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a `--debug` flag, whose usage errors are one line (BadInput, exit 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)

    def error(self, message: str):  # argparse prints the usage and exits 2; we want one line
        raise BadInput(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------------------------
# ml_collections config flags: `--config FILE[:ARG]` plus `--config.x.y=value` overrides.

def override_paths(argv: Sequence[str], name: str = "config") -> list[str]:
    """The field paths of the `--config.a.b=v` (or `--noconfig.a.b`) overrides in argv."""
    paths = []
    for arg in argv:
        for prefix in (f"--{name}.", f"-{name}.", f"--no{name}.", f"-no{name}."):
            if arg.startswith(prefix):
                paths.append(arg[len(prefix):].split("=", 1)[0])
                break
    return paths


def _field_paths(config: Any, prefix: str = "") -> list[str]:
    paths = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        paths.append(path)
        if hasattr(value, "items"):
            paths.extend(_field_paths(value, path + "."))
    return paths


def unknown_field_message(config: Any, path: str, name: str = "config") -> str | None:
    """None when `path` names a field of `config`; else one line naming it and the nearest fields."""
    node = config
    for part in path.split("."):
        if not hasattr(node, "items") or part not in node:
            break
        node = node[part]
    else:
        return None
    known = _field_paths(config)
    leaf = path.rsplit(".", 1)[-1]
    close = [p for p in known if p.rsplit(".", 1)[-1] == leaf] or difflib.get_close_matches(path, known, n=2, cutoff=0.7)
    hint = f"; did you mean {' or '.join(f'--{name}.{p}' for p in close)}?" if close else ""
    return f"unknown config field --{name}.{path}{hint}"


def check_overrides(config: Any, argv: Sequence[str], name: str = "config") -> None:
    """Raise BadInput for the first `--config.x` override that names no field of `config`."""
    for path in override_paths(argv, name):
        message = unknown_field_message(config, path, name)
        if message:
            raise BadInput(message)


def parse_flags(parse: Callable[[], Any], argv: Sequence[str], base_config: Callable[[], Any],
                name: str = "config") -> Any:
    """`parse()` (absl flag parsing of argv) with every flag error as one BadInput line.

    ml_collections rejects an unknown `--config.x` override deep inside absl's parsing (an
    AttributeError holding an escaped hint); then `base_config()` (the config without overrides)
    is checked against the overrides to name the field and its nearest matches.
    """
    from absl import flags

    spec = config_file_spec(argv, name)
    if spec is not None and not os.path.isfile(spec.split(":", 1)[0]):
        # ml_collections would defer this to the first use of the config, as an OSError
        raise BadInput(f"--{name} {spec}: no such config file")
    try:
        return parse()
    except (flags.Error, AttributeError, KeyError) as exc:
        if override_paths(argv, name):
            check_overrides(base_config(), argv, name)
        raise BadInput(_flag_error_line(str(exc))) from exc


def _flag_error_line(message: str) -> str:
    """absl's flag error on one line; a config file's own exception (which ml_collections
    embeds with its traceback) as the flag and that exception's last line."""
    if "Traceback (most recent call last)" in message:
        lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
        return f"{lines[0].split(': ', 1)[0]}: {lines[-1]}"
    return one_line(message)


def config_file_spec(argv: Sequence[str], name: str = "config") -> str | None:
    """The FILE[:ARG] of argv's `--config FILE[:ARG]` (the last one), or None."""
    spec = None
    for i, arg in enumerate(argv):
        if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith((f"--{name}=", f"-{name}=")):
            spec = arg.split("=", 1)[1]
    return spec


def config_file_without_overrides(argv: Sequence[str], name: str = "config") -> Any:
    """The ConfigDict of argv's `--config FILE[:ARG]`, loaded without its overrides."""
    from absl import flags
    from ml_collections import config_flags

    spec = config_file_spec(argv, name)
    if spec is None:
        raise BadInput(f"--{name} FILE is required")
    own_argv = ["prog", f"--{name}={spec}"]
    values = flags.FlagValues()  # private: the caller's registry is mid-parse
    config_flags.DEFINE_config_file(name, None, flag_values=values, sys_argv=own_argv)
    values(own_argv)
    return values[name].value
