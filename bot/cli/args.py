"""`opi` argument parsing: the parsers of `opi` and its subcommands, and the settings the flags set.

Everything that parses a command line lives here, so the REPL and slash commands can reach the flags
without importing `bot.cli.main` (which imports them). Standard library only at module level:
`bot.cli.main` imports this module on the `opi --version` path.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn

from bot.llm.thinking import THINKING_LEVELS

# Exit codes (documented in docs/cli.md).
EXIT_OK = 0
EXIT_FAILURE = 1  # runtime error or a limit was hit
EXIT_USAGE = 2  # bad flags, bad config, missing API key
EXIT_AUTH = 3
EXIT_PROVIDER = 4
EXIT_INTERRUPTED = 130

SUBCOMMANDS = ("export", "compact", "action", "pull")
THINKING = THINKING_LEVELS
DOCS_URL = "https://github.com/opi-bot/opi-bot/blob/main/docs"
# `-r`/`--resume` without an id: pick from a list on a terminal, print the list otherwise.
PICK_SESSION = "?"

# Flags of other coding agents, and what opi calls them: a typo hint difflib cannot find.
OTHER_TOOLS_FLAGS = {
    "--output-format": "--json",
    "--dangerously-skip-permissions": "--allow-mutating",
    "--yolo": "--allow-mutating",
    "--max-budget-usd": "--max-cost",
    "--system": "--system-prompt",
    "--append-system": "--append-system-prompt",
    "--session": "--resume",
    "--provider": "--model PROVIDER:MODEL",
}


class UsageError(Exception):
    """A bad combination of arguments (exit code 2)."""


class OpiArgumentParser(argparse.ArgumentParser):
    """argparse without prefix matching (`--max-turn 3` is an error, not `--max-turns 3`), and an
    unknown flag is answered with the nearest real one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.unrecognized(extras))
        return parsed

    def option_names(self) -> list[str]:
        return [name for action in self._actions for name in action.option_strings]

    def unrecognized(self, extras: Sequence[str]) -> str:
        flags = [extra for extra in extras if extra.startswith("-") and extra != "-"]
        if not flags:
            return f"unexpected argument(s): {' '.join(extras)} (a prompt with spaces needs quotes)"
        hints = [f"{flag}: did you mean {hint}?" if (hint := self.nearest(flag)) else flag for flag in flags]
        return "unrecognized option " + "; ".join(hints) + f" (see {self.prog} --help)"

    def nearest(self, flag: str) -> str | None:
        name = flag.split("=", 1)[0]
        if name in OTHER_TOOLS_FLAGS:
            return OTHER_TOOLS_FLAGS[name]
        close = difflib.get_close_matches(name, self.option_names(), n=1, cutoff=0.6)
        return close[0] if close else None

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _environment_help() -> str:
    """The epilog of `opi --help`: providers, their key and base-URL variables, and where the docs are.
    Built from the endpoint table so a new preset shows up here by itself."""
    from bot.llm.catalog import ALIASES
    from bot.llm.models import BUILTIN_ENDPOINTS

    lines = ["providers and their environment variables:"]
    for name, endpoint in BUILTIN_ENDPOINTS.items():
        key = endpoint.api_key_env or "no key"
        base = f", base URL {endpoint.base_url_env}" if endpoint.base_url_env else f" ({endpoint.base_url})"
        lines.append(f"  {name:<11} {key}{base}")
    lines.append("  NAME        any [endpoints.NAME] table in the config file (base_url, api_key_env, api)")
    short = ", ".join(alias for alias in ALIASES if not alias.startswith("claude-"))
    lines += ["", *textwrap.wrap(f"model aliases: {short} (opi --list-models shows each with its context "
                                 "window and price)", width=100, subsequent_indent="  ")]
    lines += [
        "",
        "other environment variables: OPI_MODEL, OPI_THINKING, OPI_MAX_TURNS, OPI_MAX_COST, OPI_TIMEOUT,",
        "  OPI_TOOLS, OPI_ALLOW_MUTATING, OPI_SESSIONS_DIR, OPI_NO_SESSION, OPI_CONFIG_DIR, ...",
        "",
        "subcommands: opi export SESSION, opi compact SESSION, opi pull URL, opi action (each has --help)",
        "",
        "docs:",
        f"  every option and exit code   {DOCS_URL}/cli.md",
        f"  config files and variables   {DOCS_URL}/config.md",
        f"  providers, keys and prices   {DOCS_URL}/providers.md",
        f"  the interactive REPL         {DOCS_URL}/repl.md",
    ]
    return "\n".join(lines)


