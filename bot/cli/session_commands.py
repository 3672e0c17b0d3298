"""`opi export`, `opi compact` and `opi --list-sessions`: plain functions that take parsed values, print,
and return the exit code (0 ok, 1 runtime failure, 2 bad input such as an unknown session).

`bot/cli/main.py` parses the arguments and calls these; the model for `opi compact` is resolved there (from
the same settings as a run) and passed in, so this module never decides which provider to call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal, TextIO

from bot.agent.compaction import CompactionConfig, compact
from bot.agent.session import Session, SessionConversation, SessionError
from bot.agent.session_store import list_sessions, load_session, resolve_session, sessions_dir
from bot.llm.base import Model
from bot.llm.messages import AssistantMessage, ImageContent, TextContent, ThinkingContent, ToolCall
from bot.llm.messages import Message as AnyMessage

ExportFormat = Literal["markdown", "json", "pi"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("markdown", "json", "pi")


def _print_warnings(session: Session, err: TextIO) -> None:
    for warning in session.warnings:
        print(f"opi: warning: {warning}", file=err)


def _load(ref: str, directory: str | Path | None, err: TextIO) -> Session | None:
    try:
        session = load_session(resolve_session(ref, sessions_dir(directory)))
    except SessionError as exc:
        print(f"opi: {exc}", file=err)
        return None
    return session


# -- --list-sessions -------------------------------------------------------------------------------

def list_sessions_command(*, cwd: str | Path, directory: str | Path | None = None, all_dirs: bool = False,
                          out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`opi --list-sessions`: the sessions made in cwd (all with `all_dirs`), newest first."""
    where = sessions_dir(directory)
    try:
        listings = list_sessions(where, None if all_dirs else cwd)
    except SessionError as exc:
        print(f"opi: {exc}", file=err)
        return 1
    if not listings:
        scope = "" if all_dirs else f" for {cwd}"
        print(f"No sessions{scope} in {where}.", file=out)
        return 0
    print(f"{'ID':<10} {'AGE':<10} {'MSGS':>5} {'COST':>9}  NAME / FIRST MESSAGE", file=out)
    for item in listings:
        cost = "unknown" if item.cost is None else f"${item.cost:.4f}"
        title = item.title if len(item.title) <= 70 else item.title[:69] + "…"
        print(f"{item.id[:8]:<10} {item.age():<10} {item.messages:>5} {cost:>9}  {title}", file=out)
    print(f"\nResume with: opi --resume ID   ({len(listings)} session(s) in {where})", file=out)
    return 0


# -- opi export ------------------------------------------------------------------------------------

def export_command(session_ref: str, *, format: str = "markdown", output: str | Path | None = None,
                   directory: str | Path | None = None, out: TextIO = sys.stdout,
                   err: TextIO = sys.stderr) -> int:
    if format not in EXPORT_FORMATS:
        print(f"opi: unknown export format {format!r}: choose one of {', '.join(EXPORT_FORMATS)}", file=err)
        return 2
    session = _load(session_ref, directory, err)
    if session is None:
        return 2
    _print_warnings(session, err)
    text = render(session, format)
    if output is None or str(output) == "-":
        out.write(text)
        return 0
    target = Path(output).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"opi: cannot write {target}: {exc.strerror or exc}", file=err)
        return 1
    print(f"opi: exported {session.header.id} ({format}) to {target}", file=err)
    return 0


def render(session: Session, format: ExportFormat) -> str:
    if format == "pi":
        from bot.agent.pi_format import export_pi_lines

        return "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
                       for line in export_pi_lines(session))
    if format == "json":
        return json.dumps(export_json(session), ensure_ascii=False, indent=2) + "\n"
    return render_markdown(session)


def export_json(session: Session) -> dict[str, Any]:
    """One JSON document: the header, every entry (all branches), the active branch and its context."""
    totals = session.totals()
    return {
        "header": session.header.to_dict(),
        "entries": session.entries,
        "active_branch": [entry["id"] for entry in session.branch()],
        "context": [m.model_dump(mode="json") for m in session.context()],
        "totals": {"usage": totals.usage.model_dump(mode="json"), "cost": totals.cost.model_dump(mode="json")},
        "warnings": session.warnings,
    }


