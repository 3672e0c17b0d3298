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
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, NotRequired, TypedDict

from pydantic import ValidationError

from bot.llm.messages import (
    MESSAGE_ADAPTER,
    Cost,
    Message,
    TextContent,
    Usage,
    UserMessage,
)

SESSION_VERSION = 1

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


Entry = dict[str, Any]
"""An entry as stored: a JSON object. The TypedDicts below document (and type the writers of) each kind."""


class MessageEntry(TypedDict):
    type: Literal["message"]
    id: str
    parent_id: str | None
    timestamp: str
    message: dict[str, Any]  # a `bot.llm.messages` message as JSON


class CompactionEntry(TypedDict):
    type: Literal["compaction"]
    id: str
    parent_id: str | None
    timestamp: str
    summary: str
    first_kept_entry_id: str | None
    tokens_before: int
    tokens_after: int | None
    details: dict[str, list[str]]  # read_files, modified_files
    usage: NotRequired[dict[str, int]]
    cost: NotRequired[dict[str, float | None]]


class LeafEntry(TypedDict):
    type: Literal["leaf"]
    id: str
    parent_id: str | None  # the same as entry_id: a leaf hangs where it points
    timestamp: str
    entry_id: str | None


class BranchSummaryEntry(TypedDict):
    type: Literal["branch_summary"]
    id: str
    parent_id: str | None
    timestamp: str
    summary: str
    from_id: str | None


class ModelChangeEntry(TypedDict):
    type: Literal["model_change"]
    id: str
    parent_id: str | None
    timestamp: str
    provider: str
    model: str


class SessionInfoEntry(TypedDict):
    type: Literal["session_info"]
    id: str
    parent_id: str | None
    timestamp: str
    name: str


ENTRY_TYPES: dict[str, type] = {
    "message": MessageEntry, "compaction": CompactionEntry, "leaf": LeafEntry,
    "branch_summary": BranchSummaryEntry, "model_change": ModelChangeEntry, "session_info": SessionInfoEntry,
}
KNOWN_ENTRY_TYPES = frozenset(ENTRY_TYPES)


