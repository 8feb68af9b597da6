"""The `jaxdl` command: parse the command line, then call the experiment layer.

Examples::

    jaxdl train                                  # the default experiment, into ./jaxdl_runs/...
    jaxdl train --config experiments/simplenet.py --workdir /tmp/run \\
        --config.optimizer.learning_rate=3e-4 --config.model.features "(64, 64, 1)"
    jaxdl predict --workdir /tmp/run --input x.csv --output predictions.csv

Exit codes: 0 success; 2 a usage or input error (one paragraph on stderr, no traceback);
1 an internal error (with its traceback); 130 interrupted.

The parser lives in :mod:`jaxdl.cli.parser`, the commands in :mod:`jaxdl.cli.commands`. This
package imports neither JAX nor the rest of the kit at import time, so `jaxdl --help` is
instant; each command imports what it needs.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Any

from jaxdl.cli import compilation_cache, quiet
from jaxdl.cli.parser import build_parser, parse_args, split_overrides
from jaxdl.errors import CheckpointError, JaxdlError

__all__ = ["build_parser", "main", "parse_args", "split_overrides"]


def _report(exc: BaseException) -> None:
    """One paragraph on stderr: ``jaxdl: error: <message>``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    print(f"jaxdl: error: {text}", file=sys.stderr)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `jaxdl` command.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success; 2 usage or input error (a ``JaxdlError`` or a missing file,
        reported in one paragraph without a traceback); 1 any other exception (an internal
        error, reported with its traceback); 130 on Ctrl-C.
    """
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help, usage errors
        return _exit_code(exc)
    debug = getattr(args, "debug", False)
    program = argv is None  # the `jaxdl` process itself, not a call from Python
    with quiet.library_noise_kept_off(debug, restore=not program):
        return _run(args, debug, program)


def _run(args: Any, debug: bool, program: bool) -> int:
    """:func:`main` once the command line is parsed."""
    try:
        run = args.prepare(args)  # input errors surface here, before JAX is imported
        if args.uses_cache:
            compilation_cache.enable_compilation_cache()  # before the command's first compile
        return run()
    except SystemExit as exc:
        return _exit_code(exc)
    except KeyboardInterrupt:
        print("jaxdl: interrupted", file=sys.stderr)
        return 130
    except (JaxdlError, FileNotFoundError) as exc:
        if debug:
            traceback.print_exc()
        _report(exc)
        code = getattr(exc, "exit_code", 2)  # a preempted run: 128 + signal
        if program and not debug and isinstance(exc, CheckpointError):
            quiet.exit_before_noise(code)
        return code
    except Exception:
        traceback.print_exc()
        print(
            "jaxdl: internal error: the traceback above is a bug in jaxdl or a library it uses; "
            "please report it.",
            file=sys.stderr,
        )
        return 1
