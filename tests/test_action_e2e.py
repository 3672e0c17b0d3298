"""`opi action` end to end: a subprocess with the environment a runner gives a container action, the
scripted model server, the fake GitHub REST API, and a real clone of a local bare remote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.action.events import BOT_MARKER
from bot.action.workflow import RunState
from tests import action_support as payloads
from tests.action_runner import API_KEY, FIXED_APP, REPO, TOKEN, Runner
from tests.action_support import git, push_from_elsewhere, remote_and_clone
from tests.fake_llm import FakeLLMServer, RecordedRequest, Reply

pytestmark = pytest.mark.slow

def _fix_script(extra_first: list[tuple[str, str, dict[str, Any]]] | None = None,
                answer: str = "Fixed `add`: it subtracted instead of adding.") -> list[Reply]:
    calls = [*(extra_first or []), ("call_write", "write", {"path": "app.py", "content": FIXED_APP})]
    return [Reply(tool_calls=calls), Reply(text=answer)]


def _assert_no_secrets(*texts: str) -> None:
    """`::add-mask::` lines are the runner's instruction to mask a value: consumed, never shown."""
    for text in texts:
        shown = "\n".join(line for line in text.splitlines() if not line.startswith("::add-mask::"))
        assert TOKEN not in shown and API_KEY not in shown


# -- the main story ------------------------------------------------------------------------------------------
def test_opi_fix_on_a_pr_pushes_a_commit_and_reports(runner: Runner) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO, title="Add feature")
    feature_sha = git(runner.remote, "rev-parse", "refs/heads/feature")
    runner.github.check_runs[feature_sha] = [
        {"id": 1, "name": "tests", "status": "completed", "conclusion": "failure",
         "output": {"title": "1 failed", "summary": "test_add: assert add(1, 2) == 3"}},
        {"id": 2, "name": "lint", "status": "completed", "conclusion": "success", "output": {}},
    ]
    runner.github.review_comments[7] = [{"id": 3, "path": "app.py", "line": 2, "body": "this subtracts",
                                         "user": {"login": "reviewer", "id": 9}}]
    runner.llm.enqueue_many(_fix_script())
    payload = payloads.issue_comment("/opi fix", on_pull=True, number=7)
    proc = runner.run(runner.env("issue_comment", payload))
    assert proc.returncode == 0, proc.stderr

    # A pushed commit on the PR branch, by the bot, with the requester as co-author.
    head = git(runner.remote, "rev-parse", "refs/heads/feature")
    assert git(runner.remote, "show", f"{head}:app.py") + "\n" == FIXED_APP
    log = git(runner.remote, "log", "-1", "--format=%an <%ae>%n%B", head)
    assert log.startswith("opi-bot[bot] <opi-bot[bot]@users.noreply.github.com>")
    assert "Co-authored-by: Codertocat <21031067+Codertocat@users.noreply.github.com>" in log
    assert git(runner.remote, "rev-parse", f"{head}~1") == git(runner.remote, "rev-parse", "feature~1")

    # 👀 on the triggering comment, one tracking comment, edited in place into the report.
    assert [(r["content"], r["kind"], r["comment_id"]) for r in runner.github.reactions] == [
        ("eyes", "issue", 492700400)]
    assert len(runner.github.comments) == 1
    comment = next(iter(runner.github.comments.values()))
    assert comment["edits"] == 1 and comment["issue_number"] == 7
    body = comment["body"]
    assert body.startswith(BOT_MARKER) and "✅ **opi finished**" in body
    assert "Fixed `add`" in body and "app.py" in body and "+    return a + b" in body
    assert f"/commit/{head}" in body and "to `feature`" in body
    assert "| Input tokens |" in body and "| Turns | 2 |" in body
    assert "https://github.com/Codertocat/Hello-World/actions/runs/4242" in body

    # Outputs, the step summary, and the session under RUNNER_TEMP (never in the workspace).
    outputs = runner.outputs()
    assert outputs["conclusion"] == "success" and outputs["commit_sha"] == head
    assert outputs["branch"] == "feature" and outputs["turns"] == "2" and outputs["pr_url"] == ""
    session = Path(outputs["session_path"])
    assert session.is_file() and runner.temp in session.parents
    assert runner.workspace not in session.parents
    assert "| Cost |" in runner.summary.read_text(encoding="utf-8")
    state = RunState.load(Path(runner.state.read_text(encoding="utf-8").split("=", 1)[1].strip()))
    assert state is not None and state.phase == "finished"

    # `/opi fix` gave the agent the failing check and the review comment.
    prompt = json.dumps(runner.llm.requests[0].body)
    assert "- `tests`: failure" in prompt and "1 failed\\n\\ntest_add: assert add(1, 2) == 3" in prompt
    assert "app.py:2 (@reviewer): this subtracts" in prompt and "lint" not in prompt.split("Failing")[1][:200]

    # The permission check came first, and every request carried the token.
    paths = [r.path for r in runner.github.requests]
    assert paths[0] == f"/repos/{REPO}/collaborators/Codertocat/permission"
    _assert_no_secrets(body, proc.stdout, session.read_text(encoding="utf-8"))


