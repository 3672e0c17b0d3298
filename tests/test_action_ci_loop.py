"""`/opi fix` closes the loop with CI (issue 10), end to end: a red pull request whose failing GitHub
Actions job log reaches the model, a GitHub App whose minted token does every REST call and the push,
and a remote that git really pushes to over smart HTTP (tests/git_http.py), with credentials it records.

The workspace is a clone from the HTTP URL with the checkout's persisted credential, as actions/checkout
leaves it; GITHUB_SERVER_URL is the git server's base URL, so the broker's credential helper (scoped to
that scheme://host:port) answers git's 401 with the token.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.action.autofix import TRAILER, failure_signature, signature_trailer
from bot.action.events import BOT_MARKER
from tests import action_support as payloads
from tests.action_runner import API_KEY, FIXED_APP, REPO, TOKEN, Runner
from tests.action_support import git, rsa_key_pair
from tests.fake_github import FakeRequest
from tests.fake_llm import Reply
from tests.git_http import GitHttpServer, basic_credentials

pytestmark = pytest.mark.slow

APP_ID = 424242
APP_SLUG = "opi-test-app"
BOT_USER_ID = 90001
BOT_IDENTITY = f"{APP_SLUG}[bot] <{BOT_USER_ID}+{APP_SLUG}[bot]@users.noreply.github.com>"
FAILED_TEST = "tests/test_app.py::test_add"
DOCS_ANCHOR = "docs/action.md#use-a-github-app-so-ci-runs-on-the-bots-pushes"
NO_CI_NOTE = "GitHub runs no CI on this push"
ROOT = Path(__file__).resolve().parent.parent


def _pytest_job_log() -> str:
    """A GitHub Actions job log as the logs endpoint serves it: BOM, a timestamp on every line, ANSI colours,
    step groups, and a pytest run whose test prints the workflow token (CI does not always mask it)."""
    red, green, bold, cyan, blue, reset = "\x1b[31m", "\x1b[32m", "\x1b[1m", "\x1b[36m", "\x1b[94m", "\x1b[0m"
    lines = [
        "##[group]Run actions/checkout@v4",
        "with:",
        "  repository: Codertocat/Hello-World",
        "##[endgroup]",
        "##[group]Run pip install -r requirements-dev.txt",
        f"{cyan}{bold}pip install -r requirements-dev.txt{reset}",
        "shell: /usr/bin/bash -e {0}",
        "env:",
        "  pythonLocation: /opt/hostedtoolcache/Python/3.12.7/x64",
        "##[endgroup]",
        "Collecting pytest==8.3.3",
        "  Downloading pytest-8.3.3-py3-none-any.whl (342 kB)",
        "Collecting pytest-assert-utils==0.3.1",
        "Successfully installed iniconfig-2.0.0 packaging-24.2 pluggy-1.5.0 pytest-8.3.3 pytest-assert-utils-0.3.1",
        "##[group]Run python -m pytest --color=yes",
        f"{cyan}{bold}python -m pytest --color=yes{reset}",
        "shell: /usr/bin/bash -e {0}",
        "##[endgroup]",
        f"{bold}============================= test session starts =============================={reset}",
        "platform linux -- Python 3.12.7, pytest-8.3.3, pluggy-1.5.0",
        "rootdir: /home/runner/work/Hello-World/Hello-World",
        "plugins: assert-utils-0.3.1",
        "collected 4 items",
        "",
        f"tests/test_app.py {red}F{reset}{green}...{reset}{red}                                          [100%]{reset}",
        "",
        "=================================== FAILURES ===================================",
        f"{red}{bold}___________________________________ test_add ___________________________________{reset}",
        "",
        f"    {blue}def{reset} test_add():",
        f">       {blue}assert{reset} add(1, 2) == 3",
        f"{bold}{red}E       assert -1 == 3{reset}",
        f"{bold}{red}E        +  where -1 = add(1, 2){reset}",
        "",
        f"{bold}{red}tests/test_app.py{reset}:5: AssertionError",
        "----------------------------- Captured stdout call -----------------------------",
        f"debug: GITHUB_TOKEN={TOKEN}",
        f"{cyan}{bold}=========================== short test summary info ============================{reset}",
        f"{red}FAILED{reset} tests/test_app.py::{bold}test_add{reset} - assert -1 == 3",
        f"{red}========================= {red}{bold}1 failed{reset}, {green}3 passed{reset}{red} in 0.05s"
        f"{reset}{red} =========================={reset}",
        "##[error]Process completed with exit code 1.",
        "Post job cleanup.",
    ]
    stamped = [f"2026-11-30T10:15:{index // 10:02d}.{index:07d}Z {line}" for index, line in enumerate(lines)]
    return "\ufeff" + "\n".join(stamped) + "\n"


@pytest.fixture(scope="module")
def app_key() -> tuple[str, bytes]:
    return rsa_key_pair()


@dataclass
class RedPull:
    """PR #7 from `feature`, red on its head, in a runner whose remote git serves over HTTP."""

    runner: Runner
    remote_git: GitHttpServer
    head_sha: str

    def env(self, **inputs: str) -> dict[str, str]:
        payload = payloads.issue_comment("/opi fix", on_pull=True, number=7)
        env = self.runner.env("issue_comment", payload, **inputs)
        env["GITHUB_SERVER_URL"] = self.remote_git.url
        return env

    def remote_refs(self) -> str:
        return git(self.runner.remote, "for-each-ref")


