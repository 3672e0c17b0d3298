"""`opi pull` against the loopback artifact fake (zip download behind a 302), then `opi --resume`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bot.cli.pull import PullError, parse_target
from tests.conftest import ARTIFACT_TOKEN
from tests.fake_artifacts import FakeArtifactService
from tests.fake_llm import FakeLLMServer, Reply

TOKEN = ARTIFACT_TOKEN  # what the shared `fake_artifacts` fixture accepts
SESSION_ID = "3f0c9a2e-1111-4222-8333-444455556666"


def session_lines(session_id: str = SESSION_ID) -> list[dict[str, object]]:
    return [
        {"type": "session", "version": 1, "id": session_id, "timestamp": "2026-11-20T10:00:00.000Z",
         "cwd": "/github/workspace", "parent_session": None, "model": "anthropic:claude-sonnet-4-5",
         "repo": "octo/repo", "origin": "https://github.com/octo/repo/actions/runs/77",
         "metadata": {"number": 4}},
        {"type": "message", "id": "a1", "parent_id": None, "timestamp": "2026-11-20T10:00:01.000Z",
         "message": {"role": "user", "content": "Rename the helper to parse_config", "timestamp": 1}},
        {"type": "message", "id": "a2", "parent_id": "a1", "timestamp": "2026-11-20T10:00:02.000Z",
         "message": {"role": "assistant", "content": [{"type": "text", "text": "Renamed it in utils.py."}],
                     "provider": "anthropic", "model": "claude-sonnet-4-5", "api": "anthropic",
                     "usage": {"input": 10, "output": 5, "cache_read": 0, "cache_write": 0},
                     "cost": {"input": 0.0, "output": 0.0, "cache_read": 0.0, "cache_write": 0.0,
                              "total": 0.0},
                     "stop_reason": "stop", "timestamp": 2}},
    ]


def session_zip(session_id: str = SESSION_ID) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{session_id}.jsonl", "".join(json.dumps(x) + "\n" for x in session_lines(session_id)))
    return buffer.getvalue()


def opi(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60)


def base_env(service: FakeArtifactService, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "GH_TOKEN")}
    env.update({"GITHUB_API_URL": service.base_url, "PATH": "/usr/bin:/bin", **extra})  # no `gh` on PATH
    return env


def sessions_dir(home: Path) -> Path:
    return home / ".local" / "share" / "opi" / "sessions"


def test_pull_an_artifact_url_then_resume_it(fake_artifacts: FakeArtifactService, isolated_home: Path,
                                             fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    artifact = fake_artifacts.add_artifact("opi-session-4-77", session_zip(), run_id=77)
    url = f"https://github.com/octo/repo/actions/runs/77/artifacts/{artifact.id}"
    env = base_env(fake_artifacts, GITHUB_TOKEN=TOKEN)
    done = opi("pull", url, env=env)
    assert done.returncode == 0, done.stderr
    pulled = sessions_dir(isolated_home) / f"{SESSION_ID}.jsonl"
    assert pulled.read_text() == "".join(json.dumps(x) + "\n" for x in session_lines())
    assert f"opi --resume {SESSION_ID}" in done.stdout
    assert [r.path for r in fake_artifacts.requests if r.method == "GET"][-2:] == [
        f"/repos/octo/repo/actions/artifacts/{artifact.id}/zip", f"/download/{artifact.id}"]

    # The printed command works: the resumed run's first request carries the CI conversation.
    fake_llm.enqueue(Reply(text="I renamed the helper to parse_config."))
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env_resume = {**env, "ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": fake_llm.anthropic_base_url}
    resumed = opi("--resume", SESSION_ID, "-p", "What did you do?", "--model", "anthropic:claude-sonnet-4-5",
                  env=env_resume, cwd=checkout)
    assert resumed.returncode == 0, resumed.stderr
    assert "parse_config" in resumed.stdout
    sent = json.dumps(fake_llm.requests[0].body["messages"])
    assert "Rename the helper to parse_config" in sent and "Renamed it in utils.py." in sent
    assert "What did you do?" in sent


def test_pull_a_run_url_picks_the_session_artifacts(fake_artifacts: FakeArtifactService,
                                                    isolated_home: Path) -> None:
    fake_artifacts.add_artifact("coverage-report", b"not a session", run_id=90)
    fake_artifacts.add_artifact("opi-session-12-90", session_zip("sess-b"), run_id=90)
    fake_artifacts.add_artifact("opi-session-12-91", session_zip("sess-c"), run_id=91)
    done = opi("pull", "https://github.com/octo/repo/actions/runs/90", "--token", TOKEN,
               env=base_env(fake_artifacts))
    assert done.returncode == 0, done.stderr
    assert "opi --resume sess-b" in done.stdout
    assert sorted(p.name for p in sessions_dir(isolated_home).iterdir()) == ["sess-b.jsonl"]


def test_pull_puts_the_session_where_resume_looks_for_it(fake_artifacts: FakeArtifactService, isolated_home: Path,
                                                         fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    """The config's session_dir is where `opi --resume ID` searches, so it is where pull writes."""
    configured = tmp_path / "my-sessions"
    (isolated_home / ".config" / "opi").mkdir(parents=True)
    (isolated_home / ".config" / "opi" / "config.toml").write_text(f'session_dir = "{configured}"\n')
    artifact = fake_artifacts.add_artifact("opi-session-4-77", session_zip(), run_id=77)
    env = base_env(fake_artifacts, GITHUB_TOKEN=TOKEN)
    done = opi("pull", f"https://github.com/octo/repo/actions/runs/77/artifacts/{artifact.id}", env=env,
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (configured / f"{SESSION_ID}.jsonl").is_file()
    assert f"opi --resume {SESSION_ID}\n" in done.stdout
    fake_llm.enqueue(Reply(text="Renamed."))
    env_resume = {**env, "ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": fake_llm.anthropic_base_url}
    resumed = opi("--resume", SESSION_ID, "-p", "What did you do?", "--model", "anthropic:claude-sonnet-4-5",
                  env=env_resume, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


def test_pull_into_another_directory_prints_the_path(fake_artifacts: FakeArtifactService,
                                                     tmp_path: Path) -> None:
    artifact = fake_artifacts.add_artifact("opi-session-4-77", session_zip(), run_id=77)
    target = tmp_path / "elsewhere"
    done = opi("pull", f"https://github.com/octo/repo/actions/runs/77/artifacts/{artifact.id}",
               "--session-dir", str(target), env=base_env(fake_artifacts, GH_TOKEN=TOKEN))
    assert done.returncode == 0, done.stderr
    assert f"opi --resume {target / (SESSION_ID + '.jsonl')}" in done.stdout


def test_pull_errors_are_clear(fake_artifacts: FakeArtifactService, isolated_home: Path) -> None:
    expired = fake_artifacts.add_artifact("opi-session-4-70", session_zip(), run_id=70, expired=True)
    env = base_env(fake_artifacts, GITHUB_TOKEN=TOKEN)
    cases = [
        (["https://github.com/octo/repo/actions/runs/70/artifacts/999"], 1, "not found in octo/repo (HTTP 404"),
        ([f"https://github.com/octo/repo/actions/runs/70/artifacts/{expired.id}"], 1, "has expired"),
        (["https://github.com/octo/repo/actions/runs/5"], 1, "run 5 of octo/repo has no opi-session-* artifact"),
        (["https://github.com/octo/repo/pull/4"], 2, "expected a run URL"),
        (["octo/repo"], 2, "not a URL"),
    ]
    for args, code, message in cases:
        done = opi("pull", *args, env=env)
        assert (done.returncode, message in done.stderr) == (code, True), (args, done.stderr)
    no_token = opi("pull", "https://github.com/octo/repo/actions/runs/70", env=base_env(fake_artifacts))
    assert no_token.returncode == 2 and "no GitHub token" in no_token.stderr
    bad_token = opi("pull", "https://github.com/octo/repo/actions/runs/70", "--token", "wrong", env=env)
    assert bad_token.returncode == 1 and "Bad credentials" in bad_token.stderr
    assert not sessions_dir(isolated_home).exists() or not any(sessions_dir(isolated_home).iterdir())


def test_pull_never_overwrites_a_different_local_session(fake_artifacts: FakeArtifactService,
                                                         isolated_home: Path) -> None:
    artifact = fake_artifacts.add_artifact("opi-session-4-77", session_zip(), run_id=77)
    url = f"https://github.com/octo/repo/actions/runs/77/artifacts/{artifact.id}"
    local = sessions_dir(isolated_home) / f"{SESSION_ID}.jsonl"
    local.parent.mkdir(parents=True)
    local.write_text(json.dumps(session_lines()[0]) + "\n")  # same id, different content
    env = base_env(fake_artifacts, GITHUB_TOKEN=TOKEN)
    refused = opi("pull", url, env=env)
    assert refused.returncode == 1 and "already exists and differs" in refused.stderr
    assert local.read_text() == json.dumps(session_lines()[0]) + "\n"
    assert opi("pull", url, "--force", env=env).returncode == 0
    assert len(local.read_text().splitlines()) == 3
    # Pulling again when the local copy went on from the artifact keeps the local copy.
    with local.open("a") as handle:
        handle.write(json.dumps({"type": "session_info", "id": "z", "parent_id": "a2", "timestamp": "t",
                                 "name": "local"}) + "\n")
    again = opi("pull", url, env=env)
    assert again.returncode == 0 and len(local.read_text().splitlines()) == 4


@pytest.mark.parametrize(("url", "repo", "run", "artifact", "api"), [
    ("https://github.com/o/r/actions/runs/5/artifacts/9", "o/r", 5, 9, "https://api.github.com"),
    ("https://github.com/o/r/actions/runs/5", "o/r", 5, None, "https://api.github.com"),
    ("https://github.com/o/r/actions/runs/5/job/77", "o/r", 5, None, "https://api.github.com"),
    ("https://ghe.corp/o/r/actions/runs/5/artifacts/9", "o/r", 5, 9, "https://ghe.corp/api/v3"),
    ("https://api.github.com/repos/o/r/actions/artifacts/9/zip", "o/r", None, 9, "https://api.github.com"),
])
def test_url_forms(url: str, repo: str, run: int | None, artifact: int | None, api: str) -> None:
    target = parse_target(url)
    assert (target.repo, target.run_id, target.artifact_id, target.api_url) == (repo, run, artifact, api)


def test_unreadable_urls() -> None:
    for url in ("https://github.com/o/r", "ftp://github.com/o/r/actions/runs/1", "https://github.com/o/r/issues/3"):
        with pytest.raises(PullError):
            parse_target(url)