class Session:
    """A session file: its header, all entries (as dicts, in file order) and the active tip.

    Reads only opi files; `bot.agent.session_store.load_session` also converts pi files."""

    def __init__(self, header: SessionHeader, path: Path | None, *, source_format: str = "opi") -> None:
        self.header = header
        self.path = path
        self.source_format = source_format  # "pi" when converted from a pi file on load
        self.entries: list[Entry] = []
        self.warnings: list[str] = []
        self.skipped_lines: list[int] = []  # 1-based numbers of corrupt or truncated lines, on load
        self.tip: str | None = None
        self._index: dict[str, int] = {}
        self._messages: dict[str, Message | None] = {}
        self._file: IO[bytes] | None = None
        self._header_on_disk = path is None or source_format != "opi"

    # -- creating and opening ---------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path | None, *, cwd: str | Path, parent_session: str | None = None,
               session_id: str | None = None, model: str | None = None, repo: str | None = None,
               git_commit: str | None = None, origin: str | None = None,
               metadata: dict[str, Any] | None = None) -> Session:
        """A new session. With a path, the file is written with the first entry (header and entry
        together), so a session nothing was said in leaves no file; the directory is created and
        checked for writing at once. With None it lives in memory only (`--no-session`)."""
        header = SessionHeader(id=session_id or str(uuid.uuid4()), timestamp=iso_now(), cwd=str(cwd),
                               parent_session=parent_session, model=model, repo=repo,
                               git_commit=git_commit, origin=origin, metadata=dict(metadata or {}))
        session = cls(header, path)
        if path is not None:
            _check_writable_dir(path.parent)
            _refuse_existing(path)
        return session

    @classmethod
    def in_memory(cls, cwd: str | Path, **kwargs: Any) -> Session:
        return cls.create(None, cwd=cwd, **kwargs)

    @classmethod
    def load(cls, path: str | Path, *, reconstruct: bool = True) -> Session:
        """Read an opi session file. Raises SessionError naming the file when it is missing, unreadable
        or not an opi session (`bot.agent.session_store.load_session` also reads pi files); anything
        else becomes a warning. `reconstruct` validates the active context at once (listings that need
        only the header, name and totals pass False)."""
        file = Path(path)
        data = read_session_bytes(file)
        lines = decode_lines(data)
        header_data = parse_header_line(file, lines[0])
        if is_pi_header(header_data):
            raise SessionFormatError(f"{file}: a pi session; open it through the session store, which "
                                     "converts it")
        with gc_paused(freeze=len(data) > BIG_FILE_BYTES):
            return cls.from_lines(file, header_data, lines, ends_with_newline=data.endswith(b"\n"),
                                  reconstruct=reconstruct)

    @classmethod
    def from_lines(cls, file: Path, header_data: dict[str, Any], lines: list[str], *,
                   ends_with_newline: bool, reconstruct: bool = True) -> Session:
        """An opi session from its decoded lines (`lines[0]` is the header, already parsed)."""
        session = cls(SessionHeader.from_dict(header_data, str(file)), file)
        session._header_on_disk = True
        if session.header.version > SESSION_VERSION:
            session.warnings.append(f"{file}: written by a newer format (version {session.header.version}); "
                                    "entry types this version does not know are ignored")
        session._load_lines(lines, ends_with_newline=ends_with_newline)
        if reconstruct:
            session._context_items()  # validates the context's messages now, while the GC is paused
        return session

    def _load_lines(self, texts: list[str], *, ends_with_newline: bool) -> None:
        # The hot loop of a resume (100k lines in well under a second): one decode of the whole file, one
        # raw_decode per line, and the entry checks inlined.
        decode = _DECODER.raw_decode
        corrupt: list[int] = []
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
                    self.skipped_lines.append(number + 1)
                    if number == last and not ends_with_newline:
                        self.warnings.append(f"{self._where()}: line {number + 1} is a truncated last line "
                                             f"({len(raw.encode('utf-8', 'surrogateescape'))} bytes, "
                                             "probably cut by a crash); ignored")
                    else:
                        corrupt.append(number + 1)
                    continue
            if not _valid_entry(entry):
                corrupt.append(number + 1)
                self.skipped_lines.append(number + 1)
                continue
            self.add_loaded_entry(entry, number + 1)
        if corrupt:
            shown = ", ".join(str(n) for n in corrupt[:20]) + (" ..." if len(corrupt) > 20 else "")
            self.warnings.append(f"{self._where()}: skipped {len(corrupt)} corrupt line(s): {shown}")

    def add_loaded_entry(self, entry: Entry, line: int | None = None) -> bool:
        """Index an entry read from a file (used by the loaders; never writes). False when its id was
        already taken (the entry is ignored, with a warning)."""
        if entry["id"] in self._index:
            where = f"line {line}" if line else "an entry"
            self.warnings.append(f"{self._where()}: {where} repeats entry id {entry['id']!r}; ignored")
            return False
        # A leaf whose target is missing is kept in the file's order but moves nothing.
        self._index_entry(entry, move_tip=entry["type"] != "leaf" or self._leaf_target_known(entry, line))
        return True

    def _leaf_target_known(self, entry: Entry, line: int | None) -> bool:
        target = entry.get("entry_id")
        if target is None or (isinstance(target, str) and target in self._index):
            return True
        # The target's line was corrupt or cut: the tip stays on the last valid entry of the branch, so
        # the context is not emptied and the next entry hangs from an entry that exists.
        where = f"line {line}" if line else f"leaf {entry['id']!r}"
        self.warnings.append(f"{self._where()}: {where} moves the tip to {target!r}, which is not in the "
                             "file; the tip stays on the entry before it")
        return False

    def _index_entry(self, entry: Entry, *, move_tip: bool = True) -> None:
        """The one place an entry joins the tree: index it, keep it in file order, move the tip."""
        self._index[entry["id"]] = len(self.entries)
        self.entries.append(entry)
        if not move_tip:
            return
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
        if not self._header_on_disk:
            return  # a new session: the file is created with its first entry
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

    @property
    def on_disk(self) -> bool:
        """Whether the file exists (a new session's file appears with its first entry)."""
        return self.path is not None and self._header_on_disk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write_entry(self, data: Entry) -> None:
        if self.path is None:
            return
        if self._file is None:
            if self._header_on_disk:
                self.open_for_append()
            else:
                self._create_file()
        self._write_line(data)

    def _create_file(self) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # "x": never over a file that appeared since create() checked (another opi, same id)
            self._file = open(self.path, "xb", buffering=0)  # noqa: SIM115 - kept open for appends
        except FileExistsError:
            raise SessionError(f"{self.path}: refusing to create a session over an existing file") from None
        except OSError as exc:
            raise SessionError(f"{self.path}: cannot create the session: {exc.strerror or exc}") from None
        self._header_on_disk = True
        self._write_line(self.header.to_dict())

    def _write_line(self, data: dict[str, Any]) -> None:
        assert self._file is not None
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

    def append(self, entry_type: str, **fields: Any) -> Entry:
        """Append an entry on the active branch: written and fsynced before it is indexed."""
        entry: Entry = {"type": entry_type, "id": self.new_id(), "parent_id": self.tip, "timestamp": iso_now()}
        if entry_type == "leaf":
            entry["parent_id"] = fields.get("entry_id")  # hangs where it points; nothing descends from it
        entry.update(fields)
        self.append_raw(entry)
        return entry

    def append_raw(self, entry: Entry, *, message: Message | None = None) -> None:
        """Write and index an entry as given (ids kept), e.g. a copy into a fork. `message` is the
        entry's message already validated, when the caller has it."""
        self._write_entry(entry)
        self._index_entry(entry)
        if message is not None:
            self._messages[entry["id"]] = message

    def append_message(self, message: Message) -> str:
        entry_id = self.new_id()
        entry: Entry = {"type": "message", "id": entry_id, "parent_id": self.tip, "timestamp": iso_now(),
                        # python mode: its values are JSON types already, and a lone surrogate in a dict
                        # key (undecodable output in tool arguments) survives to the writer, which escapes it
                        "message": message.model_dump()}
        self.append_raw(entry, message=message)
        return entry_id

    def append_compaction(self, *, summary: str, first_kept_entry_id: str | None, tokens_before: int,
                          tokens_after: int, read_files: list[str], modified_files: list[str],
                          **extra: Any) -> Entry:
        return self.append("compaction", summary=summary, first_kept_entry_id=first_kept_entry_id,
                           tokens_before=tokens_before, tokens_after=tokens_after,
                           details={"read_files": read_files, "modified_files": modified_files}, **extra)

    def append_model_change(self, provider: str, model: str) -> Entry:
        return self.append("model_change", provider=provider, model=model)

    def set_name(self, name: str) -> Entry:
        return self.append("session_info", name=name)

    def switch_leaf(self, entry_id: str | None, *, summary: str | None = None) -> None:
        """Move the active tip to an earlier entry (None: before the first entry). With a summary of the
        abandoned branch, a `branch_summary` entry follows, so the model keeps what was learnt there."""
        self._check_branch_point(entry_id)
        previous = self.tip
        self.append("leaf", entry_id=entry_id)
        if summary:
            self.append("branch_summary", summary=summary, from_id=previous)

    def _check_branch_point(self, entry_id: str | None) -> None:
        if entry_id is not None and entry_id not in self._index:
            raise SessionError(f"{self._where()}: no entry with id {entry_id!r}")
        if entry_id is not None and self.entries[self._index[entry_id]]["type"] == "leaf":
            raise SessionError(f"{self._where()}: {entry_id!r} is a leaf marker, not a branch point")

    # -- reading ----------------------------------------------------------------------------------
    def entry(self, entry_id: str) -> Entry | None:
        index = self._index.get(entry_id)
        return None if index is None else self.entries[index]

    def cached_message(self, entry_id: str) -> Message | None:
        """The entry's message if it was already validated (or written by this process), else None."""
        return self._messages.get(entry_id)

    def children(self, entry_id: str | None) -> list[Entry]:
        return [e for e in self.entries if e.get("parent_id") == entry_id and e["type"] != "leaf"]

    def branch(self) -> list[Entry]:
        """The active branch: entries from the root to the active tip, oldest first."""
        return self.path_to(self.tip)

    def path_to(self, tip: str | None) -> list[Entry]:
        """Entries from the root to `tip`, oldest first. Raises SessionError for an id not in the file."""
        if tip is not None and tip not in self._index:
            raise SessionError(f"{self._where()}: no entry with id {tip!r}")
        path = list(self._walk_back(tip))
        path.reverse()
        return path

    def _walk_back(self, tip: str | None) -> Iterator[Entry]:
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

    def message_of(self, entry: Entry) -> Message | None:
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
        with gc_paused():
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

    def latest_compaction(self) -> Entry | None:
        return self.session.latest_compaction()

    def apply_compaction(self, **fields: Any) -> Entry:
        """Persist a compaction entry, then (only then) switch the in-memory context to it."""
        entry = self.session.append_compaction(**fields)
        self._items = self.session.context_items()
        return entry

    def switch_leaf(self, entry_id: str | None, *, summary: str | None = None) -> None:
        self.session.switch_leaf(entry_id, summary=summary)
        self._items = self.session.context_items()

    def reload(self) -> None:
        self._items = self.session.context_items()


