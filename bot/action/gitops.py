"""Git for the action, as plain `git` subprocesses with an explicit environment.

- Every call passes `safe.directory` on the command line (protected config), because the workspace is
  owned by the runner user while the container may run as root.
- The push token travels as an `http.extraheader` through `GIT_CONFIG_*` variables: never in argv (visible
  in `ps`), never in the remote URL (echoed in errors), never written to `.git/config`.
- The bot's identity is set through `GIT_AUTHOR_*`/`GIT_COMMITTER_*` so it wins over any inherited config.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.action.redact import Redactor

GIT_TIMEOUT = 300


class GitError(Exception):
    def __init__(self, message: str, *, stderr: str = "") -> None:
        self.stderr = stderr
        super().__init__(message)


class PushRejected(GitError):
    """The remote refused the push because it moved on (someone pushed meanwhile)."""


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


@dataclass(frozen=True)
class Changes:
    patch: str
    stat: str
    files: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.files


class Repo:
    def __init__(self, workspace: Path, *, redact: Redactor | None = None, token: str = "",
                 server_url: str = "https://github.com", identity: Identity | None = None) -> None:
        self.workspace = workspace
        # Reflog entries (checkout -B, reset) need a committer too; in the container the uid may have no
        # passwd entry and there is no git config, so every command runs as the bot identity.
        self.identity = identity
        self.redact = redact or Redactor()
        self.token = token
        self.server_url = server_url.rstrip("/")
        if token:
            self.redact.add(token)

    # -- plumbing ------------------------------------------------------------------------------------
    def _env(self, extra: Mapping[str, str] | None = None, *, with_token: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG_")}
        env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
        if self.identity is not None:
            env.update(_identity_env(self.identity))
        config: list[tuple[str, str]] = []
        if with_token and self.token:
            basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
            # Replaces the header actions/checkout may have persisted, instead of sending two.
            config.append((f"http.{self.server_url}/.extraheader", ""))
            config.append((f"http.{self.server_url}/.extraheader", f"AUTHORIZATION: basic {basic}"))
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        env.update(extra or {})
        return env

    def run(self, *args: str, env: Mapping[str, str] | None = None, with_token: bool = False,
            check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["git", "-c", f"safe.directory={self.workspace}", "-c", "safe.directory=*", *args]
        try:
            proc = subprocess.run(argv, cwd=self.workspace, env=self._env(env, with_token=with_token),
                                  input=stdin, capture_output=True, text=True, timeout=GIT_TIMEOUT,
                                  check=False)
        except FileNotFoundError:
            raise GitError("git is not installed (the action's image must provide it)") from None
        except subprocess.TimeoutExpired:
            raise GitError(f"`git {' '.join(args[:2])}` did not finish within {GIT_TIMEOUT} s") from None
        if check and proc.returncode != 0:
            stderr = self.redact(proc.stderr.strip())
            raise GitError(f"`git {self.redact(' '.join(args))}` failed (exit {proc.returncode}): {stderr}",
                           stderr=stderr)
        return proc

    def out(self, *args: str) -> str:
        return self.run(*args).stdout.strip()

    # -- queries ---------------------------------------------------------------------------------------
    def ensure_repo(self) -> None:
        proc = self.run("rev-parse", "--is-inside-work-tree", check=False)
        if proc.returncode != 0 or proc.stdout.strip() != "true":
            raise GitError(f"{self.workspace} is not a git checkout (add actions/checkout before this action)")

    def head_sha(self) -> str:
        return self.out("rev-parse", "HEAD")

    def current_branch(self) -> str | None:
        proc = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return proc.stdout.strip() or None

    # -- branches --------------------------------------------------------------------------------------
    def fetch_branch(self, branch: str, *, remote: str = "origin") -> None:
        try:
            self.run("fetch", "--no-tags", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}",
                     with_token=True)
        except GitError as exc:
            if "couldn't find remote ref" in exc.stderr:
                raise GitError(f"the branch `{branch}` does not exist on {remote}", stderr=exc.stderr) from None
            raise

    def checkout_remote_branch(self, branch: str, *, remote: str = "origin") -> str:
        """Fetch `branch` from the remote and check it out as a local branch tracking it; returns HEAD."""
        self.fetch_branch(branch, remote=remote)
        self.run("checkout", "-B", branch, f"refs/remotes/{remote}/{branch}")
        return self.head_sha()

    def checkout_pull_head(self, number: int, local_branch: str, *, remote: str = "origin") -> str:
        """Check out a pull request's head through `refs/pull/N/head` (works for forks, read-only)."""
        self.run("fetch", "--no-tags", remote, f"+refs/pull/{number}/head:refs/remotes/{remote}/pr/{number}",
                 with_token=True)
        self.run("checkout", "-B", local_branch, f"refs/remotes/{remote}/pr/{number}")
        return self.head_sha()

    def create_branch(self, branch: str, *, start: str | None = None, remote: str = "origin") -> str:
        """Start `branch` from `start` (a remote branch name, fetched) or from HEAD."""
        if start:
            self.fetch_branch(start, remote=remote)
            self.run("checkout", "-B", branch, f"refs/remotes/{remote}/{start}")
        else:
            self.run("checkout", "-B", branch)
        return self.head_sha()

    def remote_branch_sha(self, branch: str, *, remote: str = "origin") -> str | None:
        proc = self.run("ls-remote", "--heads", remote, f"refs/heads/{branch}", with_token=True, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        return proc.stdout.split()[0]

    # -- changes ---------------------------------------------------------------------------------------
    def changes_since(self, base_sha: str) -> Changes:
        """Everything that differs from `base_sha`: the agent's edits, new files and any commits it made.

        New files are staged in a throwaway copy of the index, so the checkout's own index (a user's, in
        a dry run) is left exactly as it was. `.gitignore` is respected.
        """
        with tempfile.TemporaryDirectory(prefix="opi-index-") as tmp:
            index = Path(tmp) / "index"
            real_index = self.workspace / self.out("rev-parse", "--git-path", "index")
            if real_index.exists():
                shutil.copyfile(real_index, index)
            env = {"GIT_INDEX_FILE": str(index)}
            self.run("add", "--all", "--", ".", env=env)
            patch = self.run("diff", "--cached", "--binary", "--no-color", "--no-ext-diff", base_sha, env=env).stdout
            stat = self.run("diff", "--cached", "--stat=100", "--no-color", base_sha, env=env).stdout.rstrip()
            names = self.run("diff", "--cached", "--name-only", "-z", base_sha, env=env).stdout
        files = tuple(name for name in names.split("\0") if name)
        return Changes(patch=self.redact(patch), stat=stat, files=files)

    def commit_all(self, base_sha: str, message: str, author: Identity) -> str:
        """One commit on top of `base_sha` holding every change, authored and committed by the bot.

        Commits the agent made itself are folded in (a soft reset keeps their content), so the branch
        gains exactly one reviewable commit with a known author.
        """
        self.run("add", "--all")
        self.run("reset", "--soft", base_sha)
        self.run("-c", "commit.gpgsign=false", "commit", "--no-verify", "-F", "-", env=_identity_env(author),
                 stdin=self.redact(message))
        return self.head_sha()

    def push(self, branch: str, *, remote: str = "origin") -> None:
        """Push HEAD to `branch` without force; a remote that moved on raises PushRejected."""
        proc = self.run("push", "--porcelain", remote, f"HEAD:refs/heads/{branch}", with_token=True, check=False)
        if proc.returncode == 0:
            return
        output = self.redact((proc.stdout + "\n" + proc.stderr).strip())
        if any(word in output for word in ("[rejected]", "non-fast-forward", "fetch first", "stale info")):
            raise PushRejected(f"the push to {branch} was rejected because the branch moved on "
                               f"(someone pushed meanwhile): {output}", stderr=output)
        raise GitError(f"`git push {remote} {branch}` failed (exit {proc.returncode}): {output}", stderr=output)


def _identity_env(identity: Identity) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": identity.name, "GIT_AUTHOR_EMAIL": identity.email,
            "GIT_COMMITTER_NAME": identity.name, "GIT_COMMITTER_EMAIL": identity.email}


def coauthor_trailer(login: str, user_id: int) -> str:
    return f"Co-authored-by: {login} <{user_id}+{login}@users.noreply.github.com>"
