"""`opi -p` end to end: the real program in a subprocess, real tools on real files, and the scripted model
server on loopback in both dialects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.llm.messages import Usage
from tests.fake_llm import ErrorReply, FakeLLMServer, RecordedRequest, Reply

pytestmark = pytest.mark.slow

ANTHROPIC = "anthropic:claude-sonnet-4-5"
OPENAI = "openai:gpt-4.1"
READ_ONLY = {"read", "grep", "find", "ls"}
MUTATING = {"write", "edit", "bash"}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, timeout=30)
    (root / "greet.py").write_text('def greet():\n    return "hello"\n', encoding="utf-8")
    return root


def opi_env(server: FakeLLMServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANTHROPIC_BASE_URL": server.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-dummy",
        "OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": "sk-dummy",
        "OPI_SESSIONS_DIR": str(tmp_path / "sessions"),
        # keep retry waits short; a server's retry-after still wins
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def opi(args: list[str], *, cwd: Path, env: dict[str, str], stdin: str | None = "",
        timeout: float = 60) -> Run:
    proc = subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def texts(value: Any) -> str:
    """Every string inside a request body (or part of one), joined: what the model was sent."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(texts(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(texts(v) for v in value)
    return ""


def tool_names(body: dict[str, Any]) -> set[str]:
    tools = body.get("tools") or []
    return {t["function"]["name"] if "function" in t else t["name"] for t in tools}


def fast_retries(workspace: Path) -> None:
    config = workspace / ".opi" / "config.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text("[retry]\nbase_delay = 0.01\nmax_delay = 0.05\nmax_retries = 2\n", encoding="utf-8")


