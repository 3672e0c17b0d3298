"""`/opi fix` reads the checks of the commit it works on: autofix does nothing when the failing commit is green
now (a re-run passed), and a second fix in `mode: pr` starts from the pull request's head (or stops and says why)."""
from __future__ import annotations

import json

import pytest

from tests import action_support as payloads
from tests.action_runner import REPO as CT_REPO
from tests.action_runner import Runner
from tests.action_support import git
from tests.fake_llm import Reply
from tests.test_autofix_chain import REPO, failed_run, pytest_log

pytestmark = pytest.mark.slow


def test_autofix_is_skipped_when_the_failing_commit_is_green_now(runner: Runner) -> None:
    """The CI run failed, a re-run passed before the queued autofix job started: nothing runs or is pushed."""
    gh = runner.github
    sha = git(runner.remote, "rev-parse", "refs/heads/feature")
    gh.add_pull(7, head_ref="feature", base_ref="main", repo=REPO, head_sha=sha)
    gh.add_pull_commit(7, sha, login="alice", email="alice@example.com")
    gh.add_check_run(sha, "test", "success", log="ok\n", repo=REPO)  # the latest attempt of the only check
    proc = runner.run(runner.env("workflow_run", failed_run("feature", sha, 7), autofix="true"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "automatic fix skipped: no check of the failing commit fails any more" in proc.stdout + proc.stderr
    assert runner.llm.requests == [] and runner.outputs()["conclusion"] == "skipped"
    assert git(runner.remote, "rev-parse", "refs/heads/feature") == sha and runner.comment_bodies() == []


def _first_fix(runner: Runner) -> str:
    gh = runner.github
    sha1 = git(runner.remote, "rev-parse", "refs/heads/feature")
    gh.add_pull(7, head_ref="feature", base_ref="main", repo=CT_REPO, head_sha=sha1)
    gh.add_check_run(sha1, "test", "failure", log=pytest_log("test_one"), repo=CT_REPO)
    runner.llm.enqueue_many([Reply(tool_calls=[("w", "write", {"path": "fix.txt", "content": "fixed\n"})]),
                             Reply(text="Fixed one.")])
    first = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7),
                                  mode="pr"))
    assert first.returncode == 0, first.stderr[-3000:]
    return git(runner.remote, "rev-parse", "refs/heads/opi/pr-7")


def _author_pushes(runner: Runner) -> str:
    sha2 = payloads.push_from_elsewhere(runner.tmp, runner.remote, "feature", "new.py", "x = 1\n")
    runner.github.pulls[7]["head"]["sha"] = sha2
    runner.github.add_check_run(sha2, "test", "failure", log=pytest_log("test_three"), repo=CT_REPO)
    return sha2


def test_mode_pr_second_fix_works_on_the_pull_request_head(runner: Runner) -> None:
    """The bot's first fix was merged into `feature`, the author pushed again and CI fails anew: the second
    `/opi fix` reads the checks of the PR head, works on it, and fast-forwards opi/pr-7."""
    bot_tip = _first_fix(runner)
    git(runner.remote, "update-ref", "refs/heads/feature", bot_tip)  # the bot's pull request is merged
    sha2 = _author_pushes(runner)
    asked = len(runner.llm.requests)
    runner.llm.enqueue_many([Reply(tool_calls=[("l", "bash", {"command": "ls"})]),
                             Reply(tool_calls=[("w", "write", {"path": "fix3.txt", "content": "three\n"})]),
                             Reply(text="done")])
    second = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7),
                                   mode="pr"))
    assert second.returncode == 0, second.stderr[-3000:]
    prompt = json.dumps(runner.llm.requests[asked].body)
    assert "test_three" in prompt and "test_one" not in prompt
    assert "new.py" in json.dumps(runner.llm.requests[asked + 1].body)  # the author's commit is in the tree
    tip = git(runner.remote, "rev-parse", "refs/heads/opi/pr-7")
    assert git(runner.remote, "rev-parse", f"{tip}~1") == sha2  # a fast-forward onto the PR head


def test_mode_pr_second_fix_stops_when_the_first_is_not_merged(runner: Runner) -> None:
    """The bot's first fix is still an open pull request and `feature` moved on without it: the run says
    what to do instead of fixing stale code or dropping the earlier fix."""
    bot_tip = _first_fix(runner)
    _author_pushes(runner)
    asked = len(runner.llm.requests)
    second = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7),
                                   mode="pr"))
    assert len(runner.llm.requests) == asked and git(runner.remote, "rev-parse", "refs/heads/opi/pr-7") == bot_tip
    body = runner.comment_bodies()[-1]
    assert "`opi/pr-7`, left by an earlier fix, has commits that `feature` does not" in body, body[:800]
    assert second.returncode in (0, 1)
