"""`--model replay:SESSION.jsonl`: the recorded session is read here, with the one session reader, and
handed to `bot.llm.replay.ReplayModel` as a `Recording` (the model layer never parses a file).

The recording is the active branch of the session, exactly as a resume would rebuild it: corrupt and
truncated lines are skipped (their numbers are kept in `Recording.skipped_lines`), a `leaf` picks the
branch, and an entry without `parent_id` is corrupt, as everywhere else.
"""

from __future__ import annotations

from pathlib import Path

from bot.agent.session import SESSION_VERSION, Session, SessionError
from bot.agent.session_store import load_session
from bot.llm.errors import ConfigError
from bot.llm.messages import Message
from bot.llm.replay import Recording, ReplayModel


def load_recording(path: str | Path) -> Recording:
    """The active branch of a recorded session. Raises ConfigError naming the file and the problem."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"replay: session file not found: {file}")
    try:
        session = load_session(file)
    except SessionError as exc:
        raise ConfigError(f"replay: {exc}") from None
    if session.header.version > SESSION_VERSION:
        raise ConfigError(f"replay: {file} has session format version {session.header.version}; replay reads "
                          f"version {SESSION_VERSION}")
    return Recording.from_branch(file, session.header.to_dict(), _branch_items(session), session.skipped_lines)


def _branch_items(session: Session) -> list[Message | str]:
    items: list[Message | str] = []
    for entry in session.branch():
        if entry["type"] == "compaction":
            items.append(str(entry["summary"]))
        elif entry["type"] == "message":
            message = session.message_of(entry)
            if message is not None:
                items.append(message)
    return items


def replay_model(path: str | Path, *, workspace: Path | None = None) -> ReplayModel:
    return ReplayModel(load_recording(path), workspace=workspace)
