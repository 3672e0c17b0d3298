"""`--model replay:SESSION.jsonl`: recorded assistant messages replayed while the tools run for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.agent.loop import Agent, Outcome
from bot.agent.replay_source import load_recording, replay_model
from bot.agent.session import Session, SessionConversation
from bot.llm.errors import ConfigError
from bot.llm.messages import AssistantMessage, Message, TextContent, ToolCall, UserMessage
from bot.llm.mock import MockModel
from bot.llm.replay import ReplayDivergence, ReplayError, normalise
from bot.tools.base import Tool, ToolContext
from bot.tools.edit import EditTool
from bot.tools.read import ReadTool
from bot.tools.write import WriteTool
from tests.fake_llm import FakeLLMServer, Reply

PROMPT = "Add a farewell function to greet.py and a changelog entry."


def tools() -> list[Tool]:
    return [ReadTool(), WriteTool(), EditTool()]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=30).stdout


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "greet.py").write_text('def hello(name):\n    return f"Hello, {name}!"\n')
    (path / "CHANGELOG.md").write_text("# Changelog\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "initial")
    return path


def scripted_model() -> MockModel:
    model = MockModel()
    model.enqueue("Let me look at the file first.", tool_calls=[
        ToolCall(id="c1", name="read", arguments={"path": "greet.py"})])
    model.enqueue("", tool_calls=[
        ToolCall(id="c2", name="edit", arguments={
            "path": "greet.py", "old_text": 'return f"Hello, {name}!"\n',
            "new_text": 'return f"Hello, {name}!"\n\n\ndef farewell(name):\n    return f"Bye, {name}!"\n'}),
        ToolCall(id="c3", name="write", arguments={"path": "CHANGELOG.md",
                                                    "content": "# Changelog\n\n- Added farewell().\n"}),
    ])
    model.enqueue("Added `farewell()` and a changelog entry.")
    return model


def run_agent(model: Any, workspace: Path, session: Session | None = None,
              prompt: str = PROMPT) -> tuple[Agent, Any]:
    conversation = SessionConversation(session) if session is not None else None
    agent = Agent(model, tools(), ToolContext(workspace=workspace), "You are a coding agent.",
                  conversation=conversation)
    return agent, agent.run(prompt)


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path]:
    """A real recorded session (written by the session writer) and the repo it ran in."""
    origin = make_repo(tmp_path / "origin")
    work = tmp_path / "recorded-run"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    session_path = tmp_path / "sessions" / "rec.jsonl"
    session = Session.create(session_path, cwd=work, model="mock:mock", repo="octo/repo")
    _, result = run_agent(scripted_model(), work, session)
    session.close()
    assert result.outcome is Outcome.COMPLETED, result.error
    return session_path, origin


def fresh_checkout(tmp_path: Path, origin: Path, name: str) -> Path:
    target = tmp_path / name
    git(tmp_path, "clone", "-q", str(origin), str(target))
    return target


def test_replay_reproduces_the_tool_effects_in_a_fresh_checkout(
        recorded: tuple[Path, Path], tmp_path: Path) -> None:
    session_path, origin = recorded
    recorded_tree = tmp_path / "recorded-run"
    checkout = fresh_checkout(tmp_path, origin, "replay-run")
    model = replay_model(session_path, workspace=checkout)
    _, result = run_agent(model, checkout)
    assert result.outcome is Outcome.COMPLETED, result.error
    assert result.final_text == "Added `farewell()` and a changelog entry."
    for name in ("greet.py", "CHANGELOG.md"):
        assert (checkout / name).read_text() == (recorded_tree / name).read_text()
    assert "def farewell" in (checkout / "greet.py").read_text()
    assert model.remaining == 0 and model.replayed == 3
    assert result.cost.total == 0.0  # replaying spends nothing


def test_replay_fails_clearly_when_the_workspace_diverges(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    session_path, origin = recorded
    checkout = fresh_checkout(tmp_path, origin, "diverged")
    (checkout / "greet.py").write_text('def hello(name):\n    return "Hi " + name\n')  # someone changed it
    _, result = run_agent(replay_model(session_path, workspace=checkout), checkout)
    assert result.outcome is Outcome.ERROR
    assert isinstance(result.model_error, ReplayDivergence)
    assert not result.model_error.retryable
    assert result.model_error.tool_call.id == "c1"
    assert "replay diverged at tool call read (c1" in (result.error or "")
    assert 'return "Hi " + name' in (result.error or "")  # the actual text is shown
    assert "Hello, {name}!" in result.model_error.expected
    # It stopped there: the edit recorded for the next turn was never attempted.
    assert "farewell" not in (checkout / "greet.py").read_text()


def test_an_error_flip_is_a_divergence(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    session_path, origin = recorded
    checkout = fresh_checkout(tmp_path, origin, "flip")
    (checkout / "greet.py").unlink()
    _, result = run_agent(replay_model(session_path, workspace=checkout), checkout)
    assert isinstance(result.model_error, ReplayDivergence)
    assert "the recorded result was a success, the real one is an error" in str(result.model_error)


def test_volatile_differences_do_not_count() -> None:
    roots = ["/github/workspace", "/home/me/repo"]
    recorded = ("ran in /github/workspace/src at 2026-01-01T10:00:00Z in 0.53s\n"
                "[main 1a2b3c4] commit\nlog at /tmp/opi-bash-abc123.log  \r\n")
    live = "ran in /home/me/repo/src at 2026-11-23T19:09:29.123Z in 12 ms\n[main 9f8e7d6] commit\nlog at /tmp/opi-bash-zzz.log\n"
    assert normalise(recorded, roots) == normalise(live, roots)
    assert normalise("3 passed", roots) != normalise("2 passed, 1 failed", roots)
    assert normalise("line count 1234567", roots) == "line count 1234567"  # plain numbers are content


# -- reading the recording ----------------------------------------------------------------------------

def header(**extra: Any) -> dict[str, Any]:
    return {"type": "session", "version": 1, "id": "s1", "timestamp": "2026-01-01T00:00:00Z", "cwd": "/w",
            "parent_session": None, **extra}


def assistant(text: str, calls: list[ToolCall] | None = None) -> dict[str, Any]:
    content: list[Any] = [TextContent(text=text), *(calls or [])]
    return AssistantMessage(content=content, provider="mock", model="m", api="mock",
                            stop_reason="tool_use" if calls else "stop").model_dump(mode="json")


def entry(entry_id: str, parent: str | None, message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "id": entry_id, "parent_id": parent, "timestamp": "t", "message": message}


def write_lines(path: Path, lines: list[Any], tail: str = "") -> Path:
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines) + tail)
    return path


def user(text: str) -> dict[str, Any]:
    return UserMessage(content=text).model_dump(mode="json")


def test_corrupt_and_truncated_lines_are_skipped(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", [
        header(), entry("a", None, user("hi")), "{not json", entry("b", "a", assistant("one")),
        {"type": "message", "id": 7}], tail='{"type":"message","id":"c","par')
    recording = load_recording(path)
    assert [m.text for m in recording.assistants] == ["one"]
    assert recording.skipped_lines == [3, 5, 6]


def test_the_active_branch_is_replayed(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", [
        header(), entry("a", None, user("hi")), entry("b", "a", assistant("abandoned")),
        {"type": "leaf", "id": "l1", "parent_id": "a", "timestamp": "t", "entry_id": "a"},
        entry("c", "a", assistant("chosen"))])
    assert [m.text for m in load_recording(path).assistants] == ["chosen"]


@pytest.mark.parametrize(("content", "problem"), [
    (None, "session file not found"),
    ("", "not a session file"),
    ('{"type": "message"}\n', "not a session file"),
    (json.dumps(header(version=3)) + "\n", "version 3"),
    (json.dumps(header()) + "\n", "no assistant messages"),
])
def test_bad_recordings_are_refused_clearly(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "s.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        replay_model(path)


def test_running_out_of_recorded_messages_is_an_error(tmp_path: Path) -> None:
    # A recording cut short (the run was killed) right after a tool call.
    call = ToolCall(id="c1", name="read", arguments={"path": "x.txt"})
    path = write_lines(tmp_path / "s.jsonl", [header(), entry("a", None, user("go")),
                                              entry("b", "a", assistant("reading", [call]))])
    (tmp_path / "x.txt").write_text("content\n")
    _, result = run_agent(replay_model(path, workspace=tmp_path), tmp_path, prompt="go")
    assert result.outcome is Outcome.ERROR
    assert isinstance(result.model_error, ReplayError)
    assert "no more assistant messages (all 1 were replayed)" in (result.error or "")


def test_a_continued_session_starts_after_the_turns_it_already_holds(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", [
        header(), entry("a", None, user("first task")), entry("b", "a", assistant("first answer")),
        entry("c", "b", user("second task")), entry("d", "c", assistant("second answer"))])
    model = replay_model(path, workspace=tmp_path)
    earlier: list[Message] = [UserMessage(content="first task"),
               AssistantMessage(content=[TextContent(text="first answer")], provider="p", model="m", api="mock")]
    agent = Agent(model, [], ToolContext(workspace=tmp_path), "sys")
    for message in earlier:
        agent.conversation.append(message)
    result = agent.run("second task")
    assert result.final_text == "second answer"


def test_replay_model_info_names_the_recorded_model(recorded: tuple[Path, Path]) -> None:
    model = replay_model(recorded[0])
    assert model.info.provider == "replay" and model.info.api == "replay"
    assert model.info.id == "mock:mock"


def test_recorded_session_copy_is_not_modified(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    session_path, origin = recorded
    before = session_path.read_bytes()
    copy = tmp_path / "copy.jsonl"
    shutil.copy(session_path, copy)
    checkout = fresh_checkout(tmp_path, origin, "ro")
    run_agent(replay_model(copy, workspace=checkout), checkout)
    assert copy.read_bytes() == before


def test_compaction_summary_requests_get_the_recorded_summary(tmp_path: Path) -> None:
    from bot.agent.compaction import SUMMARY_SYSTEM_PROMPT
    from bot.llm.base import ModelRequest
    from bot.llm.retry import RetryPolicy, complete

    path = write_lines(tmp_path / "s.jsonl", [
        header(), entry("a", None, user("go")), entry("b", "a", assistant("first")),
        {"type": "compaction", "id": "k", "parent_id": "b", "timestamp": "t", "summary": "## Goal\nrecorded",
         "first_kept_entry_id": "b", "tokens_before": 10, "tokens_after": 2, "details": {}},
        entry("c", "k", user("more")), entry("d", "c", assistant("second"))])
    model = replay_model(path, workspace=tmp_path)
    summary = complete(model, ModelRequest(system=SUMMARY_SYSTEM_PROMPT, messages=[UserMessage(content="x")]),
                       RetryPolicy())
    assert summary.text == "## Goal\nrecorded"
    assert model.replayed == 0  # a summary does not consume a recorded turn


# -- the offline demo: `opi action --dry-run` driven by the hand-written example session --------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_example_session_is_hand_written_and_well_formed() -> None:
    session = Session.load(EXAMPLES / "session.jsonl")
    assert session.warnings == []
    assert session.header.metadata["hand_written"] is True
    assert "hand-written" in (session.header.origin or "")
    recording = load_recording(EXAMPLES / "session.jsonl")
    assert len(recording.assistants) == 4 and recording.skipped_lines == []


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "ACTIONS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"  # `opi` from this venv: no install step
    env["TMPDIR"] = str(tmp_path)
    return env


def test_the_demo_script_prints_the_comment(tmp_path: Path) -> None:
    done = subprocess.run([str(EXAMPLES / "demo.sh")], capture_output=True, text=True, env=demo_env(tmp_path),
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "✅ **opi finished**" in done.stdout
    assert "+def farewell(name: str) -> str:" in done.stdout and "test_greet.py" in done.stdout
    assert "passes (2 tests)" in done.stdout
    # The replay spent nothing; the comment shows what the recording cost, said so, and never a bare $0.
    recorded = Session.load(EXAMPLES / "session.jsonl").totals().cost.total
    assert recorded is not None and recorded > 0
    assert f"Cost: ${recorded:.4f} as recorded (the replay itself spent nothing), 4 turns" in done.stdout
    assert "$0.0000" not in done.stdout
    (checkout,) = tmp_path.glob("opi-demo.*/repo")
    assert 'return f"Goodbye, {name}!"' in (checkout / "greet.py").read_text()
    tests = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=checkout, capture_output=True, text=True,
                           timeout=60, check=False)
    assert tests.returncode == 0 and "Ran 2 tests" in tests.stderr


def test_the_demo_stops_clearly_when_the_checkout_diverges(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "repo", repo)
    (repo / "greet.py").write_text('def greet(name):\n    return "Hi " + name\n')
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a different project")
    env = demo_env(tmp_path)
    env["RUNNER_TEMP"] = str(tmp_path / "runner-temp")
    done = subprocess.run([sys.executable, "-m", "bot", "action", "--dry-run", "--event", str(EXAMPLES / "event.json"),
                           "--event-name", "issue_comment", "--model", f"replay:{EXAMPLES / 'session.jsonl'}"],
                          cwd=repo, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "❌ **opi failed**" in done.stdout
    assert "replay diverged at tool call read (toolu_01" in done.stdout
    assert "farewell" not in (repo / "greet.py").read_text()  # it stopped before the recorded edits


def test_cli_replay_of_a_recorded_run_reproduces_it_in_a_fresh_clone(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    """Record a real `opi -p` run against the scripted model, then replay its session in a fresh clone."""
    origin = make_repo(tmp_path / "origin")
    recorded_clone, fresh_clone = tmp_path / "a", tmp_path / "b"
    for clone in (recorded_clone, fresh_clone):
        git(tmp_path, "clone", "-q", str(origin), str(clone))
    fake_llm.enqueue_many([
        Reply(tool_calls=[("t1", "bash", {"command": "git log --oneline | wc -l && ls"})]),
        Reply(tool_calls=[("t2", "edit", {"path": "greet.py", "old_text": "Hello", "new_text": "Howdy"}),
                          ("t3", "write", {"path": "notes/DONE.md", "content": "renamed the greeting\n"})]),
        Reply(text="Changed the greeting to Howdy."),
    ])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "ACTIONS_"))}
    env.update({"ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": fake_llm.anthropic_base_url})
    sessions = tmp_path / "sessions"

    def opi(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", "-p", "Say howdy instead", "--allow-mutating",
                               "--session-dir", str(sessions), *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    first = opi(recorded_clone, "--model", "anthropic:claude-sonnet-4-5")
    assert first.returncode == 0, first.stderr
    (recording,) = sessions.glob("*.jsonl")
    replayed = opi(fresh_clone, "--model", f"replay:{recording}")
    assert replayed.returncode == 0, replayed.stderr
    assert "Changed the greeting to Howdy." in replayed.stdout
    assert len(fake_llm.requests) == 3  # the replay never called the model server
    for name in ("greet.py", "notes/DONE.md"):
        assert (fresh_clone / name).read_text() == (recorded_clone / name).read_text()
    assert git(fresh_clone, "status", "--porcelain") == git(recorded_clone, "status", "--porcelain")


def test_a_turn_compacted_out_of_the_context_is_not_a_divergence(tmp_path: Path) -> None:
    from bot.llm.base import ModelRequest
    from bot.llm.retry import RetryPolicy, complete

    call = ToolCall(id="c1", name="read", arguments={"path": "x.txt"})
    path = write_lines(tmp_path / "s.jsonl", [
        header(), entry("a", None, user("go")), entry("b", "a", assistant("reading", [call])),
        entry("c", "b", {"role": "tool_result", "tool_call_id": "c1", "tool_name": "read",
                         "content": [{"type": "text", "text": "recorded"}], "is_error": False}),
        entry("d", "c", assistant("done"))])
    model = replay_model(path, workspace=tmp_path)
    complete(model, ModelRequest(system="s", messages=[UserMessage(content="go")]), RetryPolicy())
    # After a compaction the context holds only a summary: the result cannot be checked, so it is not.
    summary_only = [UserMessage(content="The conversation history before this point was compacted ...")]
    assert complete(model, ModelRequest(system="s", messages=summary_only), RetryPolicy()).text == "done"


def test_an_entry_without_parent_id_is_corrupt_for_the_replay_as_for_a_resume(tmp_path: Path) -> None:
    orphan = {"type": "message", "id": "b", "timestamp": "t", "message": assistant("injected, no parent")}
    path = write_lines(tmp_path / "s.jsonl", [header(), entry("a", None, user("hi")), orphan,
                                              entry("c", "a", assistant("recorded"))])
    recording = load_recording(path)
    assert [m.text for m in recording.assistants] == ["recorded"] and recording.skipped_lines == [3]
    assert [m.text for m in Session.load(path).context()] == ["hi", "recorded"]  # the one reader: same rule