@pytest.fixture
def red_pull(runner: Runner) -> Iterator[RedPull]:
    github = runner.github

    def known_token(user: str, password: str) -> bool:  # the remote takes the tokens GitHub issued
        return user == "x-access-token" and (password == TOKEN or password in github.minted_tokens)

    with GitHttpServer(runner.tmp, accept=known_token) as remote_git:
        _checkout_over_http(runner.workspace, remote_git.repo_url(runner.remote.name), remote_git.url)
        head = git(runner.remote, "rev-parse", "refs/heads/feature")
        github.add_pull(7, head_ref="feature", repo=REPO, head_sha=head, title="Add feature")
        github.add_check_run(head, "test", "failure", log=_pytest_job_log(), repo=REPO)
        github.add_check_run(head, "lint", "success", log="All checks passed!\n", repo=REPO)
        yield RedPull(runner, remote_git, head)


def _checkout_over_http(workspace: Path, clone_url: str, server_url: str) -> None:
    """What actions/checkout@v4 leaves: a clone of the HTTP URL on `main` with the workflow token
    persisted as an `http.<server>/.extraheader` in .git/config."""
    shutil.rmtree(workspace)
    git(workspace.parent, "clone", "-q", "--branch", "main", clone_url, workspace.name)
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    git(workspace, "config", "--local", f"http.{server_url}/.extraheader", f"AUTHORIZATION: basic {basic}")


def _fix_script() -> list[Reply]:
    """First turn: read the failing job's assertions with `ci_log` and write the fix; then answer."""
    return [
        Reply(tool_calls=[("call_log", "ci_log", {"job": "test", "pattern": "assert"}),
                          ("call_write", "write", {"path": "app.py", "content": FIXED_APP})]),
        Reply(text="Fixed `add`: the failing test expected 3 and it subtracted."),
    ]


def _tool_result(body: Any, call_id: str) -> dict[str, Any]:
    """The Anthropic `tool_result` block answering `call_id` in a request body."""
    for message in body["messages"]:
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if block.get("type") == "tool_result" and block.get("tool_use_id") == call_id:
                return dict(block)
    raise AssertionError(f"no tool_result for {call_id} in the request")


def _text_of(block: dict[str, Any]) -> str:
    content = block["content"]
    return content if isinstance(content, str) else "\n".join(part.get("text", "") for part in content)


def _requests_after_minting(requests: list[FakeRequest]) -> list[FakeRequest]:
    [mint_index] = [i for i, r in enumerate(requests)
                    if r.method == "POST" and re.fullmatch(r"/app/installations/\d+/access_tokens", r.path)]
    return requests[mint_index + 1:]


