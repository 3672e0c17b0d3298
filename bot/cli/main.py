"""`opi`: argument parsing and dispatch.

This module is on the path of `opi --version`, which must start in well under 150 ms, so it imports
only the standard library at module level; everything else is imported by the function that needs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

# Exit codes (documented in docs/cli.md).
EXIT_OK = 0
EXIT_FAILURE = 1  # runtime error or a limit was hit
EXIT_USAGE = 2  # bad flags, bad config, missing API key
EXIT_AUTH = 3
EXIT_PROVIDER = 4
EXIT_INTERRUPTED = 130

SUBCOMMANDS = ("export", "compact", "action", "pull")
THINKING = ("off", "low", "medium", "high")


class UsageError(Exception):
    """A bad combination of arguments (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opi",
        description="A coding agent for the terminal and for GitHub Actions.",
        epilog="Subcommands: opi export SESSION, opi compact SESSION, opi pull URL, opi action. "
               "See docs/cli.md for every option and exit code.",
    )
    parser.add_argument("prompt", nargs="?", help="the task; opens the interactive REPL on a terminal "
                                                  "when omitted")
    parser.add_argument("-p", "--print", dest="print_prompt", metavar="PROMPT",
                        help="run PROMPT non-interactively and print the final answer")
    parser.add_argument("--json", action="store_true",
                        help="print every event as one JSON line, then a summary line")
    parser.add_argument("--version", action="store_true", help="print the version and exit")

    model = parser.add_argument_group("model and limits")
    model.add_argument("--model", help="provider:model, e.g. anthropic:claude-sonnet-4-5, openai:gpt-4.1")
    model.add_argument("--thinking", choices=THINKING, help="reasoning effort")
    model.add_argument("--max-turns", type=_positive_int, metavar="N", help="turn limit (default 50)")
    model.add_argument("--max-cost", type=_positive_float, metavar="USD", help="cost limit in US dollars")
    model.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help="wall-time limit")

    tools = parser.add_argument_group("tools")
    tools.add_argument("--tools", action="append", metavar="A,B", help="only these tools")
    tools.add_argument("--no-tools", action="store_true", help="no tools at all")
    tools.add_argument("--allow-mutating", action="store_true",
                       help="allow write, edit and bash without asking")

    prompt = parser.add_argument_group("system prompt")
    prompt.add_argument("--system-prompt", metavar="TEXT|FILE", help="replace the base system prompt")
    prompt.add_argument("--append-system-prompt", action="append", metavar="TEXT|FILE",
                        help="append to the system prompt (repeatable)")

    config = parser.add_argument_group("config and sessions")
    config.add_argument("--config", metavar="PATH", help="read this TOML file after the others")
    config.add_argument("--session-dir", metavar="DIR", help="where session files are written and found")
    config.add_argument("--no-session", action="store_true", help="write no session file")
    sessions = config.add_mutually_exclusive_group()
    sessions.add_argument("--resume", metavar="ID|PATH", help="continue a session (an id prefix is enough)")
    sessions.add_argument("-c", "--continue", dest="continue_", action="store_true",
                          help="continue the most recent session for this directory")
    sessions.add_argument("--fork", metavar="ID|PATH", help="start a new session from a copy of another")
    sessions.add_argument("--list-sessions", action="store_true", help="list sessions for this directory")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def settings_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags set, and only those: an absent flag must not override a config file."""
    from bot.agent.config import parse_tool_names

    flags: dict[str, Any] = {}
    simple = {"model": "model", "thinking": "thinking", "max_turns": "max_turns",
              "max_cost": "max_cost_usd", "timeout": "timeout_seconds", "system_prompt": "system_prompt"}
    for attr, key in simple.items():
        value = getattr(args, attr)
        if value is not None:
            flags[key] = value
    for attr in ("no_tools", "allow_mutating", "no_session"):
        if getattr(args, attr):
            flags[attr] = True
    if args.tools is not None:
        flags["tools"] = parse_tool_names(args.tools)
    if args.append_system_prompt:
        flags["append_system_prompt"] = list(args.append_system_prompt)
    if args.session_dir is not None:
        flags["session_dir"] = os.path.abspath(os.path.expanduser(args.session_dir))
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list == ["--version"]:  # the fast path: no parser, no imports
        from bot import __version__

        print(f"opi {__version__}")
        return EXIT_OK
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
    parser = argparse.ArgumentParser(prog="opi export", description="Write a session as Markdown, JSON or a "
                                                                    "pi session file.")
    parser.add_argument("session", metavar="ID|PATH", help="a session file or a unique id prefix")
    parser.add_argument("--format", choices=("markdown", "json", "pi"), default="markdown")
    parser.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    parser.add_argument("--session-dir", metavar="DIR", help="where to look up an id prefix")
    parser.add_argument("--config", metavar="PATH")
    args = parser.parse_args(argv)
    settings = _load_settings_or_exit(args.config, {})
    if isinstance(settings, int):
        return settings
    from bot.cli.session_commands import export_command

    return export_command(args.session, format=args.format, output=args.output,
                          directory=args.session_dir or settings.session_path)


def run_compact(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="opi compact", description="Compact a stored session now: "
                                     "summarise its older part with the model and append a compaction entry.")
    parser.add_argument("session", metavar="ID|PATH", help="a session file or a unique id prefix")
    parser.add_argument("instructions", nargs="*", help="what the summary should focus on")
    parser.add_argument("--model", help="the model that writes the summary (default: from config)")
    parser.add_argument("--thinking", choices=THINKING)
    parser.add_argument("--session-dir", metavar="DIR", help="where to look up an id prefix")
    parser.add_argument("--config", metavar="PATH")
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
    if not stdin_is_tty and sys.stdin is not None:
        piped = read_piped_stdin()
        if piped.strip():
            prompt = f"{prompt}\n\n{piped}" if prompt else piped
    if not prompt or not prompt.strip():
        return _usage_error("no prompt: give one as an argument, with -p, or on stdin")
    options = PrintOptions(prompt=prompt, json=args.json, config_path=args.config, flags=settings_flags(args),
                           resume=args.resume, continue_=args.continue_, fork=args.fork)
    return run_print(options)


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