def build_parser() -> OpiArgumentParser:
    parser = OpiArgumentParser(
        prog="opi",
        description="A coding agent for the terminal and for GitHub Actions.\n\n"
                    "  opi                      interactive session (REPL) on a terminal\n"
                    "  opi -p 'task'            run the task, print the answer (also when piped)\n"
                    "  opi --model sonnet ...   choose a model (set its key first, e.g. ANTHROPIC_API_KEY)",
        epilog=_environment_help(),
    )
    parser.add_argument("prompt", nargs="?", help="the task; opens the interactive REPL on a terminal "
                                                  "when omitted")
    parser.add_argument("-p", "--print", dest="print_prompt", metavar="PROMPT",
                        help="run PROMPT non-interactively and print the final answer")
    parser.add_argument("--json", action="store_true",
                        help="print every event as one JSON line, then a summary line")
    parser.add_argument("-v", "--version", action="store_true", help="print the version and exit")

    model = parser.add_argument_group("model and limits")
    model.add_argument("--model", help="an alias (sonnet, opus, haiku, gpt-4.1, o3, ...) or provider:model, "
                                       "e.g. anthropic:claude-sonnet-4-5, openai:gpt-4.1, ollama:qwen3")
    model.add_argument("--list-models", action="store_true",
                       help="list the known models and aliases with context window and price, and exit")
    model.add_argument("--thinking", choices=THINKING, help="reasoning effort")
    model.add_argument("--max-turns", type=_positive_int, metavar="N", help="turn limit (default 50)")
    model.add_argument("--max-cost", type=_positive_float, metavar="USD",
                       help="cost limit for this run in US dollars")
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
    sessions.add_argument("-r", "--resume", nargs="?", const=PICK_SESSION, metavar="ID|PATH",
                          help="continue a session (an id prefix is enough); without an id: pick one "
                               "on a terminal, else list them")
    sessions.add_argument("-c", "--continue", dest="continue_", action="store_true",
                          help="continue the most recent session for this directory")
    sessions.add_argument("--fork", metavar="ID|PATH", help="start a new session from a copy of another")
    sessions.add_argument("--list-sessions", action="store_true", help="list sessions for this directory")
    return parser


def build_export_parser() -> OpiArgumentParser:
    parser = OpiArgumentParser(prog="opi export", description="Write a session as Markdown, JSON or a "
                                                              "pi session file.")
    parser.add_argument("session", metavar="ID|PATH", help="a session file or a unique id prefix")
    parser.add_argument("--format", choices=("markdown", "json", "pi"), default="markdown")
    parser.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    parser.add_argument("--session-dir", metavar="DIR", help="where to look up an id prefix")
    parser.add_argument("--config", metavar="PATH", help="read this TOML file after the others")
    return parser


def build_compact_parser() -> OpiArgumentParser:
    parser = OpiArgumentParser(prog="opi compact", description="Compact a stored session now: summarise "
                               "its older part with the model and append a compaction entry.")
    parser.add_argument("session", metavar="ID|PATH", help="a session file or a unique id prefix")
    parser.add_argument("instructions", nargs="*", help="what the summary should focus on")
    parser.add_argument("--model", help="the model that writes the summary (default: from config)")
    parser.add_argument("--thinking", choices=THINKING)
    parser.add_argument("--session-dir", metavar="DIR", help="where to look up an id prefix")
    parser.add_argument("--config", metavar="PATH", help="read this TOML file after the others")
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
