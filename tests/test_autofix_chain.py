"""With `mode: pr`, an automatic fix is a new pull request from `opi/pr-<n>` into the failing branch. When
that pull request's CI fails too, autofix must not fix it: each fix would open one more pull request,
each holding a single bot commit, so the attempt limit would never be reached."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.action_runner import Runner
from tests.action_support import git
from tests.fake_llm import Reply
from tests.test_autofix import workflow_run

pytestmark = pytest.mark.slow
REPO = "octo-org/octo-repo"  # the repository of the workflow_run example payload


def pytest_log(test: str) -> str:
    return ("=================================== FAILURES ===================================\n"
            f"___ {test} ___\nE   assert 0 == 1\n"
            "=========================== short test summary info ============================\n"
            f"FAILED tests/test_app.py::{test} - assert 0 == 1\n##[error]Process completed with exit code 1.\n")


def failed_run(branch: str, sha: str, number: int) -> dict[str, Any]:
    """The CI run of pull request `number` (head `branch` at `sha`) failed."""
    payload = copy.deepcopy(workflow_run(branch=branch))
    run = payload["workflow_run"]
    run["head_sha"] = sha
    run["pull_requests"][0]["number"] = number
    run["pull_requests"][0]["head"].update(ref=branch, sha=sha)
    return payload


def test_the_pull_request_an_autofix_opened_is_not_autofixed(runner: Runner) -> None:
    gh = runner.github
    sha = git(runner.remote, "rev-parse", "refs/heads/feature")
    gh.add_pull(7, head_ref="feature", base_ref="main", repo=REPO, head_sha=sha)
    gh.add_pull_commit(7, sha, login="alice", email="alice@example.com")
    gh.add_check_run(sha, "test", "failure", log=pytest_log("test_one"), repo=REPO)
    runner.llm.enqueue_many([Reply(tool_calls=[("w", "write", {"path": "fix.txt", "content": "fixed\n"})]),
                             Reply(text="Fixed.")])
    first = runner.run(runner.env("workflow_run", failed_run("feature", sha, 7), mode="pr", autofix="true"))
    assert first.returncode == 0, first.stderr[-3000:]
    [opened] = [request.json() for request in gh.calls("POST", r"/pulls$")]
    assert (opened["head"], opened["base"]) == ("opi/pr-7", "feature")

    # The bot's pull request fails CI in turn (a flaky test, say): nothing is fixed, nothing is opened.
    number = max(gh.pulls)
    fix_sha = git(runner.remote, "rev-parse", "refs/heads/opi/pr-7")
    gh.pulls[number]["head"]["sha"] = fix_sha
    gh.add_pull_commit(number, fix_sha, login=None, email=git(runner.remote, "log", "-1", "--format=%ae", fix_sha),
                       message=git(runner.remote, "log", "-1", "--format=%B", fix_sha))
    gh.add_check_run(fix_sha, "test", "failure", log=pytest_log("test_two"), repo=REPO)
    asked = len(runner.llm.requests)
    second = runner.run(runner.env("workflow_run", failed_run("opi/pr-7", fix_sha, number), mode="pr",
                                   autofix="true"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "branch 'opi/pr-7' is one of opi's own" in second.stderr
    assert runner.outputs()["conclusion"] == "skipped"
    assert len(gh.calls("POST", r"/pulls$")) == 1 and len(runner.llm.requests) == asked
    assert not gh.calls("POST", rf"/issues/{number}/comments$")
