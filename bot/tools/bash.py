"""`bash`: run a shell command in the workspace.

The command runs as `bash -c` in its own session (so its own process group), with the context's scrubbed
environment, stdin from /dev/null and stdout+stderr going to a log file in the run's temp directory rather
than a pipe: a pipe would stay open as long as any backgrounded grandchild (`server &`) holds it, and
reading it to EOF would hang. The tool waits on a pidfd for the shell to exit (so its exit is seen at once),
checking the cancel event, the deadline and the log's size in between; on timeout or cancel it kills the
whole group, SIGTERM first and SIGKILL after a grace period, and a log that reaches the context's output
cap gets the command killed.

When the call returns, every process it left behind is killed, including ones that left the group
(`setsid cmd &`, double-forked daemons): the agent process makes itself a child subreaper on the first
call, so orphans of the command are re-parented to it rather than to init, and after each call every
descendant that did not exist before the call is SIGKILLed (`bot.tools.proc.kill_descendants`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bot.tools import proc as process_tree
from bot.tools.base import Tool, ToolContext, ToolError, ToolOutput
from bot.tools.read import MAX_BYTES, MAX_LINES, format_size

_POLL_SECONDS = 0.05
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


class BashParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str = Field(description="Run with `bash -c` in the workspace.")
    timeout: float | None = Field(
        default=None, gt=0,
        description="Seconds before it is killed.",
    )


@dataclass
class _Run:
    returncode: int | None
    timed_out: bool
    cancelled: bool
    seconds: float
    output_capped: bool = False
    leftovers_killed: int = 0
    capped_after_exit: bool = False  # it wrote past the cap between two size checks, then ended by itself


class BashTool(Tool):
    name: ClassVar[str] = "bash"
    description: ClassVar[str] = (
        "Run a bash command in the workspace; returns stdout and stderr. stdin is /dev/null. Long output "
        f"keeps its last {MAX_LINES} lines / {MAX_BYTES // 1024} KB and names a file with all of it. "
        "Background processes are killed when the command returns: start and use a server in one command."
    )
    Params: ClassVar[type[BaseModel]] = BashParams
    mutating: ClassVar[bool] = True

    def __init__(self, kill_grace_seconds: float = 2.0) -> None:
        # How long a process group gets to exit after SIGTERM before SIGKILL.
        self.kill_grace_seconds = kill_grace_seconds

    def run(self, params: BashParams, ctx: ToolContext) -> ToolOutput:
        if not params.command.strip():
            raise ToolError("command is empty")
        if ctx.cancel.is_set():
            raise ToolError("Not run: the turn was cancelled")
        workspace = Path(ctx.workspace)
        if not workspace.is_dir():
            raise ToolError(f"The workspace {workspace} does not exist or is not a directory")
        bash = shutil.which("bash", path=ctx.env.get("PATH")) or shutil.which("bash")
        if bash is None:
            raise ToolError("bash was not found on PATH")
        timeout = params.timeout if params.timeout is not None else ctx.bash_timeout
        fd, log_name = tempfile.mkstemp(prefix="bash-", suffix=".log", dir=ctx.run_temp_dir())
        log_path = Path(log_name)
        try:
            with os.fdopen(fd, "wb") as log:
                run = self._execute(bash, params.command, workspace, log, timeout, ctx)
            return _result(run, log_path, timeout, ctx.output_cap_bytes)
        except BaseException:
            log_path.unlink(missing_ok=True)
            raise

    def _execute(self, bash: str, command: str, cwd: Path, log: BinaryIO, timeout: float,
                 ctx: ToolContext) -> _Run:
        watch_leftovers = _become_subreaper()
        before = process_tree.descendant_keys(os.getpid()) if watch_leftovers else frozenset()
        started = time.monotonic()
        try:
            argv, kwargs = process_tree.tool_command([bash, "-c", command], ctx.command_env())
            proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    **kwargs)
        except (OSError, ValueError) as exc:  # ValueError: e.g. a command that cannot be encoded
            raise ToolError(f"Could not start bash: {getattr(exc, 'strerror', None) or exc}") from exc
        stop: str | None = None
        leftovers: list[int] = []
        try:
            stop = _wait(proc, started + timeout, ctx, log, ctx.output_cap_bytes)
            if stop is not None:
                kill_process_group(proc, self.kill_grace_seconds)
        finally:
            if proc.returncode is None:  # interrupted (KeyboardInterrupt, ...): never leave it running
                kill_process_group(proc, self.kill_grace_seconds)
            if watch_leftovers:
                leftovers = process_tree.kill_descendants(os.getpid(), keep=before)
            _signal_group(proc.pid, signal.SIGKILL)  # without a subreaper: at least the shell's own group
        # Whatever was written past the cap is dropped, also by a command that ended (or whose leftovers
        # wrote) between two size checks: the cap holds on disk.
        size = os.fstat(log.fileno()).st_size
        capped = stop == "output_capped" or size > ctx.output_cap_bytes
        if capped:
            os.ftruncate(log.fileno(), min(size, ctx.output_cap_bytes))
        return _Run(proc.returncode, stop == "timed_out", stop == "cancelled", time.monotonic() - started,
                    output_capped=capped, leftovers_killed=len(leftovers),
                    capped_after_exit=capped and stop != "output_capped")


_subreaper_lock = threading.Lock()
_subreaper: bool | None = None


def _become_subreaper() -> bool:
    """Make this process a child subreaper, once; False where that is not possible (not Linux)."""
    global _subreaper
    with _subreaper_lock:
        if _subreaper is None:
            try:
                _subreaper = process_tree.is_child_subreaper() or process_tree.set_child_subreaper()
            except OSError:
                _subreaper = False
        return _subreaper


def _wait(proc: subprocess.Popen[bytes], deadline: float, ctx: ToolContext, log: BinaryIO,
          cap: int) -> str | None:
    """Wait for the shell to exit: None when it did, else why it must be stopped ("timed_out",
    "cancelled", "output_capped"). A pidfd wakes the wait the moment the shell exits."""
    with process_tree.exit_waiter(proc) as wait:
        while proc.poll() is None:
            if ctx.cancel.is_set():
                return "cancelled"
            now = time.monotonic()
            if now >= deadline:
                return "timed_out"
            if os.fstat(log.fileno()).st_size >= cap:
                return "output_capped"
            wait(min(_POLL_SECONDS, deadline - now))
        return None


def command_env(ctx: ToolContext) -> dict[str, str]:
    """The environment for commands (kept for callers of the old name): `ctx.command_env()`."""
    return ctx.command_env()


def kill_process_group(proc: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM the process group, wait up to `grace_seconds` for it to go, then SIGKILL what is left."""
    group = proc.pid  # start_new_session makes the child the leader of its own group
    _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_POLL_SECONDS)
        if proc.returncode is not None and not _group_alive(group):
            break
    _signal_group(group, signal.SIGKILL)
    proc.wait()


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also "finds" zombies, which are dead but wait for init to reap them; on Linux, look closer.
    members = _live_group_members(group)
    return True if members is None else bool(members)


