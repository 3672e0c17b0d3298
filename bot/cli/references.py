"""`@path` references in a message: the files they name are attached to the message sent to the model.

The REPL refuses to send a message whose reference cannot be attached (the text comes back in the
editor); print mode warns and sends the rest. Only text the user typed is expanded: print mode never
expands piped stdin, which may hold hostile text (a CI log naming `@~/.ssh/id_rsa`).
"""

from __future__ import annotations

import base64
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.llm.messages import ImageContent, TextContent, UserContent, UserMessage

MAX_ATTACHMENT_BYTES = 256 * 1024
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}

# `@path` at the start or after whitespace; a path may be quoted to contain spaces: @"my file.txt".
_REFERENCE = re.compile(r'(?:(?<=\s)|^)@(?:"([^"]+)"|(\S+))')


class InputError(Exception):
    """A message that cannot be sent as typed (a missing or unreadable @file). The text is kept."""


@dataclass
class Attachment:
    path: Path
    shown_as: str
    content: UserContent


@dataclass
class PreparedMessage:
    text: str
    attachments: list[Attachment] = field(default_factory=list)

    def to_user_message(self, context_prefix: Sequence[str] = ()) -> UserMessage:
        """The message sent to the agent: pending shell output first, then the text, then the files."""
        parts: list[UserContent] = [TextContent(text=block) for block in context_prefix]
        parts.append(TextContent(text=self.text))
        parts.extend(attachment.content for attachment in self.attachments)
        if len(parts) == 1:
            return UserMessage(content=self.text)
        return UserMessage(content=parts)


def _strip_trailing_punctuation(raw: str) -> str:
    # "look at @src/a.py, then" — the comma is prose, not part of the path.
    return raw.rstrip(".,;:!?)]}'\"")


def find_references(text: str) -> list[str]:
    found: list[str] = []
    for match in _REFERENCE.finditer(text):
        raw = match.group(1) if match.group(1) is not None else _strip_trailing_punctuation(match.group(2))
        if raw and raw not in found:
            found.append(raw)
    return found


def _looks_like_path(raw: str) -> bool:
    # "@alice" in prose is a mention, not a file; a slash, a dot or a ~ makes it a path.
    return "/" in raw or "." in raw or raw.startswith("~")


def collect_references(text: str, cwd: Path) -> tuple[list[Attachment], list[str]]:
    """The files every `@path` names, and a problem for each reference that looks like a path but
    cannot be attached (missing, binary, too large)."""
    attachments: list[Attachment] = []
    problems: list[str] = []
    for raw in find_references(text):
        path = (cwd / Path(raw).expanduser()).resolve() if not raw.startswith("/") else Path(raw)
        if not path.exists():
            if _looks_like_path(raw) or (cwd / raw).exists():
                problems.append(f"@{raw}: no such file")
            continue
        try:
            attachments.append(_attach(path, raw))
        except (InputError, OSError) as exc:
            problems.append(f"@{raw}: {exc}")
    return attachments, problems


def expand_references(text: str, cwd: Path) -> PreparedMessage:
    """Attach every `@path` that names a file. A reference that looks like a path but cannot be
    attached raises InputError naming it, so the user can fix the message instead of sending it."""
    attachments, problems = collect_references(text, cwd)
    if problems:
        raise InputError("; ".join(problems))
    return PreparedMessage(text=text, attachments=attachments)


def _attach(path: Path, shown_as: str) -> Attachment:
    if path.is_dir():
        return Attachment(path, shown_as, TextContent(text=_directory_listing(path, shown_as)))
    size = path.stat().st_size
    mime, _ = mimetypes.guess_type(path.name)
    if mime in IMAGE_TYPES:
        if size > 5 * 1024 * 1024:
            raise InputError(f"the image is {size // 1024} KB; the limit is 5 MB")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return Attachment(path, shown_as, ImageContent(data=data, mime_type=mime or "image/png"))
    if size > MAX_ATTACHMENT_BYTES:
        raise InputError(f"the file is {size // 1024} KB; attach at most {MAX_ATTACHMENT_BYTES // 1024} KB "
                         "(ask the agent to read parts of it instead)")
    raw = path.read_bytes()
    if b"\0" in raw[:8192]:
        raise InputError("it is a binary file")
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("it is not UTF-8 text") from None
    return Attachment(path, shown_as, TextContent(text=f'<file path="{shown_as}">\n{content}\n</file>'))


def _directory_listing(path: Path, shown_as: str, limit: int = 200) -> str:
    entries = sorted(path.iterdir(), key=lambda p: (not p.is_dir(), p.name))
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f"\n… {len(entries) - limit} more entries" if len(entries) > limit else ""
    return f'<directory path="{shown_as}">\n' + "\n".join(names) + more + "\n</directory>"