class InMemoryConversation(SessionConversation):
    """A conversation that is never written anywhere (tests, `--no-session`); it branches and compacts
    like any other, because it is a session that lives in memory."""

    def __init__(self, messages: Iterable[Message] = (), *, cwd: str | Path = "") -> None:
        super().__init__(Session.in_memory(cwd))
        for message in messages:
            self.append(message)


def fork_session(source: Session, path: Path | None, *, cwd: str | Path, tip: str | None = None,
                 **header: Any) -> Session:
    """A new session whose header names `source` as `parent_session` and which holds a copy of the
    source's active branch (up to `tip`), so it is self-contained on any machine. Raises SessionError
    when `tip` is not an entry of `source`."""
    branch = source.branch() if tip is None else source.path_to(tip)
    fork = Session.create(path, cwd=cwd, parent_session=source.header.id,
                          model=header.pop("model", source.header.model),
                          repo=header.pop("repo", source.header.repo),
                          git_commit=header.pop("git_commit", source.header.git_commit),
                          origin=header.pop("origin", source.header.origin),
                          metadata=header.pop("metadata", dict(source.header.metadata)), **header)
    for entry in branch:
        fork.append_raw(entry, message=source.cached_message(entry["id"]))
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
def gc_paused(freeze: bool = False) -> Iterator[None]:
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


