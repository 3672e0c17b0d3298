"""Sessions: append-only JSONL trees that survive `kill -9`, resume anywhere and rebuild the context.

The public format is documented in docs/session-format.md. In short: the first line is a header
(`{"type":"session","version":1,...}`), every later line is an entry carrying `id`, `parent_id` and
`timestamp`. `parent_id` links an entry to the previous one on its branch, so the file is a tree, and the
*tip* of the active branch is the last entry of the file (a `leaf` entry moves it to its `entry_id`).

Design choices that matter for users:
- Writing: one `write()` of a complete line per entry, then `fsync`, so a crash loses at most the message
  still streaming. The file is never rewritten; the writer keeps the tip in memory, so appending costs the
  same at entry 100,000 as at entry 10.
- Reading: every line is parsed with `json.loads`, but only the messages of the active branch (after the
  latest compaction) are validated into pydantic objects, lazily. Corrupt lines and a truncated last line
  are skipped and reported in `Session.warnings`; entry types this version does not know are kept.
- Cumulative usage and cost are the sum over *every* assistant message and compaction call in the file,
  on every branch: that is what was really spent.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

from pydantic import ValidationError

from bot.llm.messages import (
    MESSAGE_ADAPTER,
    Cost,
    Message,
    TextContent,
    Usage,
    UserMessage,
    message_to_dict,
)

SESSION_VERSION = 1
KNOWN_ENTRY_TYPES = frozenset({"message", "compaction", "leaf", "model_change", "session_info",
                               "branch_summary"})

# Same wording as pi, so a session moved between the two clients gives the model the same context.
COMPACTION_SUMMARY_PREFIX = ("The conversation history before this point was compacted into the following "
                             "summary:\n\n<summary>\n")
COMPACTION_SUMMARY_SUFFIX = "\n</summary>"
BRANCH_SUMMARY_PREFIX = ("The following is a summary of a branch that this conversation came back "
                         "from:\n\n<summary>\n")
BRANCH_SUMMARY_SUFFIX = "\n</summary>"

_HEADER_FIELDS = ("type", "version", "id", "timestamp", "cwd", "parent_session", "model", "repo",
                  "git_commit", "origin", "metadata")


class SessionError(Exception):
    """A session cannot be opened, found or written. The message names the file and the problem."""


class SessionFormatError(SessionError):
    """The file is not a session (its first line is not a session header)."""


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_to_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


@dataclass
class SessionHeader:
    id: str
    timestamp: str
    cwd: str
    parent_session: str | None = None
    model: str | None = None  # "provider:model" the session started with
    repo: str | None = None  # e.g. "owner/name"
    git_commit: str | None = None
    origin: str | None = None  # where it ran, e.g. a CI run URL
    metadata: dict[str, Any] = field(default_factory=dict)  # free-form (issue/PR number, event, ...)
    version: int = SESSION_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys from a newer writer, kept

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "session", "version": self.version, "id": self.id,
                                "timestamp": self.timestamp, "cwd": self.cwd,
                                "parent_session": self.parent_session}
        for key in ("model", "repo", "git_commit", "origin"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        data["metadata"] = self.metadata
        data.update({k: v for k, v in self.extra.items() if k not in data})
        return data

    @staticmethod
    def from_dict(data: dict[str, Any], where: str) -> SessionHeader:
        def text(key: str, required: bool = False) -> str | None:
            value = data.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str):
                raise SessionFormatError(f"{where}: the session header's {key!r} must be a string, "
                                         f"found {value!r}")
            return value

        version = data.get("version", SESSION_VERSION)
        if not isinstance(version, int):
            raise SessionFormatError(f"{where}: the session header's version must be an integer, found "
                                     f"{version!r}")
        metadata = data.get("metadata") or {}
        return SessionHeader(
            id=text("id", required=True) or "",
            timestamp=text("timestamp") or "",
            cwd=text("cwd") or "",
            parent_session=text("parent_session"),
            model=text("model"),
            repo=text("repo"),
            git_commit=text("git_commit"),
            origin=text("origin"),
            metadata=metadata if isinstance(metadata, dict) else {"value": metadata},
            version=version,
            extra={k: v for k, v in data.items() if k not in _HEADER_FIELDS},
        )


class ContextItem(NamedTuple):
    """One message of the model's context and the entry it comes from (a tuple: a resume makes 100k).

    `kind` is "message" for a stored message, or "compaction_summary"/"branch_summary" for a summary
    rendered as a user message. `fresh` is False for messages the latest compaction kept from before it:
    their usage counts describe a context that no longer exists.
    """

    entry_id: str
    kind: Literal["message", "compaction_summary", "branch_summary"]
    message: Message
    fresh: bool = True


@dataclass
class Totals:
    usage: Usage
    cost: Cost


class Session:
    """A session file: its header, all entries (as dicts, in file order) and the active tip."""

    def __init__(self, header: SessionHeader, path: Path | None, *, source_format: str = "opi") -> None:
        self.header = header
        self.path = path
        self.source_format = source_format  # "pi" when converted from a pi file on load
        self.entries: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.tip: str | None = None
        self._index: dict[str, int] = {}
        self._messages: dict[str, Message | None] = {}
        self._file: IO[bytes] | None = None
        self._initial_items: tuple[str | None, list[ContextItem]] | None = None

    # -- creating and opening ---------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path | None, *, cwd: str | Path, parent_session: str | None = None,
               session_id: str | None = None, model: str | None = None, repo: str | None = None,
               git_commit: str | None = None, origin: str | None = None,
               metadata: dict[str, Any] | None = None) -> Session:
        """A new session. With a path, the header is written (and fsynced) at once; with None it lives
        in memory only (`--no-session`)."""
        header = SessionHeader(id=session_id or str(uuid.uuid4()), timestamp=iso_now(), cwd=str(cwd),
                               parent_session=parent_session, model=model, repo=repo,
                               git_commit=git_commit, origin=origin, metadata=dict(metadata or {}))
        session = cls(header, path)
        if path is not None:
            if path.exists() and path.stat().st_size > 0:
                raise SessionError(f"{path}: refusing to create a session over an existing file")
            path.parent.mkdir(parents=True, exist_ok=True)
            session._file = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open for appends
            session._write_line(header.to_dict())
        return session

    @classmethod
    def in_memory(cls, cwd: str | Path, **kwargs: Any) -> Session:
        return cls.create(None, cwd=cwd, **kwargs)

    @classmethod
    def load(cls, path: str | Path, *, reconstruct: bool = True) -> Session:
        """Read a session file (opi, or pi v1-v3 converted on the fly). Raises SessionError naming the
        file when it is missing, unreadable or not a session; anything else becomes a warning.
        With `reconstruct` the context is rebuilt at once (listings that only need the header, name and
        totals pass False and skip validating messages)."""
        file = Path(path)
        try:
            big = file.stat().st_size > _BIG_FILE_BYTES
        except OSError:
            big = False
        with _gc_paused(freeze=big):
            session = cls._load(file)
            if reconstruct:
                session._initial_items = (session.tip, session._context_items())
            return session

    @classmethod
    def _load(cls, file: Path) -> Session:
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise SessionError(f"{file}: no such session file") from None
        except OSError as exc:
            raise SessionError(f"{file}: cannot read the session: {exc.strerror or exc}") from None
        lines = _decode_lines(data)
        header_data = _parse_header_line(file, lines[0])
        if _is_pi_header(header_data):
            from bot.agent.pi_format import session_from_pi  # lazy: only pi files need the converter

            pi_session: Session = session_from_pi(file, header_data, lines)
            return pi_session
        session = cls(SessionHeader.from_dict(header_data, str(file)), file)
        if session.header.version > SESSION_VERSION:
            session.warnings.append(f"{file}: written by a newer format (version {session.header.version}); "
                                    "entry types this version does not know are ignored")
        session._load_lines(lines, ends_with_newline=data.endswith(b"\n"))
        return session

    def _load_lines(self, texts: list[str], *, ends_with_newline: bool) -> None:
        # The hot loop of a resume (100k lines in well under a second): one decode of the whole file, one
        # raw_decode per line, and the entry checks inlined.
        decode = _DECODER.raw_decode
        corrupt: list[int] = []
        index, entries = self._index, self.entries
        last = len(texts) - 1
        for number in range(1, len(texts)):
            raw = texts[number]
            if not raw:
                continue
            try:
                entry, end = decode(raw)
                if end != len(raw) and raw[end:].strip():
                    raise ValueError("trailing data")
            except ValueError:
                entry = _loads_lenient(raw)
                if entry is None:
                    if number == last and not ends_with_newline:
                        self.warnings.append(f"{self._where()}: line {number + 1} is a truncated last line "
                                             f"({len(raw.encode('utf-8', 'surrogateescape'))} bytes, "
                                             "probably cut by a crash); ignored")
                    else:
                        corrupt.append(number + 1)
                    continue
            if not _valid_entry(entry):
                corrupt.append(number + 1)
                continue
            entry_id = entry["id"]
            if entry_id in index:
                self.warnings.append(f"{self._where()}: line {number + 1} repeats entry id {entry_id!r}; "
                                     "ignored")
                continue
            index[entry_id] = len(entries)
            entries.append(entry)
            self._advance_tip(entry)
        if corrupt:
            shown = ", ".join(str(n) for n in corrupt[:20]) + (" ..." if len(corrupt) > 20 else "")
            self.warnings.append(f"{self._where()}: skipped {len(corrupt)} corrupt line(s): {shown}")

    def add_loaded_entry(self, entry: dict[str, Any], line: int | None = None) -> None:
        """Index an entry read from a file (used by the loaders; never writes)."""
        entry_id = entry["id"]
        if entry_id in self._index:
            where = f"line {line}" if line else "an entry"
            self.warnings.append(f"{self._where()}: {where} repeats entry id {entry_id!r}; ignored")
            return
        self._index[entry_id] = len(self.entries)
        self.entries.append(entry)
        self._advance_tip(entry)

    def _advance_tip(self, entry: dict[str, Any]) -> None:
        if entry["type"] == "leaf":
            target = entry.get("entry_id")
            self.tip = target if isinstance(target, str) or target is None else self.tip
        else:
            self.tip = entry["id"]

    def _where(self) -> str:
        return str(self.path) if self.path else "session"

    # -- writing ----------------------------------------------------------------------------------
    def open_for_append(self) -> None:
        """Make a loaded session writable. A truncated last line is terminated first so that the new
        entries start on their own line (the broken fragment stays, and is skipped as corrupt)."""
        if self._file is not None:
            return
        if self.path is None or self.source_format != "opi":
            raise SessionError(f"{self._where()}: this session cannot be appended to "
                               f"(format {self.source_format}); import it into a new opi session")
        try:
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open for appends
            if self._file.tell() > 0:
                with open(self.path, "rb") as reader:
                    reader.seek(-1, os.SEEK_END)
                    if reader.read(1) != b"\n":
                        self._file.write(b"\n")
        except OSError as exc:
            raise SessionError(f"{self.path}: cannot open the session for writing: "
                               f"{exc.strerror or exc}") from None

    @property
    def persistent(self) -> bool:
        return self.path is not None and self.source_format == "opi"

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write_line(self, data: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            line = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (undecodable tool output): escape them instead
            line = json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        try:
            self._file.write(line + b"\n")  # one write per entry: a crash never interleaves two lines
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise SessionError(f"{self.path}: cannot write the session: {exc.strerror or exc}") from None

    def new_id(self) -> str:
        while True:
            candidate = secrets.token_hex(4)
            if candidate not in self._index:
                return candidate

    def append(self, entry_type: str, **fields: Any) -> dict[str, Any]:
        """Append an entry on the active branch: written and fsynced before it is indexed."""
        if self.path is not None and self._file is None:
            self.open_for_append()
        entry: dict[str, Any] = {"type": entry_type, "id": self.new_id(), "parent_id": self.tip,
                                 "timestamp": iso_now()}
        if entry_type == "leaf":
            entry["parent_id"] = fields.get("entry_id")  # hangs where it points; nothing descends from it
        entry.update(fields)
        self._write_line(entry)
        self._index[entry["id"]] = len(self.entries)
        self.entries.append(entry)
        self._advance_tip(entry)
        return entry

    def append_raw(self, entry: dict[str, Any]) -> None:
        """Copy an existing entry (ids kept), e.g. into a fork or an imported session."""
        if self.path is not None and self._file is None:
            self.open_for_append()
        self._write_line(entry)
        self._index[entry["id"]] = len(self.entries)
        self.entries.append(entry)
        self._advance_tip(entry)

    def append_message(self, message: Message) -> str:
        entry = self.append("message", message=message_to_dict(message))
        self._messages[entry["id"]] = message
        return str(entry["id"])

    def append_compaction(self, *, summary: str, first_kept_entry_id: str | None, tokens_before: int,
                          tokens_after: int, read_files: list[str], modified_files: list[str],
                          **extra: Any) -> dict[str, Any]:
        return self.append("compaction", summary=summary, first_kept_entry_id=first_kept_entry_id,
                           tokens_before=tokens_before, tokens_after=tokens_after,
                           details={"read_files": read_files, "modified_files": modified_files}, **extra)

    def append_model_change(self, provider: str, model: str) -> dict[str, Any]:
        return self.append("model_change", provider=provider, model=model)

    def set_name(self, name: str) -> dict[str, Any]:
        return self.append("session_info", name=name)

    def switch_leaf(self, entry_id: str | None, *, summary: str | None = None) -> None:
        """Move the active tip to an earlier entry (None: before the first entry). With a summary of the
        abandoned branch, a `branch_summary` entry follows, so the model keeps what was learnt there."""
        if entry_id is not None and entry_id not in self._index:
            raise SessionError(f"{self._where()}: no entry with id {entry_id!r}")
        if entry_id is not None and self.entries[self._index[entry_id]]["type"] == "leaf":
            raise SessionError(f"{self._where()}: {entry_id!r} is a leaf marker, not a branch point")
        previous = self.tip
        self.append("leaf", entry_id=entry_id)
        if summary:
            self.append("branch_summary", summary=summary, from_id=previous)

    # -- reading ----------------------------------------------------------------------------------
    def entry(self, entry_id: str) -> dict[str, Any] | None:
        index = self._index.get(entry_id)
        return None if index is None else self.entries[index]

    def children(self, entry_id: str | None) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("parent_id") == entry_id and e["type"] != "leaf"]

    def branch(self) -> list[dict[str, Any]]:
        """The active branch: entries from the root to the active tip, oldest first."""
        return self.path_to(self.tip)

    def path_to(self, tip: str | None) -> list[dict[str, Any]]:
        """Entries from the root to `tip`, oldest first."""
        path = list(self._walk_back(tip))
        path.reverse()
        return path

    def _walk_back(self, tip: str | None) -> Iterator[dict[str, Any]]:
        current = tip
        index_of, entries = self._index, self.entries
        seen: set[str] = set()
        while current is not None and current not in seen:
            seen.add(current)
            index = index_of.get(current)
            if index is None:
                break
            entry = entries[index]
            yield entry
            parent = entry.get("parent_id")
            if parent is not None and parent not in index_of:
                # The parent's line was corrupt: in a linear file it was the line just before.
                self.warnings.append(f"{self._where()}: entry {current!r} names a missing parent "
                                     f"{parent!r}; continuing with the entry before it in the file")
                parent = entries[index - 1]["id"] if index > 0 else None
            current = parent

    def message_of(self, entry: dict[str, Any]) -> Message | None:
        """The entry's message, validated once and cached; None (with a warning) when invalid."""
        entry_id = entry["id"]
        if entry_id in self._messages:
            return self._messages[entry_id]
        message: Message | None
        try:
            message = MESSAGE_ADAPTER.validate_python(entry.get("message"))
        except ValidationError as exc:
            problem = exc.errors()[0]
            place = ".".join(str(p) for p in problem["loc"]) or "message"
            self.warnings.append(f"{self._where()}: entry {entry_id!r} has an invalid message "
                                 f"({place}: {problem['msg']}); left out of the context")
            message = None
        self._messages[entry_id] = message
        return message

    def context_items(self) -> list[ContextItem]:
        """The model's context for the active branch: the latest compaction's summary, the messages it
        kept (from `first_kept_entry_id`), then everything after it."""
        initial, self._initial_items = self._initial_items, None
        if initial is not None and initial[0] == self.tip:
            return list(initial[1])  # built by load(), nothing appended since
        with _gc_paused():
            return self._context_items()

    def _context_items(self) -> list[ContextItem]:
        path = self._context_path()
        compaction_at = next((i for i in range(len(path) - 1, -1, -1) if path[i]["type"] == "compaction"),
                             None)
        if compaction_at is None:
            return list(self._items_from(path, fresh=True))
        compaction = path[compaction_at]
        items = [ContextItem(compaction["id"], "compaction_summary",
                             summary_message(compaction.get("summary", ""), compaction.get("timestamp")))]
        first_kept = compaction.get("first_kept_entry_id")
        start = next((i for i in range(compaction_at) if path[i]["id"] == first_kept), compaction_at)
        if first_kept is not None and start == compaction_at:
            self.warnings.append(f"{self._where()}: compaction {compaction['id']!r} keeps from "
                                 f"{first_kept!r}, which is not on the active branch; nothing kept")
        items.extend(self._items_from(path[start:compaction_at], fresh=False))
        items.extend(self._items_from(path[compaction_at + 1:], fresh=True))
        return items

    def _context_path(self) -> list[dict[str, Any]]:
        """The part of the active branch the context needs: back to the latest compaction's first kept
        entry (the whole branch when there is no compaction), so a resume costs O(context), not O(file)."""
        path = self.branch() if not any(e["type"] == "compaction" for e in self.entries) else None
        if path is not None:
            return path
        collected: list[dict[str, Any]] = []
        stop_at: str | None = None
        compaction_seen = False
        for entry in self._walk_back(self.tip):
            collected.append(entry)
            if not compaction_seen and entry["type"] == "compaction":
                compaction_seen = True
                stop_at = entry.get("first_kept_entry_id")
                if stop_at is None:
                    break
            elif compaction_seen and entry["id"] == stop_at:
                break
        collected.reverse()
        return collected

    def _items_from(self, entries: Iterable[dict[str, Any]], *, fresh: bool) -> Iterator[ContextItem]:
        for entry in entries:
            kind = entry["type"]
            if kind == "message":
                message = self.message_of(entry)
                if message is not None:
                    yield ContextItem(entry["id"], "message", message, fresh)
            elif kind == "branch_summary" and entry.get("summary"):
                text = BRANCH_SUMMARY_PREFIX + str(entry["summary"]) + BRANCH_SUMMARY_SUFFIX
                yield ContextItem(entry["id"], "branch_summary",
                                  UserMessage(content=[TextContent(text=text)],
                                              timestamp=iso_to_ms(entry.get("timestamp")) or 0), fresh)

    def context(self) -> list[Message]:
        return [item.message for item in self.context_items()]

    def latest_compaction(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = None
        for candidate in reversed(self.branch()):
            if candidate["type"] == "compaction":
                found = candidate
                break
        return found

    def totals(self) -> Totals:
        """Usage and cost of every model call recorded in the file, on every branch."""
        usage = [0, 0, 0, 0]
        cost: list[float | None] = [0.0, 0.0, 0.0, 0.0, 0.0]
        for entry in self.entries:
            if entry["type"] == "message":
                message = entry.get("message")
                if not isinstance(message, dict) or message.get("role") != "assistant":
                    continue
                _add_usage(usage, cost, message.get("usage"), message.get("cost"))
            elif entry["type"] == "compaction" and ("usage" in entry or "cost" in entry):
                _add_usage(usage, cost, entry.get("usage"), entry.get("cost"))
        return Totals(Usage(input=usage[0], output=usage[1], cache_read=usage[2], cache_write=usage[3]),
                      Cost(input=cost[0], output=cost[1], cache_read=cost[2], cache_write=cost[3],
                           total=cost[4]))

    @property
    def name(self) -> str | None:
        for entry in reversed(self.entries):
            if entry["type"] == "session_info" and isinstance(entry.get("name"), str):
                return str(entry["name"])
        return None

    def first_user_text(self) -> str | None:
        for entry in self.entries:
            message = entry.get("message") if entry["type"] == "message" else None
            if isinstance(message, dict) and message.get("role") == "user":
                return _raw_text(message.get("content"))
        return None

    def current_model(self) -> tuple[str, str] | None:
        """(provider, model) of the active branch: the last model_change or assistant message."""
        for entry in reversed(self.branch()):
            if entry["type"] == "model_change":
                return str(entry.get("provider", "")), str(entry.get("model", ""))
            message = entry.get("message") if entry["type"] == "message" else None
            if isinstance(message, dict) and message.get("role") == "assistant":
                return str(message.get("provider", "")), str(message.get("model", ""))
        return None

    def message_count(self) -> int:
        return sum(1 for e in self.entries if e["type"] == "message")


def summary_message(summary: str, timestamp: Any) -> UserMessage:
    """The compaction summary as the model sees it: a user message clearly marked as a summary."""
    text = COMPACTION_SUMMARY_PREFIX + summary + COMPACTION_SUMMARY_SUFFIX
    return UserMessage(content=[TextContent(text=text)], timestamp=iso_to_ms(timestamp) or 0)


class SessionConversation:
    """The agent's `Conversation` backed by a session: every append is on disk before it returns, and
    the context is kept in memory (rebuilt from the file's entries only when the branch changes)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._items = session.context_items()

    def context(self) -> list[Message]:
        return [item.message for item in self._items]

    def items(self) -> list[ContextItem]:
        return list(self._items)

    def append(self, message: Message) -> None:
        entry_id = self.session.append_message(message)
        self._items.append(ContextItem(entry_id, "message", message, True))

    def apply_compaction(self, **fields: Any) -> dict[str, Any]:
        """Persist a compaction entry, then (only then) switch the in-memory context to it."""
        entry = self.session.append_compaction(**fields)
        self._items = self.session.context_items()
        return entry

    def switch_leaf(self, entry_id: str | None, *, summary: str | None = None) -> None:
        self.session.switch_leaf(entry_id, summary=summary)
        self._items = self.session.context_items()

    def reload(self) -> None:
        self._items = self.session.context_items()


def fork_session(source: Session, path: Path | None, *, cwd: str | Path, tip: str | None = None,
                 **header: Any) -> Session:
    """A new session whose header names `source` as `parent_session` and which holds a copy of the
    source's active branch (up to `tip`), so it is self-contained on any machine."""
    fork = Session.create(path, cwd=cwd, parent_session=source.header.id,
                          model=header.pop("model", source.header.model),
                          repo=header.pop("repo", source.header.repo),
                          git_commit=header.pop("git_commit", source.header.git_commit),
                          origin=header.pop("origin", source.header.origin),
                          metadata=header.pop("metadata", dict(source.header.metadata)), **header)
    for entry in source.branch() if tip is None else source.path_to(tip):
        fork.append_raw(entry)
        message = source._messages.get(entry["id"])
        if message is not None:
            fork._messages[entry["id"]] = message
    return fork


def read_header(path: Path) -> dict[str, Any] | None:
    """The first line of a session file (opi or pi), or None when it is not one."""
    try:
        with open(path, "rb") as handle:
            data: Any = json.loads(handle.readline(1 << 16))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("type") == "session" and isinstance(data.get("id"), str):
        return dict(data)
    return None


# -- helpers ---------------------------------------------------------------------------------------

@contextmanager
def _gc_paused(freeze: bool = False) -> Iterator[None]:
    """Building 100k small dicts makes the cyclic GC rescan them over and over (3x the parse time). Parsed
    JSON holds no reference cycles (reference counting frees it), so the collector is paused meanwhile.
    With `freeze` (big files) what exists afterwards is moved out of the collector's sight, so that
    re-enabling it does not start one full scan of everything just loaded (0.4 s at 100k entries)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if freeze:
                gc.freeze()
            gc.enable()


def _parse_header_line(file: Path, line: str) -> dict[str, Any]:
    shown = line[:80]
    if not line.strip():
        raise SessionFormatError(f"{file}: not a session file: it is empty (expected a first line "
                                 '{"type":"session",...})')
    try:
        data = json.loads(line)
    except ValueError:
        raise SessionFormatError(f"{file}: not a session file: the first line is not JSON "
                                 f"({shown!r}...)") from None
    if not isinstance(data, dict) or data.get("type") != "session":
        found = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise SessionFormatError(f"{file}: not a session file: the first line has type {found!r}, "
                                 'expected a header with "type":"session"')
    if not isinstance(data.get("id"), str):
        raise SessionFormatError(f"{file}: the session header has no string 'id'")
    return data


def _is_pi_header(data: dict[str, Any]) -> bool:
    """pi writes camelCase headers with version 2 or 3 (none for its v1); opi's has `parent_session`."""
    if "parent_session" in data:
        return False
    version = data.get("version")
    return "parentSession" in data or version is None or version in (2, 3)


_DECODER = json.JSONDecoder()
_BIG_FILE_BYTES = 16 * 1024 * 1024


def _decode_lines(data: bytes) -> list[str]:
    try:
        return data.decode("utf-8").split("\n")
    except UnicodeDecodeError:  # damaged bytes: decode line by line so that only those lines are lost
        lines = []
        for line in data.split(b"\n"):
            try:
                lines.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append("\x00" + line.decode("utf-8", "replace"))  # not JSON: reported as corrupt
        return lines


def _loads_lenient(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _valid_entry(entry: Any) -> bool:
    if type(entry) is not dict:
        return False
    kind, parent = entry.get("type"), entry.get("parent_id", 0)
    if type(kind) is not str or type(entry.get("id")) is not str:
        return False
    if parent is not None and type(parent) is not str:  # also a missing key: never guess a root
        return False
    if kind == "message":
        return type(entry.get("message")) is dict
    if kind == "compaction":
        return type(entry.get("summary")) is str
    return True


_USAGE_KEYS = ("input", "output", "cache_read", "cache_write")
_COST_KEYS = ("input", "output", "cache_read", "cache_write", "total")


def _add_usage(usage: list[int], cost: list[float | None], raw_usage: Any, raw_cost: Any) -> None:
    if type(raw_usage) is dict:
        for i, key in enumerate(_USAGE_KEYS):
            value = raw_usage.get(key)
            if type(value) is int:
                usage[i] += value
    parts = raw_cost if type(raw_cost) is dict else {}
    for i, key in enumerate(_COST_KEYS):
        current = cost[i]
        if current is None:
            continue
        value = parts.get(key)
        # An unknown price makes the sum unknown: it is never the same as 0.
        cost[i] = current + value if type(value) is float or type(value) is int else None


def _raw_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""

