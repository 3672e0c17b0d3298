"""Inputs and runner context from the environment, and how they map onto the agent's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.action.events import ReviewContext, Task, User
from bot.action.inputs import DEFAULT_BOT_NAME, InputError, read_context, read_inputs
from bot.action.runner import build_prompt, session_metadata, settings_for
from bot.action.workflow import RunState, publish_state_path, state_path


def test_defaults() -> None:
    inputs = read_inputs({})
    assert (inputs.trigger, inputs.mode, inputs.max_turns, inputs.max_cost_usd, inputs.timeout_minutes) == (
        "/opi", "push", 30, 2.0, 30.0)
    assert inputs.allowed_tools is None and inputs.max_context_tokens is None
    assert inputs.bot_name == DEFAULT_BOT_NAME and inputs.provider_keys == {}


def test_values_are_parsed() -> None:
    inputs = read_inputs({
        "INPUT_GITHUB_TOKEN": " tok ", "INPUT_MAX_TURNS": "12", "INPUT_MAX_COST_USD": "$0.50",
        "INPUT_TIMEOUT_MINUTES": "0", "INPUT_MAX_CONTEXT_TOKENS": "64000", "INPUT_MODE": "PR",
        "INPUT_ALLOWED_TOOLS": "read, grep\nedit", "INPUT_ANTHROPIC_API_KEY": "k1", "INPUT_BOT_NAME": "my-bot",
        "INPUT_TRIGGER": "@opi",
    })
    assert inputs.github_token == "tok" and inputs.max_turns == 12 and inputs.max_cost_usd == 0.5
    assert inputs.timeout_minutes is None and inputs.max_context_tokens == 64000 and inputs.mode == "pr"
    assert inputs.allowed_tools == ("read", "grep", "edit") and inputs.trigger == "@opi"
    assert inputs.provider_keys == {"ANTHROPIC_API_KEY": "k1"} and inputs.bot_name == "my-bot"
    for no_limit in ("0", "0.0", "$0", "0.00"):  # the docs: `0` = no limit, however it is written
        assert read_inputs({"INPUT_MAX_COST_USD": no_limit}).max_cost_usd is None


def test_github_token_falls_back_to_the_environment() -> None:
    assert read_inputs({"GITHUB_TOKEN": "from-env"}).github_token == "from-env"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("MAX_TURNS", "ten", "input `max_turns` must be a whole number, got 'ten'"),
    ("MAX_TURNS", "-1", "input `max_turns` must not be negative"),
    ("MAX_COST_USD", "cheap", "input `max_cost_usd` must be a number, got 'cheap'"),
    ("MAX_COST_USD", "-2", "input `max_cost_usd` must be a positive number"),
    ("TIMEOUT_MINUTES", "nan", "input `timeout_minutes` must be a positive number"),
    ("MODE", "force", "input `mode` must be one of push, pr, comment, got 'force'"),
    ("TRIGGER", "/opi please", "input `trigger` must be one word"),
])
def test_bad_inputs_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("$", r"\$")):
        read_inputs({f"INPUT_{name}": value})


def test_runner_context(tmp_path: Path) -> None:
    context = read_context({
        "GITHUB_EVENT_NAME": "issue_comment", "GITHUB_EVENT_PATH": str(tmp_path / "e.json"),
        "GITHUB_REPOSITORY": "o/r", "GITHUB_WORKSPACE": str(tmp_path), "GITHUB_SERVER_URL": "https://ghe.example/",
        "GITHUB_API_URL": "https://ghe.example/api/v3", "GITHUB_RUN_ID": "77", "RUNNER_TEMP": str(tmp_path / "t"),
        "GITHUB_OUTPUT": str(tmp_path / "out"),
    })
    assert context.run_url == "https://ghe.example/o/r/actions/runs/77"
    assert context.api_url == "https://ghe.example/api/v3" and context.temp_dir == tmp_path / "t"
    assert context.summary_file is None and context.output_file == tmp_path / "out"
    assert read_context({}, cwd=tmp_path).workspace == tmp_path
    assert read_context({}).run_url == ""


def test_settings_map_the_budget_inputs(tmp_path: Path) -> None:
    inputs = read_inputs({"INPUT_MAX_TURNS": "7", "INPUT_MAX_COST_USD": "1.5", "INPUT_TIMEOUT_MINUTES": "2",
                          "INPUT_MAX_CONTEXT_TOKENS": "50000", "INPUT_ALLOWED_TOOLS": "read,edit",
                          "INPUT_MODEL": "openai:gpt-4.1"})
    settings = settings_for(inputs, read_context({"RUNNER_TEMP": str(tmp_path)}))
    assert settings.model == "openai:gpt-4.1" and settings.max_turns == 7 and settings.max_cost_usd == 1.5
    assert settings.timeout_seconds == 120 and settings.compaction.threshold_tokens == 50000
    assert settings.tools == ["read", "edit"] and settings.allow_mutating
    assert settings.session_path == tmp_path / "opi-sessions"
    override = settings_for(inputs, read_context({"RUNNER_TEMP": str(tmp_path)}), model_override="mock:x")
    assert override.model == "mock:x"


def test_project_config_in_the_workspace_is_not_read(tmp_path: Path) -> None:
    # A PR controls the workspace: its .opi/config.toml must not redirect the model (and its API key).
    (tmp_path / ".git").mkdir()
    (tmp_path / ".opi").mkdir()
    (tmp_path / ".opi" / "config.toml").write_text('model = "openai:evil"\n', encoding="utf-8")
    settings = settings_for(read_inputs({}), read_context({"GITHUB_WORKSPACE": str(tmp_path)}))
    assert settings.model != "openai:evil" and settings.endpoints == {}


def test_prompt_for_a_review_comment_and_for_fix() -> None:
    task = Task(kind="review_comment", event_name="pull_request_review_comment", repo="o/r",
                instructions="rename this", is_fix=False, number=2, title="Feature", body="Adds it",
                requester=User(login="alice", id=1),
                review=ReviewContext(path="src/a.py", line=12, start_line=10, side="RIGHT", diff_hunk="@@ -1 +1 @@"))
    prompt = build_prompt(task, branch="feature")
    assert "`src/a.py`, lines 10-12 (RIGHT side)" in prompt and "@@ -1 +1 @@" in prompt
    assert "@alice asks: rename this" in prompt and "`feature`" in prompt and "Do not commit" in prompt
    fix = Task(kind="pr_comment", event_name="issue_comment", repo="o/r", instructions="", is_fix=True, number=2)
    assert "make its checks pass" in build_prompt(fix, branch="b")
    issue_fix = Task(kind="issue_comment", event_name="issue_comment", repo="o/r", instructions="", is_fix=True,
                     number=3, body="x" * 10_000)
    text = build_prompt(issue_fix, branch="opi/issue-3")
    assert "resolve this issue" in text and "[... truncated]" in text


def test_session_metadata_fills_the_header_fields() -> None:
    task = Task(kind="pr_comment", event_name="issue_comment", repo="o/r", instructions="x", is_fix=False,
                number=5, requester=User(login="bob", id=2))
    context = read_context({"GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "9"})
    meta = session_metadata(task, context, "feature", "abc123")
    assert meta["repo"] == "o/r" and meta["git_commit"] == "abc123"
    assert meta["origin"] == "https://github.com/o/r/actions/runs/9" and meta["number"] == 5


def test_run_state_round_trip_and_publication(tmp_path: Path) -> None:
    path = state_path(tmp_path, "12")
    assert path.name == "opi-action-state-12.json"
    RunState(phase="running", repo="o/r", number=3, tracking_comment_id=8).save(path)
    loaded = RunState.load(path)
    assert loaded is not None and (loaded.phase, loaded.tracking_comment_id) == ("running", 8)
    assert RunState.load(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    assert RunState.load(tmp_path / "bad.json") is None
    github_state = tmp_path / "state"
    publish_state_path(github_state, path)
    assert github_state.read_text(encoding="utf-8") == f"opi_state_file={path}\n"


def test_guess_event_name_from_the_payload_shape() -> None:
    from bot.action.events import EventError
    from bot.action.main import guess_event_name
    from tests import action_support as payloads

    assert guess_event_name(payloads.issue_comment("/opi x")) == "issue_comment"
    assert guess_event_name(payloads.review_comment("/opi x")) == "pull_request_review_comment"
    assert guess_event_name(payloads.workflow_dispatch("p")) == "workflow_dispatch"
    assert guess_event_name({"schedule": "* * * * *"}) == "schedule"
    with pytest.raises(EventError, match="pass --event-name"):
        guess_event_name({"zen": "hi"})


def test_run_action_without_an_event_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from bot.action.main import run_action

    monkeypatch.chdir(tmp_path)
    assert run_action(["--dry-run"]) == 2
    assert "GITHUB_EVENT_PATH is not set (use --event PATH with --dry-run)" in capsys.readouterr().err
    assert run_action(["--dry-run", "--event", str(tmp_path / "nope.json")]) == 2
    assert "cannot read the event file" in capsys.readouterr().err


def test_runner_temp_is_used_when_it_exists_in_the_container(tmp_path: Path) -> None:
    from bot.action.inputs import runner_temp_dir

    temp, home = tmp_path / "runner_temp", tmp_path / "home"
    temp.mkdir()
    home.mkdir()
    assert runner_temp_dir({"RUNNER_TEMP": str(temp)}, container_home=home) == temp


def test_an_unmounted_runner_temp_falls_back_to_the_job_long_container_home(tmp_path: Path) -> None:
    # Older runners pass the host's RUNNER_TEMP into a container action without mounting it: writing
    # there would lose the session and the post step's state when the container exits.
    from bot.action.inputs import runner_temp_dir

    home = tmp_path / "home"
    home.mkdir()
    chosen = runner_temp_dir({"RUNNER_TEMP": "/home/runner/work/_temp"}, container_home=home)
    assert chosen == home / ".opi-temp" and chosen.is_dir()


def test_outside_a_container_the_named_runner_temp_is_kept(tmp_path: Path) -> None:
    from bot.action.inputs import runner_temp_dir

    named = tmp_path / "not-yet"
    assert runner_temp_dir({"RUNNER_TEMP": str(named)}, container_home=tmp_path / "absent") == named


def test_container_paths_map_to_the_hosts_runner_temp() -> None:
    from bot.action.inputs import host_relative_path

    assert host_relative_path(Path("/github/runner_temp/opi-sessions/a.jsonl")) == "opi-sessions/a.jsonl"
    assert host_relative_path(Path("/github/home/.opi-temp/opi-sessions/a.jsonl")) == \
        "_github_home/.opi-temp/opi-sessions/a.jsonl"
    assert host_relative_path(Path("/home/runner/work/_temp/opi-sessions/a.jsonl")) == ""