def render_markdown(session: Session) -> str:
    """The active branch as a readable transcript (summaries where compactions happened)."""
    header = session.header
    totals = session.totals()
    cost = "unknown price" if totals.cost.total is None else f"${totals.cost.total:.4f}"
    lines = [f"# {session.name or 'Session ' + header.id}", ""]
    facts = [("Session", header.id), ("Started", header.timestamp), ("Directory", header.cwd),
             ("Model", header.model), ("Repository", header.repo), ("Commit", header.git_commit),
             ("Origin", header.origin), ("Parent session", header.parent_session)]
    lines += [f"- **{label}:** {value}" for label, value in facts if value]
    usage = totals.usage
    lines += [f"- **Tokens:** {usage.input} input, {usage.output} output, {usage.cache_read} cache read, "
              f"{usage.cache_write} cache write", f"- **Cost:** {cost}", ""]
    for entry in session.branch():
        lines += _markdown_entry(session, entry)
    return "\n".join(lines).rstrip() + "\n"


def _markdown_entry(session: Session, entry: dict[str, Any]) -> list[str]:
    kind = entry["type"]
    if kind == "compaction":
        return [f"## Compaction ({entry.get('tokens_before', '?')} → {entry.get('tokens_after', '?')} tokens)",
                "", str(entry.get("summary", "")), ""]
    if kind == "branch_summary":
        return ["## Summary of an abandoned branch", "", str(entry.get("summary", "")), ""]
    if kind == "model_change":
        return [f"*Model changed to {entry.get('provider')}:{entry.get('model')}*", ""]
    if kind == "session_info":
        return [f"*Session named “{entry.get('name')}”*", ""]
    if kind != "message":
        return []
    message = session.message_of(entry)
    return [] if message is None else _markdown_message(message)


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}\n{text}\n{ticks}"


def _markdown_message(message: AnyMessage) -> list[str]:
    if message.role == "user":
        images = [b for b in message.content if isinstance(b, ImageContent)] if isinstance(message.content, list) else []
        extra = [f"*[{len(images)} image(s)]*", ""] if images else []
        return ["## User", "", message.text, "", *extra]
    if isinstance(message, AssistantMessage):
        lines = [f"## Assistant ({message.model})", ""]
        for block in message.content:
            if isinstance(block, TextContent):
                lines += [block.text, ""]
            elif isinstance(block, ThinkingContent) and block.thinking:
                lines += ["> " + line for line in block.thinking.splitlines()] + [""]
            elif isinstance(block, ToolCall):
                lines += [f"**Tool call** `{block.name}`:", "",
                          _fence(json.dumps(block.arguments, indent=2, ensure_ascii=False)), ""]
        if message.error_message:
            lines += [f"*Error: {message.error_message}*", ""]
        return lines
    label = "Tool error" if message.is_error else "Tool result"
    return [f"### {label} (`{message.tool_name}`)", "", _fence(message.text), ""]


# -- opi compact -----------------------------------------------------------------------------------

def compact_command(session_ref: str, *, model: Model, config: CompactionConfig | None = None,
                    instructions: str | None = None, directory: str | Path | None = None,
                    out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Compact a stored session now (the same code as `/compact`); appends a compaction entry."""
    session = _load(session_ref, directory, err)
    if session is None:
        return 2
    _print_warnings(session, err)
    if not session.persistent:
        print(f"opi: {session.path} is a {session.source_format} session; resume it with opi first "
              "(that imports it into an opi session), then compact that one", file=err)
        return 2
    try:
        session.open_for_append()
        result = compact(SessionConversation(session), model, config=config or CompactionConfig(),
                         reason="manual", instructions=instructions)
    except SessionError as exc:
        print(f"opi: {exc}", file=err)
        return 1
    finally:
        session.close()
    if result is None:
        print(f"opi: nothing to compact in {session.header.id}: the context already fits in the kept tail",
              file=out)
        return 0
    how = " (fallback summary: " + str(result.error) + ")" if result.fallback else ""
    print(f"Compacted {session.header.id}: {result.tokens_before} → {result.tokens_after} tokens, "
          f"{result.summarized_messages} messages summarised, {result.kept_messages} kept{how}.", file=out)
    return 0