# -- the loop, with a GitHub App -----------------------------------------------------------------------------
def test_red_pr_fixed_with_the_failing_assertion_in_context_and_pushed_with_the_app_token(
        red_pull: RedPull, app_key: tuple[str, bytes]) -> None:
    runner, github = red_pull.runner, red_pull.runner.github
    github.install_app(APP_ID, app_key[1], slug=APP_SLUG, installation_id=4242, repos=(REPO,),
                       bot_user_id=BOT_USER_ID)
    runner.llm.enqueue_many(_fix_script())
    proc = runner.run(red_pull.env(app_id=str(APP_ID), app_private_key=app_key[0]))
    assert proc.returncode == 0, proc.stderr

    # The first model request holds the failing part of the job log, cleaned, and not the rest of it.
    first = json.dumps(runner.llm.requests[0].body, ensure_ascii=False)
    assert "E       assert -1 == 3" in first and f"FAILED {FAILED_TEST} - assert -1 == 3" in first
    assert "Process completed with exit code 1." in first
    assert "\x1b" not in first and "2026-11-30T10:15" not in first and "##[group]" not in first
    assert "pytest-assert-utils==0.3.1" not in first  # the install step: only `ci_log` shows it
    assert "All checks passed" not in first  # the green job's log was not read

    # `ci_log` read the full log on demand, and its result reached the model.
    result = _tool_result(runner.llm.requests[1].body, "call_log")
    shown = _text_of(result)
    assert not result.get("is_error"), shown
    assert "E       assert -1 == 3" in shown and "Collecting pytest-assert-utils==0.3.1" in shown
    assert "\x1b" not in shown

    # The log printed the workflow token: neither the prompt nor the tool result carries it.
    for request in runner.llm.requests:
        assert TOKEN not in json.dumps(request.body)

    # One installation token, for this repository only; every REST call after minting used it.
    [minted] = github.minted
    app_token = minted["token"]
    assert minted["body"]["repositories"] == [REPO.split("/")[1]]
    before = github.requests[:len(github.requests) - len(_requests_after_minting(github.requests))]
    assert [r.path for r in before] == ["/app", f"/repos/{REPO}/installation",
                                        "/app/installations/4242/access_tokens"]
    assert all(r.authorization.startswith("Bearer ") for r in before)
    for call in _requests_after_minting(github.requests):
        if call.path.startswith("/_blobs/"):  # the log storage host gets its signed URL, no token
            assert call.authorization == ""
        else:
            scheme, _, credential = call.authorization.partition(" ")
            assert scheme in ("token", "Bearer") and credential == app_token, (call.method, call.path)
    assert not any(TOKEN in r.authorization for r in github.requests)

    # The push reached the remote over HTTP, authenticated with the minted token and nothing else.
    pushes = red_pull.remote_git.pushes()
    authenticated = [p for p in pushes if p.credentials is not None]
    assert any(p.method == "POST" and p.status == 200 for p in authenticated)
    assert {p.credentials for p in authenticated} == {("x-access-token", app_token)}
    assert all(p.status == 401 for p in pushes if p.credentials is None)
    head = git(runner.remote, "rev-parse", "refs/heads/feature")
    assert git(runner.remote, "rev-parse", f"{head}~1") == red_pull.head_sha
    assert git(runner.remote, "show", f"{head}:app.py") + "\n" == FIXED_APP

    # The commit is the app's bot user's, and names the failure it was made to fix in a git trailer.
    assert git(runner.remote, "log", "-1", "--format=%an <%ae>%n%cn <%ce>", head) == f"{BOT_IDENTITY}\n{BOT_IDENTITY}"
    signature = failure_signature([("test", [FAILED_TEST])])
    message = git(runner.remote, "log", "-1", "--format=%B", head)
    assert signature_trailer(signature) in message.splitlines()
    assert git(runner.remote, "log", "-1", f"--format=%(trailers:key={TRAILER},valueonly)", head) == signature

    # One tracking comment, edited into the report; an app token needs no "CI will not run" note.
    assert len(github.comments) == 1
    comment = next(iter(github.comments.values()))
    body = comment["body"]
    assert body.startswith(BOT_MARKER) and "✅ **opi finished**" in body and comment["edits"] >= 1
    assert f"/commit/{head}" in body and "to `feature`" in body
    assert NO_CI_NOTE not in body and DOCS_ANCHOR not in body
    outputs = runner.outputs()
    assert outputs["conclusion"] == "success" and outputs["commit_sha"] == head
    # The runner is told to mask the minted token; apart from that instruction it is shown nowhere.
    assert f"::add-mask::{app_token}" in proc.stdout.splitlines()
    stdout = "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("::add-mask::"))
    for text in (body, stdout, proc.stderr, message):
        assert app_token not in text and API_KEY not in text

    # The checkout's persisted credential is back in place for the job's later steps.
    assert "AUTHORIZATION: basic" in git(runner.workspace, "config", "--local", "--get-regexp", r"http\..*")


