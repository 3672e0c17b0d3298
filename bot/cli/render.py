"""Rendering agent events in the terminal with rich.

The REPL keeps one `rich.live.Live` region open while the agent works. Everything final (a finished
paragraph, a tool line, a diff) is printed above it and stays in the terminal's scrollback; the live
region only holds what is still changing: the tail of the streaming answer, the thinking in progress,
and a status block (spinner, queued follow-ups, the line being typed, an approval question).

Streaming Markdown is re-rendered as it grows; lines that have scrolled more than a screen above the
tail are committed to the scrollback so a long answer never has to fit in the live region.

This module imports rich at module level: it is only ever imported by the REPL, never on the
`opi --version` path.
"""

from __future__ import annotations

import difflib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from bot.agent import events as ev
from bot.cli.approval import ApprovalRequest
from bot.llm.messages import AssistantMessage, Cost, ToolCall, Usage

# How much of a tool's output the compact result shows.
BASH_TAIL_LINES = 6
DIFF_MAX_LINES = 60
ERROR_MAX_LINES = 6
THINKING_PREVIEW_LINES = 2
# Re-rendering a long Markdown text on every delta would be quadratic; commit at most this often.
COMMIT_INTERVAL_SECONDS = 0.15


def format_tokens(count: int) -> str:
    if count < 1000:
        return str(count)
    if count < 100_000:
        return f"{count / 1000:.1f}k"
    if count < 1_000_000:
        return f"{count // 1000}k"
    return f"{count / 1_000_000:.1f}M"


def format_cost(cost: Cost) -> str:
    if cost.total is None:
        return "cost unknown"
    return f"${cost.total:.4f}" if cost.total < 1 else f"${cost.total:.2f}"


def context_tokens(message: AssistantMessage | None) -> int:
    """The size of the context as the model last saw it: its prompt plus what it wrote."""
    return 0 if message is None else message.usage.total_tokens


@dataclass
class FooterStats:
    model: str
    context_used: int
    context_window: int
    cost: Cost
    usage: Usage = field(default_factory=Usage)

    def line(self) -> str:
        bound = max(1, self.context_window)
        percent = 100 * self.context_used / bound
        return (f"{self.model} · ctx {format_tokens(self.context_used)}/{format_tokens(bound)} "
                f"({percent:.0f}%) · {format_cost(self.cost)}")


# -- tool lines ------------------------------------------------------------------------------------

def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_tool_call(call: ToolCall) -> str:
    """One line naming what the call does, the way a user would say it."""
    args = call.arguments
    path = args.get("path")
    if call.name == "bash" and "command" in args:
        return _short(args["command"], 200)
    if call.name == "read" and path is not None:
        offset, limit = args.get("offset"), args.get("limit")
        if offset is not None or limit is not None:
            start = int(offset or 1)
            end = f"{start + int(limit) - 1}" if limit is not None else ""
            return f"{path}:{start}-{end}"
        return str(path)
    if call.name == "write" and path is not None:
        content = args.get("content")
        lines = content.count("\n") + (0 if content.endswith("\n") else 1) if isinstance(content, str) and content else 0
        return f"{path} ({lines} line{'s' if lines != 1 else ''})"
    if call.name == "edit" and path is not None:
        edits = args.get("edits")
        return f"{path} ({len(edits)} edits)" if isinstance(edits, list) and len(edits) > 1 else str(path)
    if call.name == "grep" and "pattern" in args:
        where = f" in {args['path']}" if args.get("path") else ""
        return f"{_short(args['pattern'])}{where}"
    if call.name == "find" and "pattern" in args:
        where = f" in {args['path']}" if args.get("path") else ""
        return f"{_short(args['pattern'])}{where}"
    return " ".join(f"{key}={_short(value, 60)}" for key, value in args.items())


def tool_call_line(call: ToolCall) -> Text:
    line = Text("● ", style="cyan")
    line.append(call.name, style="bold cyan")
    description = describe_tool_call(call)
    if description:
        line.append(" " + description)
    return line