# -- multi-turn tool-using runs --------------------------------------------------------------------
@pytest.mark.parametrize("model", [ANTHROPIC, OPENAI])
def test_multi_turn_edit_in_each_dialect(model: str, fake_llm: FakeLLMServer, workspace: Path,
                                         tmp_path: Path) -> None:
    fake_llm.enqueue_many([
        Reply(text="Let me look.", tool_calls=[("call_1", "read", {"path": "greet.py"})]),
        Reply(tool_calls=[("call_2", "edit", {"path": "greet.py", "old_text": '"hello"',
                                              "new_text": '"hello, world"'})]),
        Reply(tool_calls=[("call_3", "bash", {"command": "python3 -c 'import greet; print(greet.greet())'"})]),
        Reply(text="Done: greet() now returns 'hello, world'."),
    ])
    run = opi(["-p", "Make greet say hello, world", "--model", model, "--allow-mutating"],
              cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 0, run.stderr
    assert run.stdout == "Done: greet() now returns 'hello, world'.\n"
    assert (workspace / "greet.py").read_text() == 'def greet():\n    return "hello, world"\n'
    assert "→ read path=greet.py" in run.stderr
    assert "→ edit" in run.stderr and "→ bash" in run.stderr
    assert "4 turns" in run.stderr

    bodies = fake_llm.bodies()
    assert len(bodies) == 4
    assert all(request.dialect == model.split(":")[0] for request in fake_llm.requests)
    # the tool results the model got back: the file content, then the command's real output
    assert 'return "hello"' in texts(bodies[1]["messages"])
    assert "hello, world" in texts(bodies[3]["messages"][-1])
    assert "Make greet say hello, world" in texts(bodies[0]["messages"])
    assert tool_names(bodies[0]) == READ_ONLY | MUTATING


def test_json_event_stream_and_summary(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue_many([
        Reply(tool_calls=[("c1", "read", {"path": "greet.py"})],
              usage=Usage(input=1000, output=100, cache_read=2000, cache_write=500)),
        Reply(text="It returns hello.", usage=Usage(input=200, output=50, cache_read=3000)),
    ])
    run = opi(["-p", "What does greet return?", "--json"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 0, run.stderr
    lines = run.json_lines()
    types = [line["type"] for line in lines]
    assert types[0] == "agent_start"
    assert types[-2:] == ["agent_end", "summary"]
    for expected in ("turn_start", "message_start", "message_update", "message_end", "tool_start",
                     "tool_end", "turn_end"):
        assert expected in types
    tool_end = next(line for line in lines if line["type"] == "tool_end")
    assert tool_end["tool_name"] == "read" and not tool_end["is_error"]
    assert 'return "hello"' in tool_end["text"]

    summary = lines[-1]
    assert summary["outcome"] == "completed"
    assert summary["exit_code"] == 0
    assert summary["turns"] == 2
    assert summary["tokens"] == {"input": 1200, "output": 150, "cache_read": 5000, "cache_write": 500,
                                 "total": 6850}
    assert summary["final_text"] == "It returns hello."
    assert isinstance(summary["cost"], float) and summary["cost"] > 0
    breakdown = summary["cost_breakdown"]
    parts = breakdown["input"] + breakdown["output"] + breakdown["cache_read"] + breakdown["cache_write"]
    assert abs(parts - summary["cost"]) < 1e-9
    assert breakdown["cache_read"] < breakdown["input"] * 5000 / 1200  # cache reads are discounted
    assert "c1" in json.dumps(lines)
    assert run.stderr.strip() == ""  # --json keeps stderr quiet on success


def test_unknown_price_is_reported_as_unknown(fake_llm: FakeLLMServer, workspace: Path,
                                              tmp_path: Path) -> None:
    fake_llm.enqueue(Reply(text="hi", usage=Usage(input=10, output=5)))
    run = opi(["-p", "hi", "--model", "openai:my-private-finetune-xyz"], cwd=workspace,
              env=opi_env(fake_llm, tmp_path))
    assert run.code == 0, run.stderr
    assert "unknown price" in run.stderr
    fake_llm.enqueue(Reply(text="hi", usage=Usage(input=10, output=5)))
    run = opi(["-p", "hi", "--json", "--model", "openai:my-private-finetune-xyz"], cwd=workspace,
              env=opi_env(fake_llm, tmp_path))
    assert run.json_lines()[-1]["cost"] is None


# -- failures and exit codes -----------------------------------------------------------------------
@pytest.mark.parametrize("model", [ANTHROPIC, OPENAI])
def test_auth_failure_exits_3(model: str, fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue(ErrorReply(401, "invalid x-api-key"))
    run = opi(["-p", "hi", "--model", model], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 3, run.stderr
    assert "401" in run.stderr and "invalid x-api-key" in run.stderr
    assert run.stdout == ""
    assert len(fake_llm.requests) == 1  # never retried


def test_rate_limit_then_success(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fast_retries(workspace)
    fake_llm.enqueue_many([ErrorReply(429, "slow down", headers={"retry-after": "0"}), Reply(text="ok then")])
    run = opi(["-p", "hi"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 0, run.stderr
    assert run.stdout == "ok then\n"
    assert "retry 1" in run.stderr and "429" in run.stderr


def test_provider_error_exits_4(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue(ErrorReply(400, "messages: field required"))
    run = opi(["-p", "hi"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 4, run.stderr
    assert "messages: field required" in run.stderr


def test_server_errors_exhaust_retries_exit_4(fake_llm: FakeLLMServer, workspace: Path,
                                              tmp_path: Path) -> None:
    fast_retries(workspace)
    fake_llm.enqueue_many([ErrorReply(500, "boom")] * 3)
    run = opi(["-p", "hi", "--json"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 4, run.stderr
    summary = run.json_lines()[-1]
    assert summary["outcome"] == "error"
    assert "gave up after 3 attempts" in summary["error"]
    assert [line["attempt"] for line in run.json_lines() if line["type"] == "retry"] == [1, 2]


def test_max_turns_limit_exits_1(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue_many([Reply(tool_calls=[(f"c{i}", "ls", {})]) for i in range(2)])
    run = opi(["-p", "loop forever", "--max-turns", "2"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 1
    assert "reached the limit of 2 turns" in run.stderr
    assert run.stdout == ""  # a limit is not an answer


def test_max_cost_limit_exits_1(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue(Reply(tool_calls=[("c1", "ls", {})], usage=Usage(input=1_000_000, output=1000)))
    run = opi(["-p", "spend", "--max-cost", "0.5", "--json"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 1
    summary = run.json_lines()[-1]
    assert summary["outcome"] == "max_cost"
    assert "reaching the limit of $0.5" in summary["error"]
    assert summary["cost"] >= 0.5


def test_interrupt_exits_130(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    # The answer takes 8 s to stream, so a Ctrl+C sent once the request has arrived lands mid-answer.
    # (Text mode shows nothing while streaming; the --json twin below waits for streamed text first.)
    asked = threading.Event()

    def slow_answer(request: RecordedRequest) -> Reply:
        asked.set()
        return Reply(text="a slow answer " * 20, chunks=40, delay=0.2)

    fake_llm.responder = slow_answer
    proc = subprocess.Popen([sys.executable, "-m", "bot", "-p", "hi"], cwd=workspace,
                            env=opi_env(fake_llm, tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert asked.wait(timeout=30), "opi never sent its request"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert stdout == ""


# -- input and tool selection ----------------------------------------------------------------------
def test_piped_stdin_is_appended_to_prompt(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue("It is a traceback.")
    run = opi(["-p", "Explain this log:"], cwd=workspace, env=opi_env(fake_llm, tmp_path),
              stdin="Traceback (most recent call last):\n  boom\n")
    assert run.code == 0, run.stderr
    first_user = fake_llm.bodies()[0]["messages"][0]
    text = texts(first_user)
    assert "Explain this log:" in text and "Traceback (most recent call last):" in text
    assert text.index("Explain this log:") < text.index("Traceback")


def test_stdin_alone_is_the_prompt(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue("ok")
    run = opi([], cwd=workspace, env=opi_env(fake_llm, tmp_path), stdin="say ok")
    assert run.code == 0, run.stderr
    assert "say ok" in texts(fake_llm.bodies()[0]["messages"])


@pytest.mark.parametrize("model", [ANTHROPIC, OPENAI])
def test_mutating_tools_not_offered_without_allow(model: str, fake_llm: FakeLLMServer, workspace: Path,
                                                   tmp_path: Path) -> None:
    # the model calls write anyway: it must not run, and the file must not appear
    fake_llm.enqueue_many([
        Reply(tool_calls=[("c1", "write", {"path": "evil.txt", "content": "x"})]),
        Reply(text="I could not write."),
    ])
    run = opi(["-p", "write a file", "--model", model], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 0, run.stderr
    assert tool_names(fake_llm.bodies()[0]) == READ_ONLY
    assert not (workspace / "evil.txt").exists()
    assert "not available" in texts(fake_llm.bodies()[1]["messages"][-1])


def test_tools_flag_selects_and_no_tools_removes(fake_llm: FakeLLMServer, workspace: Path,
                                                 tmp_path: Path) -> None:
    fake_llm.enqueue_many(["one", "two"])
    env = opi_env(fake_llm, tmp_path)
    assert opi(["-p", "hi", "--tools", "read,grep"], cwd=workspace, env=env).code == 0
    assert opi(["-p", "hi", "--no-tools"], cwd=workspace, env=env).code == 0
    first, second = fake_llm.bodies()
    assert tool_names(first) == {"read", "grep"}
    assert tool_names(second) == set()


def test_unknown_tool_name_exits_2(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    run = opi(["-p", "hi", "--tools", "read,teleport"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 2
    assert "teleport" in run.stderr
    assert fake_llm.requests == []


# -- configuration and usage errors ----------------------------------------------------------------
def test_bad_config_exits_2(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    config = workspace / ".opi" / "config.toml"
    config.parent.mkdir()
    config.write_text('max_turns = "many"\n')
    run = opi(["-p", "hi", "--json"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 2
    assert str(config) in run.stderr and "max_turns" in run.stderr
    assert run.json_lines()[-1]["exit_code"] == 2
    assert fake_llm.requests == []


def test_config_file_model_is_used(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    config = workspace / ".opi" / "config.toml"
    config.parent.mkdir()
    config.write_text('model = "openai:gpt-4.1-mini"\n')
    fake_llm.enqueue("from openai")
    run = opi(["-p", "hi"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 0, run.stderr
    assert fake_llm.requests[0].dialect == "openai"
    assert fake_llm.bodies()[0]["model"] == "gpt-4.1-mini"


def test_missing_api_key_exits_2(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    env = opi_env(fake_llm, tmp_path)
    del env["ANTHROPIC_API_KEY"]
    run = opi(["-p", "hi"], cwd=workspace, env=env)
    assert run.code == 2
    assert "ANTHROPIC_API_KEY" in run.stderr
    assert not list((tmp_path / "sessions").glob("*.jsonl"))  # a run that never started leaves no file


@pytest.mark.parametrize("args", [["--max-turns", "0"], ["--thinking", "extreme"], ["--max-cost", "free"],
                                  ["-p", "a", "b"], ["--resume", "x", "--continue"]])
def test_bad_flags_exit_2(args: list[str], fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    run = opi([*args, "-p", "hi"] if "-p" not in args else args, cwd=workspace,
              env=opi_env(fake_llm, tmp_path))
    assert run.code == 2, run.stderr
    assert fake_llm.requests == []


def test_no_prompt_without_terminal_exits_2(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    run = opi([], cwd=workspace, env=opi_env(fake_llm, tmp_path), stdin="")
    assert run.code == 2
    assert "no prompt" in run.stderr


def test_version(workspace: Path, fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    from bot import __version__

    run = opi(["--version"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 0
    assert run.stdout == f"opi {__version__}\n"


def test_action_subcommand_is_dispatched(workspace: Path, fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    run = opi(["action", "--help"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code in (0, 2)
    assert "action" in (run.stdout + run.stderr)


# -- sessions --------------------------------------------------------------------------------------
def test_session_written_then_continued_and_forked(fake_llm: FakeLLMServer, workspace: Path,
                                                  tmp_path: Path) -> None:
    env = opi_env(fake_llm, tmp_path)
    fake_llm.enqueue(Reply(text="first answer", usage=Usage(input=100, output=10)))
    first = opi(["-p", "first question", "--json"], cwd=workspace, env=env).json_lines()[-1]
    session_path = Path(first["session"])
    assert session_path.is_file() and session_path.parent == tmp_path / "sessions"
    header = json.loads(session_path.read_text().splitlines()[0])
    assert header["type"] == "session" and header["model"] == ANTHROPIC

    fake_llm.enqueue(Reply(text="second answer", usage=Usage(input=200, output=20)))
    second = opi(["-p", "second question", "--json", "-c"], cwd=workspace, env=env).json_lines()[-1]
    assert second["session"] == first["session"]  # -c appends to the most recent session here
    assert second["tokens"]["input"] == 200  # this run's spend ...
    assert second["session_total"]["tokens"]["input"] == 300  # ... and the session's
    context = texts(fake_llm.bodies()[1]["messages"])
    assert "first question" in context and "first answer" in context and "second question" in context

    fake_llm.enqueue("forked answer")
    run = opi(["-p", "third question", "--fork", header["id"][:8]], cwd=workspace, env=env)
    assert run.code == 0, run.stderr
    forked = Path(run.stderr.split("session: ")[1].strip())
    assert forked != session_path
    assert json.loads(forked.read_text().splitlines()[0])["parent_session"] == header["id"]
    assert "second answer" in texts(fake_llm.bodies()[2]["messages"])
    assert "third question" not in session_path.read_text()  # the parent is untouched

    # A fork the model never answered (a bad key) is a new file of that run, deleted like any new one.
    files = sorted((tmp_path / "sessions").glob("*.jsonl"))
    fake_llm.enqueue(ErrorReply(401, "invalid x-api-key"))
    failed = opi(["-p", "fourth question", "--fork", header["id"][:8]], cwd=workspace, env=env)
    assert failed.code == 3, failed.stderr
    assert sorted((tmp_path / "sessions").glob("*.jsonl")) == files


def test_no_session_writes_nothing(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue("ok")
    run = opi(["-p", "hi", "--no-session", "--json"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 0, run.stderr
    assert run.json_lines()[-1]["session"] is None
    assert not (tmp_path / "sessions").exists()


def test_resume_unknown_session_exits_2(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    run = opi(["-p", "hi", "--resume", "deadbeef"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 2
    assert "no session matches 'deadbeef'" in run.stderr


def test_interrupted_run_saves_the_partial_answer(fake_llm: FakeLLMServer, workspace: Path,
                                                  tmp_path: Path) -> None:
    fake_llm.enqueue(Reply(text="partial words " * 30, chunks=60, delay=0.1))
    proc = subprocess.Popen([sys.executable, "-m", "bot", "-p", "hi", "--json"], cwd=workspace,
                            env=opi_env(fake_llm, tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until some text has streamed
            if json.loads(line)["type"] == "message_update":
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    summary = json.loads(rest.splitlines()[-1])
    assert summary["outcome"] == "aborted"
    entries = [json.loads(line) for line in Path(summary["session"]).read_text().splitlines()[1:]]
    aborted = [e["message"] for e in entries if e.get("message", {}).get("stop_reason") == "aborted"]
    assert len(aborted) == 1 and aborted[0]["content"][0]["text"].startswith("partial")


def test_list_sessions_and_export(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    env = opi_env(fake_llm, tmp_path)
    fake_llm.enqueue("listed answer")
    session = opi(["-p", "list me", "--json"], cwd=workspace, env=env).json_lines()[-1]["session"]
    listing = opi(["--list-sessions"], cwd=workspace, env=env)
    assert listing.code == 0 and "list me" in listing.stdout
    session_id = Path(session).stem
    exported = opi(["export", session_id[:8], "--format", "json"], cwd=workspace, env=env)
    assert exported.code == 0, exported.stderr
    assert "listed answer" in exported.stdout
    missing = opi(["export", "nope-nope"], cwd=workspace, env=env)
    assert missing.code == 2


def test_positional_prompt_without_terminal_is_print_mode(fake_llm: FakeLLMServer, workspace: Path,
                                                          tmp_path: Path) -> None:
    fake_llm.enqueue("positional answer")
    run = opi(["what is this?"], cwd=workspace, env=opi_env(fake_llm, tmp_path), stdin=None)
    assert run.code == 0, run.stderr
    assert run.stdout == "positional answer\n"


def test_reader_closing_stdout_does_not_crash_the_run(fake_llm: FakeLLMServer, workspace: Path,
                                                      tmp_path: Path) -> None:
    fake_llm.enqueue_many([Reply(tool_calls=[("c1", "read", {"path": "greet.py"})]),
                           Reply(text="finished " * 50, chunks=50)])
    proc = subprocess.Popen([sys.executable, "-m", "bot", "-p", "hi", "--json"], cwd=workspace,
                            env=opi_env(fake_llm, tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()  # like `| head -1`
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    session = next((tmp_path / "sessions").glob("*.jsonl"))
    assert "finished finished" in session.read_text()  # the run went on and was saved


def test_system_prompt_carries_context_files_and_flags(fake_llm: FakeLLMServer, workspace: Path,
                                                       tmp_path: Path) -> None:
    (workspace / "AGENTS.md").write_text("Use tabs, never spaces.")
    fake_llm.enqueue_many(["one", "two"])
    env = opi_env(fake_llm, tmp_path)
    assert opi(["-p", "hi", "--append-system-prompt", "Answer in French.", "--append-system-prompt",
                "Be brief."], cwd=workspace, env=env).code == 0
    assert opi(["-p", "hi", "--system-prompt", "You are a strict reviewer."], cwd=workspace, env=env).code == 0
    first, second = (texts(body["system"]) for body in fake_llm.bodies())
    assert "Use tabs, never spaces." in first and "- read:" in first
    assert first.index("Use tabs") < first.index("Answer in French.") < first.index("Be brief.")
    assert str(workspace) in first
    assert second.index("You are a strict reviewer.") < second.index("Use tabs, never spaces.")
    assert "- read:" not in second


def test_compact_subcommand(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    env = opi_env(fake_llm, tmp_path)
    fake_llm.enqueue_many([Reply(tool_calls=[("c1", "read", {"path": "greet.py"})]), "greet returns hello"])
    session = Path(opi(["-p", "what does greet return?", "--json"], cwd=workspace, env=env)
                   .json_lines()[-1]["session"])
    config = tmp_path / "compact.toml"
    config.write_text("[compaction]\nkeep_recent_tokens = 1\n")
    fake_llm.enqueue("## Goal\nFind what greet returns.\n## Progress\nDone: it returns hello.")
    run = opi(["compact", session.stem[:8], "--config", str(config)], cwd=workspace, env=env)
    assert run.code == 0, run.stderr
    assert "Compacted" in run.stdout
    entries = [json.loads(line) for line in session.read_text().splitlines()]
    assert entries[-1]["type"] == "compaction"
    assert "Find what greet returns." in entries[-1]["summary"]
    assert "what does greet return?" in texts(fake_llm.bodies()[-1]["messages"])  # summarised transcript


def test_wall_time_limit_exits_1(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue(Reply(text="slow " * 100, chunks=100, delay=0.1))  # ~10 s if left alone
    run = opi(["-p", "hi", "--timeout", "1", "--json"], cwd=workspace, env=opi_env(fake_llm, tmp_path))
    assert run.code == 1
    summary = run.json_lines()[-1]
    assert summary["outcome"] == "timeout"
    assert summary["final_text"] is None


def test_non_utf8_stdin_is_accepted(fake_llm: FakeLLMServer, workspace: Path, tmp_path: Path) -> None:
    fake_llm.enqueue("ok")
    proc = subprocess.run([sys.executable, "-m", "bot", "-p", "What is this?"], cwd=workspace,
                          env=opi_env(fake_llm, tmp_path), input=b"caf\xe9 au lait\n", capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "caf\ufffd au lait" in texts(fake_llm.bodies()[0]["messages"])


def test_exit_code_mapping_of_error_classes() -> None:
    from bot.agent.config import SettingsError
    from bot.agent.runtime import SessionUnavailable
    from bot.cli.print_mode import error_exit_code
    from bot.llm import errors

    assert error_exit_code(errors.AuthError("bad key", status=401)) == 3
    assert error_exit_code(errors.RetriesExhausted(errors.AuthError("x", status=403), 1)) == 3
    assert error_exit_code(errors.RetriesExhausted(errors.RateLimitError("x", status=429), 5)) == 4
    assert error_exit_code(errors.ContextOverflowError("prompt is too long", status=400)) == 4
    assert error_exit_code(errors.BadRequestError("x", status=400)) == 4
    assert error_exit_code(errors.ServerError("x", status=500)) == 4
    assert error_exit_code(errors.ConfigError("no API key")) == 2
    assert error_exit_code(SettingsError("bad config")) == 2
    assert error_exit_code(SessionUnavailable("no session")) == 2
    assert error_exit_code(ValueError("unknown tool")) == 2
    assert error_exit_code(RuntimeError("bug")) == 1
