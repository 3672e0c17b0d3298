"""Git operations against real repositories and a local bare remote: the workspace before the agent, the
broker's snapshot after it, and the guard that undoes what an agent plants in `.git`."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bot.action.gitops import (
    GitError,
    Identity,
    PushRejected,
    Repo,
    Snapshot,
    WorkspaceGuard,
    coauthor_trailer,
    git_environment,
)
from bot.action.redact import Redactor
from tests.action_support import git, push_from_elsewhere, remote_and_clone

BOT = Identity("opi-bot[bot]", "opi-bot[bot]@users.noreply.github.com")
TOKEN = "ghs_gitopstoken0123456789abcdefghijkl"


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    return remote_and_clone(tmp_path, branches={"feature": {"feature.txt": "feature\n"}})


def snapshot_of(repo: Repo, tmp_path: Path, **kwargs: object) -> Snapshot:
    return Snapshot.take(repo, tmp_path / "broker" / "snapshot", **kwargs)


def test_checkout_snapshot_commit_and_push(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    remote, workspace = repos
    repo = Repo(workspace, token=TOKEN)
    base = repo.checkout_remote_branch("feature")
    assert repo.current_branch() == "feature" and (workspace / "feature.txt").exists()
    snapshot = snapshot_of(repo, tmp_path, token=TOKEN)
    (workspace / "app.py").write_text("def add(a, b):\n    return a + b\n", encoding="utf-8")
    (workspace / "new.txt").write_text("new\n", encoding="utf-8")
    changes = snapshot.changes()
    assert set(changes.files) == {"app.py", "new.txt"} and not changes.empty
    assert "+    return a + b" in changes.patch and "app.py" in changes.stat
    sha = snapshot.commit(f"opi: fix add\n\n{coauthor_trailer('alice', 42)}\n", BOT)
    snapshot.push(sha, "feature")
    assert git(remote, "rev-parse", "refs/heads/feature") == sha
    assert git(remote, "rev-parse", f"{sha}~1") == base
    author = git(remote, "log", "-1", "--format=%an <%ae>|%cn|%B", sha)
    assert author.startswith("opi-bot[bot] <opi-bot[bot]@users.noreply.github.com>|opi-bot[bot]|")
    assert "Co-authored-by: alice <42+alice@users.noreply.github.com>" in author
    # The workspace's own repository was not used for the commit: its HEAD is where the checkout left it.
    assert git(workspace, "rev-parse", "HEAD") == base


def test_commits_the_agent_made_fold_into_one(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace)
    base = repo.head_sha()
    snapshot = snapshot_of(repo, tmp_path)
    (workspace / "a.txt").write_text("a\n", encoding="utf-8")
    git(workspace, "add", "a.txt")
    git(workspace, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "agent commit")
    (workspace / "b.txt").write_text("b\n", encoding="utf-8")
    changes = snapshot.changes()
    assert set(changes.files) == {"a.txt", "b.txt"}
    sha = snapshot.commit("opi: both", BOT)
    assert snapshot.out("rev-parse", f"{sha}~1") == base
    assert snapshot.out("rev-list", "--count", f"{base}..{sha}") == "1"


def test_gitignored_files_are_not_part_of_the_changes(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    (workspace / ".gitignore").write_text("*.log\n", encoding="utf-8")
    git(workspace, "add", ".gitignore")
    git(workspace, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "ignore logs")
    snapshot = snapshot_of(Repo(workspace), tmp_path)
    (workspace / "debug.log").write_text("noise\n", encoding="utf-8")
    assert snapshot.changes().empty


def test_no_changes_is_empty(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    changes = snapshot_of(Repo(workspace), tmp_path).changes()
    assert changes.empty and changes.patch == "" and changes.files == ()


def test_secrets_written_into_files_are_redacted_from_the_patch(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    snapshot = snapshot_of(Repo(workspace), tmp_path, redact=Redactor([TOKEN]))
    (workspace / "config.py").write_text(f"TOKEN = '{TOKEN}'\n", encoding="utf-8")
    changes = snapshot.changes()
    assert TOKEN not in changes.patch
    # What would be pushed is the real content: the leak scan reads it from here.
    assert dict(snapshot.blobs(changes.files))["config.py"] == f"TOKEN = '{TOKEN}'\n".encode()


def test_rejected_push_is_reported_and_nothing_overwritten(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    remote, workspace = repos
    repo = Repo(workspace)
    repo.checkout_remote_branch("feature")
    snapshot = snapshot_of(repo, tmp_path)
    (workspace / "app.py").write_text("changed by opi\n", encoding="utf-8")
    snapshot.changes()
    sha = snapshot.commit("opi: change", BOT)
    theirs = push_from_elsewhere(tmp_path, remote, "feature", "other.txt", "theirs\n")
    with pytest.raises(PushRejected, match="rejected because the branch moved on"):
        snapshot.push(sha, "feature")
    assert git(remote, "rev-parse", "refs/heads/feature") == theirs


def test_new_branch_from_remote_base_and_ls_remote(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    remote, workspace = repos
    repo = Repo(workspace)
    assert repo.remote_branch_sha("opi/issue-1") is None
    repo.create_branch("opi/issue-1", start="main")
    assert repo.current_branch() == "opi/issue-1"
    snapshot = snapshot_of(repo, tmp_path)
    (workspace / "x.txt").write_text("x\n", encoding="utf-8")
    snapshot.changes()
    snapshot.push(snapshot.commit("opi: x", BOT), "opi/issue-1")
    assert repo.remote_branch_sha("opi/issue-1") == git(remote, "rev-parse", "refs/heads/opi/issue-1")


def test_pull_ref_checkout_for_forks(repos: tuple[Path, Path]) -> None:
    remote, workspace = repos
    feature = git(remote, "rev-parse", "refs/heads/feature")
    git(remote, "update-ref", "refs/pull/5/head", feature)
    head = Repo(workspace).checkout_pull_head(5, "opi/pr-5")
    assert head == feature and Repo(workspace).current_branch() == "opi/pr-5"


def test_not_a_repository_is_named(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="is not a git checkout"):
        Repo(tmp_path).ensure_repo()


def test_git_errors_are_redacted(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace, token=TOKEN)
    with pytest.raises(GitError) as info:
        repo.run("checkout", f"no-such-branch-{TOKEN}")
    assert TOKEN not in str(info.value) and "***" in str(info.value)


def test_git_gets_no_inherited_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_DIR", "/elsewhere")
    env = git_environment()
    assert TOKEN not in env.values()
    assert "GIT_CONFIG_COUNT" not in env and "GIT_DIR" not in env
    assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_CONFIG_GLOBAL"] == os.devnull


def test_every_command_runs_as_the_bot_identity(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace, identity=BOT)
    repo.create_branch("opi/x")
    assert git(workspace, "reflog", "-1", "--format=%gn <%ge>") == "opi-bot[bot] <opi-bot[bot]@users.noreply.github.com>"


# -- what an agent plants in .git ------------------------------------------------------------------------
def plant(workspace: Path, proof: Path) -> None:
    """Everything git would run: hooks, fsmonitor (through a shell), a clean filter, an external diff."""
    hooks = workspace / ".git" / "hooks"
    for hook in ("pre-push", "post-commit", "reference-transaction", "post-checkout", "pre-commit"):
        (hooks / hook).write_text(f"#!/bin/sh\necho {hook} >> {proof}\n", encoding="utf-8")
        (hooks / hook).chmod(0o755)
    with (workspace / ".git" / "config").open("a", encoding="utf-8") as config:
        config.write(f'[core]\n\tfsmonitor = "echo fsmonitor >> {proof}; false"\n'
                     f'[filter "evil"]\n\tclean = "sh -c \'echo filter >> {proof}; cat\'"\n'
                     f'[diff "evil"]\n\ttextconv = "sh -c \'echo textconv >> {proof}; cat\'"\n')
    (workspace / ".gitattributes").write_text("* filter=evil diff=evil\n", encoding="utf-8")


def test_nothing_planted_in_the_workspace_git_runs_during_delivery(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace)
    repo.checkout_remote_branch("feature")
    snapshot = snapshot_of(repo, tmp_path)
    proof = tmp_path / "proof.txt"
    plant(workspace, proof)
    (workspace / "app.py").write_text("changed\n", encoding="utf-8")
    changes = snapshot.changes()
    assert "app.py" in changes.files and ".gitattributes" in changes.files
    snapshot.push(snapshot.commit("opi: change", BOT), "feature")
    assert not proof.exists(), proof.read_text(encoding="utf-8")


def test_guard_puts_config_and_hooks_back_byte_for_byte(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    git_dir = workspace / ".git"
    config_before = (git_dir / "config").read_bytes()
    guard = WorkspaceGuard(git_dir)
    proof = tmp_path / "proof.txt"
    plant(workspace, proof)
    (git_dir / "info" / "attributes").write_text("* filter=evil\n", encoding="utf-8")
    assert guard.restore()
    assert (git_dir / "config").read_bytes() == config_before
    assert not any(p.name in ("pre-push", "post-commit") for p in (git_dir / "hooks").iterdir())
    assert not (git_dir / "info" / "attributes").exists()
    git(workspace, "status")  # git works in the restored checkout, and runs nothing planted
    git(workspace, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "--allow-empty", "-m", "x")
    assert not proof.exists()


def test_guard_never_writes_through_a_planted_symlink(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    git_dir = workspace / ".git"
    guard = WorkspaceGuard(git_dir)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n", encoding="utf-8")
    (git_dir / "config").unlink()
    (git_dir / "config").symlink_to(victim)
    (git_dir / "hooks").rename(tmp_path / "old-hooks")
    (git_dir / "hooks").symlink_to(tmp_path)
    assert guard.restore()
    assert victim.read_text(encoding="utf-8") == "precious\n"
    assert not (git_dir / "config").is_symlink() and not (git_dir / "hooks").is_symlink()
    assert (tmp_path / "victim.txt").exists()


def test_guard_refuses_a_replaced_git_directory(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    guard = WorkspaceGuard(workspace / ".git")
    (workspace / ".git").rename(tmp_path / "moved-git")
    (workspace / ".git").write_text(f"gitdir: {tmp_path / 'moved-git'}\n", encoding="utf-8")
    assert not guard.restore()


def test_persisted_checkout_credential_is_stripped_and_restored(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    header = "AUTHORIZATION: basic eC1hY2Nlc3MtdG9rZW46Z2hzX3NlY3JldA=="
    git(workspace, "config", "--local", "http.https://github.com/.extraheader", header)
    original = (workspace / ".git" / "config").read_bytes()
    guard = WorkspaceGuard(workspace / ".git")
    assert guard.strip_credentials() == ['[http "https://github.com/"] extraheader']
    assert b"extraheader" not in (workspace / ".git" / "config").read_bytes()
    assert git(workspace, "config", "--get", "remote.origin.url")  # the rest of the config is intact
    assert guard.restore()
    assert (workspace / ".git" / "config").read_bytes() == original


def test_snapshot_is_private_to_the_broker(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    snapshot = snapshot_of(Repo(workspace), tmp_path)
    assert stat.S_IMODE(snapshot.directory.stat().st_mode) == 0o700
    proc = subprocess.run(["git", "--git-dir", str(snapshot.bare), "cat-file", "-t", snapshot.base_sha],
                          capture_output=True, text=True, check=False)
    assert proc.stdout.strip() == "commit"


# -- a checkout the runner user owns ----------------------------------------------------------------------
RUNNER_UID = 1001  # actions/checkout leaves the workspace owned by the runner user; the broker runs as root


def chown_tree(root: Path, uid: int) -> None:
    for path in (root, *root.rglob("*")):
        os.lchown(path, uid, uid)


def test_a_checkout_owned_by_another_uid_works_through_repo_though_plain_git_refuses_it(
        tmp_path: Path, repos: tuple[Path, Path]) -> None:
    assert os.geteuid() == 0, "the tests run as root, so they can hand the checkout to another uid"
    _, workspace = repos
    base = git(workspace, "rev-parse", "HEAD")
    chown_tree(workspace, RUNNER_UID)
    assert workspace.stat().st_uid == (workspace / ".git" / "HEAD").stat().st_uid == RUNNER_UID
    plain = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}, check=False)
    assert plain.returncode != 0 and "dubious ownership" in plain.stderr  # what Repo has to get past
    repo = Repo(workspace, identity=BOT)
    repo.ensure_repo()
    assert repo.head_sha() == base
    repo.create_branch("opi/foreign", start="main")
    assert repo.current_branch() == "opi/foreign"
    snapshot = snapshot_of(repo, tmp_path)  # upload-pack, started by the local transport, reads it too
    (workspace / "fix.txt").write_text("fixed\n", encoding="utf-8")
    assert snapshot.changes().files == ("fix.txt",)
    assert snapshot.out("rev-parse", f"{snapshot.commit('opi: fix', BOT)}~1") == base