def test_secrets_in_tool_output_and_answer_are_redacted_and_tools_see_no_tokens(runner: Runner) -> None:
    leak = runner.tmp / "leak.txt"
    leak.write_text(f"the token is {TOKEN}\n", encoding="utf-8")
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    probe = ("call_env", "bash", {"command": f"cat {leak}; env | sort"})
    runner.llm.enqueue_many(_fix_script([probe], answer=f"Done. By the way the token was {TOKEN}."))
    proc = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7)))
    assert proc.returncode == 0, proc.stderr

    # What the model saw of the bash result: the leaked file redacted, and no secret variables at all.
    tool_result = json.dumps(runner.llm.requests[1].body)
    assert "the token is ***" in tool_result
    for name in ("GITHUB_TOKEN", "INPUT_GITHUB_TOKEN", "INPUT_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY",
                 "ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        assert f"{name}=" not in tool_result
    assert "GITHUB_REPOSITORY=" in tool_result  # the env listing really is in there

    body = runner.comment_bodies()[0]
    assert "the token was ***" in body
    head = git(runner.remote, "rev-parse", "refs/heads/feature")
    commit = git(runner.remote, "log", "-1", "--format=%B", head)
    session = Path(runner.outputs()["session_path"]).read_text(encoding="utf-8")
    _assert_no_secrets(body, commit, session, proc.stdout, proc.stderr, runner.output.read_text(encoding="utf-8"),
                       runner.summary.read_text(encoding="utf-8"))


# -- security ---------------------------------------------------------------------------------------------------
def test_unauthorised_commenter_gets_one_polite_reply_and_nothing_else(runner: Runner) -> None:
    runner.github.set_permission("Codertocat", "read", "triage")
    proc = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7)))
    assert proc.returncode == 0, proc.stderr
    assert len(runner.github.comments) == 1
    body = runner.comment_bodies()[0]
    assert body.startswith(BOT_MARKER) and "Sorry @Codertocat" in body and "triage" in body
    assert runner.github.reactions == [] and runner.llm.requests == []
    assert [r.method for r in runner.github.requests] == ["GET", "POST"]
    assert runner.outputs()["conclusion"] == "unauthorized"


def test_non_collaborator_is_unauthorised(runner: Runner) -> None:
    payload = payloads.issue_comment("/opi do things", login="stranger", user_id=5)
    proc = runner.run(runner.env("issue_comment", payload))
    assert proc.returncode == 0 and "Sorry @stranger" in runner.comment_bodies()[0]
    assert runner.llm.requests == []


@pytest.mark.parametrize("payload", [
    payloads.issue_comment("/opi fix", login="github-actions[bot]", user_type="Bot"),
    payloads.issue_comment(f"{BOT_MARKER}\n/opi fix"),
    payloads.issue_comment("/opi fix", action="edited"),
    payloads.issue_comment("looks good, no trigger here"),
], ids=["bot", "marker", "edited", "no-trigger"])
def test_ignored_comments_exit_zero_without_any_call(runner: Runner, payload: dict[str, Any]) -> None:
    proc = runner.run(runner.env("issue_comment", payload))
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stderr
    assert runner.github.requests == [] and runner.llm.requests == []
    assert runner.outputs()["conclusion"] == "skipped"


def test_fork_pr_is_never_pushed_and_the_patch_is_posted(runner: Runner) -> None:
    feature = git(runner.remote, "rev-parse", "refs/heads/feature")
    git(runner.remote, "update-ref", "refs/pull/9/head", feature)
    runner.github.add_pull(9, head_ref="feature", repo=REPO, head_repo="someone/Hello-World")
    runner.llm.enqueue_many(_fix_script())
    before = git(runner.remote, "for-each-ref")
    proc = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=9)))
    assert proc.returncode == 0, proc.stderr
    assert git(runner.remote, "for-each-ref") == before  # nothing pushed anywhere
    body = runner.comment_bodies()[0]
    assert "comes from a fork" in body and "+    return a + b" in body and "git apply" in body
    assert runner.outputs()["commit_sha"] == ""
    assert (runner.temp / "opi-9-4242.patch").read_text(encoding="utf-8").count("+    return a + b") == 1


