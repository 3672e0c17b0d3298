"""`read`: a text file with line numbers, a window at a time.

The file is streamed, never loaded whole, so reading the end of a multi-gigabyte log costs memory for
the window only. Output stops at MAX_LINES lines or MAX_BYTES bytes, whichever comes first, and ends
with a notice naming the `offset` that continues it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import BinaryIO, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bot.tools.base import Tool, ToolContext, ToolError, ToolOutput
from bot.tools.paths import display_path, read_roots, resolve_for_read, resolve_path

MAX_LINES = 2000
MAX_BYTES = 50 * 1024
MAX_LINE_CHARS = 2000
# Enough bytes for MAX_LINE_CHARS characters of UTF-8; the rest of a longer line is skipped, not loaded.
_LINE_READ_BYTES = MAX_LINE_CHARS * 4
_SNIFF_BYTES = 8192  # like git: a NUL in the first 8 KB means binary
_COUNT_CHUNK = 1 << 20

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF-", "a PDF document"), (b"PK\x03\x04", "a zip archive"), (b"\x7fELF", "an ELF executable"),
    (b"\x1f\x8b", "a gzip archive"), (b"SQLite format 3\x00", "an SQLite database"),
)


def format_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


class ReadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="File path, relative to the workspace.")
    offset: int | None = Field(
        default=None, ge=1,
        description="First line to read, 1-based.",
    )
    limit: int | None = Field(
        default=None, ge=1,
        description=f"Maximum lines (at most {MAX_LINES}).",
    )


class ReadTool(Tool):
    name: ClassVar[str] = "read"
    description: ClassVar[str] = (
        "Read a text file, with numbered lines. Output stops at "
        f"{MAX_LINES} lines or {MAX_BYTES // 1024} KB with a notice naming the offset to continue from; "
        "use offset/limit to read part of a large file. Only paths inside the workspace may be read."
    )
    Params: ClassVar[type[BaseModel]] = ReadParams

    def run(self, params: ReadParams, ctx: ToolContext) -> ToolOutput:
        path = resolve_for_read(ctx.workspace, params.path, read_roots(ctx))
        named = resolve_path(ctx.workspace, params.path)
        shown = display_path(ctx.workspace, named)
        if not path.exists() and named.is_symlink():
            raise ToolError(f"{shown} is a broken symlink (it points to {os.readlink(named)})")
        _check_readable_file(path, shown)
        try:
            with open(path, "rb") as f:
                _reject_binary(f, shown, os.fstat(f.fileno()).st_size)
                window = _read_window(f, shown, params.offset or 1, min(params.limit or MAX_LINES, MAX_LINES),
                                      explicit_limit=params.limit is not None and params.limit <= MAX_LINES)
        except PermissionError as exc:
            raise ToolError(f"Cannot read {shown}: permission denied") from exc
        except IsADirectoryError as exc:
            raise ToolError(f"{shown} is a directory, not a file; use ls to list it") from exc
        except OSError as exc:
            raise ToolError(f"Cannot read {shown}: {exc.strerror or exc}") from exc
        return window


def _check_readable_file(path: Path, shown: str) -> None:
    if path.is_dir():
        raise ToolError(f"{shown} is a directory, not a file; use ls to list it")
    if not path.exists():
        hint = _similar_names(path)
        if path.is_symlink():
            raise ToolError(f"{shown} is a broken symlink (it points to {os.readlink(path)})")
        raise ToolError(f"File not found: {shown}{hint}")
    if not path.is_file():
        raise ToolError(f"{shown} is not a regular file (a device, socket or FIFO); read only reads files")


def _similar_names(path: Path) -> str:
    try:
        names = os.listdir(path.parent)
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    return f". Similar names in that directory: {', '.join(close)}" if close else ""


def _reject_binary(f: BinaryIO, shown: str, size: int) -> None:
    head = f.read(_SNIFF_BYTES)
    f.seek(0)
    nul = head.find(b"\x00")
    if nul < 0:
        return
    _raise_binary(shown, head, nul, size)


def _raise_binary(shown: str, head: bytes, nul_offset: int, size: int | None) -> None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ToolError(f"{shown} is UTF-16 encoded text; read shows UTF-8 only. Use bash "
                        "(`iconv -f UTF-16 -t UTF-8 FILE`) to view or convert it.")
    kind = next((label for magic, label in _MAGIC if head.startswith(magic)), "a binary file")
    size_text = f"{format_size(size)}; " if size is not None else ""
    raise ToolError(
        f"{shown} is {kind} ({size_text}NUL byte at offset {nul_offset}), not text; read only "
        "shows text. Use bash (e.g. `file`, `xxd | head`) to inspect it."
    )


class _Window:
    """Collects numbered lines until a cap is reached."""

    def __init__(self, first_line: int, max_lines: int) -> None:
        self.first_line = first_line
        self.max_lines = max_lines
        self.parts: list[str] = []
        self.size = 0
        self.cut_lines: list[int] = []
        self.stop_reason: str | None = None  # "lines" or "bytes" once full

    @property
    def count(self) -> int:
        return len(self.parts)

    def add(self, number: int, text: str, cut: bool) -> bool:
        """Add a line; False (and nothing added) when the window is full."""
        if self.count >= self.max_lines:
            self.stop_reason = "lines"
            return False
        if cut:
            text = f"{text} … [line cut at {MAX_LINE_CHARS} characters]"
        formatted = f"{number:>6}\t{text}\n"
        size = len(formatted.encode("utf-8"))
        if self.size + size > MAX_BYTES and self.parts:
            self.stop_reason = "bytes"
            return False
        self.parts.append(formatted)
        self.size += size
        if cut:
            self.cut_lines.append(number)
        return True


def _read_window(f: BinaryIO, shown: str, offset: int, max_lines: int, explicit_limit: bool) -> ToolOutput:
    window = _Window(offset, max_lines)
    number = 0  # lines seen so far
    position = 0  # byte offset of the next line, for error messages
    while True:
        head, length, ended = _next_line(f)
        if length == 0:
            break
        number += 1
        line_start, position = position, position + length
        if number < offset:
            continue
        text, cut = _decode_line(head, length, shown, line_start)
        if not window.add(number, text, cut):
            # Full: count what is left so the notice can say "of N" without holding any of it.
            number += _count_remaining_lines(f) if ended else 0
            break
    if number == 0 and offset == 1:
        return ToolOutput(f"[{shown} is empty]", details={"path": shown, "total_lines": 0})
    if offset > number:
        raise ToolError(f"offset {offset} is beyond the end of {shown}, which has {number} line"
                        f"{'s' if number != 1 else ''}")
    return _render(window, shown, number, explicit_limit)


def _next_line(f: BinaryIO) -> tuple[bytes, int, bool]:
    """(first bytes of the line, its full length in bytes, whether it ended with a newline)."""
    head = f.readline(_LINE_READ_BYTES)
    if not head or head.endswith(b"\n"):
        return head, len(head), bool(head)
    length = len(head)
    while True:  # skip the rest of an over-long line without holding it
        rest = f.readline(_COUNT_CHUNK)
        length += len(rest)
        if not rest:
            return head, length, False
        if rest.endswith(b"\n"):
            return head, length, True


def _decode_line(head: bytes, length: int, shown: str, line_start: int) -> tuple[str, bool]:
    body = head[:-1] if head.endswith(b"\n") else head
    if body.endswith(b"\r"):
        body = body[:-1]  # CRLF files show like LF ones; edit restores the file's line endings
    partial = len(head) < length
    if partial:
        body = _trim_partial_utf8(body)
    nul = body.find(b"\x00")
    if nul >= 0:
        _raise_binary(shown, b"", line_start + nul, None)
    if line_start == 0 and body.startswith(b"\xef\xbb\xbf"):
        body, line_start = body[3:], 3  # a UTF-8 BOM is not content (edit keeps it)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = body[exc.start]
        raise ToolError(
            f"{shown} is not UTF-8: invalid byte 0x{bad:02x} at offset {line_start + exc.start}. "
            "read only shows UTF-8 text; use bash (e.g. `iconv -f latin1 -t utf-8 FILE`) to convert or view it."
        ) from exc
    if len(text) > MAX_LINE_CHARS:
        return text[:MAX_LINE_CHARS], True
    return text, partial


def _trim_partial_utf8(data: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence at the end (the line was cut mid-character)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        needed = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return data[:-back] if needed > back else data
    return data


def _count_remaining_lines(f: BinaryIO) -> int:
    """Lines from the current position to the end (a final line without a newline counts)."""
    count = 0
    last = b"\n"
    while chunk := f.read(_COUNT_CHUNK):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (1 if last and last != b"\n" else 0)


def _render(window: _Window, shown: str, total: int, explicit_limit: bool) -> ToolOutput:
    first = window.first_line
    last = first + window.count - 1
    text = "".join(window.parts)
    notices: list[str] = []
    if window.cut_lines:
        lines = ", ".join(str(n) for n in window.cut_lines[:10]) + (" …" if len(window.cut_lines) > 10 else "")
        notices.append(f"[Lines longer than {MAX_LINE_CHARS} characters were cut: {lines}. "
                       "Use bash (e.g. `sed -n 'Np' FILE | cut -c2001-4000`) to see the rest.]")
    truncated = last < total
    if truncated:
        if window.stop_reason == "bytes":
            why = f" ({MAX_BYTES // 1024} KB limit)"
        elif window.stop_reason == "lines" and not explicit_limit:
            why = f" ({MAX_LINES}-line limit)"
        else:
            why = ""
        notices.append(f"[Showing lines {first}-{last} of {total}{why}. Use offset={last + 1} to continue.]")
    if notices:
        text += "\n" + "\n".join(notices)
    return ToolOutput(text, details={"path": shown, "start_line": first, "end_line": last,
                                     "total_lines": total, "truncated": truncated})
