"""Git for the broker, as plain `git` subprocesses with a minimal, hardened environment.

Two repositories are involved, and the line between them is the security boundary:

- The **workspace** (`Repo`): the runner's checkout. The broker fetches and checks out the right branch
  there *before* the agent starts. From then on its `.git` is the agent's to tamper with (hooks,
  `core.fsmonitor`, filters), so the broker never runs git in it again until `WorkspaceGuard.restore` has
  put its config and hooks back.
- The **snapshot** (`Snapshot`): a bare repository the broker owns, holding the base commit. After the agent,
  the broker reads the workspace's *files* into the snapshot's own index (`--work-tree`, never the
  workspace's `.git`), commits and pushes from there.

Every command runs with `core.hooksPath=/dev/null`, `core.fsmonitor=false`, only the https, http and file
transports, no system or global config, no inherited `GIT_*` variables and no environment but a system
PATH, an empty HOME and the locale (`bot.action.git_auth`). The token reaches git only for a fetch or push,
through a credential helper reading an inherited pipe.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.action.git_auth import HARDENED_CONFIG, hardened_git_env
from bot.action.redact import Redactor

GIT_TIMEOUT = 300

# Beyond git_auth's (hooks, fsmonitor, transports, helpers): what the broker's own commands also need.
# Protected settings on the command line beat any config file.
_BROKER_CONFIG = ("-c", "safe.directory=*", "-c", "diff.external=", "-c", "commit.gpgsign=false",
                  "-c", "tag.gpgsign=false", "-c", "core.sshCommand=false")


class GitError(Exception):
    def __init__(self, message: str, *, stderr: str = "") -> None:
        self.stderr = stderr
        super().__init__(message)


class PushRejected(GitError):
    """The remote refused the push because it moved on (someone pushed meanwhile)."""


class WorkflowPushRefused(GitError):
    """The remote refused a change under `.github/workflows/` (the token lacks `workflows` permission)."""


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


# A local remote (a path, as in tests and the snapshot's fetch from the workspace) runs upload-pack and
# receive-pack here, without our `-c` settings, in a repository someone else may own: they get their own
# protected safe.directory. Over https these options are ignored.
UPLOAD_PACK = "--upload-pack=git -c safe.directory=* -c core.hooksPath=/dev/null upload-pack"
RECEIVE_PACK = "--receive-pack=git -c safe.directory=* receive-pack"


def hardened_args() -> list[str]:
    return [*HARDENED_CONFIG, *_BROKER_CONFIG]


@functools.cache
def _git_home() -> Path:
    """An empty HOME of the broker's own: git reads HOME-relative defaults even with global config off
    (readable by the workspace owner, as whom git may run)."""
    home = Path(tempfile.mkdtemp(prefix="opi-git-home-"))
    home.chmod(0o755)
    return home


def _owner_if_root(path: Path) -> tuple[int, int] | None:
    """Whom git should run as in `path`: its owner, when we are root and the owner can reach it (a
    checkout inside a root-only directory is left to root: its later users are root's anyway)."""
    if os.geteuid() != 0:
        return None
    try:
        info = path.stat()
        if info.st_uid == 0 or not all(_traversable(ancestor, info.st_uid, info.st_gid)
                                       for ancestor in path.absolute().parents):
            return None
    except OSError:
        return None
    return info.st_uid, info.st_gid


def _traversable(directory: Path, uid: int, gid: int) -> bool:
    info = directory.stat()
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def git_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Only what git needs: no inherited GIT_* (GIT_DIR, GIT_CONFIG_*, GIT_SSH_COMMAND …), no secrets,
    a fixed system PATH."""
    return hardened_git_env(_git_home(), extra=extra)


def identity_env(identity: Identity) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": identity.name, "GIT_AUTHOR_EMAIL": identity.email,
            "GIT_COMMITTER_NAME": identity.name, "GIT_COMMITTER_EMAIL": identity.email}


class Git:
    """`git` on one repository, hardened. `auth` gives a token for fetches and pushes only."""

    def __init__(self, cwd: Path, *, git_dir: Path | None = None, work_tree: Path | None = None,
                 redact: Redactor | None = None, token: str = "", server_url: str = "https://github.com",
                 identity: Identity | None = None, run_as: tuple[int, int] | None = None) -> None:
        self.cwd = cwd
        self.run_as = run_as  # (uid, gid) git runs as, so what it writes belongs to them
        self.git_dir = git_dir
        self.work_tree = work_tree
        self.redact = redact or Redactor()
        self.token = token
        self.server_url = server_url.rstrip("/")
        # Reflog entries need a committer; in the container the uid may have no passwd entry.
        self.identity = identity
        if token:
            self.redact.add(token)

    def run(self, *args: str, env: Mapping[str, str] | None = None, with_token: bool = False,
            check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["git", *self._location(), *hardened_args()]
        extra = {**identity_env(self.identity)} if self.identity else {}
        extra.update(env or {})
        with self._credentials(with_token) as (auth_args, fds):
            argv += [*auth_args, *args]
            try:
                proc = subprocess.run(argv, cwd=self.cwd, env=git_environment(extra=extra), input=stdin,
                                      capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False,
                                      pass_fds=fds, user=self._uid, group=self._gid,
                                      extra_groups=[] if self.run_as else None)
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

    @property
    def _uid(self) -> int | None:
        return self.run_as[0] if self.run_as else None

    @property
    def _gid(self) -> int | None:
        return self.run_as[1] if self.run_as else None

    def _location(self) -> list[str]:
        where = [f"--git-dir={self.git_dir}"] if self.git_dir else []
        return where + ([f"--work-tree={self.work_tree}"] if self.work_tree else [])

    @contextlib.contextmanager
    def _credentials(self, with_token: bool) -> Iterator[tuple[list[str], tuple[int, ...]]]:
        if not (with_token and self.token):
            yield [], ()
            return
        from bot.action.git_auth import token_credential

        with token_credential(self.token, self.server_url) as (config_args, fds):
            yield list(config_args), tuple(fds)


class Repo(Git):
    """The workspace checkout, used by the broker before the agent runs. As root, git runs as the
    workspace's owner, so a checkout leaves no root-owned file that the job's later steps (or the agent)
    could not change."""

    def __init__(self, workspace: Path, **kwargs: object) -> None:
        super().__init__(workspace, run_as=_owner_if_root(workspace), **kwargs)  # type: ignore[arg-type]
        self.workspace = workspace

    def ensure_repo(self) -> None:
        proc = self.run("rev-parse", "--is-inside-work-tree", check=False)
        if proc.returncode != 0 or proc.stdout.strip() != "true":
            raise GitError(f"{self.workspace} is not a git checkout (add actions/checkout before this action)")

    def head_sha(self) -> str:
        return self.out("rev-parse", "HEAD")

    def current_branch(self) -> str | None:
        proc = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return proc.stdout.strip() or None

    def remote_url(self, remote: str = "origin") -> str:
        return self.out("remote", "get-url", remote)

    def fetch_branch(self, branch: str, *, remote: str = "origin") -> None:
        try:
            self.run("fetch", "--no-tags", UPLOAD_PACK, remote,
                     f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}", with_token=True)
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
        self.run("fetch", "--no-tags", UPLOAD_PACK, remote,
                 f"+refs/pull/{number}/head:refs/remotes/{remote}/pr/{number}", with_token=True)
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
        proc = self.run("ls-remote", "--heads", UPLOAD_PACK, remote, f"refs/heads/{branch}", with_token=True,
                        check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        return proc.stdout.split()[0]

    def start_point(self) -> str:
        """The branch the checkout is on, or its commit when detached: where the workspace goes back to."""
        return self.current_branch() or self.head_sha()

    def resolve_start(self, start: str) -> StartPoint:
        """The start as it is now, before the agent runs (a ref the agent could move is never read after)."""
        branch = self.run("show-ref", "--verify", "--quiet", f"refs/heads/{start}", check=False).returncode == 0
        sha = self.out("rev-parse", "--verify", f"refs/heads/{start}^{{commit}}" if branch else f"{start}^{{commit}}")
        return StartPoint(branch=start if branch else None, sha=sha)

    def git_dir_path(self) -> Path:
        return (self.workspace / self.out("rev-parse", "--git-dir")).resolve()


@dataclass(frozen=True)
class StartPoint:
    """Where the workspace goes back to after the agent: a branch at a commit, or a detached commit."""

    branch: str | None
    sha: str


class Snapshot(Git):
    """A bare repository the broker owns, holding the base commit; the agent's work is read into it as files."""

    def __init__(self, directory: Path, workspace: Path, base_sha: str, push_url: str, **kwargs: object) -> None:
        # Runs in the work tree (pathspecs are relative to it) but with the snapshot's own git directory:
        # an explicit --git-dir turns discovery off, so the workspace's `.git` is never read.
        super().__init__(workspace, git_dir=directory / "git", work_tree=workspace, **kwargs)  # type: ignore[arg-type]
        self.directory = directory
        self.bare = directory / "git"
        self.workspace = workspace
        self.base_sha = base_sha
        self.push_url = push_url
        self.index = directory / "index"

    @classmethod
    def take(cls, repo: Repo, directory: Path, *, start: StartPoint | None = None, **kwargs: object) -> Snapshot:
        """Copy the base commit (and the commit the workspace goes back to) out of the workspace while it is
        still trusted (before the agent runs)."""
        base_sha = repo.head_sha()
        push_url = repo.remote_url() if "origin" in repo.run("remote", check=False).stdout.split() else ""
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        Git(directory).run("init", "-q", "--bare", str(directory / "git"))
        snapshot = cls(directory, repo.workspace, base_sha, push_url, **kwargs)
        source = repo.git_dir_path()
        # The local transport starts upload-pack without our `-c` settings, and the workspace belongs to
        # the runner user: it needs its own safe.directory (protected config, so on its command line).
        snapshot.run("fetch", "-q", "--no-tags", "--depth=1", UPLOAD_PACK, f"file://{source}", "HEAD")
        fetched = snapshot.out("rev-parse", "FETCH_HEAD")
        if fetched != base_sha:
            raise GitError(f"the snapshot holds {fetched}, not the checked-out {base_sha}")
        if start is not None and start.sha != base_sha:
            snapshot.run("fetch", "-q", "--no-tags", "--depth=1", UPLOAD_PACK, f"file://{source}", start.sha)
        # The workspace's index as it is now (matching the base) keeps stat data, so reading the work
        # tree later hashes only what changed; `read-tree` drops anything that does not match the base.
        real_index = source / "index"
        if real_index.is_file():
            shutil.copyfile(real_index, snapshot.index)
        snapshot.run("read-tree", "--reset", base_sha, env=snapshot._index_env())
        snapshot._never_look_into_submodules()
        with contextlib.suppress(OSError):  # local ignore rules are content, not code
            (snapshot.bare / "info").mkdir(exist_ok=True)
            shutil.copyfile(source / "info" / "exclude", snapshot.bare / "info" / "exclude")
        return snapshot

    def _index_env(self) -> dict[str, str]:
        return {"GIT_INDEX_FILE": str(self.index)}

    def _never_look_into_submodules(self) -> None:
        """Mark the base's gitlinks skip-worktree, so `changes()` never examines them.

        To see whether a submodule changed, `git add` starts `git status` inside the directory at a gitlink
        path: a repository the agent may have planted there, whose config and attributes (a clean filter)
        would then run with the broker's uid. The cost: a change to a submodule's commit is not delivered.
        """
        staged = self.run("ls-files", "--stage", "-z", env=self._index_env()).stdout
        gitlinks = [entry.split("\t", 1)[1] for entry in staged.split("\0") if entry.startswith("160000 ")]
        if gitlinks:
            self.run("update-index", "--skip-worktree", "-z", "--stdin", env=self._index_env(),
                     stdin="".join(f"{path}\0" for path in gitlinks))

    def changes(self) -> Changes:
        """Every file that differs from the base, read from the work tree (`.gitignore` respected; `.git`
        directories are never content). Commits the agent made in the workspace are irrelevant: only
        files count, so they fold into one change."""
        env = self._index_env()
        self.run("add", "--all", "--", ".", env=env)
        patch = self.run("diff", "--cached", "--binary", "--no-color", "--no-ext-diff", "--no-textconv",
                         self.base_sha, env=env).stdout
        stat_text = self.run("diff", "--cached", "--stat=100", "--no-color", self.base_sha, env=env).stdout.rstrip()
        names = self.run("diff", "--cached", "--name-only", "--no-renames", "-z", self.base_sha, env=env).stdout
        files = tuple(name for name in names.split("\0") if name)
        return Changes(patch=self.redact(patch), stat=stat_text, files=files)

    def reset_workspace(self, start: StartPoint) -> list[str]:
        """Put the work tree back to `start`'s files, after `changes()`, with this repository's git: the
        workspace's `.git`, which the agent could rewrite (config, common dir, refs, objects, reflogs), is
        never read. Files the agent added go, changed and deleted ones come back; git writes nothing
        through a symlinked directory. Returns the paths it wrote or removed."""
        env = self._index_env()
        names = self.run("diff-index", "--cached", "--name-only", "--no-renames", "-z", start.sha, env=env).stdout
        self.run("read-tree", "--reset", "-u", start.sha, env=env)
        return [name for name in names.split("\0") if name]

    def index_of(self, sha: str) -> bytes:
        """A fresh index file holding `sha`'s tree (no stat data: the next git status refreshes it)."""
        path = self.directory / "index-return"
        self.run("read-tree", sha, env={"GIT_INDEX_FILE": str(path)})
        try:
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def blobs(self, files: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """The staged content of each changed file (deleted files yield nothing): what a push would send."""
        env = git_environment(extra=self._index_env())
        for name in files:
            proc = subprocess.run(["git", f"--git-dir={self.bare}", *hardened_args(),
                                   "cat-file", "blob", f":{name}"], cwd=self.directory, env=env,
                                  capture_output=True, timeout=GIT_TIMEOUT, check=False)
            if proc.returncode == 0:
                yield name, proc.stdout

    def commit(self, message: str, author: Identity) -> str:
        """One commit on top of the base holding every change, by the bot."""
        tree = self.run("write-tree", env=self._index_env()).stdout.strip()
        sha = self.run("commit-tree", tree, "-p", self.base_sha, "-F", "-", env=identity_env(author),
                       stdin=self.redact(message)).stdout.strip()
        self.run("update-ref", "refs/heads/opi-delivery", sha)
        return sha

    def push(self, sha: str, branch: str, *, replaces: str = "") -> None:
        """Push `sha` to `branch` without force; a remote that moved on raises PushRejected. `replaces`: the
        branch's tip, which the caller checked is an ancestor of `sha` but this shallow copy does not hold;
        the push then goes through only while the branch is still there."""
        if not self.push_url:
            raise GitError("the checkout has no `origin` remote to push to")
        lease = [f"--force-with-lease=refs/heads/{branch}:{replaces}"] if replaces else []
        proc = self.run("push", "--porcelain", "--no-verify", *lease, RECEIVE_PACK, self.push_url,
                        f"{sha}:refs/heads/{branch}", with_token=True, check=False)
        if proc.returncode == 0:
            return
        output = self.redact((proc.stdout + "\n" + proc.stderr).strip())
        if any(word in output for word in ("[rejected]", "non-fast-forward", "fetch first", "stale info")):
            raise PushRejected(f"the push to {branch} was rejected because the branch moved on "
                               f"(someone pushed meanwhile): {output}", stderr=output)
        if "workflow" in output and ("without `workflows` permission" in output or "workflows" in output):
            raise WorkflowPushRefused(f"the push to {branch} was refused: it changes a file under "
                                      "`.github/workflows/`, which needs the `workflows` permission", stderr=output)
        raise GitError(f"`git push` to {branch} failed (exit {proc.returncode}): {output}", stderr=output)


@dataclass
class _SavedTree:
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> content
    modes: dict[str, int] = field(default_factory=dict)


class WorkspaceGuard:
    """The parts of the workspace's `.git` that make git run code (config, hooks, info), saved before the
    agent runs and put back byte for byte afterwards, so no later step, and no git the broker runs there,
    executes what the agent planted. A persisted checkout credential is removed for the run and restored."""

    SAVED = ("hooks", "info")
    REDIRECTS = ("commondir", "config.worktree")  # files that make git read config from elsewhere

    def __init__(self, git_dir: Path, log: object = None) -> None:
        self.git_dir = git_dir
        info = git_dir.lstat()
        self._identity = (info.st_dev, info.st_ino)
        self._owner = (info.st_uid, info.st_gid)
        self.config = (git_dir / "config").read_bytes()
        self.trees = {name: _save_tree(git_dir / name) for name in self.SAVED}
        # A linked worktree's git dir has a real `commondir`: what was there before is put back as it was.
        self.redirects = {name: _read_regular(git_dir / name) for name in self.REDIRECTS}

    def strip_credentials(self) -> list[str]:
        """Remove `http.*.extraheader` lines (actions/checkout's persisted token); returns their keys."""
        kept, removed, section = [], [], ""
        for line in self.config.decode("utf-8", "surrogateescape").splitlines(keepends=True):
            stripped = line.strip()
            if stripped.startswith("["):
                section = stripped
            key = stripped.split("=", 1)[0].strip().lower()
            if section.lower().startswith("[http") and key == "extraheader":
                removed.append(f"{section} extraheader")
                continue
            kept.append(line)
        if removed:
            _write_new(self.git_dir / "config", "".join(kept).encode("utf-8", "surrogateescape"), self._owner)
        return removed

    def intact(self) -> bool:
        try:
            info = self.git_dir.lstat()
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) == self._identity

    def restore(self) -> bool:
        """Put config, hooks and info back, and the files that make git read config or attributes from
        elsewhere (`commondir`, `config.worktree`) as they were: removed if planted. False when `.git`
        itself was replaced (then nothing is written through it: a planted link must not make root write
        elsewhere)."""
        if not self.intact():
            return False
        _write_new(self.git_dir / "config", self.config, self._owner)
        for name, saved in self.trees.items():
            _restore_tree(self.git_dir / name, saved, self._owner)
        for name, content in self.redirects.items():
            if content is None:
                _remove(self.git_dir / name)
            else:
                _write_new(self.git_dir / name, content, self._owner)
        return True

    def point_at(self, start: StartPoint, index: bytes) -> None:
        """HEAD, the start branch and the index as git would leave them after checking out `start`, written
        as files (no git runs in this `.git`; no planted link is followed). Only after `restore`."""
        if not self.intact():
            return
        if start.branch is not None:
            _write_beneath(self.git_dir, f"refs/heads/{start.branch}", f"{start.sha}\n".encode(), self._owner)
        head = f"ref: refs/heads/{start.branch}\n" if start.branch is not None else f"{start.sha}\n"
        _write_new(self.git_dir / "HEAD", head.encode(), self._owner)
        _write_new(self.git_dir / "index", index, self._owner)


def _save_tree(root: Path) -> _SavedTree:
    saved = _SavedTree()
    if not root.is_dir() or root.is_symlink():
        return saved
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            relative = str(path.relative_to(root))
            saved.files[relative] = path.read_bytes()
            saved.modes[relative] = stat.S_IMODE(path.stat().st_mode)
    return saved


def _read_regular(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None


def _remove(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path)  # does not follow symlinks inside
    else:
        path.unlink()


def _write_new(path: Path, data: bytes, owner: tuple[int, int], mode: int = 0o644) -> None:
    """Replace whatever is at `path` (file, link, directory) by a new regular file, never following a link."""
    _remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    if os.geteuid() == 0:
        os.chown(path, *owner, follow_symlinks=False)


def _write_beneath(root: Path, relative: str, data: bytes, owner: tuple[int, int]) -> None:
    """`_write_new` at `root/relative`, where every directory on the way is made a real one first: a
    planted link (or file) in the way is removed, never followed."""
    directory = root
    for part in Path(relative).parts[:-1]:
        directory = directory / part
        try:
            info = directory.lstat()
            real = stat.S_ISDIR(info.st_mode)
        except FileNotFoundError:
            real = False
        if not real:
            _remove(directory)
            directory.mkdir()
            if os.geteuid() == 0:
                os.chown(directory, *owner, follow_symlinks=False)
    _write_new(root / relative, data, owner)


def give_back(workspace: Path, names: Sequence[str], owner: tuple[int, int]) -> None:
    """Files and directories git wrote as root under `names` go to the workspace's owner (links untouched:
    lchown; nothing outside the workspace is reached, since git wrote through no link)."""
    if os.geteuid() != 0 or owner[0] == 0:
        return
    for name in names:
        path = workspace
        for part in Path(name).parts:
            path = path / part
            try:
                info = path.lstat()
            except FileNotFoundError:
                break
            if info.st_uid == 0:
                os.chown(path, *owner, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                break


def _restore_tree(root: Path, saved: _SavedTree, owner: tuple[int, int]) -> None:
    _remove(root)
    root.mkdir()
    if os.geteuid() == 0:
        os.chown(root, *owner, follow_symlinks=False)
    for relative, data in saved.files.items():
        target = root / relative
        for parent in reversed(target.relative_to(root).parents[:-1]):
            (root / parent).mkdir(exist_ok=True)
        _write_new(target, data, owner, saved.modes.get(relative, 0o644))


def coauthor_trailer(login: str, user_id: int) -> str:
    return f"Co-authored-by: {login} <{user_id}+{login}@users.noreply.github.com>"
