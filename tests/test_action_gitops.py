"""Git operations against real repositories and a local bare remote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.action.gitops import GitError, Identity, PushRejected, Repo, coauthor_trailer
from bot.action.redact import Redactor
from tests.action_support import git, push_from_elsewhere, remote_and_clone

BOT = Identity("opi-bot[bot]", "opi-bot[bot]@users.noreply.github.com")
TOKEN = "ghs_gitopstoken0123456789abcdefghijkl"


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    return remote_and_clone(tmp_path, branches={"feature": {"feature.txt": "feature\n"}})


def test_checkout_remote_branch_and_commit_and_push(repos: tuple[Path, Path]) -> None:
    remote, workspace = repos
    repo = Repo(workspace, token=TOKEN)
    base = repo.checkout_remote_branch("feature")
    assert repo.current_branch() == "feature" and (workspace / "feature.txt").exists()
    (workspace / "app.py").write_text("def add(a, b):\n    return a + b\n", encoding="utf-8")
    (workspace / "new.txt").write_text("new\n", encoding="utf-8")
    changes = repo.changes_since(base)
    assert set(changes.files) == {"app.py", "new.txt"} and not changes.empty
    assert "+    return a + b" in changes.patch and "app.py" in changes.stat
    message = f"opi: fix add\n\n{coauthor_trailer('alice', 42)}\n"
    sha = repo.commit_all(base, message, BOT)
    repo.push("feature")
    assert git(remote, "rev-parse", "refs/heads/feature") == sha
    author = git(workspace, "log", "-1", "--format=%an <%ae>|%cn|%B")
    assert author.startswith("opi-bot[bot] <opi-bot[bot]@users.noreply.github.com>|opi-bot[bot]|")
    assert "Co-authored-by: alice <42+alice@users.noreply.github.com>" in author


def test_changes_include_commits_the_agent_made_and_are_folded_into_one(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace)
    base = repo.head_sha()
    (workspace / "a.txt").write_text("a\n", encoding="utf-8")
    git(workspace, "add", "a.txt")
    git(workspace, "commit", "-q", "-m", "agent commit")
    (workspace / "b.txt").write_text("b\n", encoding="utf-8")
    changes = repo.changes_since(base)
    assert set(changes.files) == {"a.txt", "b.txt"}
    sha = repo.commit_all(base, "opi: both", BOT)
    assert git(workspace, "rev-parse", f"{sha}~1") == base
    assert git(workspace, "rev-list", "--count", f"{base}..{sha}") == "1"


def test_gitignored_files_are_not_part_of_the_changes(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    (workspace / ".gitignore").write_text("*.log\n", encoding="utf-8")
    git(workspace, "add", ".gitignore")
    git(workspace, "commit", "-q", "-m", "ignore logs")
    repo = Repo(workspace)
    base = repo.head_sha()
    (workspace / "debug.log").write_text("noise\n", encoding="utf-8")
    assert repo.changes_since(base).empty


def test_no_changes_is_empty(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace)
    changes = repo.changes_since(repo.head_sha())
    assert changes.empty and changes.patch == "" and changes.files == ()


def test_secrets_written_into_files_are_redacted_from_the_patch(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace, redact=Redactor([TOKEN]))
    base = repo.head_sha()
    (workspace / "config.py").write_text(f"TOKEN = '{TOKEN}'\n", encoding="utf-8")
    assert TOKEN not in repo.changes_since(base).patch


def test_rejected_push_is_reported_and_the_commit_kept(tmp_path: Path, repos: tuple[Path, Path]) -> None:
    remote, workspace = repos
    repo = Repo(workspace)
    base = repo.checkout_remote_branch("feature")
    (workspace / "app.py").write_text("changed by opi\n", encoding="utf-8")
    sha = repo.commit_all(base, "opi: change", BOT)
    theirs = push_from_elsewhere(tmp_path, remote, "feature", "other.txt", "theirs\n")
    with pytest.raises(PushRejected, match="rejected because the branch moved on"):
        repo.push("feature")
    assert git(remote, "rev-parse", "refs/heads/feature") == theirs  # nothing overwritten
    assert repo.head_sha() == sha  # and nothing lost locally


def test_new_branch_from_remote_base_and_ls_remote(repos: tuple[Path, Path]) -> None:
    remote, workspace = repos
    repo = Repo(workspace)
    assert repo.remote_branch_sha("opi/issue-1") is None
    base = repo.create_branch("opi/issue-1", start="main")
    assert repo.current_branch() == "opi/issue-1"
    (workspace / "x.txt").write_text("x\n", encoding="utf-8")
    repo.commit_all(base, "opi: x", BOT)
    repo.push("opi/issue-1")
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


def test_token_goes_through_git_config_env_not_argv(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace, token=TOKEN, server_url="https://github.example")
    env = repo._env(with_token=True)
    values = [env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))]
    assert values[0] == "" and values[1].startswith("AUTHORIZATION: basic ")
    # The header is what git would send: check git itself reads it from the environment.
    shown = subprocess.run(["git", "config", "--get-all", "http.https://github.example/.extraheader"],
                           cwd=workspace, env=env, capture_output=True, text=True, check=False).stdout
    assert "AUTHORIZATION: basic" in shown
    assert "extraheader" not in (workspace / ".git" / "config").read_text(encoding="utf-8")


def test_safe_directory_lets_git_work_on_a_repo_owned_by_someone_else(repos: tuple[Path, Path]) -> None:
    # Ownership cannot be changed without root here; check the override is on every command instead.
    _, workspace = repos
    repo = Repo(workspace)
    proc = repo.run("config", "--get-all", "safe.directory")
    assert "*" in proc.stdout.split()


def test_changes_leave_the_real_index_alone(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace)
    (workspace / "untracked.txt").write_text("u\n", encoding="utf-8")
    assert repo.changes_since(repo.head_sha()).files == ("untracked.txt",)
    assert git(workspace, "status", "--porcelain") == "?? untracked.txt"


def test_every_command_runs_as_the_bot_identity(repos: tuple[Path, Path]) -> None:
    _, workspace = repos
    repo = Repo(workspace, identity=BOT)
    repo.create_branch("opi/x")
    assert git(workspace, "reflog", "-1", "--format=%gn <%ge>") == "opi-bot[bot] <opi-bot[bot]@users.noreply.github.com>"
