"""Fault injection for `opi action` (issue 11, "reports that never lie"): subprocess runs against the
loopback fake GitHub, the fake artifact service and a real bare remote, where GitHub answers 502 to the
final edit, the main step is SIGKILLed or cancelled (SIGTERM) at a chosen moment, the artifact service
answers 409, the token is bad, the remote refuses or rejects the push, the agent's worker is killed, and
a busy repository buries the thread's session (or the artifacts cannot be listed at all).

Kills are placed without timing guesses: a fake endpoint (or the model server, or the remote's
pre-receive hook) holds the request that marks the moment until the test has killed the step, so the
state on disk is exactly that moment's."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.action.continuation import parse_marker
from bot.action.workflow import RunState
from tests import action_support as payloads
from tests.action_runner import API_KEY, FIXED_APP, REPO, TOKEN, Runner
from tests.action_support import git, push_from_elsewhere, rsa_key_pair
from tests.fake_artifacts import FakeArtifactService, Request, Response, mount_on
from tests.fake_github import FakeRequest, FakeResponse
from tests.fake_llm import RecordedRequest, Reply

pytestmark = pytest.mark.slow

RUN_ID = 4242  # the runner fixture's GITHUB_RUN_ID
TRACKING_EDIT = r"/repos/[^/]+/[^/]+/issues/comments/\d+"
ANSWER = "Fixed `add`: it subtracted instead of adding."


def _fix_script(path: str = "app.py", content: str = FIXED_APP, answer: str = ANSWER) -> list[Reply]:
    return [Reply(tool_calls=[("call_write", "write", {"path": path, "content": content})]), Reply(text=answer)]


def _pr_env(runner: Runner, instructions: str = "/opi fix", **inputs: str) -> dict[str, str]:
    runner.github.add_pull(7, head_ref="feature", repo=REPO, title="Add feature")
    return runner.env("issue_comment", payloads.issue_comment(instructions, on_pull=True, number=7), **inputs)


def _state_file(runner: Runner) -> Path:
    """Where the main step said (through `$GITHUB_STATE`) its run state is."""
    saved = [line.split("=", 1)[1] for line in runner.state.read_text(encoding="utf-8").splitlines()
             if line.startswith("opi_state_file=")]
    assert saved, "the main step published no state file"
    return Path(saved[-1])


def _load_state(runner: Runner) -> RunState:
    state = RunState.load(_state_file(runner))
    assert state is not None, "the run state file is missing or untrusted"
    return state


def _post(runner: Runner, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The post step, given the state the runner hands it (`STATE_<name>` from `$GITHUB_STATE`)."""
    return runner.run({**env, "STATE_opi_state_file": str(_state_file(runner))}, "--post")


def _no_secrets(*texts: str) -> None:
    for text in texts:
        shown = "\n".join(line for line in text.splitlines() if not line.startswith("::add-mask::"))
        assert TOKEN not in shown and API_KEY not in shown


# -- killing the main step at a chosen moment --------------------------------------------------------------