# -- delivery variants ---------------------------------------------------------------------------------------------
def test_rejected_push_is_reported_with_the_patch(runner: Runner) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    replies = iter(_fix_script())
    pushed: list[str] = []

    def responder(request: RecordedRequest) -> Reply:
        if len(runner.llm.requests) == 2:  # while the agent works, someone pushes to the branch
            pushed.append(push_from_elsewhere(runner.tmp, runner.remote, "feature", "theirs.txt", "x\n"))
        return next(replies)

    runner.llm.responder = responder
    proc = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7)))
    assert proc.returncode == 1
    assert git(runner.remote, "rev-parse", "refs/heads/feature") == pushed[0]  # their work is intact
    body = runner.comment_bodies()[0]
    assert "push was rejected" in body and "someone pushed" in body and "+    return a + b" in body
    outputs = runner.outputs()
    # `branch` and `commit_sha` name what was pushed: the rejected commit never reached the remote.
    assert outputs["conclusion"] == "rejected" and outputs["branch"] == "" and outputs["commit_sha"] == ""


def test_issue_comment_opens_a_pr_from_a_new_branch(runner: Runner) -> None:
    runner.llm.enqueue_many(_fix_script())
    payload = payloads.issue_comment("/opi fix the add function")
    payload["repository"]["default_branch"] = "main"  # the example repository's default is master
    proc = runner.run(runner.env("issue_comment", payload))
    assert proc.returncode == 0, proc.stderr
    head = git(runner.remote, "rev-parse", "refs/heads/opi/issue-1")
    assert git(runner.remote, "rev-parse", f"{head}~1") == git(runner.remote, "rev-parse", "main")
    created = [r.json() for r in runner.github.calls("POST", r"/pulls$")]
    assert len(created) == 1
    assert created[0]["head"] == "opi/issue-1" and created[0]["base"] == "main"
    assert created[0]["title"] == "opi: Spelling error in the README file"
    assert "Resolves #1." in created[0]["body"]
    outputs = runner.outputs()
    assert outputs["pr_url"].endswith("/pull/101") and outputs["branch"] == "opi/issue-1"
    assert "Pull request: https://github.com/Codertocat/Hello-World/pull/101" in runner.comment_bodies()[0]


def test_missing_base_branch_is_an_error_comment(runner: Runner) -> None:
    # The example payload's default branch is `master`, which this remote does not have.
    proc = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix the add function")))
    assert proc.returncode == 1
    body = runner.comment_bodies()[0]
    assert "❌ **opi failed**" in body and "the branch `master` does not exist on origin" in body
    assert "`base_branch` input" in body
    assert "master" in proc.stderr and runner.llm.requests == []


def test_base_branch_input_wins(runner: Runner) -> None:
    runner.llm.enqueue_many(_fix_script())
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix it"), base_branch="feature")
    assert runner.run(env).returncode == 0
    assert runner.github.calls("POST", r"/pulls$")[0].json()["base"] == "feature"


def test_limit_hit_posts_the_partial_diff_and_pushes_nothing(runner: Runner) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    runner.llm.enqueue(_fix_script()[0])  # the write, then the turn limit stops it
    before = git(runner.remote, "rev-parse", "refs/heads/feature")
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7), max_turns="1")
    proc = runner.run(env)
    assert proc.returncode == 1
    assert git(runner.remote, "rev-parse", "refs/heads/feature") == before
    body = runner.comment_bodies()[0]
    assert "limit reached" in body and "max_turns" in body and "not pushed" in body and "+    return a + b" in body
    assert runner.outputs()["conclusion"] == "limit"


def test_comment_mode_posts_the_patch_only(runner: Runner) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    runner.llm.enqueue_many(_fix_script())
    before = git(runner.remote, "for-each-ref")
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7), mode="comment")
    assert runner.run(env).returncode == 0
    assert git(runner.remote, "for-each-ref") == before
    assert "`mode: comment`" in runner.comment_bodies()[0]


