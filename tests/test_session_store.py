"""Finding sessions: the sessions directory, id prefixes, per-cwd listings, resume / continue / fork."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from bot.agent.session import Session, SessionConversation, SessionError
from bot.agent.session_store import (
    list_sessions,
    most_recent_session,
    open_session,
    resolve_session,
    sessions_dir,
)
from bot.cli.session_commands import list_sessions_command
from bot.llm.messages import AssistantMessage, Cost, TextContent, Usage, UserMessage


def make(directory: Path, session_id: str, cwd: Path | str, texts: list[str], *, mtime: float | None = None,
         name: str | None = None) -> Path:
    path = directory / f"{session_id}.jsonl"
    session = Session.create(path, cwd=cwd, session_id=session_id)
    for text in texts:
        session.append_message(UserMessage(content=text))
        session.append_message(AssistantMessage(
            content=[TextContent(text="ok")], provider="p", model="m", api="mock", usage=Usage(input=10),
            cost=Cost(input=0.5, output=0.0, cache_read=0.0, cache_write=0.0, total=0.5)))
    if name:
        session.set_name(name)
    session.close()
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_sessions_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    assert sessions_dir() == isolated_home / ".local" / "share" / "opi" / "sessions"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert sessions_dir() == isolated_home / ".local" / "share" / "opi" / "sessions"
    monkeypatch.setenv("OPI_SESSIONS_DIR", str(tmp_path / "env"))
    assert sessions_dir() == tmp_path / "env"
    assert sessions_dir(tmp_path / "flag") == tmp_path / "flag"


def test_resolve_by_path_unique_prefix_and_header_id(tmp_path: Path) -> None:
    make(tmp_path, "abc12345-0000", "/w", ["one"])
    make(tmp_path, "abd99999-0000", "/w", ["two"])
    renamed = make(tmp_path, "fff00000-1111", "/w", ["three"]).rename(tmp_path / "opi-session-12.jsonl")
    assert resolve_session("abc", tmp_path) == tmp_path / "abc12345-0000.jsonl"
    assert resolve_session(str(renamed), tmp_path) == renamed
    assert resolve_session("fff0", tmp_path) == renamed  # found through its header
    with pytest.raises(SessionError, match=r"'ab' matches 2 sessions .*abc12345-0000, abd99999-0000"):
        resolve_session("ab", tmp_path)
    with pytest.raises(SessionError, match="no session matches 'zz'"):
        resolve_session("zz", tmp_path)
    with pytest.raises(SessionError, match="no such session file"):
        resolve_session(str(tmp_path / "missing.jsonl"), tmp_path)
    with pytest.raises(SessionError, match="is a directory"):
        resolve_session(str(tmp_path), tmp_path)


def test_listing_is_per_cwd_newest_first_with_name_first_message_and_cost(tmp_path: Path) -> None:
    here, other = tmp_path / "here", tmp_path / "other"
    here.mkdir()
    other.mkdir()
    store = tmp_path / "store"
    store.mkdir()
    make(store, "old00000", here, ["fix the tests"], mtime=1_000_000)
    make(store, "new00000", here, ["add a feature", "more"], mtime=2_000_000, name="Feature work")
    make(store, "else0000", other, ["elsewhere"], mtime=3_000_000)
    (store / "junk.jsonl").write_text("not a session\n")
    listings = list_sessions(store, here)
    assert [(s.id, s.title, s.messages, s.cost) for s in listings] == [
        ("new00000", "Feature work", 4, 1.0), ("old00000", "fix the tests", 2, 0.5)]
    assert most_recent_session(store, here) == store / "new00000.jsonl"
    assert most_recent_session(store, tmp_path / "nowhere") is None
    out = io.StringIO()
    assert list_sessions_command(cwd=here, directory=store, out=out) == 0
    text = out.getvalue()
    assert text.index("new00000") < text.index("old00000") and "$1.0000" in text and "else0000" not in text
    out = io.StringIO()
    assert list_sessions_command(cwd=tmp_path / "nowhere", directory=store, out=out) == 0
    assert "No sessions for" in out.getvalue()


def test_open_session_new_resume_continue_fork_and_no_session(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fresh = open_session(cwd=tmp_path, directory=store, model="mock:m", metadata={"issue": 3})
    assert fresh.path == store / f"{fresh.header.id}.jsonl" and fresh.header.metadata == {"issue": 3}
    SessionConversation(fresh).append(UserMessage(content="hello"))
    fresh.close()

    resumed = open_session(cwd=tmp_path, directory=store, resume=fresh.header.id[:6])
    assert resumed.path == fresh.path
    SessionConversation(resumed).append(UserMessage(content="again"))
    resumed.close()
    assert len(fresh.path.read_text().splitlines()) == 3

    continued = open_session(cwd=tmp_path, directory=store, continue_=True)
    assert continued.path == fresh.path and not continued.warnings
    continued.close()

    forked = open_session(cwd=tmp_path, directory=store, fork=str(fresh.path))
    assert forked.path != fresh.path and forked.header.parent_session == fresh.header.id
    assert [m.text for m in forked.context()] == ["hello", "again"]
    forked.close()

    files_before = sorted(store.iterdir())
    ephemeral = open_session(cwd=tmp_path, directory=store, resume=str(fresh.path), no_session=True)
    SessionConversation(ephemeral).append(UserMessage(content="not saved"))
    assert ephemeral.path is None and sorted(store.iterdir()) == files_before
    assert "not saved" not in fresh.path.read_text()

    nothing_yet = open_session(cwd=tmp_path / "elsewhere", directory=store, continue_=True)
    assert nothing_yet.warnings and "started a new one" in nothing_yet.warnings[0]


def test_a_ci_session_resumes_in_another_checkout(tmp_path: Path) -> None:
    ci = make(tmp_path, "ci000000", "/github/workspace", ["fix issue 3"])
    laptop = tmp_path / "checkout"
    laptop.mkdir()
    session = open_session(cwd=laptop, directory=tmp_path / "store", resume=str(ci))
    assert session.path == ci and session.header.cwd == "/github/workspace"
    SessionConversation(session).append(UserMessage(content="continue on the laptop"))
    assert json.loads(ci.read_text().splitlines()[-1])["message"]["content"] == "continue on the laptop"


def test_resume_of_something_that_is_not_a_session_names_it(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.jsonl"
    bogus.write_text('{"hello": 1}\n')
    with pytest.raises(SessionError, match=r"bogus.jsonl: not a session file"):
        open_session(cwd=tmp_path, directory=tmp_path, resume=str(bogus))
