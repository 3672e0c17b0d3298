"""Hardened git for the broker: the token reaches git through an inherited pipe for one invocation only,
and a repository's hooks, fsmonitor, transports and the broker's own GIT_* variables are all inert."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from bot.action.git_auth import (
    HARDENED_CONFIG,
    SAFE_PATH,
    credential_url_prefix,
    hardened_git,
    hardened_git_env,
    token_credential,
)
from tests.fake_github import LoopbackServer

TOKEN = "ghs_SECRETtoken0123456789abcdefABCDEF"
IDENTITY = {"GIT_AUTHOR_NAME": "bot", "GIT_AUTHOR_EMAIL": "bot@example.invalid",
            "GIT_COMMITTER_NAME": "bot", "GIT_COMMITTER_EMAIL": "bot@example.invalid"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "broker-home"
    path.mkdir()
    return path


def fill(host: str, *, protocol: str = "https") -> str:
    return f"protocol={protocol}\nhost={host}\n\n"


# -- the credential ------------------------------------------------------------------------------------------
def test_credential_fill_gets_the_token_for_its_host(tmp_path: Path, home: Path) -> None:
    proc = hardened_git(["credential", "fill"], cwd=tmp_path, home=home, token=TOKEN,
                        url="https://github.com", input=fill("github.com"))
    assert proc.returncode == 0, proc.stderr
    assert f"username=x-access-token\npassword={TOKEN}\n" in proc.stdout


@pytest.mark.parametrize(("protocol", "host"), [("https", "evil.example"), ("http", "github.com"),
                                                ("https", "github.com:8443"), ("https", "github.com.evil")])
def test_no_token_for_another_host_or_scheme(tmp_path: Path, home: Path, protocol: str, host: str) -> None:
    proc = hardened_git(["credential", "fill"], cwd=tmp_path, home=home, token=TOKEN,
                        url="https://github.com", input=fill(host, protocol=protocol))
    assert proc.returncode != 0  # no helper answered and prompting is off
    assert TOKEN not in proc.stdout + proc.stderr


def test_the_pipe_is_read_once_and_store_or_erase_do_not_drain_it(tmp_path: Path, home: Path) -> None:
    env = hardened_git_env(home)
    with token_credential(TOKEN, "https://github.com") as credential:
        def git(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["git", *HARDENED_CONFIG, *credential.config, *args], cwd=tmp_path, env=env,
                                  input=stdin, capture_output=True, text=True, pass_fds=credential.pass_fds,
                                  check=False)

        approve = git("credential", "approve",
                      stdin="protocol=https\nhost=github.com\nusername=u\npassword=p\n\n")
        first = git("credential", "fill", stdin=fill("github.com"))
        second = git("credential", "fill", stdin=fill("github.com"))
    assert approve.returncode == 0
    assert f"password={TOKEN}" in first.stdout
    assert second.returncode != 0 and TOKEN not in second.stdout  # a second use needs a fresh credential


def test_the_descriptor_is_closed_after_the_invocation(tmp_path: Path) -> None:
    with token_credential(TOKEN, "https://github.com") as credential:
        [fd] = credential.pass_fds
        os.fstat(fd)
    with pytest.raises(OSError):
        os.fstat(fd)


def test_no_secret_in_the_config_arguments() -> None:
    with token_credential(TOKEN, "https://github.com") as (config, pass_fds):
        assert TOKEN not in " ".join(config)
        assert config[1].startswith("credential.https://github.com.helper=!")
        assert len(pass_fds) == 1


@pytest.mark.parametrize(("token", "url", "message"), [
    ("tok\nprotocol=https", "https://github.com", "line break"),
    ("tok\0", "https://github.com", "line break"),
    ("", "https://github.com", "empty"),
    (TOKEN, "ftp://github.com", "https://HOST"),
    (TOKEN, "https://user:pw@github.com", "user name or password"),
    (TOKEN, "https://git;hub.com", "invalid host"),
    (TOKEN, "github.com", "https://HOST"),
])
def test_bad_credentials_are_refused(token: str, url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message), token_credential(token, url):
        pass


def test_the_credential_scope_is_scheme_and_host_only() -> None:
    assert credential_url_prefix("https://github.com/owner/repo.git") == "https://github.com"
    assert credential_url_prefix("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080"


def test_a_token_needs_its_url(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ValueError, match="URL"):
        hardened_git(["status"], cwd=tmp_path, home=home, token=TOKEN)


# -- end to end over HTTP, with a spy in the helper chain ----------------------------------------------------
class BasicAuthServer(LoopbackServer):
    """Answers 401 + `WWW-Authenticate: Basic` until a request carries credentials, then records them."""

    def __init__(self) -> None:
        super().__init__()
        self.authorizations: list[str] = []
        self.start()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                authorization = self.headers.get("authorization")
                if authorization is None:
                    self.send_response(401)
                    self.send_header("www-authenticate", 'Basic realm="test"')
                else:
                    owner.authorizations.append(authorization)
                    self.send_response(404)  # the credential is all this test is about
                self.send_header("content-length", "0")
                self.end_headers()

        return Handler

    def close(self) -> None:
        self.stop()


@pytest.fixture
def basic_auth() -> Iterator[BasicAuthServer]:
    server = BasicAuthServer()
    yield server
    server.close()


SPY = r"""
import json, os, sys
out, stop = sys.argv[1], int(sys.argv[2])
seen = {"self": {"environ": dict(os.environ), "argv": sys.argv}, "ancestors": []}
pid = os.getppid()
while pid > 1 and pid != stop:
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read().decode("utf-8", "replace")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().decode("utf-8", "replace")
    seen["ancestors"].append({"pid": pid, "environ": environ, "cmdline": cmdline})
    with open(f"/proc/{pid}/status") as f:
        pid = int(next(line for line in f if line.startswith("PPid:")).split()[1])
