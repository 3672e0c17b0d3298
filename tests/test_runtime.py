"""The runtime factory: tool policy, scrubbed tool environment, limits, prompt, sessions and compaction."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bot.agent.compaction import Compactor
from bot.agent.config import Settings
from bot.agent.loop import Outcome
from bot.agent.runtime import (
    RunSetupError,
    SessionOptions,
    SessionUnavailable,
    build_agent,
    open_session,
    prepare_run,
    resolve_settings_model,
)
from bot.agent.session import SessionConversation
from bot.llm.errors import AuthError, ConfigError
from bot.llm.messages import ToolCall, Usage
from bot.llm.mock import MockModel
from bot.llm.models import EndpointConfig
from bot.tools.base import Tool

READ_ONLY = ["read", "grep", "find", "ls"]
ALL = ["read", "write", "edit", "bash", "grep", "find", "ls"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, timeout=30)
    (root / "notes.txt").write_text("alpha\nbeta\n", encoding="utf-8")
    return root


def settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings.model_validate({"session_dir": str(tmp_path / "sessions"), **values})


def never_approve(call: ToolCall, tool: Tool) -> str | None:
    return "no"


# -- tool policy -----------------------------------------------------------------------------------
def test_non_interactive_offers_only_read_only_tools(workspace: Path, tmp_path: Path) -> None:
    agent = build_agent(settings(tmp_path), workspace, model=MockModel(), env={})
    assert list(agent.tools) == READ_ONLY
    assert agent.approver is None


def test_allow_mutating_offers_everything(workspace: Path, tmp_path: Path) -> None:
    agent = build_agent(settings(tmp_path, allow_mutating=True), workspace, model=MockModel(),
                        approver=never_approve, env={})
    assert list(agent.tools) == ALL
    assert agent.approver is None  # allowed means nobody is asked


def test_interactive_offers_mutating_tools_behind_the_approver(workspace: Path, tmp_path: Path) -> None:
    agent = build_agent(settings(tmp_path), workspace, model=MockModel(), interactive=True,
                        approver=never_approve, env={})
    assert list(agent.tools) == ALL
    assert agent.approver is never_approve


def test_mutating_call_is_not_executed_when_not_offered(workspace: Path, tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue("", tool_calls=[ToolCall(id="c1", name="write",
                                           arguments={"path": "new.txt", "content": "x"})])
    model.enqueue("gave up")
    agent = build_agent(settings(tmp_path), workspace, model=model, env={})
    result = agent.run("write a file")
    assert result.outcome is Outcome.COMPLETED
    assert not (workspace / "new.txt").exists()
    assert "not available" in model.requests[1].messages[-1].text


def test_tool_selection_errors(workspace: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="teleport"):
        build_agent(settings(tmp_path, tools=["read", "teleport"]), workspace, model=MockModel(), env={})
    with pytest.raises(ValueError, match="allow-mutating"):
        build_agent(settings(tmp_path, tools=["write"]), workspace, model=MockModel(), env={})
    agent = build_agent(settings(tmp_path, tools=["ls", "read"]), workspace, model=MockModel(), env={})
    assert list(agent.tools) == ["read", "ls"]
    assert build_agent(settings(tmp_path, no_tools=True), workspace, model=MockModel(), env={}).tools == {}


# -- environment -----------------------------------------------------------------------------------
SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-secret", "OPENAI_API_KEY": "sk-secret", "GITHUB_TOKEN": "ghp_secret",
    "ACTIONS_RUNTIME_TOKEN": "actions-secret", "INPUT_GITHUB_TOKEN": "input-secret",
    "LOCAL_LLM_CREDENTIAL": "endpoint-secret",  # matches no pattern: scrubbed because an endpoint names it
}


def test_tool_environment_is_scrubbed_for_real_commands(workspace: Path, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KEEP_ME": "visible", **SECRETS}
    config = settings(tmp_path, allow_mutating=True,
                      endpoints={"local": {"base_url": "http://127.0.0.1:9/v1",
                                           "api_key_env": "LOCAL_LLM_CREDENTIAL"}})
    model = MockModel()
    model.enqueue("", tool_calls=[ToolCall(id="c1", name="bash", arguments={"command": "env"})])
    model.enqueue("done")
    agent = build_agent(config, workspace, model=model, env=env)
    assert "KEEP_ME" in agent.tool_context.env
    assert not set(SECRETS) & set(agent.tool_context.env)
    assert agent.run("show env").ok
    output = model.requests[1].messages[-1].text
    assert "KEEP_ME=visible" in output
    for name, value in SECRETS.items():
        assert value not in output, name


# -- limits, retries, prompt -----------------------------------------------------------------------
def test_limits_retry_thinking_and_bash_timeout(workspace: Path, tmp_path: Path) -> None:
    config = settings(tmp_path, max_turns=7, max_cost_usd=1.25, timeout_seconds=90, thinking="high",
                      bash_timeout=12, retry={"max_retries": 1, "base_delay": 0.5, "max_delay": 3})
    agent = build_agent(config, workspace, model=MockModel(), env={})
    assert (agent.limits.max_turns, agent.limits.max_cost_usd, agent.limits.max_wall_seconds) == (7, 1.25, 90)
    assert (agent.retry.max_retries, agent.retry.base_delay, agent.retry.max_delay) == (1, 0.5, 3)
    assert agent.thinking == "high"
    assert agent.tool_context.bash_timeout == 12
    assert agent.tool_context.workspace == workspace.resolve()


def test_system_prompt_names_tools_and_reads_context_files(workspace: Path, tmp_path: Path) -> None:
    (workspace / "AGENTS.md").write_text("Always run make check.")
    global_dir = tmp_path / "config-home" / "opi"
    global_dir.mkdir(parents=True)
    (global_dir / "AGENTS.md").write_text("I prefer short answers.")
    agent = build_agent(settings(tmp_path, append_system_prompt=["Extra rule."]), workspace,
                        model=MockModel(), env={"OPI_CONFIG_DIR": str(global_dir)})
    prompt = agent.system_prompt
    assert "- read:" in prompt and "- bash:" not in prompt
    assert "Always run make check." in prompt and "I prefer short answers." in prompt
    assert prompt.index("I prefer short answers.") < prompt.index("Always run make check.")
    assert prompt.index("Always run make check.") < prompt.index("Extra rule.")
    assert str(workspace.resolve()) in prompt


# -- models ----------------------------------------------------------------------------------------
def test_resolves_models_from_settings(tmp_path: Path) -> None:
    model = resolve_settings_model(settings(tmp_path, model="openai:gpt-4.1"), {"OPENAI_API_KEY": "k"})
    assert (model.info.provider, model.info.id, model.info.api) == ("openai", "gpt-4.1", "openai")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve_settings_model(settings(tmp_path, model="openai:gpt-4.1"), {})
    local = settings(tmp_path, model="local:qwen3",
                     endpoints={"local": EndpointConfig(base_url="http://127.0.0.1:9/v1")})
    assert resolve_settings_model(local, {}).info.provider == "local"
    with pytest.raises(ConfigError, match="unknown provider"):
        resolve_settings_model(settings(tmp_path, model="nowhere:x"), {})


# -- sessions --------------------------------------------------------------------------------------
def test_new_session_is_written_as_the_agent_runs(workspace: Path, tmp_path: Path) -> None:
    config = settings(tmp_path)
    handle = open_session(config, workspace, metadata={"repo": "octo/demo", "origin": "https://ci/run/1",
                                                       "number": 7})
    assert handle.path is not None and handle.path.parent == tmp_path / "sessions"
    model = MockModel()
    model.enqueue("", tool_calls=[ToolCall(id="c1", name="read", arguments={"path": "notes.txt"})],
                  usage=Usage(input=10, output=2))
    model.enqueue("beta is on line 2", usage=Usage(input=20, output=3))
    agent = build_agent(config, workspace, session=handle, model=model, env={})
    assert isinstance(agent.conversation, SessionConversation)
    assert isinstance(agent.compactor, Compactor)
    assert agent.run("where is beta?").ok
    handle.close()
    lines = [json.loads(line) for line in handle.path.read_text().splitlines()]
    assert lines[0]["repo"] == "octo/demo" and lines[0]["origin"] == "https://ci/run/1"
    assert lines[0]["metadata"] == {"number": 7}
    assert lines[0]["model"] == config.model
    roles = [line["message"]["role"] for line in lines[1:] if line["type"] == "message"]
    assert roles == ["user", "assistant", "tool_result", "assistant"]


def test_resume_continue_fork_and_no_session(workspace: Path, tmp_path: Path) -> None:
    config = settings(tmp_path)
    first = open_session(config, workspace)
    model = MockModel()
    model.enqueue("first", usage=Usage(input=100, output=10))
    build_agent(config, workspace, session=first, model=model, env={}).run("hello")
    first.close()
    assert first.path is not None
    session_id = first.path.stem

    resumed = open_session(config, workspace, resume=session_id[:6])
    assert resumed.path == first.path and resumed.resumed
    assert resumed.usage.input == 100  # what the session had spent is restored
    assert [m.role for m in resumed.conversation.context()] == ["user", "assistant"]
    resumed.close()

    continued = open_session(config, workspace, continue_=True)
    assert continued.path == first.path
    continued.close()

    forked = open_session(config, workspace, fork=str(first.path))
    assert forked.path not in (None, first.path) and forked.session is not None
    assert forked.session.header.parent_session == forked_parent_id(first.path)
    assert len(forked.conversation.context()) == 2
    forked.close()

    memory = open_session(settings(tmp_path, no_session=True), workspace, resume=session_id)
    assert memory.path is None and len(memory.conversation.context()) == 2
    memory.close()
    assert len(list((tmp_path / "sessions").glob("*.jsonl"))) == 2  # the original and the fork


def forked_parent_id(path: Path) -> str:
    return str(json.loads(path.read_text().splitlines()[0])["id"])


def test_unknown_session_is_a_lookup_error(workspace: Path, tmp_path: Path) -> None:
    with pytest.raises(SessionUnavailable, match="no session matches") as info:
        open_session(settings(tmp_path), workspace, resume="feedface")
    assert isinstance(info.value, LookupError)
    not_a_session = tmp_path / "notes.jsonl"
    not_a_session.write_text('{"hello": 1}\n')
    with pytest.raises(SessionUnavailable, match="not a session"):
        open_session(settings(tmp_path), workspace, resume=str(not_a_session))


def test_compaction_can_be_disabled(workspace: Path, tmp_path: Path) -> None:
    config = settings(tmp_path, no_session=True, compaction={"enabled": False})
    handle = open_session(config, workspace)
    agent = build_agent(config, workspace, session=handle, model=MockModel(), env={})
    assert agent.compactor is None


# -- prepare_run: one setup and one error net for every shell ----------------------------------------
def test_prepare_run_builds_the_agent_on_its_session_and_wraps_every_tool(workspace: Path, tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue("", tool_calls=[ToolCall(id="c1", name="read", arguments={"path": "notes.txt"})],
                  usage=Usage(input=10, output=2))
    model.enqueue("beta", usage=Usage(input=20, output=3))
    wrapped: list[str] = []

    def wrap(tool: Tool) -> Tool:
        wrapped.append(tool.name)
        return tool

    with prepare_run(settings(tmp_path), workspace, model=model, env={}, wrap_tool=wrap,
                     session=SessionOptions(metadata={"repo": "octo/demo", "number": 7})) as run:
        assert wrapped == READ_ONLY and list(run.agent.tools) == READ_ONLY
        assert run.agent.cancel is run.agent.tool_context.cancel  # shared once, not written per call
        result = run.agent.run("where is beta?")
    assert result.ok and (result.run_usage.input, result.run_usage.output) == (30, 5)
    assert run.handle.path is not None and run.handle.path.exists()  # answered: kept
    header = json.loads(run.handle.path.read_text().splitlines()[0])
    assert header["repo"] == "octo/demo" and header["metadata"] == {"number": 7}

    with prepare_run(settings(tmp_path), workspace, model=MockModel(), env={},
                     session=SessionOptions(resume=run.handle.path.stem[:8])) as again:
        again.agent.model.enqueue("still here", usage=Usage(input=7))  # type: ignore[attr-defined]
        second = again.agent.run("and now?")
    assert second.run_usage.input == 7 and second.usage.input == 37  # this run apart from the session's


def test_a_failed_setup_leaves_no_session_file(workspace: Path, tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    for broken, cause in [(settings(tmp_path, model="mock:m", tools=["teleport"]), ValueError),
                          (settings(tmp_path, model="openai:gpt-4.1"), ConfigError)]:
        with pytest.raises(RunSetupError) as failed, prepare_run(broken, workspace, env={}):
            pytest.fail("the block must not run")
        assert isinstance(failed.value.error, cause)
        assert list(sessions.glob("*.jsonl")) == []
    with pytest.raises(RunSetupError) as missing, prepare_run(settings(tmp_path), workspace, model=MockModel(),
                                                              session=SessionOptions(resume="feedface")):
        pytest.fail("the block must not run")
    assert isinstance(missing.value.error, SessionUnavailable)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RunSetupError, match="a-file/sessions: cannot write sessions there"), \
            prepare_run(settings(tmp_path, session_dir=str(blocker / "sessions")), workspace, model=MockModel()):
        pytest.fail("the block must not run")


def test_a_run_the_model_never_answered_leaves_no_session(workspace: Path, tmp_path: Path) -> None:
    model = MockModel()
    model.enqueue(AuthError("invalid x-api-key", provider="anthropic", status=401))
    with prepare_run(settings(tmp_path), workspace, model=model, env={}) as run:
        result = run.agent.run("hello?")
        assert run.handle.path is not None and run.handle.path.exists()  # the prompt was written...
    assert result.outcome is Outcome.ERROR
    assert run.handle.path is None and list((tmp_path / "sessions").glob("*.jsonl")) == []  # ...and removed
