"""Where sessions live and how they are found: the sessions directory, id prefixes, per-cwd listings.

Directory, first match wins: an explicit `--session-dir`/config value, `$OPI_SESSIONS_DIR`,
`$XDG_DATA_HOME/opi/sessions`, `~/.local/share/opi/sessions`. Files are named `<session id>.jsonl`, but a
session is found by its header too, so a file renamed by an artifact download still resumes by id. The
header's cwd only scopes `-c` and listings; it is never a reason to refuse a resume (a CI session made in
`/github/workspace` resumes in the user's checkout). `-c` continues the newest session the model answered in.

This module also decides the format of a file (`load_session`): opi files go to `Session`, pi files to
the converter in `bot.agent.pi_format`.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.agent.session import (
    BIG_FILE_BYTES,
    Session,
    SessionError,
    decode_lines,
    fork_session,
    gc_paused,
    is_pi_header,
    parse_header_line,
    read_header,
    read_session_bytes,
)


def load_session(path: str | Path, *, reconstruct: bool = True) -> Session:
    """Read a session file, opi or pi (v1-v3, converted on the fly; pi's file is never written). Raises
    SessionError naming the file when it is missing, unreadable or not a session."""
    file = Path(path)
    data = read_session_bytes(file)
    lines = decode_lines(data)
    header = parse_header_line(file, lines[0])
    with gc_paused(freeze=len(data) > BIG_FILE_BYTES):
        if is_pi_header(header):
            from bot.agent.pi_format import session_from_pi  # only pi's files need the converter

            return session_from_pi(file, header, lines)
        return Session.from_lines(file, header, lines, ends_with_newline=data.endswith(b"\n"),
                                  reconstruct=reconstruct)


def sessions_dir(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get("OPI_SESSIONS_DIR")
    if from_env:
        return Path(from_env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "opi" / "sessions"


def new_session_path(directory: Path, session_id: str) -> Path:
    return directory / f"{session_id}.jsonl"


def _same_dir(a: str, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _session_files(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.suffix == ".jsonl" and p.is_file()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SessionError(f"{directory}: cannot list sessions: {exc.strerror or exc}") from None


def resolve_session(ref: str, directory: Path) -> Path:
    """A session file from a path, or from a unique prefix of its id. Raises SessionError naming what was
    searched and, for an ambiguous prefix, the candidates."""
    if not ref.strip():
        raise SessionError("an empty session reference: give a path or an id prefix")
    candidate = Path(ref).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        raise SessionError(f"{candidate} is a directory, not a session file")
    if os.sep in ref or ref.endswith(".jsonl"):
        raise SessionError(f"{candidate}: no such session file")
    files = _session_files(directory)
    matches = [p for p in files if p.stem.startswith(ref)]
    if not matches:  # renamed files (artifact downloads, pi files): look at the headers
        matches = [p for p in files if str((read_header(p) or {}).get("id", "")).startswith(ref)]
    if not matches:
        raise SessionError(f"no session matches {ref!r} in {directory} (give a path or an id prefix; "
                           "`opi --list-sessions` shows the sessions for this directory)")
    if len(matches) > 1:
        shown = ", ".join(sorted(p.stem for p in matches)[:10])
        raise SessionError(f"{ref!r} matches {len(matches)} sessions in {directory}: {shown}; "
                           "give a longer prefix")
    return matches[0]


@dataclass
class SessionListing:
    path: Path
    id: str
    cwd: str
    name: str | None
    first_message: str | None
    modified: float  # epoch seconds
    messages: int
    cost: float | None  # USD; None when some price was unknown
    parent_session: str | None

    @property
    def title(self) -> str:
        text = self.name or self.first_message or "(no messages)"
        return " ".join(text.split())

    def age(self, now: float | None = None) -> str:
        seconds = max(0.0, (now or time.time()) - self.modified)
        for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
            if seconds >= size:
                return f"{int(seconds // size)}{unit} ago"
        return "just now"


def _matching_files(directory: Path, cwd: str | Path | None) -> list[tuple[float, Path, dict[str, Any]]]:
    found = []
    for path in _session_files(directory):
        header = read_header(path)
        if header is None:
            continue
        if cwd is not None and not _same_dir(str(header.get("cwd", "")), cwd):
            continue
        try:
            found.append((path.stat().st_mtime, path, header))
        except OSError:
            continue
    found.sort(key=lambda item: item[0], reverse=True)
    return found


def list_sessions(directory: Path, cwd: str | Path | None = None, limit: int | None = 50) -> list[SessionListing]:
    """Sessions made in `cwd` (all when None), newest first. Unreadable files are left out."""
    listings = []
    for modified, path, _ in _matching_files(directory, cwd)[:limit]:
        try:
            session = load_session(path, reconstruct=False)
        except SessionError:
            continue
        totals = session.totals()
        listings.append(SessionListing(
            path=path, id=session.header.id, cwd=session.header.cwd, name=session.name,
            first_message=session.first_user_text(), modified=modified, messages=session.message_count(),
            cost=totals.cost.total, parent_session=session.header.parent_session))
    return listings


def most_recent_session(directory: Path, cwd: str | Path) -> Path | None:
    """The newest session for `cwd` that holds an answer: a session where the model never answered (a
    run that failed with a bad key, or was opened and left) is not what `-c` should continue."""
    for _, path, _ in _matching_files(directory, cwd):
        if _has_assistant_message(path):
            return path
    return None


def _has_assistant_message(path: Path) -> bool:
    # A key with this exact spelling occurs only as JSON structure (a quote inside a string is escaped),
    # in opi and pi files alike; a byte search spares parsing every candidate.
    try:
        return b'"role":"assistant"' in path.read_bytes()
    except OSError:
        return False


def open_session(*, cwd: str | Path, directory: str | Path | None = None, resume: str | None = None,
                 continue_: bool = False, fork: str | None = None, no_session: bool = False,
                 **header: Any) -> Session:
    """The session a run writes to: resumed (`--resume`, appending to the same file), the most recent for
    cwd (`-c`, a new one when there is none), forked (`--fork`, a new file naming its parent) or new.

    `header` (model, repo, git_commit, origin, metadata) describes new sessions. A pi file is imported
    into a new opi session (pi's file is never modified). With `no_session` nothing is written: a resumed
    session is copied into memory. Problems found while reading are in the returned `warnings`.
    """
    where = sessions_dir(directory)
    source: Session | None = None
    if resume or fork:
        source = load_session(resolve_session(str(resume or fork), where))
    elif continue_:
        recent = most_recent_session(where, cwd)
        if recent is not None:
            source = load_session(recent)
    new_id = str(uuid.uuid4())
    path = None if no_session else new_session_path(where, new_id)
    if source is None:
        session = Session.create(path, cwd=cwd, session_id=new_id, **header)
        if continue_:
            session.warnings.append(f"no earlier session for {cwd} in {where}; started a new one")
        return session
    if fork or no_session or source.source_format != "opi":
        copy = fork_session(source, path, cwd=cwd, session_id=new_id, **header)
        copy.warnings = source.warnings + copy.warnings
        if source.source_format == "pi" and not fork:
            where_to = path if path else "memory"
            copy.warnings.append(f"imported the pi session {source.path} into {where_to}")
        return copy
    source.open_for_append()
    return source