def _live_group_members(group: int) -> list[int] | None:
    """PIDs in process group `group` that are not zombies, or None when /proc is not available."""
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None
    live = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name (which may contain spaces and parentheses): state ppid pgrp ...
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == group and fields[0] != b"Z":
            live.append(pid)
    return live


def _result(run: _Run, log_path: Path, timeout: float, cap: int) -> ToolOutput:
    output, total_lines, shown_lines, truncated, size = tail_of_log(log_path)
    parts = [output if output.strip() else "(no output)"]
    if truncated:
        partial = " (the first of them cut)" if output.startswith("\u2026 ") else ""
        parts.append(f"[Output truncated: showing the last {shown_lines} of {total_lines} lines{partial}, "
                     f"{format_size(len(output.encode()))} of {format_size(size)}. Full output: {log_path}]")
    else:
        log_path.unlink(missing_ok=True)
    status = _status(run, timeout, cap)
    if status:
        parts.append(status)
    if run.leftovers_killed:
        many = run.leftovers_killed > 1
        parts.append(f"[{run.leftovers_killed} background process{'es' if many else ''} left running by the "
                     f"command {'were' if many else 'was'} killed when it returned.]")
    is_error = run.timed_out or run.cancelled or run.output_capped or run.returncode != 0
    return ToolOutput(
        "\n\n".join(parts), is_error=is_error,
        details={"exit_code": run.returncode, "timed_out": run.timed_out, "cancelled": run.cancelled,
                 "output_capped": run.output_capped, "background_killed": run.leftovers_killed,
                 "full_output_path": str(log_path) if truncated else None, "truncated": truncated,
                 "duration_seconds": round(run.seconds, 3)},
    )


def _status(run: _Run, timeout: float, cap: int) -> str:
    advice = "Redirect large output to a file in the workspace, or filter it (grep, tail)."
    if run.capped_after_exit:
        return f"Command output passed the {format_size(cap)} limit before it ended; the rest was dropped. {advice}"
    if run.output_capped:
        return (f"Command output reached the {format_size(cap)} limit; it and every process it started were "
                f"killed. {advice}")
    if run.timed_out:
        return f"Command timed out after {timeout:g} s; it and every process it started were killed."
    if run.cancelled:
        return "Command was cancelled; it and every process it started were killed."
    if run.returncode is not None and run.returncode < 0:
        try:
            name = signal.Signals(-run.returncode).name
        except ValueError:
            name = f"signal {-run.returncode}"
        return f"Command was killed by {name}."
    if run.returncode:
        return f"Command exited with code {run.returncode}."
    return ""


def tail_of_log(path: Path, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> tuple[str, int, int, bool, int]:
    """(text, total lines, lines shown, truncated?, size in bytes) for the last lines of a log file,
    reading only its tail."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        cut_bytes = size > max_bytes
        mid_line = False
        if cut_bytes:
            f.seek(size - max_bytes - 1)
            mid_line = f.read(1) != b"\n"
        data = f.read(max_bytes)
        if mid_line:
            # The budget starts inside a line: keep that line's tail (it may be most of the output, e.g.
            # one huge line), marked as partial, without a split UTF-8 character at its start.
            data = b"\xe2\x80\xa6 " + data[4:].lstrip(bytes(range(0x80, 0xC0)))
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        cut_lines = len(lines) > max_lines
        lines = lines[-max_lines:]
        truncated = cut_bytes or cut_lines
        total = _count_lines(f, size) if truncated else len(lines)
    text = _ANSI.sub("", b"\n".join(lines).decode("utf-8", errors="replace")).replace("\r\n", "\n")
    if "\r" in text:
        text = "\n".join(_as_displayed(line) for line in text.split("\n"))
    return text, total, len(lines), truncated, size


def _as_displayed(line: str) -> str:
    """A progress bar redrawn with carriage returns shows its last state, as a terminal would."""
    if "\r" not in line:
        return line
    return next((part for part in reversed(line.split("\r")) if part), "")


def _count_lines(f: BinaryIO, size: int) -> int:
    f.seek(0)
    count = 0
    last = b"\n"
    while chunk := f.read(1 << 20):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (1 if size and last != b"\n" else 0)