with open(out, "a") as f:
    f.write(json.dumps(seen) + "\n")
"""


def test_git_over_http_sends_the_token_and_no_process_holds_it_in_argv_or_env(
        tmp_path: Path, home: Path, basic_auth: BasicAuthServer) -> None:
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    report = tmp_path / "spy.jsonl"
    # Helpers run in order: the spy (generic) sees git and git-remote-http while they wait for a
    # credential, then ours answers.
    spy_config = ("-c", f"credential.helper=!{sys.executable} {spy} {report} {os.getpid()}")
    with token_credential(TOKEN, basic_auth.url) as credential:
        proc = subprocess.run(
            ["git", *HARDENED_CONFIG, *spy_config, *credential.config, "ls-remote", f"{basic_auth.url}/repo.git"],
            cwd=tmp_path, env=hardened_git_env(home), capture_output=True, text=True,
            pass_fds=credential.pass_fds, check=False, timeout=60)

    expected = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert basic_auth.authorizations == [f"Basic {expected}"]
    assert proc.returncode != 0  # the server answers 404 once authenticated
    assert TOKEN not in proc.stdout + proc.stderr
    spied = [json.loads(line) for line in report.read_text().splitlines()]
    assert spied, "the spy helper never ran"
    ancestors = [a for s in spied for a in s["ancestors"]]
    assert any("ls-remote" in a["cmdline"] for a in ancestors)  # the walk reached git itself
    for seen in spied:
        assert TOKEN not in json.dumps(seen)
        assert expected not in json.dumps(seen)


# -- the hardened invocation ------------------------------------------------------------------------------------
def test_the_environment_is_built_from_scratch(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"GIT_DIR": "/planted", "GIT_CONFIG_PARAMETERS": "'alias.x'='!planted'",
                        "GIT_CONFIG_COUNT": "1", "GIT_SSH_COMMAND": "planted", "GIT_ASKPASS": "planted",
                        "SSH_ASKPASS": "planted", "GITHUB_TOKEN": TOKEN, "LD_PRELOAD": "planted.so",
                        "PATH": "/workspace/node_modules/.bin:/usr/bin"}.items():
        monkeypatch.setenv(name, value)
    env = hardened_git_env(home, extra=IDENTITY)
    assert set(env) == {"PATH", "HOME", "XDG_CONFIG_HOME", "LC_ALL", "GIT_TERMINAL_PROMPT",
                        "GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL", "GIT_ATTR_NOSYSTEM",
                        "GIT_PROTOCOL_FROM_USER", "GIT_NO_REPLACE_OBJECTS", *IDENTITY}
    assert env["PATH"] == SAFE_PATH and env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert "planted" not in json.dumps(env) and TOKEN not in json.dumps(env)


def test_global_and_inherited_config_are_ignored(tmp_path: Path, home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (home / ".gitconfig").write_text("[alias]\n\tplanted1 = !echo planted\n")
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".config" / "git" / "config").write_text("[alias]\n\tplanted2 = !echo planted\n")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'alias.planted3'='!echo planted'")
    proc = hardened_git(["config", "--list"], cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    assert "planted" not in proc.stdout
    assert "core.hookspath=/dev/null" in proc.stdout


def make_repo(path: Path, home: Path) -> Path:
    path.mkdir()
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "start"]):
        proc = hardened_git(args, cwd=path, home=home, extra_env=IDENTITY)
        assert proc.returncode == 0, proc.stderr
    return path


def test_a_planted_hook_fsmonitor_and_helper_never_run(tmp_path: Path, home: Path) -> None:
    repo = make_repo(tmp_path / "repo", home)
    marker = tmp_path / "ran"
    hooks = repo / ".git" / "hooks"
    for hook in ("pre-commit", "post-commit", "reference-transaction", "pre-push"):
        (hooks / hook).write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
        (hooks / hook).chmod(0o755)
    with (repo / ".git" / "config").open("a") as config:
        config.write(f"[core]\n\tfsmonitor = echo fsmonitor >> {marker}\n"
                     f"[credential]\n\thelper = !echo helper >> {marker}\n")
    (repo / "a.txt").write_text("change\n")

    for args in (["add", "a.txt"], ["status"], ["commit", "-q", "-m", "change"]):
        proc = hardened_git(args, cwd=repo, home=home, extra_env=IDENTITY)
        assert proc.returncode == 0, proc.stderr
    fill_proc = hardened_git(["credential", "fill"], cwd=repo, home=home, input=fill("github.com"))

    assert fill_proc.returncode != 0
    assert not marker.exists()


def test_the_ext_transport_is_refused(tmp_path: Path, home: Path) -> None:
    marker = tmp_path / "ran"
    proc = hardened_git(["ls-remote", f"ext::sh -c touch% {marker}"], cwd=tmp_path, home=home)
    assert proc.returncode != 0
    assert "not allowed" in proc.stderr
    assert not marker.exists()


def test_fetch_and_push_with_a_local_remote_still_work(tmp_path: Path, home: Path) -> None:
    origin = tmp_path / "origin.git"
    proc = hardened_git(["init", "-q", "--bare", "-b", "main", str(origin)], cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    work = make_repo(tmp_path / "work", home)
    for args in (["remote", "add", "origin", str(origin)], ["push", "-q", "origin", "main"],
                 ["fetch", "-q", "origin"]):
        proc = hardened_git(args, cwd=work, home=home, extra_env=IDENTITY)
        assert proc.returncode == 0, proc.stderr
    heads = hardened_git(["ls-remote", str(origin)], cwd=work, home=home)
    assert "refs/heads/main" in heads.stdout
