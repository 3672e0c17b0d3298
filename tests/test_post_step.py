"""The run state's delivery facts and `opi action --post` finishing a run from them, as a subprocess.

Each test prepares the state file the main step would have left at the moment it stopped (after a push,
with a report it could not post, ...) and runs the post step against the loopback fake GitHub and
artifact service.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.action.workflow import RunState
from bot.agent.session import Session
from bot.llm.messages import AssistantMessage, Cost, TextContent, Usage, UserMessage
from tests.action_support import parse_github_output
from tests.fake_artifacts import FakeArtifactService
from tests.fake_github import FakeGitHub

REPO = "Codertocat/Hello-World"
GH_TOKEN = "ghs_postStepToken0123456789abcdefghijkl"
RUN_ID = 7001
SHA = "abc1234def5678abc1234def5678abc1234def56"


# -- RunState ------------------------------------------------------------------------------------------------

def test_record_saves_each_fact_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = RunState(phase="running", repo=REPO, number=7)
    state.save(path)
    state.record(pushed_sha=SHA, pushed_branch="feature")
    loaded = RunState.load(path)
    assert loaded is not None and loaded.pushed and loaded.pushed_branch == "feature"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind
    with pytest.raises(ValueError, match="unknown run-state facts: pushed_to"):
        state.record(pushed_to="x")


def test_a_state_file_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    # The agent runs as another user: a state file it could write would dictate what the post step posts.
    path = tmp_path / "state.json"
    RunState(phase="running", repo=REPO, report_body="forged").save(path)
    path.chmod(0o666)
    assert RunState.load(path) is None
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    assert RunState.load(path) is None
    os.chown(path, os.geteuid(), os.getegid())
    assert RunState.load(path) is not None


def test_needs_post_step() -> None:
    assert RunState(phase="running").needs_post_step
    assert not RunState(phase="finished", report_posted=True).needs_post_step
    assert RunState(phase="finished", report_posted=False).needs_post_step
    assert not RunState(phase="finished").needs_post_step  # a scheduled run: nothing to post


# -- the post step as a subprocess -----------------------------------------------------------------------

@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=GH_TOKEN) as fake:
        fake.comments[555] = {"id": 555, "body": "👀 working…", "edits": 0, "issue_number": 7}
        yield fake


@pytest.fixture
def artifacts() -> Iterator[FakeArtifactService]:
    with FakeArtifactService(repo=REPO) as fake:
        fake.run_id = RUN_ID
        yield fake


def post_env(tmp: Path, github: FakeGitHub, artifacts: FakeArtifactService | None) -> dict[str, str]:
    temp = tmp / "runner-temp"
    temp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_", "STATE_", "ACTIONS_"))}
    env.update({
        "GITHUB_REPOSITORY": REPO, "GITHUB_WORKSPACE": str(tmp), "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_API_URL": github.url, "GITHUB_RUN_ID": str(RUN_ID), "RUNNER_TEMP": str(temp),
        "GITHUB_OUTPUT": str(temp / "output"), "GITHUB_STEP_SUMMARY": str(temp / "summary.md"),
        "INPUT_GITHUB_TOKEN": GH_TOKEN, "STATE_opi_state_file": str(temp / "state.json"),
    })
    if artifacts is not None:
        env.update({"ACTIONS_RUNTIME_TOKEN": artifacts.runtime_token(), "ACTIONS_RESULTS_URL": artifacts.base_url})
    return env


def prepare_state(env: dict[str, str], **facts: object) -> RunState:
    state = RunState(phase="running", repo=REPO, number=7, tracking_comment_id=555,
                     run_url=f"https://github.com/{REPO}/actions/runs/{RUN_ID}")
    state.save(Path(env["STATE_opi_state_file"]))
    if facts:
        state.record(**facts)
    return state


def run_post(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "action", "--post"], cwd=env["GITHUB_WORKSPACE"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def outputs(env: dict[str, str]) -> dict[str, str]:
    return parse_github_output(Path(env["GITHUB_OUTPUT"]).read_text(encoding="utf-8"))


def session_with_unknown_price(directory: Path) -> Path:
    path = directory / "sess-unknown.jsonl"
    session = Session.create(path, cwd="/github/workspace", model="openai:some-new-model", session_id="sess-unknown")
    session.append_message(UserMessage(content="task"))
    session.append_message(AssistantMessage(content=[TextContent(text="working")], provider="openai",
                                            model="some-new-model", api="openai", usage=Usage(input=1000, output=50),
                                            cost=Cost()))  # the price is unknown
    session.close()
    return path


def test_a_report_the_main_step_could_not_post_is_posted_as_it_was(
        tmp_path: Path, github: FakeGitHub) -> None:
    env = post_env(tmp_path, github, None)
    held = "<!-- opi-bot -->\n✅ **opi finished**\n\nPushed `abc1234` to `feature`.\n\nThe answer, diff and costs."
    prepare_state(env, pushed_sha=SHA, pushed_branch="feature", conclusion="success", phase="finished",
                  report_body=held, report_posted=False, report_error="could not edit comment 555: HTTP 502")
    done = run_post(env)
    assert done.returncode == 0, done.stderr
    assert github.comments[555]["body"] == held
    assert "could not post its final report (could not edit comment 555: HTTP 502)" in done.stderr
    assert "success after pushing abc1234 to feature; the report is posted" in done.stderr
    values = outputs(env)
    assert values["conclusion"] == "success" and values["commit_sha"] == SHA and values["branch"] == "feature"
    state = RunState.load(Path(env["STATE_opi_state_file"]))
    assert state is not None and state.report_posted is True and not state.needs_post_step
    # A second post run (a re-run of the job's post step) leaves the comment alone.
    assert run_post(env).returncode == 0 and github.comments[555]["edits"] == 1


def test_a_run_killed_after_its_push_never_claims_nothing_was_pushed(
        tmp_path: Path, github: FakeGitHub, artifacts: FakeArtifactService) -> None:
    env = post_env(tmp_path, github, artifacts)
    session = session_with_unknown_price(Path(env["RUNNER_TEMP"]))
    prepare_state(env, session_path=str(session), pushed_sha=SHA, pushed_branch="feature",
                  pr_url="https://github.com/Codertocat/Hello-World/pull/9")
    done = run_post(env)
    assert done.returncode == 0, done.stderr
    body = github.comments[555]["body"]
    assert "cancelled" in body and "Nothing was pushed" not in body
    assert f"It had pushed [`abc1234`](https://github.com/{REPO}/commit/{SHA}) to `feature`." in body
    assert "Pull request: https://github.com/Codertocat/Hello-World/pull/9" in body
    assert "$0.0000" not in body and "unknown price" in body  # an unknown price is never $0
    assert str(session) not in body and "/runner-temp" not in body  # no runner paths in public
    uploaded = artifacts.by_name(f"opi-session-7-{RUN_ID}")
    assert f"opi pull https://github.com/{REPO}/actions/runs/{RUN_ID}/artifacts/{uploaded.id}" in body
    assert f"<!-- opi-report run_id={RUN_ID} artifact_id={uploaded.id} session_id=sess-unknown -->" in body
    assert "cancelled after pushing abc1234 to feature (pull request" in done.stderr
    values = outputs(env)
    assert values["conclusion"] == "cancelled" and values["commit_sha"] == SHA and values["cost_usd"] == ""


def test_the_duration_of_a_killed_run_is_counted_from_its_recorded_start(
        tmp_path: Path, github: FakeGitHub) -> None:
    env = post_env(tmp_path, github, None)
    session = session_with_unknown_price(Path(env["RUNNER_TEMP"]))
    state = prepare_state(env, session_path=str(session))
    state.started_at = time.time() - 3600  # the main step records it when the run starts
    state.save(Path(env["STATE_opi_state_file"]))
    assert run_post(env).returncode == 0
    assert re.search(r"\| Duration \| 60m 0\ds \|", github.comments[555]["body"])


def test_an_unknown_duration_is_shown_as_unknown_not_zero(tmp_path: Path, github: FakeGitHub) -> None:
    env = post_env(tmp_path, github, None)
    session = session_with_unknown_price(Path(env["RUNNER_TEMP"]))
    prepare_state(env, session_path=str(session))  # a state from before the start time was recorded
    assert run_post(env).returncode == 0
    body = github.comments[555]["body"]
    assert "| Duration | unknown |" in body and "| Duration | 0.0s |" not in body


def test_a_run_killed_mid_push_says_the_push_may_have_landed(tmp_path: Path, github: FakeGitHub) -> None:
    env = post_env(tmp_path, github, None)
    prepare_state(env, pushing_branch="opi/issue-7")
    assert run_post(env).returncode == 0
    body = github.comments[555]["body"]
    assert "It was pushing to `opi/issue-7` when it stopped" in body and "Nothing was pushed" not in body


def test_a_run_killed_before_any_push_says_nothing_was_pushed(tmp_path: Path, github: FakeGitHub) -> None:
    env = post_env(tmp_path, github, None)
    prepare_state(env)
    assert run_post(env).returncode == 0
    assert "Nothing was pushed." in github.comments[555]["body"]


def test_the_session_the_main_step_already_uploaded_is_found_not_failed(
        tmp_path: Path, github: FakeGitHub, artifacts: FakeArtifactService) -> None:
    # The main step uploaded the session, then died before recording it: the service answers 409.
    env = post_env(tmp_path, github, artifacts)
    session = session_with_unknown_price(Path(env["RUNNER_TEMP"]))
    existing = artifacts.add_artifact(f"opi-session-7-{RUN_ID}", b"zip", run_id=RUN_ID)
    prepare_state(env, session_path=str(session))
    done = run_post(env)
    assert done.returncode == 0, done.stderr
    url = f"https://github.com/{REPO}/actions/runs/{RUN_ID}/artifacts/{existing.id}"
    body = github.comments[555]["body"]
    assert f"opi pull {url}" in body and "failed" not in body
    assert outputs(env)["artifact_url"] == url
    assert "already uploaded" in done.stderr


def test_when_the_report_cannot_be_posted_the_log_says_exactly_what_happened(
        tmp_path: Path, github: FakeGitHub) -> None:
    env = post_env(tmp_path, github, None)
    prepare_state(env, pushed_sha=SHA, pushed_branch="feature")
    github.fail("PATCH", r"/repos/[^/]+/[^/]+/issues/comments/555", 502, "Bad Gateway")
    github.fail("PATCH", r"/repos/[^/]+/[^/]+/issues/comments/555", 502, "Bad Gateway")
    github.fail("PATCH", r"/repos/[^/]+/[^/]+/issues/comments/555", 502, "Bad Gateway")
    github.fail("PATCH", r"/repos/[^/]+/[^/]+/issues/comments/555", 502, "Bad Gateway")
    github.fail("PATCH", r"/repos/[^/]+/[^/]+/issues/comments/555", 502, "Bad Gateway")
    done = run_post(env)
    assert done.returncode == 1
    assert "cancelled after pushing abc1234 to feature; the report could not be posted:" in done.stderr
    assert "502" in done.stderr
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    assert "cancelled after pushing abc1234 to feature" in summary
    state = RunState.load(Path(env["STATE_opi_state_file"]))
    # The report is held, so a re-run of the post step can still post it.
    assert state is not None and state.needs_post_step and "It had pushed" in state.report_body


def test_a_forged_state_file_is_ignored(tmp_path: Path, github: FakeGitHub) -> None:
    env = post_env(tmp_path, github, None)
    prepare_state(env, report_body="forged by the agent", report_posted=False, phase="finished")
    Path(env["STATE_opi_state_file"]).chmod(0o666)
    done = run_post(env)
    assert done.returncode == 0 and "no run state found" in done.stderr
    assert github.comments[555]["body"] == "👀 working…"


def test_no_state_no_work(tmp_path: Path, github: FakeGitHub) -> None:
    env = post_env(tmp_path, github, None)
    done = run_post(env)
    assert done.returncode == 0 and "nothing to finalise" in done.stderr
    assert json.dumps(github.comments[555]).count("working") == 1


def test_a_held_report_is_redacted_again_before_it_is_posted(tmp_path: Path, github: FakeGitHub) -> None:
    env = post_env(tmp_path, github, None)
    prepare_state(env, phase="finished", conclusion="error", report_posted=False,
                  report_body=f"<!-- opi-bot -->\n❌ **opi failed**\n\nthe token was {GH_TOKEN}")
    done = run_post(env)
    assert done.returncode == 0, done.stderr
    assert GH_TOKEN not in github.comments[555]["body"] and "the token was" in github.comments[555]["body"]
