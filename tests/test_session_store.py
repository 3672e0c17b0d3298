"""Finding sessions: the sessions directory, id prefixes, per-cwd listings, resume / continue / fork."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
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
from tests.fake_llm import ErrorReply, FakeLLMServer

ANSWER = AssistantMessage(content=[TextContent(text="ok")], provider="p", model="m", api="mock")


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
    answered = Session.load(fresh.path)
    answered.append_message(ANSWER)  # -c continues only a session the model answered in
    answered.close()

    continued = open_session(cwd=tmp_path, directory=store, continue_=True)
    assert continued.path == fresh.path and not continued.warnings
    continued.close()

    forked = open_session(cwd=tmp_path, directory=store, fork=str(fresh.path))
    assert forked.path != fresh.path and forked.header.parent_session == fresh.header.id
    assert [m.text for m in forked.context()] == ["hello", "again", "ok"]
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


def test_a_new_session_writes_nothing_until_its_first_entry(tmp_path: Path) -> None:
    store = tmp_path / "store"
    unused = open_session(cwd=tmp_path, directory=store)
    unused.close()
    assert unused.path is not None and not unused.path.exists()
    assert list(store.iterdir()) == []  # the directory exists (checked for writing), but no file
    used = open_session(cwd=tmp_path, directory=store)
    SessionConversation(used).append(UserMessage(content="hello"))
    assert used.path is not None
    header, entry = (json.loads(line) for line in used.path.read_text().splitlines())
    assert header["type"] == "session" and header["id"] == used.header.id
    assert entry["message"]["content"] == "hello" and entry["parent_id"] is None


def test_an_unwritable_session_directory_is_a_setup_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SessionError, match=r"a-file/sessions: cannot write sessions there .*--no-session"):
        open_session(cwd=tmp_path, directory=blocker / "sessions")


def test_continue_skips_sessions_the_model_never_answered_in(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    answered = make(store, "answered", tmp_path, ["a real conversation"], mtime=1_000_000)
    unanswered = store / "failed.jsonl"  # e.g. a run that stopped at a 401
    failed = Session.create(unanswered, cwd=tmp_path, session_id="failed")
    failed.append_message(UserMessage(content="hi, but the key was wrong"))
    failed.close()
    os.utime(unanswered, (2_000_000, 2_000_000))
    assert most_recent_session(store, tmp_path) == answered
    continued = open_session(cwd=tmp_path, directory=store, continue_=True)
    assert continued.path == answered
    assert [m.text for m in continued.context()] == ["a real conversation", "ok"]


def _opi(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, input="", capture_output=True,
                          text=True, timeout=120, check=False)


def _refused_url() -> str:
    with socket.socket() as probe:  # a port that was just free: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_runs_the_model_never_answered_leave_no_session_and_c_continues_the_last_real_one(
        tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    work = tmp_path / "work"
    work.mkdir()
    store = tmp_path / "sessions"
    env = {**os.environ, **fake_llm.env(), "OPI_SESSIONS_DIR": str(store), "OPI_MAX_RETRIES": "0"}
    fake_llm.enqueue("the real answer")
    assert _opi(["-p", "a real question"], work, env).returncode == 0
    (real,) = store.glob("*.jsonl")
    fake_llm.enqueue(ErrorReply(401, "invalid x-api-key", "authentication_error"))
    fake_llm.enqueue(ErrorReply(404, "model not found", "not_found_error"))
    assert _opi(["-p", "bad key"], work, env).returncode == 3
    assert _opi(["-p", "wrong model"], work, env).returncode != 0
    refused = _opi(["-p", "nobody listens"], work, {**env, "ANTHROPIC_BASE_URL": _refused_url()})
    assert refused.returncode != 0 and "session:" not in refused.stderr
    assert list(store.glob("*.jsonl")) == [real]  # no session without an answer
    fake_llm.enqueue("continued")
    continued = _opi(["-c", "-p", "and then?", "--json"], work, env)
    assert json.loads(continued.stdout.splitlines()[-1])["session"] == str(real)


@pytest.mark.parametrize("keys", [["\x04"], ["/new\r", "/quit\r"]], ids=["ctrl-d", "new-then-quit"])
def test_opening_the_repl_and_leaving_writes_no_session(tmp_path: Path, fake_llm: FakeLLMServer,
                                                         keys: list[str]) -> None:
    import pexpect  # a real pseudo-terminal: the REPL only starts on one

    work = tmp_path / "work"
    work.mkdir()
    store = tmp_path / "sessions"
    env = {**os.environ, **fake_llm.env(), "OPI_SESSIONS_DIR": str(store), "TERM": "xterm"}
    child = pexpect.spawn(sys.executable, ["-m", "bot"], cwd=str(work), env=env, encoding="utf-8",
                          dimensions=(40, 120), timeout=60)
    try:
        child.expect("Ctrl\\+D quits")
        for key in keys:
            child.send(key)
            if key.startswith("/new"):
                child.expect("new session")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert list(store.glob("*.jsonl")) == [] and fake_llm.requests == []
