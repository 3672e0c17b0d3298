"""One simulated GitHub runner for `opi action` subprocess tests: the environment a runner gives a container
action, the scripted model server, the fake GitHub REST API, and a real clone of a local bare remote.
Registered as a plugin in tests/conftest.py, so every test module can ask for the `runner` fixture."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.action_support import git, parse_github_output, remote_and_clone
from tests.fake_github import FakeGitHub
from tests.fake_llm import FakeLLMServer

REPO = "Codertocat/Hello-World"
REQUESTER = ("Codertocat", 21031067)
TOKEN = "ghs_e2eTokenValue0123456789abcdefghijkl"
API_KEY = "sk-ant-e2eKeyValue-0123456789abcdefghij"
FIXED_APP = "def add(a, b):\n    return a + b\n"


@dataclass
class Runner:
    """One simulated runner: workspace, temp dir, file commands, the fakes, and how to run the step."""

    tmp: Path
    remote: Path
    workspace: Path
    github: FakeGitHub
    llm: FakeLLMServer
    temp: Path
    output: Path
    summary: Path
    state: Path

    def env(self, event_name: str, payload: dict[str, Any], **inputs: str) -> dict[str, str]:
        event_path = self.tmp / "event.json"
        event_path.write_text(json.dumps(payload), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_", "STATE_"))}
        env.update({
            "GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(event_path), "GITHUB_REPOSITORY": REPO,
            "GITHUB_WORKSPACE": str(self.workspace), "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_API_URL": self.github.url, "GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_SHA": git(self.workspace, "rev-parse", "HEAD"), "GITHUB_TOKEN": TOKEN,
            "RUNNER_TEMP": str(self.temp), "GITHUB_OUTPUT": str(self.output),
            "GITHUB_STEP_SUMMARY": str(self.summary), "GITHUB_STATE": str(self.state),
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "actions-id-token-value-123",
            "ANTHROPIC_BASE_URL": self.llm.anthropic_base_url,
            "INPUT_GITHUB_TOKEN": TOKEN, "INPUT_ANTHROPIC_API_KEY": API_KEY,
            "INPUT_MODEL": "anthropic:claude-sonnet-4-5", "INPUT_TRIGGER": "/opi", "INPUT_MODE": "push",
            "INPUT_MAX_TURNS": "10", "INPUT_TIMEOUT_MINUTES": "5",
        })
        env.update({f"INPUT_{name.upper()}": value for name, value in inputs.items()})
        return env

    def run(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", "action", *args], cwd=self.workspace, env=env,
                              capture_output=True, text=True, timeout=90, check=False)

    def outputs(self) -> dict[str, str]:
        return parse_github_output(self.output.read_text(encoding="utf-8")) if self.output.exists() else {}

    def comment_bodies(self) -> list[str]:
        return [c["body"] for c in self.github.comments.values()]


@pytest.fixture
def runner_root() -> Iterator[Path]:
    """The runner's directories, outside pytest's own temp root: the broker lends the agent's uid traversal
    of the workspace's ancestors for a run, and every new pytest process (a developer's, running beside
    this one) resets /tmp/pytest-of-<user> to 0700, which would cut an agent off mid-run."""
    root = Path(tempfile.mkdtemp(prefix="opi-test-runner-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def runner(runner_root: Path, fake_llm: FakeLLMServer) -> Iterator[Runner]:
    remote, workspace = remote_and_clone(runner_root, branches={"feature": {"feature.txt": "feature\n"}})
    temp = runner_root / "runner_temp"
    temp.mkdir()
    with FakeGitHub(token=TOKEN) as github:
        github.set_permission(REQUESTER[0], "write", "maintain")
        yield Runner(runner_root, remote, workspace, github, fake_llm, temp, temp / "output",
                     temp / "summary.md", temp / "state")