def test_review_comment_reacts_on_the_review_endpoint_and_gives_context(runner: Runner) -> None:
    payload = payloads.review_comment("/opi use a clearer name here")
    payload["pull_request"]["head"]["ref"] = "feature"
    payload = payloads.validate("pull_request_review_comment", payload)
    runner.llm.enqueue_many(_fix_script())
    proc = runner.run(runner.env("pull_request_review_comment", payload))
    assert proc.returncode == 0, proc.stderr
    assert [(r["kind"], r["comment_id"]) for r in runner.github.reactions] == [("review", 284312630)]
    prompt = json.dumps(runner.llm.requests[0].body)
    assert "README.md" in prompt and "line 265" in prompt and "@@ -1 +1 @@" in prompt
    assert runner.github.calls("GET", r"/pulls/2$") == []  # the payload already had the PR
    # The report is a reply in the review thread, edited in place; nothing on the PR conversation.
    replies = [c for c in runner.github.review_comments.get(2, []) if c.get("in_reply_to_id") == 284312630]
    assert len(replies) == 1 and replies[0]["edits"] >= 1 and "✅ **opi finished**" in replies[0]["body"]
    assert runner.github.comments == {}


def test_scheduled_run_without_changes_posts_nothing(runner: Runner) -> None:
    runner.llm.enqueue("Everything is up to date.")
    env = runner.env("schedule", {"schedule": "0 3 * * 1"}, prompt="update the changelog")
    proc = runner.run(env)
    assert proc.returncode == 0, proc.stderr
    assert runner.github.comments == {} and runner.github.calls("POST") == []
    assert runner.outputs()["conclusion"] == "no_changes"


def test_bad_input_is_a_clear_usage_error(runner: Runner) -> None:
    env = runner.env("issue_comment", payloads.issue_comment("/opi x"), mode="yolo")
    proc = runner.run(env)
    assert proc.returncode == 2 and "input `mode` must be one of push, pr, comment, got 'yolo'" in proc.stderr


# -- post step and dry run -------------------------------------------------------------------------------------------
def test_post_step_finalises_a_run_that_died(runner: Runner) -> None:
    comment_id = 555
    runner.github.comments[comment_id] = {"id": comment_id, "body": "working…", "edits": 0, "issue_number": 7}
    session = runner.temp / "opi-sessions" / "s.jsonl"
    session.parent.mkdir()
    session.write_text(json.dumps({"type": "message", "text": f"leaked {TOKEN}"}) + "\n", encoding="utf-8")
    state_file = runner.temp / "opi-action-state-4242.json"
    RunState(phase="running", repo=REPO, number=7, tracking_comment_id=comment_id, session_path=str(session),
             run_url="https://github.com/x/runs/1").save(state_file)
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix"))
    env["STATE_opi_state_file"] = str(state_file)
    proc = runner.run(env, "--post")
    assert proc.returncode == 0, proc.stderr
    body = runner.github.comments[comment_id]["body"]
    assert "cancelled" in body and "Nothing was pushed" in body
    assert "s.jsonl" not in body and "session_id=s" in body  # no container path; the marker names the session
    assert TOKEN not in session.read_text(encoding="utf-8")
    assert runner.outputs()["session_path"] == str(session)
    # A second post run (or one after a finished main step) leaves the comment alone.
    proc = runner.run(env, "--post")
    assert proc.returncode == 0 and runner.github.comments[comment_id]["edits"] == 1


def test_post_step_after_a_finished_run_does_nothing(runner: Runner) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    runner.llm.enqueue_many(_fix_script())
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7))
    assert runner.run(env).returncode == 0
    requests_before = len(runner.github.requests)
    env["STATE_opi_state_file"] = runner.state.read_text(encoding="utf-8").split("=", 1)[1].strip()
    proc = runner.run(env, "--post")
    assert proc.returncode == 0 and "nothing to finalise" in proc.stderr
    assert len(runner.github.requests) == requests_before


