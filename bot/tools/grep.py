"""`grep`: search file contents with a regex, respecting .gitignore.

Uses ripgrep when it is on PATH and a Python fallback otherwise; both produce the same output:
`path:line:text` for matching lines, `path-line-text` for context lines, `--` between separate groups
when context is asked for. Paths are relative to the workspace. Files are visited in path order.

Both backends run as subprocesses with the context's scrubbed environment, their own process group and
PR_SET_PDEATHSIG, and are killed on cancel or after `ctx.search_timeout` seconds. The Python fallback is
`grep_fallback.py` run with `python -I`, so that a catastrophic regex (`(a+)+$`) can be killed too.
Neither follows symlinks found while walking a directory, and the path searched must resolve inside the
workspace (see paths.py), so neither can be pointed at `/proc/self/environ`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.tools.base import Tool, ToolContext, ToolError, ToolOutput
from bot.tools.find import GlobMatcher, list_files
from bot.tools.paths import display_path, read_roots, resolve_for_read
from bot.tools.proc import tool_command
from bot.tools.read import MAX_BYTES

DEFAULT_LIMIT = 100
MAX_LINE_CHARS = 500
_FALLBACK_SCRIPT = Path(__file__).with_name("grep_fallback.py")
Backend = Literal["auto", "rg", "python"]


class GrepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pattern: str = Field(description="Regex (ripgrep syntax), or text with literal.")
    path: str = Field(default=".", description="File or directory to search.")
    glob: str | None = Field(
        default=None,
        description="Only files matching this glob ('*.py', 'src/**/*.ts').",
    )
    ignore_case: bool = Field(default=False, description="Ignore case.")
    literal: bool = Field(default=False, description="Pattern is plain text.")
    context: int = Field(default=0, ge=0, le=50, description="Lines around each match.")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, description="Maximum matching lines.")


@dataclass
class _Line:
    path: str  # relative to the search root
    number: int
    text: str
    is_match: bool


class GrepTool(Tool):
    name: ClassVar[str] = "grep"
    description: ClassVar[str] = (
        "Search file contents for a regex, skipping .gitignore'd, .git and binary files. Prints "
        "`path:line:text`."
    )
    Params: ClassVar[type[BaseModel]] = GrepParams

    def __init__(self, backend: Backend = "auto", rg_path: str | None = None) -> None:
        """`backend`: "rg" requires ripgrep, "python" never uses it, "auto" uses it when found."""
        self.backend = backend
        self.rg_path = rg_path

    def _ripgrep(self) -> str | None:
        if self.backend == "python":
            return None
        found = self.rg_path or shutil.which("rg")
        if found is not None:
            found = os.path.abspath(found)
        if found is None and self.backend == "rg":
            raise ToolError("ripgrep (rg) is not installed")
        return found

    def run(self, params: GrepParams, ctx: ToolContext) -> ToolOutput:
        if not params.pattern:
            raise ToolError("pattern is empty")
        target = resolve_for_read(ctx.workspace, params.path, read_roots(ctx))
        shown = display_path(ctx.workspace, target)
        if not target.exists():
            raise ToolError(f"Path not found: {shown}")
        root = target if target.is_dir() else target.parent
        glob = GlobMatcher(params.glob) if params.glob else None
        rg = self._ripgrep()
        stop = _Stop(ctx.cancel, ctx.search_timeout)
        env = ctx.command_env()
        search = (_search_rg(rg, target, params, stop, env) if rg
                  else _search_python(target, params, glob, stop, env))
        lines, capped, warnings = _take(search, params.limit, params.context)
        if not any(line.is_match for line in lines):
            note = "".join(f"\n{w}" for w in warnings)
            return ToolOutput(f"No matches for {params.pattern!r} in {shown}.{note}",
                              details={"matches": 0, "truncated": False})
        names: dict[str, str] = {}

        def shown_name(relative: str) -> str:
            if relative not in names:
                names[relative] = display_path(ctx.workspace, root / relative)
            return names[relative]

        return _render(lines, capped, warnings, params, shown_name)


def _take(search: Generator[_Line | str, None, None], limit: int, context: int) -> tuple[list[_Line], bool, list[str]]:
    """Lines up to the `limit`-th match and its after-context; strings from the search are warnings.
    Closes the search (and so stops ripgrep) as soon as it knows there are more matches."""
    lines: list[_Line] = []
    warnings: list[str] = []
    matches = 0
    capped = False
    try:
        for item in search:
            if isinstance(item, str):
                warnings.append(item)
                continue
            if item.is_match:
                if matches == limit:
                    capped = True
                    break
                matches += 1
            elif matches == limit and not _continues(lines, item, context):
                continue  # before-context of a match we will not show
            lines.append(item)
    finally:
        search.close()
    return lines, capped, warnings


def _continues(lines: list[_Line], line: _Line, context: int) -> bool:
    """Whether a context line directly follows the shown lines, within `context` lines of the last match."""
    if not lines:
        return False
    last = lines[-1]
    last_match = next(item for item in reversed(lines) if item.is_match)
    return (line.path == last.path == last_match.path and line.number == last.number + 1
            and line.number <= last_match.number + context)


def _render(lines: list[_Line], capped: bool, warnings: list[str], params: GrepParams,
            shown: Callable[[str], str]) -> ToolOutput:
    out: list[str] = []
    size = 0
    previous: _Line | None = None
    matches = 0
    cut_by_size = False
    for line in lines:
        if params.context and previous is not None and (
                previous.path != line.path or line.number != previous.number + 1):
            out.append("--")
        text = line.text if len(line.text) <= MAX_LINE_CHARS else line.text[:MAX_LINE_CHARS] + " … [line cut]"
        mark = ":" if line.is_match else "-"
        rendered = f"{shown(line.path)}{mark}{line.number}{mark}{text}"
        size += len(rendered.encode("utf-8")) + 1
        if size > MAX_BYTES:
            cut_by_size = True
            break
        out.append(rendered)
        matches += line.is_match
        previous = line
    text = "\n".join(out)
    if cut_by_size:
        text += (f"\n\n[Output cut at {MAX_BYTES // 1024} KB after {matches} matches; narrow the search with "
                 "path or glob, or a more specific pattern.]")
    elif capped:
        text += (f"\n\n[Showing the first {params.limit} matches; there are more. Narrow the search with path "
                 "or glob, or pass a larger limit.]")
    if warnings:
        text += "\n\n" + "\n".join(warnings[:5])
    return ToolOutput(text, details={"matches": matches, "truncated": capped or cut_by_size})


# -- subprocess control ------------------------------------------------------------------------------------
class _Stop:
    """Kills a search subprocess when the turn is cancelled or the search runs out of time, even while it
    produces no output, and remembers which of the two happened."""

    def __init__(self, cancel: threading.Event, timeout: float) -> None:
        self.cancel = cancel
        self.timeout = timeout
        self.reason: str | None = None

    def watch(self, proc: subprocess.Popen[bytes], done: threading.Event) -> threading.Thread:
        """Start watching `proc` until `done` is set (at once when set: joining the watcher never waits)."""
        deadline = time.monotonic() + self.timeout
        thread = threading.Thread(target=self._kill_when_due, args=(proc, deadline, done), daemon=True)
        thread.start()
        return thread

    def _kill_when_due(self, proc: subprocess.Popen[bytes], deadline: float, done: threading.Event) -> None:
        while not done.wait(min(0.05, max(deadline - time.monotonic(), 0))):
            if self.cancel.is_set():
                self.reason = "cancelled"
            elif time.monotonic() >= deadline:
                self.reason = "timed_out"
            else:
                continue
            proc.kill()
            return

    def raise_if_stopped(self) -> None:
        if self.reason == "cancelled" or self.cancel.is_set():
            raise ToolError("grep was cancelled")
        if self.reason == "timed_out":
            raise ToolError(f"grep was stopped after {self.timeout:g} s. Narrow the search with path or glob, "
                            "or simplify the pattern.")


def _stream(command: list[str], cwd: Path, stdin: int | IO[bytes], stop: _Stop, env: Mapping[str, str],
            what: str) -> Generator[bytes, None, tuple[int, str]]:
    """Run a search subprocess and yield its stdout lines; returns (exit code, stderr). Kills it when the
    consumer stops early, on cancel and on timeout."""
    with tempfile.TemporaryFile() as stderr:
        try:
            argv, kwargs = tool_command(command, env)
            proc = subprocess.Popen(argv, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, **kwargs)
        except OSError as exc:
            raise ToolError(f"Could not run {what}: {exc.strerror or exc}") from exc
        assert proc.stdout is not None
        done = threading.Event()
        watcher = stop.watch(proc, done)
        try:
            yield from proc.stdout
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()
            done.set()
            watcher.join()
        stop.raise_if_stopped()
        stderr.seek(0)
        return proc.returncode, stderr.read().decode("utf-8", errors="replace").strip()


# -- ripgrep -------------------------------------------------------------------------------------------
def _search_rg(rg: str, target: Path, params: GrepParams, stop: _Stop,
               env: Mapping[str, str]) -> Generator[_Line | str, None, None]:
    cwd, where = (target, ".") if target.is_dir() else (target.parent, target.name)
    # No --follow: symlinks met while walking are not followed, so a link cannot lead outside the workspace.
    command = [rg, "--json", "--no-config", "--hidden", "--no-ignore-dot", "--sort", "path",
               "--glob", "!.git"]
    if params.glob:
        command += ["--glob", params.glob]
    if params.ignore_case:
        command.append("--ignore-case")
    if params.literal:
        command.append("--fixed-strings")
    if params.context:
        command += ["--context", str(params.context)]
    command += ["--regexp", params.pattern, "--", where]
    lines = _stream(command, cwd, subprocess.DEVNULL, stop, env, f"ripgrep ({rg})")
    returncode, errors, found = yield from _parsed(lines, _parse_rg_event)
    if returncode == 2 and errors:
        if found:
            yield f"[Some files could not be searched: {errors.splitlines()[0]}]"
        elif "regex" in errors:
            raise ToolError(f"Invalid pattern: {errors}. Set literal=true to search for the text as is.")
        else:
            raise ToolError(f"ripgrep failed: {errors}")


def _parsed(lines: Generator[bytes, None, tuple[int, str]],
            parse: Callable[[bytes], _Line | None]) -> Generator[_Line, None, tuple[int, str, int]]:
    """The parsed lines of a search subprocess (`_stream`); returns (exit code, stderr, lines yielded).
    Closing this generator early stops the search."""
    count = 0
    try:
        while True:
            try:
                raw = next(lines)
            except StopIteration as done:
                returncode, errors = done.value
                return returncode, errors, count
            line = parse(raw)
            if line is not None:
                count += 1
                yield line
    finally:
        lines.close()  # stops the subprocess when the caller has enough


def _parse_fallback_event(raw: bytes) -> _Line | None:
    try:
        event = json.loads(raw)
    except ValueError:
        return None  # a line cut short by a kill; the kill's reason is reported
    if "error" in event:
        raise ToolError(f"Invalid pattern: {event['error']}. Set literal=true to search for the text as is.")
    return _Line(event["path"], event["line"], event["text"], event["match"])


def _parse_rg_event(raw: bytes) -> _Line | None:
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    kind = event.get("type")
    if kind not in ("match", "context"):
        return None
    data = event["data"]
    path = _rg_text(data["path"]).removeprefix("./")
    text = _rg_text(data["lines"]).rstrip("\n").removesuffix("\r")
    return _Line(path, int(data["line_number"]), text, kind == "match")


def _rg_text(field: dict[str, str]) -> str:
    if "text" in field:
        return field["text"]
    return base64.b64decode(field.get("bytes", "")).decode("utf-8", errors="replace")


# -- Python fallback -------------------------------------------------------------------------------------
def _search_python(target: Path, params: GrepParams, glob: GlobMatcher | None, stop: _Stop,
                   env: Mapping[str, str]) -> Generator[_Line | str, None, None]:
    if target.is_dir():
        root = target
        files = [p for p in list_files(target, env) if glob is None or glob.matches(p)]
    else:
        root = target.parent
        files = [target.name]
    if stop.cancel.is_set():
        raise ToolError("grep was cancelled")
    request = {"pattern": params.pattern, "ignore_case": params.ignore_case, "literal": params.literal,
               "context": params.context, "root": str(root), "files": files}
    # `-I`: the workspace may hold a module named like a standard one; nothing from it may be imported.
    command = [sys.executable, "-I", str(_FALLBACK_SCRIPT)]
    with tempfile.TemporaryFile() as stdin:
        stdin.write(json.dumps(request).encode())
        stdin.seek(0)
        lines = _stream(command, root, stdin, stop, env, "the Python search")
        returncode, errors, _ = yield from _parsed(lines, _parse_fallback_event)
    if returncode != 0:
        raise ToolError(f"The Python search failed: {errors.splitlines()[-1] if errors else returncode}")
