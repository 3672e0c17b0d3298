"""The `opi` console script and `python -m bot`: start fast, exit fast.

- `opi --version` is answered here, before `bot.cli` (argparse, pathlib, ...) is imported.
- After a command finishes, the process ends with `os._exit` once stdout and stderr are flushed and the
  atexit handlers have run: tearing down the interpreter (freeing every module and object one by one)
  took 100+ ms of CPU, a quarter of a short run, and has no effect anyone can observe. Sessions are
  already on disk (each entry is fsynced when it is written) and child processes are already reaped.

`bot.cli.main.main` itself returns normally, so tests and embedders can call it in-process.
"""

from __future__ import annotations

import atexit
import os
import sys

VERSION_FLAGS = (["--version"], ["-v"])


def main() -> int:
    if sys.argv[1:] in VERSION_FLAGS:
        from bot import __version__

        sys.stdout.write(f"opi {__version__}\n")
        return 0
    from bot.cli.main import main as cli_main

    return cli_main()


def run() -> None:
    """Run `main` and leave the process without interpreter teardown."""
    try:
        code = main()
    except SystemExit as exc:  # argparse and friends exit this way; keep their code and message
        code = _exit_code(exc)
    except KeyboardInterrupt:
        code = 130
    exit_now(code)


def exit_now(code: int) -> None:
    import contextlib  # loaded by now anyway; not on the --version path

    atexit._run_exitfuncs()  # e.g. temp directories registered as a safety net
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`opi ... | head`): nothing to deliver
            stream.flush()
    os._exit(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1