def read_session_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise SessionError(f"{file}: no such session file") from None
    except IsADirectoryError:
        raise SessionError(f"{file} is a directory, not a session file") from None
    except OSError as exc:
        raise SessionError(f"{file}: cannot read the session: {exc.strerror or exc}") from None


def _refuse_existing(path: Path) -> None:
    try:
        if path.stat().st_size > 0:
            raise SessionError(f"{path}: refusing to create a session over an existing file")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SessionError(f"{path}: cannot use this session file: {exc.strerror or exc}") from None


def _check_writable_dir(directory: Path) -> None:
    """Create the sessions directory and prove it takes a file now, so that an unwritable location is a
    setup error naming the directory rather than a failure in the middle of the first turn."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe, probe_path = tempfile.mkstemp(prefix=".opi-write-check-", dir=directory)
        os.close(probe)
        os.unlink(probe_path)
    except OSError as exc:
        raise SessionError(f"{directory}: cannot write sessions there ({exc.strerror or exc}); choose "
                           "another directory with --session-dir, or run with --no-session") from None


def parse_header_line(file: Path, line: str) -> dict[str, Any]:
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


def is_pi_header(data: dict[str, Any]) -> bool:
    """pi writes camelCase headers with version 2 or 3 (none for its v1); opi's has `parent_session`."""
    if "parent_session" in data:
        return False
    version = data.get("version")
    return "parentSession" in data or version is None or version in (2, 3)


_DECODER = json.JSONDecoder()
BIG_FILE_BYTES = 16 * 1024 * 1024


def decode_lines(data: bytes) -> list[str]:
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

