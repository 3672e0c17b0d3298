"""Slash commands: parsing and the command table.

A command is a name, a one-line help text and a handler taking the REPL host and the argument string.
The host owns the agent, the session and the terminal; commands only use what `ReplHost` declares
(`bot.cli.repl.Repl` implements it), so the table stays a readable list of what each command means and
a command can be tested with a small fake host. A new command is one `Command(...)` row below.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from bot.agent.config import Settings
    from bot.agent.loop import Agent
    from bot.agent.runtime import SessionHandle

T = TypeVar("T")


class ReplHost(Protocol):
    """What slash commands may use of the REPL."""

    settings: Settings  # the settings of the running agent (the model a /model switch chose)
    base_settings: Settings  # what /new, /resume and /fork start from
    cwd: Path
    handle: SessionHandle
    agent: Agent
    draft: str  # text the next prompt starts with

    def say(self, text: str, style: str = "") -> None: ...

    def show(self, renderable: Any) -> None: ...

    def show_help(self) -> None: ...

    def quit(self) -> None: ...

    def toggle_thinking(self) -> None: ...

    def switch_session(self, handle: SessionHandle) -> None: ...

    def rebuild_agent(self, model: Any) -> None: ...

    def run_job(self, job: Callable[[], T]) -> T | None: ...

    def context_used(self) -> int: ...

    def context_bound(self) -> int: ...

    def ask_line(self, message: str) -> str | None: ...

    def confirm(self, question: str) -> bool: ...


class SlashError(Exception):
    """A command used wrongly; the message says how to use it."""


Handler = Callable[["ReplHost", str | None], None]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    handler: Handler
    aliases: tuple[str, ...] = ()


def _no_args(action: Callable[[ReplHost], None], name: str) -> Handler:
    def handler(host: ReplHost, args: str | None) -> None:
        if args:
            raise SlashError(f"/{name} takes no arguments (got {args!r})")
        action(host)

    return handler


COMMANDS: tuple[Command, ...] = (
    Command("help", "/help", "show the commands and keys", _no_args(lambda h: h.show_help(), "help")),
    Command("model", "/model [provider:model]", "show the model, or switch to another (recorded in the session)",
            lambda h, a: change_model(h, a)),
    Command("compact", "/compact [instructions]", "summarise older messages now to free context",
            lambda h, a: compact(h, a)),
    Command("cost", "/cost", "tokens and cost of this session", _no_args(lambda h: show_cost(h), "cost")),
    Command("session", "/session", "session file, id, entries and tokens",
            _no_args(lambda h: show_session(h), "session")),
    Command("name", "/name [name]", "name this session (shown by /resume)", lambda h, a: name_session(h, a)),
    Command("new", "/new", "start a new session", _no_args(lambda h: new_session(h), "new")),
    Command("resume", "/resume [number|id]", "pick a recent session of this directory to continue",
            lambda h, a: resume_session(h, a)),
    Command("fork", "/fork", "continue in a new session file that branches off this one",
            _no_args(lambda h: fork_session(h), "fork")),
    Command("tree", "/tree [number]", "show the branches; go back to an earlier message",
            lambda h, a: tree(h, a)),
    Command("export", "/export [markdown|json|pi] [path|-]", "write the session to a file (- shows it)",
            lambda h, a: export_session(h, a)),
    Command("thinking", "/thinking", "show the last thinking in full; toggle showing thinking",
            _no_args(lambda h: h.toggle_thinking(), "thinking")),
    Command("quit", "/quit", "leave (Ctrl+D does too)", _no_args(lambda h: h.quit(), "quit"),
            aliases=("exit", "q")),
)

_BY_NAME: dict[str, Command] = {alias: cmd for cmd in COMMANDS for alias in (cmd.name, *cmd.aliases)}


def completions() -> list[tuple[str, str]]:
    return [(cmd.name, cmd.help) for cmd in COMMANDS]


def is_command(text: str) -> bool:
    """A line starting with one slash is a command; `//text` sends `/text` as a message."""
    return text.startswith("/") and not text.startswith("//")


def parse(text: str) -> tuple[Command, str | None]:
    """Split `/name args` and look the command up; unknown names raise SlashError with a suggestion."""
    body = text.strip()[1:]
    name, _, rest = body.partition(" ")
    name = name.strip().lower()
    args = rest.strip() or None
    if "\n" in name:
        name, _, more = name.partition("\n")
        args = (more + ("\n" + args if args else "")).strip() or None
    command = _BY_NAME.get(name)
    if command is None:
        close = [cmd.name for cmd in COMMANDS if cmd.name.startswith(name[:2])] if name else []
        hint = f" Did you mean /{close[0]}?" if close else ""
        raise SlashError(f"unknown command /{name}.{hint} Type /help for the list; start a message with // "
                         "to send text that begins with a slash.")
    return command, args


def dispatch(host: ReplHost, text: str) -> None:
    command, args = parse(text)
    command.handler(host, args)


def help_lines() -> list[tuple[str, str]]:
    rows = [(cmd.usage, cmd.help) for cmd in COMMANDS]
    rows += [
        ("!command", "run a shell command; its output goes with your next message (!!command: not sent)"),
        ("@path", "attach a file"),
        ("Enter / Alt+Enter", "send / new line (Shift+Enter too, where the terminal reports it)"),
        ("Esc / Ctrl+C", "abort the running turn; Ctrl+C at the prompt clears the line, twice when empty: quit"),
        ("Tab", "complete a /command or an @path (a single candidate at once)"),
        ("Ctrl+D", "quit"),
        ("typing while it works", "queues a follow-up, sent when the turn ends"),
    ]
    return rows


# -- session commands ----------------------------------------------------------------------------------
# They use the session API of bot.agent.session through the REPL's SessionHandle. Every failure is a
# SlashError naming what is wrong; none of them loses the conversation.

def _session(host: ReplHost, command: str) -> Any:
    session = host.handle.session
    if session is None:
        raise SlashError(f"/{command} needs a session, and this run has none (--no-session?)")
    return session


def _say(host: ReplHost, text: str, style: str = "") -> None:
    host.say(text, style)  # plain text, never markup; paths stay whole when copied


def change_model(host: ReplHost, spec: str | None) -> None:
    from bot.agent.runtime import resolve_settings_model
    from bot.llm.errors import ModelError

    if not spec:
        info = host.agent.model.info
        _say(host, f"model: {info.spec} (context window {info.context_window:,} tokens)")
        _say(host, "switch with /model provider:model, e.g. /model openai:gpt-4.1", "dim")
        return
    settings = host.settings.model_copy(update={"model": spec})
    try:
        model = resolve_settings_model(settings, os.environ)
    except (ModelError, ValueError) as exc:
        raise SlashError(f"cannot switch to {spec!r}: {exc}") from None
    host.settings = host.base_settings = settings  # /new keeps the chosen model too
    session = host.handle.session
    if session is not None:
        session.append_model_change(model.info.provider, model.info.id)
    host.rebuild_agent(model)
    _say(host, f"model: {model.info.spec}", "green")


def compact(host: ReplHost, instructions: str | None) -> None:
    _session(host, "compact")
    if host.agent.compactor is None:
        raise SlashError("compaction is off for this session (compaction.enabled = false in the config)")
    agent = host.agent
    outcome = host.run_job(lambda: agent.compact("manual", instructions))
    if outcome is None:
        _say(host, "nothing to compact yet: the whole conversation fits in the part that is always kept",
             "dim")


def show_cost(host: ReplHost) -> None:
    from bot.cli.render import cost_table

    host.show(cost_table(host.agent.usage, host.agent.cost))


def show_session(host: ReplHost) -> None:
    from bot.cli.render import format_cost, format_tokens

    session = host.handle.session
    if session is None:
        _say(host, "no session file (--no-session): nothing is saved")
    else:
        header = session.header
        _say(host, f"file:     {host.handle.path or '(in memory)'}")
        _say(host, f"id:       {header.id}")
        if session.name:
            _say(host, f"name:     {session.name}")
        if header.parent_session:
            _say(host, f"forked from: {header.parent_session}")
        _say(host, f"entries:  {len(session.entries)} ({session.message_count()} messages, "
                   f"{len(session.branch())} on the active branch)")
    usage = host.agent.usage
    _say(host, f"tokens:   {usage.total_tokens:,} in all ({usage.input:,} input, {usage.output:,} output, "
               f"{usage.cache_read:,} cache read, {usage.cache_write:,} cache write)")
    _say(host, f"context:  {format_tokens(host.context_used())} of {format_tokens(host.context_bound())}")
    _say(host, f"cost:     {format_cost(host.agent.cost)}")


def name_session(host: ReplHost, name: str | None) -> None:
    session = _session(host, "name")
    if not name:
        current = session.name
        _say(host, f"name: {current}" if current else "this session has no name; set one with /name NAME")
        return
    name = " ".join(name.split())
    session.set_name(name)
    _say(host, f"session named {name!r}", "green")


def new_session(host: ReplHost) -> None:
    from bot.agent.runtime import open_session

    host.switch_session(open_session(host.settings, host.cwd))
    where = host.handle.path or "(no session file)"
    _say(host, f"new session: {where}", "green")


def fork_session(host: ReplHost) -> None:
    from bot.agent.runtime import open_session

    session = _session(host, "fork")
    if host.handle.path is None:
        raise SlashError("/fork needs a session file to branch from (this one lives in memory only)")
    old = host.handle.path
    host.switch_session(open_session(host.settings, host.cwd, fork=str(old)))
    _say(host, f"forked {session.header.id[:8]} into a new session: {host.handle.path}", "green")
    _say(host, f"the original is unchanged: {old}", "dim")


EXPORT_SUFFIXES = {"markdown": ".md", "json": ".json", "pi": ".pi.jsonl"}


def export_session(host: ReplHost, args: str | None) -> None:
    import io

    from bot.cli.session_commands import export_command

    session = _session(host, "export")
    if host.handle.path is None:
        raise SlashError("/export needs a session file (this one lives in memory only)")
    try:
        words = shlex.split(args or "")
    except ValueError as exc:
        raise SlashError(f"/export: {exc}") from None
    fmt = "markdown"
    if words and words[0] in ("markdown", "md", "json", "pi"):
        fmt = {"md": "markdown"}.get(words[0], words[0])
        words.pop(0)
    if len(words) > 1:
        raise SlashError("usage: /export [markdown|json|pi] [path]")
    to_screen = words == ["-"]
    default_name = f"session-{session.header.id[:8]}{EXPORT_SUFFIXES[fmt]}"
    output = host.cwd / Path(words[0] if words else default_name).expanduser()  # absolute paths stay
    out, err = io.StringIO(), io.StringIO()
    code = export_command(str(host.handle.path), format=fmt, output="-" if to_screen else output,
                          out=out, err=err)
    if code != 0:
        raise SlashError(err.getvalue().strip().removeprefix("opi: ") or f"export failed (exit {code})")
    if to_screen:
        host.say(out.getvalue().rstrip("\n"))
        return
    _say(host, f"exported ({fmt}) to {output}", "green")


def resume_session(host: ReplHost, target: str | None) -> None:
    from bot.agent.runtime import open_session
    from bot.agent.session import SessionError
    from bot.agent.session_store import list_sessions, sessions_dir

    try:
        listings = list_sessions(sessions_dir(host.settings.session_dir), host.cwd, limit=20)
    except SessionError as exc:
        raise SlashError(str(exc)) from None
    current = host.handle.path
    # Nothing to resume in an empty session, nor in the one already open.
    listings = [item for item in listings if item.messages > 0
                and (current is None or item.path.resolve() != current.resolve())]
    if target is None:
        if not listings:
            _say(host, f"no other sessions for {host.cwd} yet")
            return
        _print_listings(host, listings)
        target = host.ask_line("resume which number? (Enter to cancel) ")
        if not target:
            return
    path = _listing_path(listings, target)
    if current is not None and path is not None and path.resolve() == current.resolve():
        _say(host, "that is the current session")
        return
    try:
        handle = open_session(host.settings, host.cwd, resume=str(path) if path else target)
    except (SessionError, OSError, ValueError, LookupError) as exc:
        raise SlashError(f"cannot resume {target!r}: {exc}") from None
    host.switch_session(handle)
    _say(host, f"resumed {handle.path}", "green")
    show_recent(host)


def _print_listings(host: ReplHost, listings: list[Any]) -> None:
    from bot.cli.render import numbered_line

    for number, item in enumerate(listings, 1):
        cost = "cost unknown" if item.cost is None else f"${item.cost:.4f}"
        host.show(numbered_line(number, [(_one_line(item.title, 60), "bold"), (
            f" · {item.age()} · {item.messages} messages · {cost} · {item.id[:8]}", "dim")]))


def _listing_path(listings: list[Any], target: str) -> Path | None:
    if target.isdigit() and len(target) < 4:
        number = int(target)
        if not 1 <= number <= len(listings):
            raise SlashError(f"/resume: {number} is not in the list (1-{len(listings)})")
        path: Path = listings[number - 1].path
        return path
    return None  # an id prefix or a path, resolved by open_session


def show_recent(host: ReplHost) -> None:
    """The last exchange of a resumed session, so the user sees where it stands."""
    from bot.llm.messages import AssistantMessage, UserMessage

    messages = host.agent.conversation.context()
    user = next((m for m in reversed(messages) if isinstance(m, UserMessage)), None)
    answer = next((m for m in reversed(messages) if isinstance(m, AssistantMessage) and m.text.strip()), None)
    _say(host, f"resumed: {len(messages)} messages in the context", "dim")
    if user is not None:
        _say(host, "last you: " + _one_line(user.text, 100), "dim")
    if answer is not None:
        _say(host, "last opi: " + _one_line(answer.text, 100), "dim")


# -- /tree ---------------------------------------------------------------------------------------------

@dataclass
class TreeNode:
    entry: dict[str, Any]
    label: str
    children: list[TreeNode] = field(default_factory=list)


def _entry_label(session: Any, entry: dict[str, Any]) -> str | None:
    """What /tree shows for an entry; None hides it (tool results, tool-call steps, markers)."""
    from bot.llm.messages import AssistantMessage, UserMessage

    kind = entry.get("type")
    if kind == "compaction":
        return "[compaction summary]"
    if kind == "branch_summary":
        return "[summary of an abandoned branch]"
    if kind != "message":
        return None
    message = session.message_of(entry)
    if isinstance(message, UserMessage):
        return "you: " + _one_line(message.text)
    if isinstance(message, AssistantMessage) and message.text.strip() and not message.tool_calls:
        suffix = " (aborted)" if message.stop_reason == "aborted" else ""
        return "opi: " + _one_line(message.text) + suffix
    return None


def _one_line(text: str, limit: int = 70) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def build_tree(session: Any) -> list[TreeNode]:
    """The conversation tree with only the entries worth choosing; hidden ones pass their place on."""
    nodes: dict[str, TreeNode] = {}
    shown_parent: dict[str, str | None] = {}
    roots: list[TreeNode] = []
    for entry in session.entries:
        if entry.get("type") == "leaf":
            continue
        parent_id = entry.get("parent_id")
        parent = parent_id if parent_id in nodes else shown_parent.get(parent_id) if parent_id else None
        label = _entry_label(session, entry)
        if label is None:
            shown_parent[entry["id"]] = parent
            continue
        node = TreeNode(entry, label)
        nodes[entry["id"]] = node
        (nodes[parent].children if parent is not None else roots).append(node)
    return roots


def flatten_tree(roots: list[TreeNode]) -> list[tuple[str, TreeNode]]:
    """Depth-first with box-drawing prefixes; a chain without branches stays at one indent."""
    out: list[tuple[str, TreeNode]] = []

    def walk(nodes: list[TreeNode], prefix: str) -> None:
        branching = len(nodes) > 1
        for index, node in enumerate(nodes):
            last = index == len(nodes) - 1
            connector = ("└─ " if last else "├─ ") if branching else ""
            out.append((prefix + connector, node))
            walk(node.children, prefix + (("   " if last else "│  ") if branching else ""))

    walk(roots, "")
    return out


def tree(host: ReplHost, target: str | None) -> None:
    from bot.cli.render import numbered_line

    session = _session(host, "tree")
    rows = flatten_tree(build_tree(session))
    if not rows:
        _say(host, "the session has no messages yet")
        return
    active = {entry["id"] for entry in session.branch()}
    here = _current_node_id(session, {node.entry["id"] for _, node in rows})
    if target is None:
        for number, (prefix, node) in enumerate(rows, 1):
            on_branch = node.entry["id"] in active
            parts = [(prefix, "dim"), (node.label, "bold" if on_branch else "dim")]
            if node.entry["id"] == here:
                parts.append(("  ◀ you are here", "cyan"))
            host.show(numbered_line(number, parts))
        _say(host, "choosing one of your messages puts it back in the editor to change and resend; choosing "
                   "an answer continues from it", "dim")
        target = host.ask_line("go back to which number? (Enter to stay) ")
        if not target:
            return
    node = _pick(rows, target)
    _move_leaf(host, session, node)


def _current_node_id(session: Any, shown: set[str]) -> str | None:
    for entry in reversed(session.branch()):
        if entry["id"] in shown:
            return str(entry["id"])
    return None


def _pick(rows: list[tuple[str, TreeNode]], target: str) -> TreeNode:
    try:
        number = int(target)
    except ValueError:
        raise SlashError(f"/tree: {target!r} is not a number from the list") from None
    if not 1 <= number <= len(rows):
        raise SlashError(f"/tree: {number} is not in the list (1-{len(rows)})")
    return rows[number - 1][1]


def _move_leaf(host: ReplHost, session: Any, node: TreeNode) -> None:
    from bot.llm.messages import UserMessage

    entry = node.entry
    message = session.message_of(entry) if entry.get("type") == "message" else None
    if isinstance(message, UserMessage):
        new_tip = entry.get("parent_id")  # re-ask: the message goes back to the editor
        host.draft = message.text
    else:
        new_tip = entry["id"]
    if new_tip == session.tip:
        _say(host, "already there")
        return
    new_path = {e["id"] for e in session.path_to(new_tip)}
    abandoned = [session.message_of(e) for e in session.branch()
                 if e["id"] not in new_path and e.get("type") == "message"]
    abandoned = [m for m in abandoned if m is not None]
    summary = None
    if abandoned and host.confirm(f"summarise the {len(abandoned)} messages you leave behind for the model?"):
        summary = _summarise_branch(host, abandoned)
    host.agent.conversation.switch_leaf(new_tip, summary=summary)  # type: ignore[attr-defined]
    label = "the start of the session" if new_tip is None else node.label
    if isinstance(message, UserMessage):
        label = "before " + node.label
    _say(host, f"moved to {label}" + (" (with a summary of the branch left behind)" if summary else ""),
         "green")
    if host.draft:
        _say(host, "your message is back in the editor: change it and press Enter", "dim")


def _summarise_branch(host: ReplHost, messages: list[Any]) -> str | None:
    from bot.agent.compaction import CompactionConfig, fallback_summary, summarize
    from bot.llm.errors import ModelError

    agent = host.agent
    config = CompactionConfig.from_settings(host.settings.compaction)
    threshold = config.threshold(agent.model.info.context_window)
    budget = config.summary_budget(threshold)

    def work() -> str:
        try:
            return summarize(agent.model, messages, previous=None, threshold=threshold, max_tokens=budget,
                             retry=agent.retry, cancel=agent.cancel).text
        except ModelError as exc:
            return fallback_summary(messages, None, str(exc), budget)

    result = host.run_job(work)
    return result if isinstance(result, str) else None