def test_dry_run_prints_the_comment_without_github(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    _, workspace = remote_and_clone(tmp_path)
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payloads.issue_comment("/opi fix the add function", on_pull=True, number=3)),
                     encoding="utf-8")
    fake_llm.enqueue_many(_fix_script())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_"))}
    env.update(fake_llm.env(API_KEY))
    env["RUNNER_TEMP"] = str(tmp_path / "temp")
    (tmp_path / "temp").mkdir()
    proc = subprocess.run([sys.executable, "-m", "bot", "action", "--dry-run", "--event", str(event),
                           "--model", "anthropic:claude-sonnet-4-5"],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(BOT_MARKER)
    assert "+    return a + b" in proc.stdout and "Dry run: nothing is pushed." in proc.stdout and "| Turns | 2 |" in proc.stdout
    assert (workspace / "app.py").read_text(encoding="utf-8") == FIXED_APP
    assert git(workspace, "status", "--porcelain") == "M app.py"  # the user's index untouched
    # The change is already in the working tree, where applying its patch again fails: the comment says
    # so, and where the patch is, instead of telling the user to `git apply` it.
    patch = tmp_path / "temp" / "opi-3-local.patch"
    assert "git apply" not in proc.stdout
    assert f"The change is already in the working tree; the patch is saved at `{patch}`." in proc.stdout
    assert subprocess.run(["git", "apply", "--check", str(patch)], cwd=workspace, capture_output=True,
                          check=False).returncode != 0
    _assert_no_secrets(proc.stdout)


def test_cancelled_run_ends_with_a_cancelled_comment(runner: Runner) -> None:
    """The runner stops a cancelled job with SIGTERM: the agent aborts and the comment says so."""
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    runner.llm.allow_unused = True
    runner.llm.enqueue(Reply(text="thinking very slowly " * 20, chunks=40, delay=0.25))
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7))
    proc = subprocess.Popen([sys.executable, "-m", "bot", "action"], cwd=runner.workspace, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # wait (up to a minute) for the model request to be in flight
            if runner.llm.requests:
                break
            time.sleep(0.1)
        assert runner.llm.requests, "the action never asked the model"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    body = runner.comment_bodies()[0]
    assert "🛑 **opi was cancelled**" in body
    assert runner.outputs()["conclusion"] == "cancelled"


def test_pr_mode_on_a_pull_request_opens_a_follow_up_pr(runner: Runner) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    runner.llm.enqueue_many(_fix_script())
    feature = git(runner.remote, "rev-parse", "refs/heads/feature")
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7), mode="pr")
    proc = runner.run(env)
    assert proc.returncode == 0, proc.stderr
    assert git(runner.remote, "rev-parse", "refs/heads/feature") == feature  # the PR branch is untouched
    head = git(runner.remote, "rev-parse", "refs/heads/opi/pr-7")
    assert git(runner.remote, "rev-parse", f"{head}~1") == feature
    created = runner.github.calls("POST", r"/pulls$")[0].json()
    assert (created["head"], created["base"]) == ("opi/pr-7", "feature")
    assert "Follow-up to #7." in created["body"]


def test_scheduled_run_with_changes_opens_one_pr_then_updates_it(runner: Runner) -> None:
    env = runner.env("workflow_dispatch", payloads.workflow_dispatch("fix the add function"), base_branch="main")
    runner.llm.enqueue_many(_fix_script())
    assert runner.run(env).returncode == 0
    first = git(runner.remote, "rev-parse", "refs/heads/opi/maintenance")
    assert len(runner.github.calls("POST", r"/pulls$")) == 1
    assert runner.github.comments == {}  # nothing to comment on: the PR body carries the answer
    # The next run continues the same branch and finds the open PR instead of opening another.
    git(runner.workspace, "checkout", "-q", "main")
    runner.llm.enqueue_many([Reply(tool_calls=[("c2", "write", {"path": "NOTES.md", "content": "notes\n"})]),
                             Reply(text="Added notes.")])
    assert runner.run(env).returncode == 0
    second = git(runner.remote, "rev-parse", "refs/heads/opi/maintenance")
    assert git(runner.remote, "rev-parse", f"{second}~1") == first
    assert len(runner.github.calls("POST", r"/pulls$")) == 1
    assert runner.outputs()["pr_url"].endswith("/pull/101")


