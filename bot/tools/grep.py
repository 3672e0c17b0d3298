"""`grep`: search file contents with a regex, respecting .gitignore.

Uses ripgrep when it is on PATH and a Python fallback otherwise; both produce the same output:
`path:line:text` for matching lines, `path-line-text` for context lines, `--` between separate groups
when context is asked for. Paths are relative to the workspace. Files are visited in path order.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.tools.base import Tool, ToolContext, ToolError, ToolOutput
from bot.tools.find import GlobMatcher, list_files
from bot.tools.paths import display_path, resolve_for_read
from bot.tools.read import MAX_BYTES

DEFAULT_LIMIT = 100
MAX_LINE_CHARS = 500
_SNIFF_BYTES = 8192
Backend = Literal["auto", "rg", "python"]


class GrepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pattern: str = Field(description="Regular expression to search for (or plain text with literal=true).")
    path: str = Field(default=".", description="File or directory to search (default: the workspace).")
    glob: str | None = Field(
        default=None,
        description="Only search files matching this glob: '*.py' matches names at any depth, 'src/**/*.ts' "
                    "matches paths relative to `path`.",
    )
    ignore_case: bool = Field(default=False, description="Match case-insensitively.")
    literal: bool = Field(default=False, description="Treat pattern as plain text, not a regex.")
    context: int = Field(default=0, ge=0, le=50, description="Lines of context to show before and after each match.")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, description=f"Maximum matching lines (default {DEFAULT_LIMIT}).")


@dataclass
class _Line:
    path: str  # relative to the search root
    number: int
    text: str
    is_match: bool


class GrepTool(Tool):
    name: ClassVar[str] = "grep"
    description: ClassVar[str] = (
        "Search file contents for a regular expression (ripgrep syntax), skipping .gitignore'd files, .git "
        "and binary files. Output lines are `path:line:text` (context lines `path-line-text`). Results stop at "
        f"`limit` matches (default {DEFAULT_LIMIT}) with a notice; long lines are cut at {MAX_LINE_CHARS} "
        "characters. Use glob to restrict to some files."
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
        if found is None and self.backend == "rg":
            raise ToolError("ripgrep (rg) is not installed")
        return found

    def run(self, params: GrepParams, ctx: ToolContext) -> ToolOutput:
        if not params.pattern:
            raise ToolError("pattern is empty")
        target = resolve_for_read(ctx.workspace, params.path)
        shown = display_path(ctx.workspace, target)
        if not target.exists():
            raise ToolError(f"Path not found: {shown}")
        root = target if target.is_dir() else target.parent
        glob = GlobMatcher(params.glob) if params.glob else None
        rg = self._ripgrep()
        cancel = ctx.cancel
        search = _search_rg(rg, target, params, cancel) if rg else _search_python(target, params, glob, cancel)
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


# -- ripgrep -------------------------------------------------------------------------------------------
def _search_rg(rg: str, target: Path, params: GrepParams, cancel: threading.Event) -> Generator[_Line | str, None, None]:
    cwd, where = (target, ".") if target.is_dir() else (target.parent, target.name)
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
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=stderr)
        except OSError as exc:
            raise ToolError(f"Could not run ripgrep ({rg}): {exc.strerror or exc}") from exc
        assert proc.stdout is not None
        watcher = threading.Thread(target=_kill_on_cancel, args=(proc, cancel), daemon=True)
        watcher.start()
        found_any = False
        try:
            for raw in proc.stdout:
                line = _parse_rg_event(raw)
                if line is not None:
                    found_any = True
                    yield line
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()
            watcher.join()
        if cancel.is_set():
            raise ToolError("grep was cancelled")
        stderr.seek(0)
        errors = stderr.read().decode("utf-8", errors="replace").strip()
    if proc.returncode == 2 and errors:
        if found_any:
            yield f"[Some files could not be searched: {errors.splitlines()[0]}]"
        elif "regex" in errors:
            raise ToolError(f"Invalid pattern: {errors}. Set literal=true to search for the text as is.")
        else:
            raise ToolError(f"ripgrep failed: {errors}")


def _kill_on_cancel(proc: subprocess.Popen[bytes], cancel: threading.Event) -> None:
    """Stop ripgrep when the turn is cancelled, even while it is searching without output."""
    while proc.poll() is None:
        if cancel.wait(0.05):
            proc.kill()
            return


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
def _compile(params: GrepParams) -> re.Pattern[str]:
    source = re.escape(params.pattern) if params.literal else params.pattern
    try:
        return re.compile(source, re.IGNORECASE if params.ignore_case else 0)
    except re.error as exc:
        raise ToolError(f"Invalid pattern: {exc}. Set literal=true to search for the text as is.") from exc


def _search_python(target: Path, params: GrepParams, glob: GlobMatcher | None,
                   cancel: threading.Event) -> Generator[_Line | str, None, None]:
    regex = _compile(params)
    if target.is_dir():
        files: Iterator[str] = (p for p in list_files(target) if glob is None or glob.matches(p))
        root = target
    else:
        files = iter([target.name])
        root = target.parent
    for relative in files:
        if cancel.is_set():
            raise ToolError("grep was cancelled")
        yield from _search_file(root / relative, relative, regex, params.context)


def _search_file(path: Path, relative: str, regex: re.Pattern[str], context: int) -> Iterator[_Line]:
    """Stream one file's matches with their context, reading it a line at a time."""
    try:
        if not path.is_file():
            return
        f = open(path, "rb")  # noqa: SIM115 - closed by the `with` below; opened apart so that only opening errors are skipped
    except OSError:
        return  # unreadable: skipped, as ripgrep does
    with f:
        if b"\x00" in f.read(_SNIFF_BYTES):
            return  # binary
        f.seek(0)
        before: deque[_Line] = deque(maxlen=context)
        after_left = 0
        for number, raw in enumerate(f, 1):
            if b"\x00" in raw:
                return  # ripgrep stops at the first NUL it meets
            text = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
            if regex.search(text) is not None:
                yield from before
                before.clear()
                yield _Line(relative, number, text, True)
                after_left = context
            elif after_left:
                yield _Line(relative, number, text, False)
                after_left -= 1
            elif context:
                before.append(_Line(relative, number, text, False))
