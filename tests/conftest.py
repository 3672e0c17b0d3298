"""Test-wide guards.

- No test may reach the network beyond loopback: `socket.connect` to any other address raises (the
  pydantic-ai "ALLOW_MODEL_REQUESTS = False" idea, enforced at the socket so no client can slip past).
- No test sees the developer's real config, sessions or API keys: HOME and XDG dirs point into tmp.

It also holds the fixtures several modules share (`repo`, `ctx`, `github`, `fake_artifacts`), so each is
written once.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.tools.base import ToolContext
from tests.fake_artifacts import FakeArtifactService
from tests.fake_github import FakeGitHub

# The scripted model server's `fake_llm` fixture (tests/fake_llm.py) and the simulated runner's `runner`
# fixture (tests/action_runner.py), available to every test module.
pytest_plugins = ["tests.fake_llm", "tests.action_runner"]

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkBlocked(RuntimeError):
    pass


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_local(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _is_local(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]

_SCRUBBED = (
    "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "GITHUB_TOKEN",
    "GH_TOKEN", "OPI_SESSIONS_DIR", "OPI_CONFIG_DIR", "OPI_MODEL", "GITHUB_ACTIONS", "GITHUB_EVENT_PATH",
    "GITHUB_EVENT_NAME", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "RUNNER_TEMP", "ACTIONS_RUNTIME_TOKEN",
    "ACTIONS_RESULTS_URL", "GITHUB_API_URL", "CI",
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Author")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "author@example.com")
    for name in _SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    yield home


# -- fixtures several test modules share -------------------------------------------------------------------
@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty git repository at tmp/repo. (The grep and find tests define their own, with files in it.)"""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, timeout=30)
    return root


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    """A tool context whose workspace is the test's tmp dir. (tests/test_tool_bash.py has its own, which
    also gives each test a private system temp dir to check for leftovers.)"""
    return ToolContext(workspace=tmp_path)


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    """The loopback fake GitHub REST API, checking every request against GitHub's REST description.
    (Modules whose fake needs a token, a key or state set up first define their own.)"""
    with FakeGitHub(check_requests=True) as fake:
        yield fake


ARTIFACT_TOKEN = "ghs_fake_token"  # the token the `fake_artifacts` fixture's REST API accepts


@pytest.fixture
def fake_artifacts() -> Iterator[FakeArtifactService]:
    """The loopback fake of the Actions artifact services (results service and REST API)."""
    with FakeArtifactService(rest_token=ARTIFACT_TOKEN) as service:
        yield service
