"""bash: real processes. Exit codes, merged output, timeouts and cancel killing the whole process group,
backgrounded grandchildren not hanging the call, tail truncation with the full log kept, scrubbed env."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bot.tools import bash as bash_module
from bot.tools.base import ToolContext, ToolOutput
from bot.tools.bash import BashTool
from bot.tools.read import MAX_BYTES, MAX_LINES, ReadTool


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToolContext:
    # Logs go to a private temp dir so each test can see exactly what was left behind.
    logs = tmp_path / "tmp"
    logs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(logs))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return ToolContext(workspace=workspace, bash_timeout=30)


def bash(ctx: ToolContext, command: str, timeout: float | None = None, grace: float = 2.0) -> ToolOutput:
    args: dict[str, object] = {"command": command}
    if timeout is not None:
        args["timeout"] = timeout
    return BashTool(kill_grace_seconds=grace).execute(args, ctx)


def leftover_logs(ctx: ToolContext) -> list[str]:
    """Files left in the system temp dir and in the run's own temp dir."""
    outside = [p.name for p in Path(tempfile.gettempdir()).iterdir() if p != ctx.temp_dir]
    inside = [p.name for p in ctx.temp_dir.iterdir()] if ctx.temp_dir else []
    return sorted(outside + inside)


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for init to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:].split()[0] == b"Z"


def wait_until_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)
    return gone(pid)


def read_pid(path: Path, within: float = 10.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"{path} was never written")


def test_output_and_success(ctx: ToolContext) -> None:
    out = bash(ctx, "echo hello; echo err >&2; pwd")
    assert not out.is_error
    assert out.text == f"hello\nerr\n{ctx.workspace}"
    assert out.details is not None
    assert out.details["exit_code"] == 0 and out.details["timed_out"] is False
    assert out.details["full_output_path"] is None
    assert leftover_logs(ctx) == []  # the log is deleted when nothing was truncated


def test_non_zero_exit_is_an_error_with_the_code(ctx: ToolContext) -> None:
    out = bash(ctx, "echo partial; exit 3")
    assert out.is_error
    assert out.text == "partial\n\nCommand exited with code 3."
    assert out.details is not None and out.details["exit_code"] == 3


def test_no_output(ctx: ToolContext) -> None:
    assert bash(ctx, "true").text == "(no output)"


def test_stdin_is_dev_null(ctx: ToolContext) -> None:
    out = bash(ctx, "cat; read -r line; echo rc=$?")
    assert out.text == "rc=1"


def test_killed_by_signal_is_reported(ctx: ToolContext) -> None:
    out = bash(ctx, "kill -KILL $$")
    assert out.is_error and "Command was killed by SIGKILL." in out.text


def test_backgrounded_grandchild_does_not_hang_the_call_and_is_killed_when_it_returns(ctx: ToolContext) -> None:
    out = bash(ctx, "sleep 60 & echo $! > bg.pid; echo started", timeout=20)
    pid = int((ctx.workspace / "bg.pid").read_text())
    assert not out.is_error, out.text
    assert out.text.startswith("started\n\n[1 background process left running by the command was killed")
    assert out.details is not None and out.details["timed_out"] is False
    assert out.details["background_killed"] == 1
    assert gone(pid)  # already gone when the call returns, not eventually


def test_timeout_kills_the_whole_process_group(ctx: ToolContext) -> None:
    out = bash(ctx, "sleep 60 & echo $! > bg.pid; echo waiting; sleep 60", timeout=0.5)
    pid = read_pid(ctx.workspace / "bg.pid")
    assert out.is_error
    assert out.text == "waiting\n\nCommand timed out after 0.5 s; it and every process it started were killed."
    assert out.details is not None and out.details["timed_out"] is True
    assert wait_until_gone(pid)


def test_default_timeout_comes_from_the_context(ctx: ToolContext) -> None:
    ctx.bash_timeout = 0.3
    out = bash(ctx, "sleep 30")
    assert out.details is not None and out.details["timed_out"] is True
    assert "timed out after 0.3 s" in out.text


def test_term_ignoring_process_gets_killed_after_the_grace_period(ctx: ToolContext) -> None:
    command = "trap '' TERM; (trap '' TERM; sleep 60) & echo $! > bg.pid; sleep 60"
    out = bash(ctx, command, timeout=0.3, grace=0.3)
    pid = read_pid(ctx.workspace / "bg.pid")
    assert out.details is not None and out.details["timed_out"] is True
    assert out.details["exit_code"] == -9  # SIGTERM was ignored, SIGKILL was not
    assert wait_until_gone(pid)


