"""Live progress in the tracking comment while the agent works.

The broker feeds every agent event (the worker's JSON lines, as dicts) to `ProgressReporter.feed`, from
its reader thread; a background thread (`start`) edits the comment with the current step, a compact
checklist of the tool calls so far, and the turns, tokens and cost so far. It edits only when the text
changed and at most every `min_interval` seconds, and backs off when GitHub answers with a rate limit
(403/429 with `retry-after`, or a secondary limit without it: a minute). A failing progress edit never
fails the run: after `_MAX_FAILURES` errors in a row progress edits stop and the final report still
goes out. `finish(report)` stops the thread and makes the final edit, which replaces the progress.

Everything shown comes from the model (tool names, paths, commands), so each piece goes into an inline
code span it cannot close, on one line, clipped: it cannot add markdown, HTML or @-mentions.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.action.github_api import GitHubError

_MAX_FAILURES = 5
_DEFAULT_BACKOFF = 60.0
_ARG_CHARS = 60
_FINAL_ATTEMPTS = 3
_FINAL_MAX_WAIT = 60.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The argument that says most about a call, per tool; other tools show their first string argument.
_KEY_ARGUMENT = {"read": "path", "write": "path", "edit": "path", "ls": "path", "find": "pattern",
                 "grep": "pattern", "bash": "command", "ci_log": "job"}


@dataclass
class _ToolCall:
    id: str
    name: str
    summary: str
    state: str = "running"  # running / ok / error


def inline_code(text: str, limit: int = _ARG_CHARS) -> str:
    """`text` as one inline code span it cannot close: one line, clipped, fenced by a backtick run longer
    than any inside (CommonMark), padded when it starts or ends with a backtick."""
    flat = _CONTROL.sub(" ", " ".join(str(text).split()))
    if len(flat) > limit:
        flat = flat[:limit - 1] + "…"
    if not flat:
        return "` `"
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def summarise_call(name: str, arguments: Any) -> str:
    if not isinstance(arguments, Mapping):
        return ""
    key = _KEY_ARGUMENT.get(name)
    value = arguments.get(key) if key else None
    if value is None:
        value = next((v for v in arguments.values() if isinstance(v, str) and v.strip()), None)
    if not isinstance(value, str) or not value.strip():
        return ""
    return value.strip().split("\n", 1)[0]


class ProgressReporter:
    """Thread-safe: `feed` from the event reader thread, `tick` from the timer thread (or a test)."""

    def __init__(self, edit: Callable[[str], None], *, header: str = "", footer: str = "",
                 min_interval: float = 10.0, max_items: int = 12, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None) -> None:
        self._edit = edit
        self._header = header
        self._footer = footer
        self._min_interval = min_interval
        self._max_items = max_items
        self._clock = clock
        self._sleep = sleep
        self._log = log or (lambda message: None)
        self._lock = threading.Lock()  # guards the state below
        self._edit_lock = threading.Lock()  # one edit at a time (timer thread vs finish)
        self._calls: list[_ToolCall] = []
        self._step = "starting"
        self._turns = 0
        self._tokens = 0
        self._cost: float | None = 0.0
        self._last_body = ""
        self._last_edit = clock()  # the tracking comment was just posted
        self._blocked_until = 0.0
        self._failures = 0
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- events --------------------------------------------------------------------------------------
    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        with self._lock:
            if self._closed:
                return
            if kind == "turn_start":
                self._turns = max(self._turns, int(event.get("turn") or self._turns + 1))
                self._step = "thinking"
            elif kind == "tool_start":
                self._tool_start(event.get("tool_call") or {})
            elif kind == "tool_end":
                self._tool_end(event)
            elif kind == "message_end":
                self._message_end(event.get("message") or {})
            elif kind == "retry":
                self._step = f"the model is busy, retrying (attempt {int(event.get('attempt') or 0)})"
            elif kind == "compaction_start":
                self._step = "compacting the conversation"
            elif kind == "compaction_end":
                self._step = "thinking"
            elif kind == "agent_end":
                self._step = "writing the report"

    def _tool_start(self, call: Mapping[str, Any]) -> None:
        name = str(call.get("name") or "tool")
        summary = summarise_call(name, call.get("arguments"))
        self._calls.append(_ToolCall(str(call.get("id") or ""), name, summary))
        self._step = f"running {inline_code(name, 30)}" + (f" {inline_code(summary)}" if summary else "")

    def _tool_end(self, event: Mapping[str, Any]) -> None:
        call_id = str(event.get("tool_call_id") or "")
        for call in reversed(self._calls):
            if call.id == call_id and call.state == "running":
                call.state = "error" if event.get("is_error") else "ok"
                break
        if not any(call.state == "running" for call in self._calls):
            self._step = "thinking"

    def _message_end(self, message: Mapping[str, Any]) -> None:
        if message.get("role") != "assistant":
            return
        usage = message.get("usage") or {}
        self._tokens += sum(int(usage.get(k) or 0) for k in ("input", "output", "cache_read", "cache_write"))
        total = (message.get("cost") or {}).get("total")
        # One message of unknown price makes the whole run's price unknown: never show it as less.
        self._cost = None if self._cost is None or total is None else self._cost + float(total)

    # -- rendering -----------------------------------------------------------------------------------
    def render(self) -> str:
        with self._lock:
            return self._render_locked()

    def _render_locked(self) -> str:
        cost = "unknown price" if self._cost is None else f"${self._cost:.4f}"
        tokens = f"{self._tokens / 1000:.1f}k" if self._tokens >= 1000 else str(self._tokens)
        lines = [f"**Working…** turn {self._turns} · {tokens} tokens · {cost} so far", "",
                 f"Now: {self._step}"]
        if self._calls:
            lines.append("")
            hidden = len(self._calls) - self._max_items
            if hidden > 0:
                lines.append(f"- … {hidden} earlier tool call{'s' if hidden > 1 else ''}")
            marks = {"running": "⏳", "ok": "✅", "error": "❌"}
            for call in self._calls[-self._max_items:]:
                detail = f" {inline_code(call.summary)}" if call.summary else ""
                lines.append(f"- {marks[call.state]} {inline_code(call.name, 30)}{detail}")
        parts = [part for part in (self._header, "\n".join(lines), self._footer) if part]
        return "\n\n".join(parts)

    # -- editing -------------------------------------------------------------------------------------
    def tick(self) -> bool:
        """Edit the comment if the text changed, the interval has passed and GitHub is not asking us to
        wait. Returns whether an edit was made. Never raises."""
        with self._edit_lock:
            with self._lock:
                now = self._clock()
                if self._closed or self._failures >= _MAX_FAILURES or now < self._blocked_until \
                        or now - self._last_edit < self._min_interval:
                    return False
                body = self._render_locked()
                if body == self._last_body:
                    return False
            try:
                self._edit(body)
            except GitHubError as exc:
                self._edit_failed(exc)
                return False
            with self._lock:
                self._last_body, self._last_edit, self._failures = body, self._clock(), 0
            return True

    def _edit_failed(self, exc: GitHubError) -> None:
        with self._lock:
            now = self._clock()
            self._failures += 1
            self._last_edit = now
            if exc.status in (403, 429) and exc.retry_after is not None:
                self._blocked_until = now + exc.retry_after
                self._log(f"progress: GitHub rate limit, next edit in {exc.retry_after:.0f}s")
            elif exc.status == 429:
                self._blocked_until = now + _DEFAULT_BACKOFF
                self._log(f"progress: GitHub rate limit, next edit in {_DEFAULT_BACKOFF:.0f}s")
            else:
                self._log(f"progress: could not edit the comment: {exc}")
            if self._failures == _MAX_FAILURES:
                self._log("progress: too many failed edits, progress updates stop (the report still goes out)")

    def start(self, poll: float = 1.0) -> None:
        """Tick every `poll` seconds in a daemon thread until `finish` or `stop`."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(poll):
                self.tick()

        self._thread = threading.Thread(target=loop, name="opi-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop progress edits (an edit in flight completes first); no final edit."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            self._closed = True

    def finish(self, report: str) -> None:
        """Stop, then replace the progress with `report`. A rate limit is waited out (GitHub's wait, at
        most a minute, `_FINAL_ATTEMPTS` tries); any other failure raises GitHubError for the caller to
        record."""
        self.stop()
        with self._edit_lock:
            for attempt in range(1, _FINAL_ATTEMPTS + 1):
                try:
                    self._edit(report)
                    return
                except GitHubError as exc:
                    wait = exc.retry_after if exc.status in (403, 429) else None
                    if wait is None or wait > _FINAL_MAX_WAIT or attempt == _FINAL_ATTEMPTS:
                        raise
                    self._log(f"progress: GitHub rate limit, the report waits {wait:.0f}s")
                    self._sleep(wait)
