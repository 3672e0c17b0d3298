"""`opi`: dispatch to print mode, the REPL and the subcommands (the parsers are in `bot.cli.args`).

This module is on the path of `opi --version`, which must start in well under 150 ms, so it imports
only the standard library (and the stdlib-only `bot.cli.args`) at module level; everything else is
imported by the function that needs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from bot.cli.args import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PICK_SESSION,
    SUBCOMMANDS,
    UsageError,
    build_compact_parser,
    build_export_parser,
    build_parser,
    settings_flags,
)

__all__ = ["UsageError", "build_parser", "main", "settings_flags"]  # kept importable from here


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list in (["--version"], ["-v"]):  # the fast path: no parser, no imports
        from bot import __version__

        print(f"opi {__version__}")
        return EXIT_OK
    from bot.tools.proc import harden_current_process

    harden_current_process()  # commands the model runs (same uid) must not read opi's environment or memory
    if args_list and args_list[0] in SUBCOMMANDS:
        return run_subcommand(args_list[0], args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.version:
        from bot import __version__

        print(f"opi {__version__}")
        return EXIT_OK
    try:
        return run_main(args)
    except KeyboardInterrupt:
        print("\nopi: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_subcommand(name: str, argv: list[str]) -> int:
    if name == "action":
        try:
            from bot.action.main import run_action
        except ImportError as exc:
            print(f"opi action: the GitHub Action entry point is not available ({exc})", file=sys.stderr)
            return EXIT_USAGE
        return run_action(argv)
    if name == "pull":
        from bot.cli.pull import run_pull

        return run_pull(argv)
    if name == "export":
        return run_export(argv)
    return run_compact(argv)


def _load_settings_or_exit(config: str | None, flags: dict[str, Any]) -> Any:
    """Settings for a subcommand, or an exit code after printing the problem."""
    from pathlib import Path

    from bot.agent.config import SettingsError, load_settings

    try:
        return load_settings(Path.cwd(), config_path=Path(config) if config else None, flags=flags)
    except SettingsError as exc:
        print(f"opi: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run_export(argv: list[str]) -> int:
    parser = build_export_parser()
    args = parser.parse_args(argv)
    settings = _load_settings_or_exit(args.config, {})
    if isinstance(settings, int):
        return settings
    from bot.cli.session_commands import export_command

    return export_command(args.session, format=args.format, output=args.output,
                          directory=args.session_dir or settings.session_path)


def run_compact(argv: list[str]) -> int:
    parser = build_compact_parser()
    args = parser.parse_args(argv)
    flags = {key: value for key, value in (("model", args.model), ("thinking", args.thinking))
             if value is not None}
    settings = _load_settings_or_exit(args.config, flags)
    if isinstance(settings, int):
        return settings
    from bot.agent.compaction import CompactionConfig
    from bot.agent.runtime import resolve_settings_model
    from bot.cli.session_commands import compact_command
    from bot.llm.errors import ModelError

    try:
        model = resolve_settings_model(settings, os.environ)
    except ModelError as exc:
        print(f"opi: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return compact_command(args.session, model=model,
                           config=CompactionConfig.from_settings(settings.compaction),
                           instructions=" ".join(args.instructions) or None,
                           directory=args.session_dir or settings.session_path)


def run_main(args: argparse.Namespace) -> int:
    from bot.cli.print_mode import PrintOptions, run_print

    if args.list_models:
        return run_list_models()
    if args.prompt is not None and args.print_prompt is not None:
        return _usage_error("give the prompt either as an argument or with -p, not both")
    prompt = args.print_prompt if args.print_prompt is not None else args.prompt
    stdin_is_tty = sys.stdin is not None and sys.stdin.isatty()
    stdout_is_tty = sys.stdout.isatty()
    if args.list_sessions:
        return run_list_sessions(args)
    interactive = stdin_is_tty and stdout_is_tty and args.print_prompt is None and not args.json
    if interactive:
        repl_exit = run_repl_if_available(args, prompt)
        if repl_exit is not None:
            return repl_exit
    if args.resume == PICK_SESSION:
        return run_pick_without_terminal(args, prompt)
    piped = ""
    if not stdin_is_tty and sys.stdin is not None:
        piped = read_piped_stdin()
    if not (prompt and prompt.strip()) and not piped.strip():
        return _usage_error("no prompt: give one as an argument, with -p, or on stdin")
    options = PrintOptions(prompt=prompt or "", piped=piped if piped.strip() else "", json=args.json,
                           config_path=args.config, flags=settings_flags(args), resume=args.resume,
                           continue_=args.continue_, fork=args.fork)
    return run_print(options)


def run_list_models() -> int:
    from bot.llm.catalog import format_listing, list_models

    sys.stdout.write(format_listing(list_models()))
    return EXIT_OK


def run_pick_without_terminal(args: argparse.Namespace, prompt: str | None) -> int:
    """`opi -r` with no id and no terminal to pick on: list the sessions to choose from."""
    code = run_list_sessions(args)
    if prompt:
        return _usage_error("--resume without an id needs a terminal to pick a session; "
                            "give one of the ids above: opi --resume ID -p ...")
    return code


def read_piped_stdin() -> str:
    """All of stdin; bytes that are not UTF-8 (a binary log, Latin-1 text) are replaced, not fatal."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        return sys.stdin.read()
    data: bytes = stream.read()
    return data.decode("utf-8", errors="replace")


def run_repl_if_available(args: argparse.Namespace, prompt: str | None) -> int | None:
    """Run the REPL; None when it is not installed and a prompt lets print mode stand in."""
    try:
        from bot.cli.repl import run_repl
    except ImportError:
        if prompt:
            return None
        print("opi: the interactive REPL is not available in this version; "
              "run `opi -p PROMPT` or pipe a prompt on stdin", file=sys.stderr)
        return EXIT_USAGE
    result: int = run_repl(args, prompt)
    return result


def run_list_sessions(args: argparse.Namespace) -> int:
    from pathlib import Path

    settings = _load_settings_or_exit(args.config, settings_flags(args))
    if isinstance(settings, int):
        return settings
    from bot.cli.session_commands import list_sessions_command

    return list_sessions_command(cwd=Path.cwd(), directory=settings.session_path)


def _usage_error(message: str) -> int:
    print(f"opi: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