def test_cancel_event_kills_a_running_command(ctx: ToolContext) -> None:
    pid_file = ctx.workspace / "child.pid"

    def cancel_once_started() -> None:
        read_pid(pid_file)
        ctx.cancel.set()

    canceller = threading.Thread(target=cancel_once_started)
    canceller.start()
    out = bash(ctx, "sleep 60 & echo $! > child.pid; sleep 60", timeout=60)
    canceller.join()
    assert out.is_error and "Command was cancelled" in out.text
    assert out.details is not None and out.details["cancelled"] is True and out.details["timed_out"] is False
    assert wait_until_gone(read_pid(pid_file))


def test_long_output_keeps_the_tail_and_the_full_log(ctx: ToolContext) -> None:
    total = MAX_LINES + 3000
    out = bash(ctx, f"seq 1 {total}")
    assert not out.is_error
    body, notice = out.text.split("\n\n[Output truncated: ")
    lines = body.split("\n")
    assert len(lines) == MAX_LINES
    assert lines[0] == str(total - MAX_LINES + 1) and lines[-1] == str(total)
    assert notice.startswith(f"showing the last {MAX_LINES} of {total} lines")
    assert out.details is not None and out.details["truncated"] is True
    log = Path(out.details["full_output_path"])
    assert f"Full output: {log}]" in out.text
    assert log.read_text() == "".join(f"{i}\n" for i in range(1, total + 1))
    assert leftover_logs(ctx) == [log.name]


def test_one_huge_line_is_cut_to_the_byte_limit(ctx: ToolContext) -> None:
    out = bash(ctx, "head -c 300000 /dev/zero | tr '\\0' a; echo; echo done")
    assert out.details is not None and out.details["truncated"] is True
    body = out.text.split("\n\n[Output truncated")[0]
    assert len(body.encode()) <= MAX_BYTES and body.endswith("\ndone")
    assert body.startswith("\u2026 aaaa")
    assert "showing the last 2 of 2 lines (the first of them cut)" in out.text
    assert Path(out.details["full_output_path"]).stat().st_size == 300000 + len("\ndone\n")


def test_exit_code_with_truncated_output(ctx: ToolContext) -> None:
    out = bash(ctx, f"seq 1 {MAX_LINES * 2}; exit 7")
    assert out.is_error and out.text.endswith("Command exited with code 7.")
    assert "[Output truncated" in out.text


def test_ansi_colours_are_stripped(ctx: ToolContext) -> None:
    assert bash(ctx, r"printf '\033[31mred\033[0m plain\n'").text == "red plain"


def test_secrets_in_the_process_environment_are_invisible(ctx: ToolContext, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GITHUB_TOKEN", "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL",
                 "AWS_SECRET_ACCESS_KEY", "DEPLOY_PRIVATE_KEY", "NPM_TOKEN", "SERVICE_SECRET"):
        monkeypatch.setenv(name, f"secret-{name}")
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    fresh = ToolContext(workspace=ctx.workspace)  # the default env is scrubbed from os.environ
    out = bash(fresh, "env")
    assert "secret-" not in out.text
    assert "HARMLESS_SETTING=visible" in out.text


def test_secrets_are_scrubbed_even_from_a_careless_context_env(ctx: ToolContext) -> None:
    ctx.env = {"PATH": os.environ["PATH"], "OPENAI_API_KEY": "leak1", "MY_ENDPOINT_KEY": "leak2", "OK": "1"}
    ctx.extra_env_names = ("MY_ENDPOINT_KEY",)
    out = bash(ctx, "env")
    assert "leak" not in out.text and "OK=1" in out.text


def test_invalid_arguments(ctx: ToolContext) -> None:
    assert bash(ctx, "   ").text == "command is empty"
    bad = BashTool().execute({"command": "true", "timeout": 0}, ctx)
    assert bad.is_error and "timeout" in bad.text and "greater than 0" in bad.text


def test_carriage_return_progress_shows_its_last_state(ctx: ToolContext) -> None:
    assert bash(ctx, r"printf 'get 10%%\rget 50%%\rget 100%%\r\ndone\r\n'").text == "get 100%\ndone"


