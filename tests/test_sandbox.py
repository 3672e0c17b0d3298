"""The agent's surroundings: its uid, environment, directories, and what is locked against it. Real files,
real uids (we are root here; a non-root run checks the same-uid fallback)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bot.action.sandbox import (
    DEDICATED_UID,
    AgentIdentity,
    agent_environment,
    choose_identity,
    chown_tree,
    give_to_owner_of,
    grant_traversal,
    locked_dirs,
    make_agent_dirs,
    reachable_for,
    remove_agent_dirs,
    runner_dirs_to_lock,
)

# uid switches need root; CI runs as root, and there a missing root must fail, not skip.
root_only = pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true", reason="needs root")
SEPARATE = AgentIdentity(1001, 1001)


def test_the_environment_holds_no_secret_by_name_prefix_or_value(tmp_path: Path) -> None:
    source = {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "GITHUB_REPOSITORY": "o/r",
        "GITHUB_TOKEN": "ghs_x", "INPUT_MODEL": "anthropic:x", "ACTIONS_RUNTIME_TOKEN": "rt",
        "GITHUB_ENV": "/github/file_commands/set_env", "GITHUB_OUTPUT": "/x", "STATE_opi": "/s",
        "GIT_CONFIG_COUNT": "1", "OPI_SECRETS_FD": "3", "XDG_CONFIG_HOME": "/github/home/.config",
        "PYTHONPATH": "/evil", "LD_PRELOAD": "/evil.so", "BASH_ENV": "/evil.sh",
        "HARMLESS_LOOKING": "prefix-the-real-secret-value-suffix", "NPM_TOKEN": "npm_x",
    }
    env = agent_environment(source, ["the-real-secret-value"], home=tmp_path / "h", tmp=tmp_path / "t")
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "GITHUB_REPOSITORY": "o/r",
                   "HOME": str(tmp_path / "h"), "TMPDIR": str(tmp_path / "t"), "GIT_TERMINAL_PROMPT": "0",
                   "PYTHONDONTWRITEBYTECODE": "1"}


@root_only
def test_the_agent_runs_as_the_workspace_owner_or_a_dedicated_uid(tmp_path: Path) -> None:
    assert choose_identity(tmp_path) == AgentIdentity(DEDICATED_UID, DEDICATED_UID, dedicated=True)
    os.chown(tmp_path, 1001, 118)
    assert choose_identity(tmp_path) == AgentIdentity(1001, 118)


def test_not_root_means_the_same_uid_and_nothing_locked(tmp_path: Path) -> None:
    same = AgentIdentity(None, None)
    assert not same.separate and "start `opi action` as root" in same.describe()
    notes: list[str] = []
    with locked_dirs([tmp_path], same, notes.append) as locked:
        assert locked == []
    assert "cannot be locked" in notes[0]


def test_directories_holding_the_workspace_or_the_interpreter_stay_open(tmp_path: Path) -> None:
    home, temp, commands = tmp_path / "home", tmp_path / "temp", tmp_path / "fc"
    env = {"HOME": str(home), "RUNNER_TEMP": str(temp), "GITHUB_ENV": str(commands / "set_env_1"),
           "GITHUB_OUTPUT": str(commands / "set_output_1")}
    workspace = tmp_path / "work"
    assert runner_dirs_to_lock(env, [workspace]) == sorted([home, temp, commands])
    # A HOME above the interpreter (a pyenv under /root) must not be locked.
    assert runner_dirs_to_lock(env, [workspace, home / ".pyenv" / "bin" / "python"]) == sorted([temp, commands])
    assert runner_dirs_to_lock({"HOME": "/"}, [workspace]) == []


@root_only
def test_locked_directories_are_closed_to_the_agent_and_given_back(tmp_path: Path) -> None:
    commands = tmp_path / "file_commands"
    commands.mkdir(mode=0o755)
    os.chown(commands, 1001, 118)
    with locked_dirs([commands, tmp_path / "missing"], SEPARATE, lambda _: None) as locked:
        assert [path for path, _ in locked] == [commands]
        info = commands.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o700)
    info = commands.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1001, 118, 0o755)


@root_only
def test_agent_directories_belong_to_the_agent_and_go_away(tmp_path: Path) -> None:
    dirs = make_agent_dirs(SEPARATE, tmp_path)
    assert stat.S_IMODE(dirs.root.stat().st_mode) == 0o711 and dirs.root.stat().st_uid == 0
    assert {p.stat().st_uid for p in (dirs.home, dirs.tmp, dirs.sessions)} == {1001}
    assert dirs.logs.stat().st_uid == 0  # readable for the agent, never writable
    remove_agent_dirs(dirs)
    assert not dirs.root.exists()


@root_only
def test_traversal_is_lent_for_the_run_and_taken_back(tmp_path: Path) -> None:
    private = tmp_path / "private"
    workspace = private / "repo"
    workspace.mkdir(parents=True)
    private.chmod(0o700)
    with reachable_for(workspace, SEPARATE):
        assert stat.S_IMODE(private.stat().st_mode) == 0o701
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


@root_only
def test_interpreter_traversal_skips_paths_that_do_not_exist(tmp_path: Path) -> None:
    # Python lists site-packages directories an install may never create (/opt/opi/local/... in the image).
    notes: list[str] = []
    grant_traversal([tmp_path / "no" / "such" / "site-packages"], SEPARATE, notes.append)
    assert notes == []


@root_only
def test_chown_never_follows_a_link_the_agent_planted(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("root's\n", encoding="utf-8")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "link").symlink_to(outside)
    chown_tree(workspace, 1001, 118)
    assert outside.stat().st_uid == 0 and (workspace / "link").lstat().st_uid == 1001


@root_only
def test_outputs_go_to_the_runner_directory_owner(tmp_path: Path) -> None:
    temp = tmp_path / "runner_temp"
    temp.mkdir()
    os.chown(temp, 1001, 118)
    patch = temp / "opi-1.patch"
    patch.write_text("diff\n", encoding="utf-8")
    give_to_owner_of(temp, [patch])
    assert (patch.stat().st_uid, patch.stat().st_gid) == (1001, 118)
