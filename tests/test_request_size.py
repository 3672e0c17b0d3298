"""What `opi -p` puts on the wire, measured at the scripted model server: the first request with all seven
tools and the default system prompt stays within 6,000 bytes, and every request is a strict extension of
the one before (what prompt caching needs), with Anthropic's cache breakpoints where they belong."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fake_llm import FakeLLMServer, Reply

FIRST_REQUEST_LIMIT = 6_000
ALL_TOOLS = {"read", "write", "edit", "bash", "grep", "find", "ls"}
MODELS = {"anthropic": "anthropic:claude-sonnet-4-5", "openai": "openai:gpt-4.1"}


def run_opi(server: FakeLLMServer, tmp_path: Path, dialect: str, prompt: str) -> None:
    workspace = tmp_path / "work"
    workspace.mkdir(exist_ok=True)
    (workspace / "notes.txt").write_text("the fox jumps over the lazy dog\n" * 5, encoding="utf-8")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPI_", "ANTHROPIC_", "OPENAI_"))}
    env.update(server.env(), HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               OPI_SESSIONS_DIR=str(tmp_path / "sessions"))
    done = subprocess.run([sys.executable, "-m", "bot", "-p", prompt, "--model", MODELS[dialect],
                           "--allow-mutating"], cwd=workspace, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def tool_names(body: dict[str, Any]) -> set[str]:
    return {tool.get("name") or tool["function"]["name"] for tool in body["tools"]}


@pytest.mark.parametrize("dialect", sorted(MODELS))
def test_the_first_request_with_all_tools_fits_in_6000_bytes(fake_llm: FakeLLMServer, tmp_path: Path,
                                                              dialect: str) -> None:
    fake_llm.enqueue(Reply(text="done"))
    run_opi(fake_llm, tmp_path, dialect, "Fix the failing test in tests/test_parse.py.")
    first = fake_llm.requests[0]
    assert tool_names(first.body) == ALL_TOOLS
    system = first.body["system"][0]["text"] if dialect == "anthropic" else first.body["messages"][0]["content"]
    assert system.startswith("You are opi")  # the default system prompt, not a custom one
    assert len(first.raw) <= FIRST_REQUEST_LIMIT, f"first request is {len(first.raw)} bytes"


def without_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [without_cache_control(v) for v in value]
    return value


@pytest.mark.parametrize("dialect", sorted(MODELS))
def test_each_request_strictly_extends_the_one_before(fake_llm: FakeLLMServer, tmp_path: Path,
                                                      dialect: str) -> None:
    fake_llm.enqueue_many([
        Reply(text="Reading.", tool_calls=[("call_1", "read", {"path": "notes.txt"})]),
        Reply(tool_calls=[("call_2", "grep", {"pattern": "fox"}), ("call_3", "ls", {})]),
        Reply(thinking="Let me count.", tool_calls=[("call_4", "bash", {"command": "wc -l notes.txt"})]),
        Reply(text="Five lines about a fox."),
    ])
    run_opi(fake_llm, tmp_path, dialect, "What is in notes.txt?")
    bodies = [request.body for request in fake_llm.requests]
    assert len(bodies) == 4
    for before, after in itertools.pairwise(bodies):
        old, new = without_cache_control(before), without_cache_control(after)
        assert {k: v for k, v in old.items() if k != "messages"} == {k: v for k, v in new.items() if k != "messages"}
        assert len(new["messages"]) > len(old["messages"])
        assert new["messages"][:len(old["messages"])] == old["messages"]
    if dialect == "anthropic":
        for sent in bodies:  # the system prompt and the newest block, nothing else
            assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
            marked = [b for m in sent["messages"] for b in m["content"] if "cache_control" in b]
            assert marked == [sent["messages"][-1]["content"][-1]]