def test_unencodable_command_is_a_clear_error(ctx: ToolContext) -> None:
    out = bash(ctx, "echo \ud800")
    assert out.is_error and out.text.startswith("Could not start bash:")
    assert leftover_logs(ctx) == []


def test_nothing_starts_once_the_turn_is_cancelled(ctx: ToolContext) -> None:
    ctx.cancel.set()
    out = bash(ctx, "touch started")
    assert out.is_error and out.text == "Not run: the turn was cancelled"
    assert not (ctx.workspace / "started").exists()


# -- leftovers, the output cap and temp files (issue 9) --------------------------------------------------
def test_setsid_and_double_forked_daemons_are_gone_when_the_call_returns(ctx: ToolContext) -> None:
    command = ("setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > setsid.pid; "
               "(setsid sh -c 'sleep 300 & echo $! > daemon.pid' &) ; "
               "while [ ! -s daemon.pid ]; do sleep 0.01; done; echo launched")
    out = bash(ctx, command)
    assert not out.is_error, out.text
    assert out.text.startswith("launched")
    pids = [int((ctx.workspace / name).read_text()) for name in ("setsid.pid", "daemon.pid")]
    assert all(gone(pid) for pid in pids)  # already at return, not eventually
    assert out.details is not None and out.details["background_killed"] >= 2


def test_processes_that_existed_before_the_call_are_left_alone(ctx: ToolContext) -> None:
    unrelated = subprocess.Popen(["sleep", "300"])
    try:
        out = bash(ctx, "sleep 300 & echo started")
        assert not out.is_error, out.text
        assert unrelated.poll() is None
    finally:
        unrelated.kill()
        unrelated.wait()


def test_output_over_the_cap_kills_the_command_and_says_so(ctx: ToolContext) -> None:
    ctx.output_cap_bytes = 1024 * 1024
    out = bash(ctx, "yes 'a fairly long line of output'; echo never")
    assert out.is_error
    assert out.text.endswith("Command output reached the 1.0 MB limit; it and every process it started were "
                             "killed. Redirect large output to a file in the workspace, or filter it (grep, tail).")
    assert out.details is not None and out.details["output_capped"] is True
    log = Path(out.details["full_output_path"])
    assert log.stat().st_size <= ctx.output_cap_bytes  # the cap holds on disk
    assert "never" not in log.read_text()


def test_output_past_the_cap_from_a_command_that_ends_between_two_checks_is_cut_too(
        ctx: ToolContext, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx.output_cap_bytes = 1024 * 1024
    # No size check while it runs (the shell's exit still wakes the wait at once): 3 MB, then the end.
    monkeypatch.setattr(bash_module, "_POLL_SECONDS", 60.0)
    out = bash(ctx, "head -c 3000000 /dev/zero | tr '\\0' 'a'; echo; echo done")
    assert out.is_error
    assert out.text.endswith("Command output passed the 1.0 MB limit before it ended; the rest was dropped. "
                             "Redirect large output to a file in the workspace, or filter it (grep, tail).")
    assert out.details is not None and out.details["output_capped"] is True
    assert Path(out.details["full_output_path"]).stat().st_size == ctx.output_cap_bytes  # the cap holds on disk


def test_the_full_log_lives_in_the_run_temp_dir_until_cleanup(ctx: ToolContext) -> None:
    out = bash(ctx, f"seq 1 {MAX_LINES * 2}")
    assert out.details is not None
    log = Path(out.details["full_output_path"])
    assert ctx.temp_dir is not None and log.parent == ctx.temp_dir
    assert stat.S_IMODE(ctx.temp_dir.stat().st_mode) == 0o700
    assert bash(ctx, "true").text == "(no output)"
    assert sorted(p.name for p in ctx.temp_dir.iterdir()) == [log.name]  # untruncated logs go at once
    ctx.cleanup()
    assert not log.exists() and ctx.temp_dir is None
    assert leftover_logs(ctx) == []
    ctx.cleanup()  # twice is fine


def test_the_model_can_read_a_truncated_log_with_read(ctx: ToolContext) -> None:
    out = bash(ctx, f"seq 1 {MAX_LINES * 2}")
    assert out.details is not None
    shown = ReadTool().execute({"path": out.details["full_output_path"], "offset": MAX_LINES * 2}, ctx)
    assert not shown.is_error, shown.text
    assert f"{MAX_LINES * 2}" in shown.text