class Tripwire:
    """Held by a fake endpoint: the request that marks the moment waits until the test killed the step."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()

    def hold(self) -> None:
        self.reached.set()
        self.released.wait(timeout=120)


def _start(runner: Runner, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = runner.tmp / "main-step.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bot", "action"], cwd=runner.workspace, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def _kill_at(proc: subprocess.Popen[bytes], log: Path, tripwire: Tripwire) -> None:
    """SIGKILL the main step (a job timeout does that) once it reached the tripwire, then let the held
    request go: whatever it answers, nobody is left to read it."""
    try:
        while not tripwire.reached.wait(timeout=0.05):
            if proc.poll() is not None:
                pytest.fail(f"the main step ended (exit {proc.returncode}) before the moment to kill it:\n"
                            f"{log.read_text(encoding='utf-8', errors='replace')}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        tripwire.released.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def artifacts(runner: Runner) -> Iterator[FakeArtifactService]:
    """The artifact service, and its REST routes (and the thread's comments) on the fake GitHub."""
    with FakeArtifactService(repo=REPO) as service:
        mount_on(service, runner.github)
        service.run_id = RUN_ID
        yield service


def _with_artifacts(env: dict[str, str], service: FakeArtifactService) -> dict[str, str]:
    return {**env, "ACTIONS_RUNTIME_TOKEN": service.runtime_token(), "ACTIONS_RESULTS_URL": service.base_url + "/"}


def _hold_after(service: FakeArtifactService, operation: str, tripwire: Tripwire) -> None:
    """The artifact service does `operation` for real, then holds its answer at the tripwire (once)."""
    handle: Callable[[Request], Response | None] = service.handle

    def held(request: Request) -> Response | None:
        answer = handle(request)
        if request.path.endswith("/" + operation) and not tripwire.reached.is_set():
            tripwire.hold()
        return answer

    service.handle = held  # type: ignore[method-assign]


# -- a 502 on the final edit -----------------------------------------------------------------------------------

class FinalEditFailure:
    """GitHub answers 502 to the final report's edit (the body with the report marker) `times` times;
    progress edits and everything else go through."""

    def __init__(self, runner: Runner, times: int) -> None:
        self.times = times
        github = runner.github

        def edit(request: FakeRequest, match: re.Match[str]) -> FakeResponse:
            if self.times > 0 and "<!-- opi-report" in str(request.json().get("body")):
                self.times -= 1
                return FakeResponse(502, {"message": "Server Error"})
            return github._edit_comment(request, match)

        github.route("PATCH", r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/comments/(?P<id>\d+)", edit)


def _final_edits(runner: Runner) -> list[FakeRequest]:
    return [r for r in runner.github.calls("PATCH", TRACKING_EDIT + "$") if "<!-- opi-report" in r.body.decode()]


def test_a_single_502_on_the_final_edit_is_retried(runner: Runner) -> None:
    env = _pr_env(runner)
    runner.llm.enqueue_many(_fix_script())
    FinalEditFailure(runner, times=1)
    proc = runner.run(env)
    assert len(_final_edits(runner)) == 2, "the final edit was not retried after a 502"
    assert proc.returncode == 0, proc.stderr
    (tracking,) = runner.github.comments.values()
    assert "✅ **opi finished**" in tracking["body"] and ANSWER in tracking["body"]
    state = _load_state(runner)
    assert state.report_posted is True and state.phase == "finished"


def test_a_lasting_502_on_the_final_edit_leaves_the_held_report_to_the_post_step(runner: Runner) -> None:
    env = _pr_env(runner)
    runner.llm.enqueue_many(_fix_script())
    failure = FinalEditFailure(runner, times=1_000)  # however often it is retried
    main = runner.run(env)
    assert "Traceback" not in main.stderr
    head = git(runner.remote, "rev-parse", "refs/heads/feature")
    assert git(runner.remote, "show", f"{head}:app.py") + "\n" == FIXED_APP  # the commit was pushed

    (tracking,) = runner.github.comments.values()
    assert "opi-report" not in tracking["body"]  # the report never landed
    state = _load_state(runner)
    assert state.report_posted is False and state.pushed_sha == head and state.pushed_branch == "feature"
    held = state.report_body
    assert held and ANSWER in held

    failure.times = 0  # GitHub recovers before the post step
    post = _post(runner, env)
    assert post.returncode == 0, post.stderr
    body = tracking["body"]
    assert body == held  # the report the main step rendered, unchanged
    assert "✅ **opi finished**" in body and ANSWER in body
    assert "+    return a + b" in body and "| Input tokens |" in body and "| Turns | 2 |" in body
    assert f"/commit/{head}" in body and "to `feature`" in body
    assert "Nothing was pushed" not in body and "cancelled" not in body
    outputs = runner.outputs()
    assert outputs["conclusion"] == "success" and outputs["commit_sha"] == head and outputs["branch"] == "feature"
    assert _load_state(runner).report_posted is True
    _no_secrets(body, main.stderr, post.stderr)

    edits = tracking["edits"]
    again = _post(runner, env)  # a finished run with its report posted: nothing more to do
    assert again.returncode == 0 and "nothing to finalise" in again.stderr
    assert tracking["edits"] == edits


# -- SIGKILL, then the post step -----------------------------------------------------------------------------

def _hold_second_model_call(runner: Runner, tripwire: Tripwire) -> None:
    """The agent writes app.py, then its next model call hangs until the test killed the step."""
    runner.llm.enqueue(_fix_script()[0])

    def responder(request: RecordedRequest) -> Reply:
        tripwire.hold()
        return Reply(text="too late")

    runner.llm.responder = responder


def test_killed_while_the_agent_works_the_post_step_says_nothing_was_pushed(runner: Runner) -> None:
    env = _pr_env(runner)
    before = git(runner.remote, "rev-parse", "refs/heads/feature")
    tripwire = Tripwire()
    _hold_second_model_call(runner, tripwire)
    proc, log = _start(runner, env)
    _kill_at(proc, log, tripwire)
    (tracking,) = runner.github.comments.values()
    assert "working on" in tracking["body"]
    assert _load_state(runner).phase == "running"

    post = _post(runner, env)
    assert post.returncode == 0, post.stderr
    assert git(runner.remote, "rev-parse", "refs/heads/feature") == before
    body = tracking["body"]
    assert "🛑 **opi was cancelled**" in body and "Nothing was pushed" in body and "Pushed" not in body
    # What it cost comes from the session the agent had written: one model call with a known price.
    assert "| Input tokens |" in body and "unknown price" not in body and "$0.0000" not in body
    # How long it ran comes from the start time the main step recorded, not a made-up 0.
    duration = re.search(r"\| Duration \| (\d+\.\d)s \|", body)
    assert duration is not None and float(duration[1]) > 0, body
    outputs = runner.outputs()
    assert outputs["conclusion"] == "cancelled" and outputs["commit_sha"] == ""
    assert float(outputs["cost_usd"]) > 0
    assert Path(outputs["session_path"]).is_file()
    summary = runner.summary.read_text(encoding="utf-8")
    assert "cancelled; nothing was pushed; the report is posted" in summary
    _no_secrets(body, log.read_text(encoding="utf-8"), post.stderr)


def test_killed_after_the_push_the_post_step_says_what_was_pushed(runner: Runner) -> None:
    """Pushed to a new branch, killed before the pull request was opened: the post step must not claim
    that nothing was pushed."""
    tripwire = Tripwire()

    def look_for_pull(request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        tripwire.hold()  # the look-up for an open PR comes right after the push
        return FakeResponse(200, [])

    runner.github.route("GET", r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pulls", look_for_pull)
    runner.llm.enqueue_many(_fix_script())
    payload = payloads.issue_comment("/opi fix the add function")
    payload["repository"]["default_branch"] = "main"
    env = runner.env("issue_comment", payload)
    proc, log = _start(runner, env)
    _kill_at(proc, log, tripwire)

    sha = git(runner.remote, "rev-parse", "refs/heads/opi/issue-1")
    state = _load_state(runner)
    assert state.pushed_sha == sha and state.pushed_branch == "opi/issue-1" and state.pr_url == ""
    assert runner.github.calls("POST", r"/pulls$") == []
    post = _post(runner, env)
    assert post.returncode == 0, post.stderr
    (tracking,) = runner.github.comments.values()
    body = tracking["body"]
    assert "🛑 **opi was cancelled**" in body and "Nothing was pushed" not in body
    assert f"It had pushed [`{sha[:7]}`](https://github.com/{REPO}/commit/{sha}) to `opi/issue-1`." in body
    assert "Fixed `add`" in body  # the agent had answered before the step died: the answer is not lost
    outputs = runner.outputs()
    assert outputs["conclusion"] == "cancelled" and outputs["commit_sha"] == sha
    assert outputs["branch"] == "opi/issue-1" and outputs["pr_url"] == ""
    assert f"cancelled after pushing {sha[:7]} to opi/issue-1" in post.stderr
    assert f"cancelled after pushing {sha[:7]} to opi/issue-1" in runner.summary.read_text(encoding="utf-8")


def test_the_post_step_gives_back_the_runner_directories_a_killed_run_locked(runner: Runner) -> None:
    """While the agent runs, the broker hands RUNNER_TEMP to root with mode 0700 so the agent's uid cannot
    reach the broker's state; killed then, only the post step can give it back to the runner's user, whose
    later steps (uploading the session, reading the patch) need it."""
    os.chown(runner.temp, 1001, 1001)
    os.chmod(runner.temp, 0o755)
    env = _pr_env(runner)
    tripwire = Tripwire()
    _hold_second_model_call(runner, tripwire)
    proc, log = _start(runner, env)
    _kill_at(proc, log, tripwire)
    locked = runner.temp.stat()
    assert (locked.st_uid, stat.S_IMODE(locked.st_mode)) == (0, 0o700), "the run did not lock RUNNER_TEMP"
    assert _load_state(runner).extra.get("locked_dirs"), "the lock was not recorded for the post step"

    post = _post(runner, env)
    assert post.returncode == 0, post.stderr
    restored = runner.temp.stat()
    assert (restored.st_uid, restored.st_gid, stat.S_IMODE(restored.st_mode)) == (1001, 1001, 0o755)


# -- a 409 on the second upload --------------------------------------------------------------------------------

def test_a_409_on_the_second_upload_still_links_the_artifact(runner: Runner,
                                                             artifacts: FakeArtifactService) -> None:
    """The main step uploaded the session and was killed before it recorded that; the post step's upload
    gets 409 (this job has that artifact already) and must find it by name, not call it a failure."""
    env = _with_artifacts(_pr_env(runner), artifacts)
    runner.llm.enqueue_many(_fix_script())
    tripwire = Tripwire()
    _hold_after(artifacts, "FinalizeArtifact", tripwire)
    proc, log = _start(runner, env)
    _kill_at(proc, log, tripwire)
    uploaded = artifacts.by_name(f"opi-session-7-{RUN_ID}")
    assert uploaded.finalized and _load_state(runner).artifact_id is None

    post = _post(runner, env)
    assert post.returncode == 0, post.stderr
    creates = artifacts.requests_to("CreateArtifact")
    assert len(creates) == 2  # the main step's, and the post step's that got 409
    assert [a.name for a in artifacts.artifacts] == [uploaded.name]
    url = f"https://github.com/{REPO}/actions/runs/{RUN_ID}/artifacts/{uploaded.id}"
    (tracking,) = runner.github.comments.values()
    body = tracking["body"]
    assert f"[{uploaded.name}]({url})" in body and f"opi pull {url}" in body
    assert "failed" not in body
    found = parse_marker(body)
    assert found is not None and found.artifact_id == uploaded.id and found.run_id == RUN_ID
    head = git(runner.remote, "rev-parse", "refs/heads/feature")
    assert f"It had pushed [`{head[:7]}`]" in body and "Nothing was pushed" not in body
    assert runner.outputs()["artifact_url"] == url


# -- a 401 at start -----------------------------------------------------------------------------------------------

def test_bad_credentials_at_start_still_write_the_conclusion_and_the_state(runner: Runner) -> None:
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7))
    bad = "ghs_revokedTokenValue0123456789abcdefghij"
    env.update({"INPUT_GITHUB_TOKEN": bad, "GITHUB_TOKEN": bad})
    proc = runner.run(env)
    assert proc.returncode != 0
    assert "401" in proc.stderr and "Bad credentials" in proc.stderr and "Traceback" not in proc.stderr
    assert runner.outputs()["conclusion"] == "error"
    state = _load_state(runner)
    assert state.phase == "finished" and state.conclusion == "error"
    assert runner.github.comments == {} and runner.llm.requests == []

    requests = len(runner.github.requests)
    post = _post(runner, env)
    assert post.returncode == 0, post.stderr
    assert len(runner.github.requests) == requests  # nothing to finalise: no comment was ever made
    assert bad not in proc.stderr and bad not in post.stderr


# -- a workflow-file push refused ------------------------------------------------------------------------------

WORKFLOW = "name: x\non: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n"
REFUSAL = ("refusing to allow a GitHub App to create or update workflow `.github/workflows/x.yml` without "
           "`workflows` permission")


def _refuse_workflow_pushes(runner: Runner) -> None:
    """The remote refuses every push the way GitHub refuses a workflow file pushed without permission."""
    _pre_receive(runner, f"echo '{REFUSAL}' >&2\nexit 1")


def _pre_receive(runner: Runner, script: str) -> None:
    hook = runner.remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    hook.chmod(0o755)


def test_a_refused_workflow_push_explains_the_workflows_permission(runner: Runner) -> None:
    env = _pr_env(runner)
    before = git(runner.remote, "rev-parse", "refs/heads/feature")
    _refuse_workflow_pushes(runner)
    runner.llm.enqueue_many(_fix_script(".github/workflows/x.yml", WORKFLOW, "Added a workflow."))
    proc = runner.run(env)
    assert proc.returncode == 1
    assert git(runner.remote, "rev-parse", "refs/heads/feature") == before
    (tracking,) = runner.github.comments.values()
    body = tracking["body"]
    assert "GitHub refused the push because the commit changes the workflow file `.github/workflows/x.yml`" in body
    assert "`workflows` permission" in body and "`github_token` input" in body
    assert "+      - run: echo hi" in body and "Added a workflow." in body  # the work is not lost
    assert "pre-receive" not in body and "remote:" not in body and "Pushed" not in body  # no raw git output
    assert "refused" in proc.stderr and "`.github/workflows/x.yml`" in proc.stderr  # the job log says it too
    outputs = runner.outputs()
    # `branch` and `commit_sha` name what was pushed: nothing was.
    assert outputs["conclusion"] == "error" and outputs["branch"] == "" and outputs["commit_sha"] == ""
    # Git reported the refusal: no push is left recorded as one that may have landed.
    assert _load_state(runner).pushing_branch == ""


def test_a_refused_workflow_push_with_an_app_says_to_allow_workflow_edits(runner: Runner) -> None:
    """With `app_id`/`app_private_key` the app's token replaces `github_token`, so passing another token
    there changes nothing: the advice is the input that asks the app for `workflows: write`."""
    private_key, public_key = rsa_key_pair()
    runner.github.install_app(424242, public_key, installation_id=4242, repos=(REPO,))
    env = _pr_env(runner, app_id="424242", app_private_key=private_key)
    _refuse_workflow_pushes(runner)
    runner.llm.enqueue_many(_fix_script(".github/workflows/x.yml", WORKFLOW, "Added a workflow."))
    proc = runner.run(env)
    assert proc.returncode == 1
    body = runner.comment_bodies()[0]
    assert "GitHub refused the push because the commit changes the workflow file `.github/workflows/x.yml`" in body
    assert 'set the input `allow_workflow_edits: "true"`' in body and "**Workflows: Read and write**" in body
    assert "`github_token`" not in body
    assert "+      - run: echo hi" in body  # the work is not lost


# -- continuation in a busy repository -------------------------------------------------------------------------

def _run_env(runner: Runner, run_id: int, workspace: Path, payload: dict[str, Any],
             service: FakeArtifactService) -> dict[str, str]:
    """Run `run_id` on its own runner: own RUNNER_TEMP and file commands, the same fakes."""
    temp = runner.tmp / f"runner-{run_id}"
    temp.mkdir()
    env = _with_artifacts(runner.env("issue_comment", payload), service)
    env.update({"GITHUB_RUN_ID": str(run_id), "GITHUB_WORKSPACE": str(workspace), "RUNNER_TEMP": str(temp),
                "GITHUB_OUTPUT": str(temp / "output"), "GITHUB_STEP_SUMMARY": str(temp / "summary.md"),
                "GITHUB_STATE": str(temp / "state")})
    return env


def _run_in(env: dict[str, str], workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "action"], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_follow_up_finds_the_thread_session_behind_1000_newer_artifacts(
        runner: Runner, artifacts: FakeArtifactService) -> None:
    runner.github.add_pull(7, head_ref="feature", repo=REPO, title="Add feature")
    artifacts.run_id = 5001
    runner.llm.enqueue_many(_fix_script("NOTES.md", "colour: blue\n", "First run: noted that the colour is blue."))
    first_env = _run_env(runner, 5001, runner.workspace,
                         payloads.issue_comment("/opi note that the colour is blue", on_pull=True, number=7),
                         artifacts)
    first = _run_in(first_env, runner.workspace)
    assert first.returncode == 0, first.stderr
    ours = artifacts.by_name("opi-session-7-5001")
    report = parse_marker(next(iter(runner.github.comments.values()))["body"])
    assert report is not None and report.run_id == 5001 and report.artifact_id == ours.id

    for index in range(1_050):  # a busy repository: the newest 1,000 artifacts belong to other threads
        artifacts.add_artifact(f"opi-session-{1000 + index}-{6000 + index}", b"not a zip", run_id=6000 + index)

    second_checkout = runner.tmp / "second-checkout"
    git(runner.tmp, "clone", "-q", "--branch", "main", str(runner.remote), str(second_checkout))
    artifacts.run_id = 5002
    runner.llm.enqueue(Reply(text="The colour is blue, as I noted before."))
    seen = len(runner.github.requests)
    second_env = _run_env(runner, 5002, second_checkout,
                          payloads.issue_comment("/opi which colour did you note?", on_pull=True, number=7),
                          artifacts)
    second = _run_in(second_env, second_checkout)
    assert second.returncode == 0, second.stderr

    # The follow-up's first model call carries the first run's conversation.
    resumed = json.dumps(runner.llm.requests[2].body["messages"])
    assert "note that the colour is blue" in resumed and "First run: noted that the colour is blue." in resumed
    assert "which colour did you note?" in resumed
    assert f"names run 5001, artifact {ours.id}" in second.stderr
    # Found through the marker: the repository's artifacts were never listed.
    listings = [r for r in runner.github.requests[seen:] if r.path == f"/repos/{REPO}/actions/artifacts"]
    assert listings == []
    second_report = [c["body"] for c in runner.github.comments.values()][-1]
    assert "Continues the session of [run 5001]" in second_report


def test_a_first_run_that_cannot_list_artifacts_claims_no_earlier_session(runner: Runner) -> None:
    """No report on the thread names a session, and listing the artifacts fails (a token without
    `actions: read`): there may be no earlier session at all, so the comment must not speak of one."""
    runner.github.fail("GET", r"/repos/[^/]+/[^/]+/actions/artifacts", 403, "Resource not accessible by integration")
    runner.llm.enqueue_many(_fix_script())
    proc = runner.run(_pr_env(runner))
    assert proc.returncode == 0, proc.stderr
    body = runner.comment_bodies()[0]
    assert "opi could not look for an earlier session of #7 (the job log says why)" in body
    assert "could not be continued" not in body and "HTTP 403" not in body
    assert "could not look for an earlier session of #7: " in proc.stderr and "HTTP 403" in proc.stderr


# -- a cancel outside the agent's run ----------------------------------------------------------------------------

def _hold_request(runner: Runner, method: str, path: str, tripwire: Tripwire) -> None:
    """The fake GitHub holds the first `method` request to a path matching `path` at the tripwire, before
    taking its lock, so the step's other requests (its final report) still go through meanwhile."""
    handle = runner.github.handle

    def held(request: FakeRequest) -> FakeResponse:
        if request.method == method and re.search(path, request.path) and not tripwire.reached.is_set():
            tripwire.hold()
        return handle(request)

    runner.github.handle = held  # type: ignore[method-assign]


def _cancel_at(proc: subprocess.Popen[bytes], log: Path, reached: Callable[[], bool]) -> None:
    """SIGTERM the main step (a cancelled job) once `reached()`, and wait for it to report and exit."""
    try:
        for _ in range(2_400):
            if reached():
                break
            if proc.poll() is not None:
                pytest.fail(f"the main step ended (exit {proc.returncode}) before the moment to cancel it:\n"
                            f"{log.read_text(encoding='utf-8', errors='replace')}")
            time.sleep(0.05)
        else:
            pytest.fail("the main step never reached the moment to cancel it")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


def test_a_cancel_after_the_push_says_what_was_pushed_and_keeps_the_answer(runner: Runner) -> None:
    """Cancelled while opening the pull request: the push had landed, the agent had answered and spent."""
    runner.llm.enqueue_many(_fix_script())
    payload = payloads.issue_comment("/opi fix the add function")
    payload["repository"]["default_branch"] = "main"
    env = runner.env("issue_comment", payload)
    tripwire = Tripwire()
    _hold_request(runner, "POST", r"/pulls$", tripwire)
    proc, log = _start(runner, env)
    try:
        _cancel_at(proc, log, tripwire.reached.is_set)
    finally:
        tripwire.released.set()
    assert proc.returncode == 1

    sha = git(runner.remote, "rev-parse", "refs/heads/opi/issue-1")
    (tracking,) = runner.github.comments.values()
    body = tracking["body"]
    assert "🛑 **opi was cancelled**" in body and "Nothing was pushed" not in body
    assert f"It had pushed [`{sha[:7]}`](https://github.com/{REPO}/commit/{sha}) to `opi/issue-1`." in body
    assert ANSWER in body and "| Turns | 2 |" in body and "| Input tokens |" in body
    outputs = runner.outputs()
    assert outputs["conclusion"] == "cancelled" and outputs["commit_sha"] == sha
    assert outputs["branch"] == "opi/issue-1" and outputs["turns"] == "2" and float(outputs["cost_usd"]) > 0
    assert Path(outputs["session_path"]).is_file()
    _no_secrets(body, log.read_text(encoding="utf-8"))


def test_a_cancel_during_the_push_says_to_look_at_the_branch(runner: Runner) -> None:
    """Cancelled while git was pushing: whether the push landed is not known, and the report says so."""
    env = _pr_env(runner)
    before = git(runner.remote, "rev-parse", "refs/heads/feature")
    reached, release = runner.tmp / "push-reached", runner.tmp / "push-released"
    # The remote holds the push until the test lets it go (a minute at most), then refuses it.
    _pre_receive(runner, f"touch '{reached}'\nfor i in $(seq 600); do [ -e '{release}' ] && break; sleep 0.1; "
                         "done\nexit 1")
    runner.llm.enqueue_many(_fix_script())
    proc, log = _start(runner, env)
    try:
        _cancel_at(proc, log, reached.exists)
    finally:
        release.touch()
    assert proc.returncode == 1
    assert git(runner.remote, "rev-parse", "refs/heads/feature") == before
    body = runner.comment_bodies()[0]
    assert "🛑 **opi was cancelled**" in body and "Nothing was pushed" not in body
    assert "It was pushing to `feature` when it stopped; look at the branch to see whether that push landed." in body
    assert ANSWER in body and "| Turns | 2 |" in body
    outputs = runner.outputs()
    assert outputs["conclusion"] == "cancelled" and outputs["commit_sha"] == "" and outputs["branch"] == ""


# -- what the report says about the push and the agent --------------------------------------------------------

def test_a_rejected_push_is_not_left_recorded_as_a_push_that_may_have_landed(runner: Runner) -> None:
    """Git said the push was rejected: when the post step has to post the report, it must not call the
    push's fate unknown."""
    env = _pr_env(runner)
    replies = iter(_fix_script())

    def responder(request: RecordedRequest) -> Reply:
        if len(runner.llm.requests) == 2:  # while the agent works, someone pushes to the branch
            push_from_elsewhere(runner.tmp, runner.remote, "feature", "theirs.txt", "x\n")
        return next(replies)

    runner.llm.responder = responder
    failure = FinalEditFailure(runner, times=1_000)
    main = runner.run(env)
    assert main.returncode == 1
    state = _load_state(runner)
    assert state.conclusion == "rejected" and state.report_posted is False
    assert state.pushing_branch == "" and not state.pushed

    failure.times = 0
    post = _post(runner, env)
    assert post.returncode == 0, post.stderr
    assert "rejected; nothing was pushed; the report is posted" in post.stderr
    assert "whether it landed is unknown" not in post.stderr + runner.summary.read_text(encoding="utf-8")
    outputs = runner.outputs()
    assert outputs["conclusion"] == "rejected" and outputs["commit_sha"] == "" and outputs["branch"] == ""


def test_a_worker_killed_mid_run_is_not_said_never_to_have_started(runner: Runner) -> None:
    """The agent wrote a file, then its worker was killed (a hard kill, the OOM killer): it had started."""
    runner.llm.enqueue(_fix_script()[0])
    runner.llm.enqueue(Reply(tool_calls=[("call_kill", "bash", {"command": "kill -9 $PPID"})]))
    proc = runner.run(_pr_env(runner))
    assert proc.returncode == 1
    body = runner.comment_bodies()[0]
    assert "could not start" not in body
    assert "The agent stopped without reporting a result: the agent process ended (exit -9)" in body
    assert "+    return a + b" in body and "| Input tokens |" in body  # its partial work and what it cost