# -- the same run with the workflow's own token --------------------------------------------------------------
def test_with_the_workflow_token_the_report_says_ci_will_not_run(red_pull: RedPull) -> None:
    runner = red_pull.runner
    runner.llm.enqueue_many(_fix_script())
    proc = runner.run(red_pull.env())
    assert proc.returncode == 0, proc.stderr

    assert runner.github.minted == []
    assert "E       assert -1 == 3" in json.dumps(runner.llm.requests[0].body)
    authenticated = [p for p in red_pull.remote_git.pushes() if p.credentials is not None]
    assert authenticated and {p.credentials for p in authenticated} == {("x-access-token", TOKEN)}
    head = git(runner.remote, "rev-parse", "refs/heads/feature")
    assert git(runner.remote, "rev-parse", f"{head}~1") == red_pull.head_sha

    body = runner.comment_bodies()[0]
    notes = [line for line in body.splitlines() if NO_CI_NOTE in line]
    assert len(notes) == 1 and DOCS_ANCHOR in notes[0], body
    # The link points at a section that exists.
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "action.md").read_text(encoding="utf-8"), re.MULTILINE)
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    assert DOCS_ANCHOR.split("#")[1] in slugs


# -- a wrong key stops the run before any work ---------------------------------------------------------------
def test_a_wrong_app_key_fails_before_any_work(red_pull: RedPull, app_key: tuple[str, bytes]) -> None:
    runner, github = red_pull.runner, red_pull.runner.github
    github.install_app(APP_ID, app_key[1], slug=APP_SLUG, installation_id=4242, repos=(REPO,),
                       bot_user_id=BOT_USER_ID)
    other_key, _ = rsa_key_pair()
    refs = red_pull.remote_refs()
    proc = runner.run(red_pull.env(app_id=str(APP_ID), app_private_key=other_key))

    assert proc.returncode != 0
    assert "GitHub App authentication failed" in proc.stderr, proc.stderr
    assert "BEGIN" not in proc.stderr and "PRIVATE KEY" not in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert github.minted == [] and github.comments == {} and github.reactions == []
    assert {r.path for r in github.requests} <= {"/app", f"/repos/{REPO}/installation"}
    assert runner.llm.requests == []
    assert red_pull.remote_git.pushes() == [] and red_pull.remote_refs() == refs
    assert runner.outputs().get("conclusion") == "error"


# -- the git server itself -----------------------------------------------------------------------------------
def test_the_git_server_fetches_anonymously_and_pushes_only_with_accepted_basic_auth(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    git(seed, "commit", "-q", "--allow-empty", "-m", "initial")
    git(tmp_path, "clone", "-q", "--bare", str(seed), "remote.git")
    accepted = ("x-access-token", "good-token")
    with GitHttpServer(tmp_path, accept=lambda user, password: (user, password) == accepted) as server:
        git(tmp_path, "clone", "-q", server.repo_url("remote.git"), "work")
        work = tmp_path / "work"
        (work / "big.bin").write_bytes(bytes(range(256)) * 4096)  # over postBuffer below: sent chunked
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "big")

        def push(password: str | None) -> int:
            helper = ("!f() { test \"$1\" = get && printf 'username=x-access-token\\npassword=%s\\n' "
                      f"'{password}'; }}; f") if password else ""
            argv = ["git", "-c", f"credential.helper={helper}", "-c", "http.postBuffer=65536", "push", "-q",
                    "origin", "main"]
            env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
            return subprocess.run(argv, cwd=work, env=env, capture_output=True, timeout=60, check=False).returncode

        assert push(None) != 0 and push("bad-token") != 0
        assert git(tmp_path / "remote.git", "rev-parse", "main") == git(seed, "rev-parse", "HEAD")
        assert push("good-token") == 0
        assert git(tmp_path / "remote.git", "rev-parse", "main") == git(work, "rev-parse", "HEAD")

    assert all(r.credentials is None and r.status == 200 for r in server.fetches())
    refused = [r for r in server.pushes() if r.status == 401]
    assert refused and {r.credentials for r in refused} <= {None, ("x-access-token", "bad-token")}
    posts = [r for r in server.pushes() if r.method == "POST"]
    assert posts and all(r.credentials == accepted and r.status == 200 for r in posts)
    assert any(r.chunked for r in posts)
    assert "x-access-token:good-token" in server.authorizations
    assert basic_credentials("Basic eDp5") == ("x", "y") and basic_credentials("token abc") is None