def test_post_step_finalises_after_the_main_step_was_killed(runner: Runner) -> None:
    """SIGKILL (a timed-out job) leaves no chance to report: the post step edits the tracking comment."""
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    runner.llm.allow_unused = True
    runner.llm.enqueue(Reply(text="slow " * 50, chunks=50, delay=0.25))
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7))
    proc = subprocess.Popen([sys.executable, "-m", "bot", "action"], cwd=runner.workspace, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if runner.llm.requests:
                break
            time.sleep(0.1)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (tracking,) = runner.github.comments.values()
    assert "working on" in tracking["body"]  # the main step never got to report
    env["STATE_opi_state_file"] = runner.state.read_text(encoding="utf-8").split("=", 1)[1].strip()
    post = runner.run(env, "--post")
    assert post.returncode == 0, post.stderr
    assert "🛑 **opi was cancelled**" in tracking["body"] and "Nothing was pushed" in tracking["body"]
    session = Path(runner.outputs()["session_path"])
    assert session.is_file() and runner.temp in session.parents


def test_github_failure_before_the_tracking_comment_fails_the_step_clearly(runner: Runner) -> None:
    runner.github.fail("GET", r"/repos/[^/]+/[^/]+/collaborators/[^/]+/permission", 403,
                       "Resource not accessible by integration")
    proc = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix")))
    assert proc.returncode == 1
    assert "could not read the permission of Codertocat: HTTP 403: Resource not accessible" in proc.stderr
    assert "Traceback" not in proc.stderr and runner.llm.requests == []


def test_unknown_tool_name_is_reported_in_the_comment(runner: Runner) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7),
                     allowed_tools="read, frobnicate")
    proc = runner.run(env)
    assert proc.returncode == 1
    body = runner.comment_bodies()[0]
    assert "❌ **opi failed**" in body and "frobnicate" in body and "could not start" in body
    assert runner.llm.requests == []


def test_pr_creation_failure_keeps_the_pushed_commit_and_the_report(runner: Runner) -> None:
    runner.github.fail("POST", r"/repos/[^/]+/[^/]+/pulls", 403, "Resource not accessible by integration")
    runner.llm.enqueue_many(_fix_script())
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix it"), base_branch="main")
    proc = runner.run(env)
    assert proc.returncode == 1
    head = git(runner.remote, "rev-parse", "refs/heads/opi/issue-1")
    body = runner.comment_bodies()[0]
    assert "opening the pull request failed" in body and "HTTP 403" in body and head[:7] in body
    assert "+    return a + b" in body and "| Turns | 2 |" in body
    outputs = runner.outputs()
    assert outputs["conclusion"] == "error" and outputs["commit_sha"] == head and outputs["pr_url"] == ""


def test_push_failure_still_reports_answer_diff_and_cost(runner: Runner) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    runner.llm.enqueue_many(_fix_script())
    hook = runner.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n", encoding="utf-8")
    hook.chmod(0o755)
    proc = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7)))
    assert proc.returncode == 1
    body = runner.comment_bodies()[0]
    # The thread gets a short sentence; git's own words (the hook's message) go to the job log only.
    assert "could not deliver the agent's work" in body and "protected branch" not in body
    assert "protected branch" in proc.stderr
    assert "+    return a + b" in body and "Fixed `add`" in body and "| Turns | 2 |" in body


def test_a_tool_cannot_read_its_parents_environment_nor_the_brokers(runner: Runner) -> None:
    # The agent's parent is the worker (non-dumpable: its /proc entries are closed to its own uid's tools),
    # and the broker above it runs as another uid; neither environment holds a secret in the first place.
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    probe = ("call_proc", "bash", {"command": "tr '\\0' '\\n' < /proc/$PPID/environ; echo; "
                                              "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ; done "
                                              "2>/dev/null | sort -u; echo probe-done"})
    runner.llm.enqueue_many(_fix_script([probe], answer="Looked around."))
    proc = runner.run(runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7)))
    assert proc.returncode == 0, proc.stderr
    tool_result = json.dumps(runner.llm.requests[1].body)
    assert "probe-done" in tool_result and "Permission denied" in tool_result
    assert "GITHUB_REPOSITORY=" in tool_result  # the probe did read environments (its own, its children's)
    for name in ("INPUT_GITHUB_TOKEN", "INPUT_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY", "ACTIONS_RUNTIME_TOKEN",
                 "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "OPI_MODEL_PROXY_TOKEN", "GITHUB_ENV"):
        assert f"{name}=" not in tool_result
    assert "***" not in tool_result  # nothing needed redacting: the values were never there
    _assert_no_secrets(tool_result)


def test_a_missing_provider_key_is_said_plainly_and_nothing_runs(runner: Runner) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7))
    del env["INPUT_ANTHROPIC_API_KEY"]
    env.pop("ANTHROPIC_API_KEY", None)
    proc = runner.run(env)
    assert proc.returncode == 1
    body = runner.comment_bodies()[0]
    assert "The agent could not start" in body and "set ANTHROPIC_API_KEY" in body
    assert runner.llm.requests == []  # no model call, with or without a key