def _diff_text(details: dict[str, Any] | None, text: str) -> str | None:
    if details:
        for key in ("diff", "unified_diff", "patch"):
            value = details.get(key)
            if isinstance(value, str) and value.strip():
                return value
    if "\n@@ " in text or text.startswith(("--- ", "@@ ")):
        start = text.find("--- ")
        return text[start:] if start >= 0 else text
    return None


def render_diff(diff: str, max_lines: int = DIFF_MAX_LINES) -> Text:
    out = Text()
    lines = diff.rstrip("\n").splitlines()
    for line in lines[:max_lines]:
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        else:
            style = "dim"
        out.append("  " + line + "\n", style=style)
    if len(lines) > max_lines:
        out.append(f"  … {len(lines) - max_lines} more diff lines\n", style="dim")
    out.rstrip()
    return out


PREVIEW_MAX_LINES = 40


def preview_tool_call(call: ToolCall, workspace: Path) -> Text | None:
    """What a mutating call would change, shown before the user is asked to allow it: the proposed diff of
    an edit or write, or a bash command too long for the question line. None when the line says it all."""
    args, path = call.arguments, call.arguments.get("path")
    if call.name == "edit" and isinstance(path, str):
        edits = args.get("edits")
        pairs: list[Any] = edits if isinstance(edits, list) else [args]
        hunks = [_proposed_diff(path, str(p.get("old_text", "")), str(p.get("new_text", "")))
                 for p in pairs if isinstance(p, dict)]
        return render_diff("".join(hunks), PREVIEW_MAX_LINES) if any(hunks) else None
    if call.name == "write" and isinstance(path, str) and isinstance(args.get("content"), str):
        diff = _proposed_diff(path, _current_text(workspace / path), args["content"])
        return render_diff(diff, PREVIEW_MAX_LINES) if diff else None
    command = args.get("command")
    if call.name == "bash" and isinstance(command, str) and ("\n" in command.strip() or len(command) > 200):
        return _indented(command.strip().splitlines()[:PREVIEW_MAX_LINES], "bold")
    return None


