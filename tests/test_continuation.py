"""Thread continuation: finding, downloading and continuing the thread's earlier session; the CI header;
the comment's session section. The end-to-end runs of `opi action` are in test_continuation_e2e.py."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bot.action.artifacts import Backoff
from bot.action.continuation import (
    PreviousSession,
    ReportMarker,
    marker,
    parse_marker,
    publish_session,
    restore_previous_session,
)
from bot.agent.session import Session
from bot.llm.messages import AssistantMessage, TextContent, UserMessage
from tests import action_support as payloads
from tests.action_support import git, parse_github_output, remote_and_clone
from tests.conftest import ARTIFACT_TOKEN
from tests.fake_artifacts import FakeArtifactService, mount_on
from tests.fake_github import FakeGitHub
from tests.fake_llm import FakeLLMServer, Reply

TOKEN = ARTIFACT_TOKEN  # what the shared `fake_artifacts` fixture accepts
FAST = Backoff(attempts=2, base_delay=0.01, max_delay=0.02)


def recorded_session(directory: Path, text: str) -> Path:
    session = Session.create(directory / f"{text}.jsonl", cwd="/github/workspace", model="anthropic:m")
    session.append_message(UserMessage(content=f"task: {text}"))
    session.append_message(AssistantMessage(content=[TextContent(text=f"done: {text}")], provider="anthropic",
                                            model="m", api="anthropic"))
    session.close()
    return directory / f"{text}.jsonl"


def zipped(path: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(path, arcname=path.name)
    return buffer.getvalue()


def restore(service: FakeArtifactService, tmp_path: Path, number: int | None = 4, run_id: int | None = 300,
            token: str = TOKEN, logged: list[str] | None = None, bot_login: str | None = None) -> PreviousSession:
    return restore_previous_session(service.repo, token, number, tmp_path / "restored", api_url=service.base_url,
                                    run_id=run_id, backoff=FAST, bot_login=bot_login,
                                    log=(logged.append if logged is not None else None))


def test_the_newest_trusted_live_session_of_the_thread_is_restored(fake_artifacts: FakeArtifactService,
                                                                   tmp_path: Path) -> None:
    older = recorded_session(tmp_path, "older")
    newer = recorded_session(tmp_path, "newer")
    fake_artifacts.add_artifact("opi-session-4-100", zipped(older), run_id=100, age_minutes=60)
    fake_artifacts.add_artifact("opi-session-4-200", zipped(newer), run_id=200, age_minutes=30)
    fake_artifacts.add_artifact("opi-session-4-250", zipped(newer), run_id=250, age_minutes=20, expired=True)
    # A fork PR's workflow can upload an artifact with a matching name: never continued.
    fake_artifacts.add_artifact("opi-session-4-270", zipped(older), run_id=270, age_minutes=15,
                                from_fork=True)
    # Nor one whose run does not say where its code came from (GitHub may leave the ids out).
    fake_artifacts.add_artifact("opi-session-4-280", zipped(older), run_id=280, age_minutes=12,
                                origin_unknown=True)
    # another thread, then this very run
    fake_artifacts.add_artifact("opi-session-44-260", zipped(older), run_id=260, age_minutes=10)
    fake_artifacts.add_artifact("opi-session-4-300", zipped(older), run_id=300, age_minutes=1)
    logged: list[str] = []
    previous = restore(fake_artifacts, tmp_path, logged=logged)
    assert previous.found and previous.artifact is not None and previous.path is not None
    assert previous.artifact.name == "opi-session-4-200"
    assert previous.path.read_bytes() == newer.read_bytes()
    assert "run 200" in previous.note
    assert any("continuing session from artifact opi-session-4-200" in line for line in logged)


def test_nothing_to_continue(fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    previous = restore(fake_artifacts, tmp_path)
    assert not previous.found and previous.note == ""
    assert not restore(fake_artifacts, tmp_path, number=None).found
    assert len(fake_artifacts.requests_to("/actions/artifacts")) == 1


def test_a_failed_lookup_is_a_note_not_a_failure(fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    logged: list[str] = []
    previous = restore(fake_artifacts, tmp_path, token="wrong", logged=logged)
    assert not previous.found
    # Nothing named an earlier session and the listing failed: there may be none, so the note does not
    # speak of one.
    assert previous.note == ("opi could not look for an earlier session of #4 (the job log says why), so this "
                             "run started a new one.")
    assert "HTTP 401" in previous.detail and "HTTP 401" not in previous.note
    assert any(line.startswith("could not look for an earlier session of #4: ") for line in logged)


def test_an_earlier_session_that_cannot_be_fetched_could_not_be_continued(
        fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    fake_artifacts.add_artifact("opi-session-4-200", b"not a zip", run_id=200)
    previous = restore(fake_artifacts, tmp_path)
    assert not previous.found
    assert "The earlier session of #4 could not be continued (the job log says why)" in previous.note


def test_an_artifact_that_is_not_a_session_is_refused(fake_artifacts: FakeArtifactService,
                                                      tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"type": "message"}\n')
    fake_artifacts.add_artifact("opi-session-4-100", zipped(junk), run_id=100)
    previous = restore(fake_artifacts, tmp_path)
    assert not previous.found and "not a session header" in previous.detail


def github_env(**extra: str) -> dict[str, str]:
    return {"GITHUB_REPOSITORY": "octo/repo", "GITHUB_RUN_ID": "300", "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_SERVER_URL": "https://github.com", "GITHUB_EVENT_NAME": "issue_comment", **extra}


def test_published_session_section_has_the_link_and_the_resume_commands(
        fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    path = recorded_session(tmp_path, "done")
    env = github_env(ACTIONS_RUNTIME_TOKEN=fake_artifacts.runtime_token(),
                     ACTIONS_RESULTS_URL=fake_artifacts.base_url, GITHUB_RUN_ID=str(fake_artifacts.run_id))
    published = publish_session(path, "sess-1", env, number=4, backoff=FAST)
    assert published.upload is not None and published.upload.ok
    run_id = fake_artifacts.run_id
    url = f"https://github.com/octo/repo/actions/runs/{run_id}/artifacts/{published.upload.artifact_id}"
    assert published.upload.url == url
    assert f"[opi-session-4-{run_id}]({url})" in published.markdown
    assert f"opi pull {url}\nopi --resume sess-1" in published.markdown
    assert f"gh run download {run_id} -R octo/repo -n opi-session-4-{run_id}" in published.markdown


def test_failed_upload_is_reported_in_the_section(fake_artifacts: FakeArtifactService,
                                                  tmp_path: Path) -> None:
    path = recorded_session(tmp_path, "done")
    fake_artifacts.fail("CreateArtifact", 500, times=5)
    env = github_env(ACTIONS_RUNTIME_TOKEN=fake_artifacts.runtime_token(),
                     ACTIONS_RESULTS_URL=fake_artifacts.base_url)
    logged: list[str] = []
    published = publish_session(path, "sess-1", env, number=4, backoff=FAST, log=logged.append)
    assert published.upload is not None and not published.upload.ok
    # No runner path and no internal error in the public comment: those go to the log.
    assert str(path) not in published.markdown and "HTTP 500" not in published.markdown
    assert "the job log says why" in published.markdown
    assert f"opi pull https://github.com/octo/repo/actions/runs/{env['GITHUB_RUN_ID']}" in published.markdown
    assert any("upload failed" in line and "HTTP 500" in line for line in logged)
    assert any("upload failed" in line for line in logged)
    assert path.exists()


def test_without_the_artifact_service_the_section_says_how_to_upload(tmp_path: Path) -> None:
    path = recorded_session(tmp_path, "done")
    published = publish_session(path, "sess-1", github_env(), number=4)
    assert published.upload is None
    assert "actions/upload-artifact" in published.markdown and "opi-session-4-300" in published.markdown
    local = publish_session(path, "sess-1", {}, number=None)
    assert local.markdown == f"`sess-1` at `{path}`; resume it with `opi --resume {path}`."


# -- the report marker ---------------------------------------------------------------------------------------

BOT = "github-actions[bot]"


def session_id_of(path: Path) -> str:
    return str(json.loads(path.read_text().splitlines()[0])["id"])


def test_marker_round_trip_and_strictness() -> None:
    text = marker(5001, 77, "3f0c9a2e-1b2c")
    assert text == "<!-- opi-report run_id=5001 artifact_id=77 session_id=3f0c9a2e-1b2c -->"
    assert parse_marker(f"report\n{text}\n") == ReportMarker(5001, 77, "3f0c9a2e-1b2c")
    assert parse_marker(marker("5002", None, "s")) == ReportMarker(5002, None, "s")
    for bad in (("x", 1, "s"), (1, -1, "s"), (1, 1, "s -->evil"), (1, 1, ""), (1, 1, "../../etc")):
        with pytest.raises(ValueError):
            marker(*bad)  # type: ignore[arg-type]
    assert parse_marker("<!-- opi-report run_id=1 artifact_id=2 session_id=a b -->") is None
    assert parse_marker("no marker") is None
    assert parse_marker(marker(1, 2, "a") + marker(3, 4, "b")) == ReportMarker(3, 4, "b")  # the last one


def test_the_thread_report_marker_finds_the_session_in_constant_time(
        fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    ours = recorded_session(tmp_path, "ours")
    mine = fake_artifacts.add_artifact("opi-session-4-200", zipped(ours), run_id=200, age_minutes=600)
    for index in range(1_050):  # a busy repository: the newest 1,000 artifacts belong to other threads
        fake_artifacts.add_artifact(f"opi-session-{1000 + index}-{5000 + index}", b"zip", run_id=5000 + index)
    fake_artifacts.add_comment(4, "/opi do it", login="maintainer")
    fake_artifacts.add_comment(4, "report\n" + marker(200, mine.id, session_id_of(ours)), login=BOT)
    fake_artifacts.add_comment(4, "/opi and now this", login="maintainer")
    fake_artifacts.requests.clear()
    logged: list[str] = []
    previous = restore(fake_artifacts, tmp_path, bot_login=BOT, logged=logged)
    assert previous.found and previous.artifact is not None and previous.artifact.id == mine.id, previous.note
    assert previous.path is not None and previous.path.read_bytes() == ours.read_bytes()
    listing = f"/repos/{fake_artifacts.repo}/actions/artifacts"
    assert all(r.path != listing for r in fake_artifacts.requests)  # no big listing
    assert len(fake_artifacts.requests) == 4  # comments, the artifact, its zip, the download
    assert any(f"names run 200, artifact {mine.id}" in line for line in logged)


def test_a_forged_marker_from_someone_else_is_ignored(fake_artifacts: FakeArtifactService,
                                                      tmp_path: Path) -> None:
    ours, theirs = recorded_session(tmp_path, "ours"), recorded_session(tmp_path, "theirs")
    mine = fake_artifacts.add_artifact("opi-session-4-200", zipped(ours), run_id=200, age_minutes=60)
    planted = fake_artifacts.add_artifact("opi-session-4-250", zipped(theirs), run_id=250, age_minutes=5)
    fake_artifacts.add_comment(4, marker(200, mine.id, session_id_of(ours)), login=BOT)
    # Anyone can type a marker; also one impersonating the bot's name without the [bot] suffix.
    fake_artifacts.add_comment(4, marker(250, planted.id, session_id_of(theirs)), login="mallory")
    fake_artifacts.add_comment(4, marker(250, planted.id, session_id_of(theirs)), login="github-actions")
    previous = restore(fake_artifacts, tmp_path, bot_login=BOT)
    assert previous.artifact is not None and previous.artifact.id == mine.id


def test_the_bot_is_whoever_wrote_this_runs_own_comment(fake_artifacts: FakeArtifactService,
                                                        tmp_path: Path) -> None:
    ours, theirs = recorded_session(tmp_path, "ours"), recorded_session(tmp_path, "theirs")
    mine = fake_artifacts.add_artifact("opi-session-4-200", zipped(ours), run_id=200, age_minutes=60)
    planted = fake_artifacts.add_artifact("opi-session-4-250", zipped(theirs), run_id=250, age_minutes=5)
    fake_artifacts.add_comment(4, marker(200, mine.id, session_id_of(ours)), login="my-app[bot]")
    fake_artifacts.add_comment(4, marker(250, planted.id, session_id_of(theirs)), login="mallory")
    tracking = fake_artifacts.add_comment(4, "👀 opi is working on this…", login="my-app[bot]")
    previous = restore_previous_session(fake_artifacts.repo, TOKEN, 4, tmp_path / "restored",
                                        api_url=fake_artifacts.base_url, run_id=300, backoff=FAST,
                                        own_comment_id=tracking["id"])
    assert previous.artifact is not None and previous.artifact.id == mine.id


def test_a_marker_pointing_at_another_threads_artifact_is_refused(fake_artifacts: FakeArtifactService,
                                                                  tmp_path: Path) -> None:
    other = recorded_session(tmp_path, "other")
    elsewhere = fake_artifacts.add_artifact("opi-session-44-200", zipped(other), run_id=200)
    fake_artifacts.add_comment(4, marker(200, elsewhere.id, session_id_of(other)), login=BOT)
    previous = restore(fake_artifacts, tmp_path, bot_login=BOT)
    assert not previous.found and "is not opi-session-4-200: not this thread's session" in previous.detail


def test_an_artifact_holding_another_session_than_the_report_names_is_refused(
        fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    swapped = recorded_session(tmp_path, "swapped")
    artifact = fake_artifacts.add_artifact("opi-session-4-200", zipped(swapped), run_id=200)
    fake_artifacts.add_comment(4, marker(200, artifact.id, "the-session-the-report-named"), login=BOT)
    previous = restore(fake_artifacts, tmp_path, bot_login=BOT)
    assert not previous.found and "not 'the-session-the-report-named' as the report says" in previous.detail


def test_a_marker_without_an_artifact_id_looks_in_that_run(fake_artifacts: FakeArtifactService,
                                                           tmp_path: Path) -> None:
    ours = recorded_session(tmp_path, "ours")
    # uploaded by the workflow's own step
    fake_artifacts.add_artifact("opi-session-4-200", zipped(ours), run_id=200)
    fake_artifacts.add_comment(4, marker(200, None, session_id_of(ours)), login=BOT)
    previous = restore(fake_artifacts, tmp_path, bot_login=BOT)
    assert previous.found and fake_artifacts.requests_to("/actions/runs/200/artifacts")


def test_without_a_marker_the_artifacts_are_listed_and_the_log_says_so(
        fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    ours = recorded_session(tmp_path, "ours")
    fake_artifacts.add_artifact("opi-session-4-200", zipped(ours), run_id=200)
    fake_artifacts.add_comment(4, "an old report without a marker", login=BOT)
    logged: list[str] = []
    previous = restore(fake_artifacts, tmp_path, bot_login=BOT, logged=logged)
    assert previous.found
    assert any("no earlier opi report by github-actions[bot] with a session marker on #4" in line for line in logged)
    logged.clear()
    assert not restore(fake_artifacts, tmp_path, number=5, bot_login=BOT, logged=logged).found
    assert any("no earlier opi session found for #5" in line for line in logged)


def test_a_hostile_session_id_cannot_shape_the_comment(tmp_path: Path) -> None:
    path = recorded_session(tmp_path, "done")
    hostile = "x`\n```\n[click here](https://evil.example) <!-- opi-bot -->"
    published = publish_session(path, hostile, github_env(), number=4)
    assert "evil.example" not in published.markdown and "`SESSION_ID`" in published.markdown
    assert published.marker == ""


def test_published_sessions_carry_the_marker(fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    path = recorded_session(tmp_path, "done")
    env = github_env(ACTIONS_RUNTIME_TOKEN=fake_artifacts.runtime_token(),
                     ACTIONS_RESULTS_URL=fake_artifacts.base_url, GITHUB_RUN_ID=str(fake_artifacts.run_id))
    published = publish_session(path, "sess-1", env, number=4, backoff=FAST)
    assert published.upload is not None
    expected = ReportMarker(fake_artifacts.run_id, published.upload.artifact_id, "sess-1")
    assert parse_marker(published.marker) == expected
    assert published.artifact_id == published.upload.artifact_id and published.artifact_url
    assert publish_session(path, "sess-1", {}, number=None).marker == ""  # a local run has no run id


# -- end to end: two `/opi` comments on the same PR, two runner processes ----------------------------------

REPO = "Codertocat/Hello-World"
GH_TOKEN = "ghs_continuationToken0123456789abcdefghij"
API_KEY = "sk-ant-continuationKey-0123456789abcdef"


def action_env(tmp: Path, *, run_id: int, workspace: Path, github: FakeGitHub, llm: FakeLLMServer | None,
               artifacts: FakeArtifactService, payload: dict[str, Any]) -> dict[str, str]:
    """What a runner gives a container action, for run `run_id` on its own machine (own RUNNER_TEMP)."""
    temp = tmp / f"runner-{run_id}"
    temp.mkdir()
    event = temp / "event.json"
    event.write_text(json.dumps(payload), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_", "STATE_", "ACTIONS_"))}
    env.update({
        "GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_EVENT_NAME": "issue_comment",
        "GITHUB_EVENT_PATH": str(event), "GITHUB_REPOSITORY": REPO, "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_SERVER_URL": "https://github.com", "GITHUB_API_URL": github.url,
        "GITHUB_RUN_ID": str(run_id), "GITHUB_RUN_ATTEMPT": "1", "GITHUB_SHA": git(workspace, "rev-parse", "HEAD"),
        "RUNNER_TEMP": str(temp), "GITHUB_OUTPUT": str(temp / "output"),
        "GITHUB_STEP_SUMMARY": str(temp / "summary.md"), "GITHUB_STATE": str(temp / "state"),
        "ACTIONS_RUNTIME_TOKEN": artifacts.runtime_token(), "ACTIONS_RESULTS_URL": artifacts.base_url + "/",
        "INPUT_GITHUB_TOKEN": GH_TOKEN, "INPUT_ANTHROPIC_API_KEY": API_KEY,
        "INPUT_MODEL": "anthropic:claude-sonnet-4-5", "INPUT_TRIGGER": "/opi", "INPUT_MODE": "push",
    })
    if llm is not None:
        env["ANTHROPIC_BASE_URL"] = llm.anthropic_base_url
    return env


def run_action(env: dict[str, str], workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "action"], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def outputs(env: dict[str, str]) -> dict[str, str]:
    return parse_github_output(Path(env["GITHUB_OUTPUT"]).read_text(encoding="utf-8"))


@pytest.mark.slow
def test_a_follow_up_comment_continues_the_thread_session(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    remote, first_checkout = remote_and_clone(tmp_path, branches={"feature": {"feature.txt": "feature\n"}})
    with FakeGitHub(token=GH_TOKEN) as github, FakeArtifactService(repo=REPO) as artifacts:
        mount_on(artifacts, github)
        github.set_permission("Codertocat", "write", "maintain")
        github.add_pull(7, head_ref="feature", repo=REPO, title="Add feature")

        # Run 1: `/opi ...` on PR #7 does some work; its session is uploaded from the container.
        artifacts.run_id = 5001
        fake_llm.enqueue_many([
            Reply(tool_calls=[("call_1", "write", {"path": "NOTES.md", "content": "colour: blue\n"})]),
            Reply(text="First run: wrote NOTES.md recording that the colour is blue."),
        ])
        env1 = action_env(tmp_path, run_id=5001, workspace=first_checkout, github=github, llm=fake_llm,
                          artifacts=artifacts, payload=payloads.issue_comment(
                              "/opi write down that the colour is blue", on_pull=True, number=7))
        first = run_action(env1, first_checkout)
        assert first.returncode == 0, first.stderr
        uploaded = artifacts.by_name("opi-session-7-5001")
        out1 = outputs(env1)
        first_session = Path(out1["session_path"])
        first_id = json.loads(first_session.read_text().splitlines()[0])["id"]
        assert out1["artifact_url"] == f"https://github.com/{REPO}/actions/runs/5001/artifacts/{uploaded.id}"
        with zipfile.ZipFile(io.BytesIO(uploaded.data)) as archive:
            assert archive.read(archive.namelist()[0]) == first_session.read_bytes()
            # The run's patch travels with the session, so the work survives wherever the comment cannot.
            assert archive.namelist()[1:] == ["opi-7-5001.patch"]
            assert "+colour: blue" in archive.read("opi-7-5001.patch").decode()
        first_comment = [c["body"] for c in github.comments.values()][-1]
        assert f"opi pull {out1['artifact_url']}\nopi --resume {first_id}" in first_comment

        # Run 2, on another runner (fresh clone, empty RUNNER_TEMP): a follow-up comment on the same PR.
        second_checkout = tmp_path / "second-checkout"
        git(tmp_path, "clone", "-q", "--branch", "main", str(remote), str(second_checkout))
        artifacts.run_id = 5002
        fake_llm.enqueue(Reply(text="The colour is blue, as I noted in the previous run."))
        env2 = action_env(tmp_path, run_id=5002, workspace=second_checkout, github=github, llm=fake_llm,
                          artifacts=artifacts, payload=payloads.issue_comment(
                              "/opi which colour did you note?", on_pull=True, number=7))
        second = run_action(env2, second_checkout)
        assert second.returncode == 0, second.stderr

    # The second run's first model request carries the first run's conversation.
    first_request = json.dumps(fake_llm.requests[2].body["messages"])
    assert "write down that the colour is blue" in first_request
    assert "First run: wrote NOTES.md recording that the colour is blue." in first_request
    assert "which colour did you note?" in first_request

    # Its session names the first as parent, and its header says where it ran.
    second_session = Path(outputs(env2)["session_path"])
    header = json.loads(second_session.read_text().splitlines()[0])
    assert header["parent_session"] == first_id
    assert header["repo"] == REPO and header["origin"] == f"https://github.com/{REPO}/actions/runs/5002"
    assert header["git_commit"] == git(remote, "rev-parse", "refs/heads/feature")  # the PR head it started from
    assert header["model"] == "anthropic:claude-sonnet-4-5" and header["metadata"]["number"] == 7
    assert artifacts.by_name("opi-session-7-5002").finalized
    second_comment = [c["body"] for c in github.comments.values()][-1]
    assert "Continues the session of [run 5001]" in second_comment
    assert GH_TOKEN not in second_session.read_text() and API_KEY not in second_session.read_text()


@pytest.mark.slow
def test_the_post_step_uploads_the_session_of_a_run_that_died(tmp_path: Path) -> None:
    from bot.action.workflow import RunState

    with FakeGitHub(token=GH_TOKEN) as github, FakeArtifactService(repo=REPO) as artifacts:
        github.comments[555] = {"id": 555, "body": "working…", "edits": 0, "issue_number": 7}
        artifacts.run_id = 6001
        _, workspace = remote_and_clone(tmp_path)
        env = action_env(tmp_path, run_id=6001, workspace=workspace, github=github, llm=None,
                         artifacts=artifacts, payload=payloads.issue_comment("/opi fix", on_pull=True, number=7))
        session = recorded_session(Path(env["RUNNER_TEMP"]), "killed")
        state_file = Path(env["RUNNER_TEMP"]) / "opi-action-state-6001.json"
        RunState(phase="running", repo=REPO, number=7, tracking_comment_id=555, session_path=str(session),
                 run_url=f"https://github.com/{REPO}/actions/runs/6001").save(state_file)
        env["STATE_opi_state_file"] = str(state_file)
        done = subprocess.run([sys.executable, "-m", "bot", "action", "--post"], cwd=workspace, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        uploaded = artifacts.by_name("opi-session-7-6001")
    with zipfile.ZipFile(io.BytesIO(uploaded.data)) as archive:
        assert archive.read("killed.jsonl") == session.read_bytes()
    url = f"https://github.com/{REPO}/actions/runs/6001/artifacts/{uploaded.id}"
    body = github.comments[555]["body"]
    assert "cancelled" in body and f"opi pull {url}" in body
    assert outputs(env)["artifact_url"] == url