def _proposed_diff(path: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"a/{path}", tofile=f"b/{path}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _current_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""  # new, unreadable or binary: the preview shows the whole new content as added


def _exit_code(details: dict[str, Any] | None, text: str) -> int | None:
    if details:
        for key in ("exit_code", "returncode", "exit_status"):
            value = details.get(key)
            if isinstance(value, int):
                return value
    return None


def _indented(lines: Sequence[str], style: str) -> Text:
    out = Text()
    for line in lines:
        out.append("  " + line + "\n", style=style)
    out.rstrip()
    return out


def tool_result(event: ev.ToolEnd) -> Text:
    """The compact result under a tool line: a diff, an exit code and tail, or a size."""
    lines = event.text.rstrip("\n").splitlines()
    diff = None if event.is_error else _diff_text(event.details, event.text)
    if diff is not None:
        return render_diff(diff)
    if event.tool_name == "bash":
        return _bash_result(event, lines)
    if event.is_error:
        shown = lines[:ERROR_MAX_LINES] or ["(error with no message)"]
        text = _indented(["✗ " + shown[0], *shown[1:]], "red")
        if len(lines) > ERROR_MAX_LINES:
            text.append(f"\n  … {len(lines) - ERROR_MAX_LINES} more lines", style="dim")
        return text
    if event.tool_name == "write":
        return _indented(["✓ " + (lines[0] if lines else "written")], "green")
    count = len(lines)
    summary = f"{count} line{'s' if count != 1 else ''}"
    if count == 1:
        summary = _short(lines[0], 100)
    return _indented([summary], "dim")


def _bash_result(event: ev.ToolEnd, lines: list[str]) -> Text:
    code = _exit_code(event.details, event.text)
    details = event.details or {}
    tail = lines[-BASH_TAIL_LINES:]
    out = Text()
    if details.get("cancelled"):
        out.append("  ⏹ cancelled: the command and its children were killed", style="yellow")
    elif details.get("timed_out"):
        out.append("  ✗ timed out: the command and its children were killed", style="bold red")
    elif code is None:
        out.append("  ✗ failed" if event.is_error else "  ✓ done", style="red" if event.is_error else "green")
    else:
        out.append(f"  exit {code}", style="green" if code == 0 else "bold red")
    if len(lines) > len(tail):
        out.append(f"  ({len(lines) - len(tail)} earlier lines hidden)", style="dim")
    if tail:
        out.append("\n")
        out.append_text(_indented(tail, "dim"))
    return out


# -- streaming -----------------------------------------------------------------------------------

def render_block_lines(console: Console, kind: str, text: str) -> list[list[Segment]]:
    options = console.options.update(width=max(20, console.size.width - 1))
    renderable: RenderableType = Text(text, style="dim italic") if kind == "thinking" else Markdown(text)
    return [_rstrip_line(line) for line in console.render_lines(renderable, options, pad=False)]


def _rstrip_line(line: list[Segment]) -> list[Segment]:
    """Drop Markdown's padding to the full width, so text copied from the terminal has no trailing blanks
    (a code block's background padding is kept)."""
    end = len(line)
    def plain(segment: Segment) -> bool:
        return segment.style is None or segment.style.bgcolor is None

    end = len(line)
    while end and line[end - 1].text.isspace() and plain(line[end - 1]):
        end -= 1
    if end and not line[end - 1].control and plain(line[end - 1]):
        last = line[end - 1]
        return [*line[: end - 1], Segment(last.text.rstrip(), last.style)]
    return line[:end]


class _BlockTail:
    """The not-yet-committed tail of a streaming block, rendered only when Live draws it."""

    def __init__(self, owner: Renderer, kind: str, text: str, committed: int, budget: int) -> None:
        self.owner, self.kind, self.text, self.committed, self.budget = owner, kind, text, committed, budget
        self._cached: tuple[int, list[list[Segment]]] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.kind == "thinking" and not self.owner.show_thinking:
            recent = [ln for ln in self.text.strip().splitlines() if ln.strip()][-THINKING_PREVIEW_LINES:]
            for line in recent:
                yield Text("✻ " + _short(line, max(20, options.max_width - 4)), style="dim italic")
            return
        # Live redraws ~12 times a second; re-parse the Markdown only when the text or width changed.
        if self._cached is None or self._cached[0] != options.max_width:
            self._cached = (options.max_width, render_block_lines(console, self.kind, self.text))
        lines = self._cached[1]
        yield _Lines(lines[self.committed:][-self.budget:])


class _Lines:
    """Pre-rendered lines of segments, printable as a renderable."""

    def __init__(self, lines: Sequence[list[Segment]]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines:
            yield from line
            yield Segment.line()


@dataclass
class _Block:
    kind: str  # "text" or "thinking"
    index: int
    parts: list[str] = field(default_factory=list)
    committed: int = 0  # rendered lines already printed above the live region

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Renderer:
    """Turns agent events into terminal output. Thread-safe: the agent runs in a worker thread while
    the main thread updates the status block."""

    def __init__(self, console: Console, *, show_thinking: bool = False) -> None:
        self.console = console
        self.show_thinking = show_thinking
        self.status_lines: list[Text] = []
        self.last_thinking: str = ""
        self._lock = threading.RLock()
        self._live: Live | None = None
        self._block: _Block | None = None
        self._tool_args: dict[int, int] = {}
        self._last_commit = 0.0
        self._spinner = Spinner("dots", text=Text("working…  Ctrl+C aborts", style="dim"))
        self._busy = False
        self._view: RenderableType = Group()
        self.commit_interval = COMMIT_INTERVAL_SECONDS
        self._abort_shown = False
        self._tool_calls: dict[str, ToolCall] = {}
        self._last_tool_line: str | None = None

    # -- the live region ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._live is not None:
                return
            self._busy = True
            self._update_view()
            self._live = Live(console=self.console, get_renderable=self._live_renderable,
                              refresh_per_second=12, transient=True, redirect_stdout=False,
                              redirect_stderr=False)
            self._live.start()

    def stop(self) -> None:
        with self._lock:
            self._finish_block()
            self._busy = False
            self._update_view()
            live, self._live = self._live, None
        if live is not None:
            live.stop()

    def set_status(self, lines: list[Text]) -> None:
        with self._lock:
            self.status_lines = lines
            self._update_view()
        self.refresh()

    def refresh(self) -> None:
        live = self._live
        if live is not None:
            live.refresh()

    def print(self, *renderables: RenderableType) -> None:
        with self._lock:
            # Live.console.print writes above the live region when one is active.
            self.console.print(*renderables)

    def say(self, text: str, style: str = "") -> None:
        """One line of plain text (never rich markup: "[path]" stays as typed); paths stay whole."""
        with self._lock:
            self.console.print(Text(text, style=style), soft_wrap=True)

    # -- the turn supervisor's view (bot.cli.turn.TurnView) ----------------------------------------
    def note(self, text: str, style: str = "") -> None:
        self.print(Text(text, style=style))

    def set_busy(self, busy: bool) -> None:
        """The spinner runs while the agent works, and not while a question waits for the user."""
        with self._lock:
            self._busy = busy and self._live is not None
            self._update_view()
        self.refresh()

    def show_typing(self, queued: list[str], buffer: str) -> None:
        self.set_status(list(iter_status(queued, buffer)))

    def show_question(self, request: ApprovalRequest, cwd: Path, reason: str | None) -> None:
        lines = [approval_question(request, cwd)]
        if reason is not None:
            line = Text(REASON_PROMPT, style="yellow")
            line.append(reason)
            line.append("▏", style="dim")
            lines.append(line)
        self.set_status(lines)

    def show_answer(self, request: ApprovalRequest) -> None:
        self.set_status([])
        if request.answer is None:
            always = f" (always for {request.tool_name} in this session)" if request.always else ""
            self.print(Text(f"  ✓ allowed{always}", style="green"))
        else:
            self.print(Text(f"  ✗ refused: {request.answer}", style="red"))

    def _live_renderable(self) -> RenderableType:
        # No lock here: Live's refresh thread calls this while holding its own lock, and a printing
        # thread holds ours before taking Live's; the view is an immutable snapshot instead.
        return self._view

    def _update_view(self) -> None:
        parts: list[RenderableType] = []
        block = self._block
        if block is not None:
            parts.append(_BlockTail(self, block.kind, block.text, block.committed, self._tail_budget()))
        if self._tool_args:
            size = sum(self._tool_args.values())
            parts.append(Text(f"  preparing tool call… {size} bytes", style="dim"))
        if self._busy:
            parts.append(self._spinner)
        parts.extend(self.status_lines)
        self._view = Group(*parts)

    def _tail_budget(self) -> int:
        return max(3, self.console.size.height - 6 - len(self.status_lines))

    def _render_block(self, block: _Block) -> list[list[Segment]]:
        return render_block_lines(self.console, block.kind, block.text)

    # -- events ------------------------------------------------------------------------------------
    def handle(self, event: ev.Event) -> None:
        with self._lock:
            self._dispatch(event)
            self._update_view()

    def _dispatch(self, event: ev.Event) -> None:
        if isinstance(event, ev.MessageUpdate):
            self._on_update(event)
        elif isinstance(event, ev.MessageEnd):
            if isinstance(event.message, AssistantMessage):
                self._on_assistant_end(event.message)
        elif isinstance(event, ev.ToolStart):
            self._finish_block()
            self._tool_calls[event.tool_call.id] = event.tool_call
            self.print(tool_call_line(event.tool_call))
            self._last_tool_line = event.tool_call.id
        elif isinstance(event, ev.ToolEnd):
            call = self._tool_calls.pop(event.tool_call_id, None)
            if call is not None and self._last_tool_line != event.tool_call_id:
                # Parallel calls finish in any order: say which call this result belongs to.
                header = Text("  ↳ ", style="dim")
                header.append_text(tool_call_line(call))
                self.print(header)
            self.print(tool_result(event))
            self._last_tool_line = None
        elif isinstance(event, ev.Retry):
            self._drop_block()
            self.print(Text(f"↻ retrying in {event.delay_seconds:.1f}s (attempt {event.attempt}): "
                            f"{event.error}", style="yellow"))
        elif isinstance(event, ev.CompactionStart):
            self.print(Text(f"⋯ compacting the context ({event.reason}, "
                            f"{format_tokens(event.tokens_before)} tokens)…", style="magenta"))
        elif isinstance(event, ev.CompactionEnd):
            fallback = " (fallback summary: the summary call failed)" if event.summary_fallback else ""
            self.print(Text(f"⋯ compacted: {format_tokens(event.tokens_before)} → "
                            f"{format_tokens(event.tokens_after)} tokens{fallback}", style="magenta"))
        elif isinstance(event, ev.Warning):
            self.print(Text(f"! {event.message}", style="yellow"))
        elif isinstance(event, ev.AgentStart):
            self._abort_shown = False
        elif isinstance(event, ev.AgentEnd):
            self._finish_block()
            self._on_agent_end(event)

    def _on_update(self, event: ev.MessageUpdate) -> None:
        if event.kind == "tool_call":
            self._tool_args[event.index] = self._tool_args.get(event.index, 0) + len(event.delta)
            return
        block = self._block
        if block is None or block.kind != event.kind or block.index != event.index:
            self._finish_block()
            block = self._block = _Block(kind=event.kind, index=event.index)
        block.parts.append(event.delta)
        now = time.monotonic()
        if now - self._last_commit >= self.commit_interval:
            self._last_commit = now
            self._commit_scrolled(block)

    def _commit_scrolled(self, block: _Block) -> None:
        """Print the lines that no longer fit in the live region, so they reach the scrollback."""
        if block.kind == "thinking" and not self.show_thinking:
            return  # collapsed thinking is never committed line by line
        lines = self._render_block(block)
        keep = self._tail_budget()
        # The last rendered lines may still change (a paragraph re-wraps as it grows); keep them live.
        upto = len(lines) - keep
        if upto > block.committed:
            self.console.print(_Lines(lines[block.committed:upto]))
            block.committed = upto

    def _finish_block(self) -> None:
        block, self._block = self._block, None
        if block is None or not block.text.strip():
            return
        if block.kind == "thinking":
            self._print_thinking(block)
            return
        lines = self._render_block(block)
        if len(lines) > block.committed:
            self.console.print(_Lines(lines[block.committed:]))

    def _drop_block(self) -> None:
        self._block = None
        self._tool_args.clear()

    def _print_thinking(self, block: _Block) -> None:
        self.last_thinking = block.text
        if self.show_thinking:
            lines = self._render_block(block)
            self.console.print(_Lines(lines[block.committed:]))
            return
        texts = [line for line in block.text.strip().splitlines() if line.strip()]
        preview = Text("✻ thinking: ", style="dim italic")
        preview.append(_short(texts[0] if texts else "", 100), style="dim italic")
        if len(texts) > 1:
            preview.append(f"  (+{len(texts) - 1} lines, /thinking to expand)", style="dim")
        self.console.print(preview)

    def _on_assistant_end(self, message: AssistantMessage) -> None:
        self._finish_block()
        self._tool_args.clear()
        if message.stop_reason == "aborted":
            self._abort_shown = True
            self.print(Text("⏹ aborted", style="bold yellow"))
        elif message.stop_reason == "error":
            self.print(Text(f"✗ {message.error_message or 'the model ended with an error'}", style="bold red"))
        elif message.stop_reason == "length":
            self.print(Text("! the answer hit the output token limit", style="yellow"))

    def _on_agent_end(self, event: ev.AgentEnd) -> None:
        if event.outcome == "completed":
            return
        if event.outcome == "aborted":
            if not self._abort_shown:  # aborted between messages (during a tool)
                self.print(Text("⏹ aborted", style="bold yellow"))
            return
        label = {"max_turns": "turn limit", "max_cost": "cost limit", "timeout": "time limit"}.get(
            event.outcome, "error")
        self.print(Text(f"✗ {label}: {event.error or event.outcome}", style="bold red"))

    # -- outside the agent -------------------------------------------------------------------------
    def footer(self, stats: FooterStats) -> None:
        self.print(Text(stats.line(), style="dim"))

    def print_thinking_expanded(self) -> None:
        if not self.last_thinking:
            self.print(Text("no thinking to show yet", style="dim"))
            return
        self.print(Text(self.last_thinking, style="dim italic"))


REASON_PROMPT = "  reason for the model (Enter sends; empty: none): "
APPROVAL_CHOICES = "[y]es  [n]o  [a]lways for this tool"


def approval_question(request: ApprovalRequest, cwd: Path) -> Text:
    """The proposed change first, so what is being allowed is on screen while the user decides."""
    question = preview_tool_call(request.call, cwd) or Text()
    if question.plain:
        question.append("\n")
    question.append("? ", style="bold yellow")
    question.append(f"allow {request.tool_name} {describe_tool_call(request.call)}? ", style="bold")
    question.append(APPROVAL_CHOICES, style="yellow")
    return question


def yes_no_question(text: str) -> Text:
    """Every other y/n question looks like the approval one and is answered the same way (one key)."""
    question = Text("? ", style="bold yellow")
    question.append(text + " ", style="bold")
    question.append("[y]es  [N]o", style="yellow")
    return question


def two_columns(rows: Iterable[tuple[str, str]]) -> Table:
    """The /help table: a bold first column; cells are Text, so "[path]" is not read as rich markup."""
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(no_wrap=True, style="bold")
    table.add_column(style="dim")
    for left, right in rows:
        table.add_row(Text(left), Text(right))
    return table


def cost_table(usage: Usage, cost: Cost) -> Table:
    def usd(value: float | None) -> str:
        return "unknown" if value is None else f"${value:.4f}"

    table = Table(show_header=True, box=None, padding=(0, 2))
    table.add_column("")
    table.add_column("tokens", justify="right")
    table.add_column("cost", justify="right")
    table.add_row("input", f"{usage.input:,}", usd(cost.input))
    table.add_row("output", f"{usage.output:,}", usd(cost.output))
    table.add_row("cache read", f"{usage.cache_read:,}", usd(cost.cache_read))
    table.add_row("cache write", f"{usage.cache_write:,}", usd(cost.cache_write))
    table.add_row("total", f"{usage.total_tokens:,}", format_cost(cost), style="bold")
    return table


def numbered_line(number: int, parts: Iterable[tuple[str, str]]) -> Text:
    """A row of a picker (/resume, /tree): one line, cut with an ellipsis rather than wrapped."""
    line = Text(f"{number:>3}. ", style="dim", no_wrap=True, overflow="ellipsis")
    for text, style in parts:
        line.append(text, style=style)
    return line


def print_lines(console: Console, lines: Iterable[str], style: str = "") -> None:
    for line in lines:
        console.print(Text(line, style=style))


def iter_status(queued: Sequence[str], buffer: str) -> Iterator[Text]:
    """The status block under the spinner: queued follow-ups, then the line being typed."""
    for message in queued:
        yield Text(f"  ⏎ queued: {_short(message, 100)}", style="cyan")
    if buffer:
        line = Text("› ", style="bold")
        line.append(buffer.replace("\n", "⏎ "))
        line.append("▏", style="dim")
        yield line
