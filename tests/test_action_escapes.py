"""After the agent: what the broker (root) does with a workspace and processes the agent controlled.

- The workspace goes back to where the job had it (branch, files, index) without running git in the
  workspace's `.git`, which the agent can rewrite: a planted `commondir` with a smudge filter, a start
  branch moved to a commit whose tree turns a directory into a symlink, a reflog that is a symlink, must
  make root run, delete or write nothing.
- A process that forks and exits faster than one scan of /proc (a "pid hopper") is killed with the rest of
  the agent's uid: it must not outlive the agent, when the runner's directories are unlocked again.

Each attack runs on a root-owned workspace (agent uid 65532) and, where it matters, on the hosted-runner
layout (workspace and RUNNER_TEMP owned by 1001, the agent's uid).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import action_support as payloads
from tests.action_runner import FIXED_APP, REPO, Runner
from tests.action_support import git, removing_proof_files
from tests.fake_llm import Reply

pytestmark = pytest.mark.slow

OWNERS = pytest.mark.parametrize("workspace_owner", [0, 1001], ids=["root-owned-workspace", "runner-owned-workspace"])
PROOF = "/tmp/opi-escape-proof-"
VICTIM_DIR = Path("/tmp/opi-escape-victim")


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    shutil.rmtree(VICTIM_DIR, ignore_errors=True)
    VICTIM_DIR.mkdir(mode=0o700)  # root's: the agent cannot even list it
    (VICTIM_DIR / "file").write_text("root's file\n")
    yield from removing_proof_files(PROOF.rsplit("/", 1)[1])
    shutil.rmtree(VICTIM_DIR, ignore_errors=True)


def run_fix(runner: Runner, workspace_owner: int, *bash: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`/opi fix` on PR 7: the agent fixes app.py, adds a file, then runs each bash command."""
    runner.github.add_pull(7, head_ref="feature", repo=REPO)
    replies = [Reply(tool_calls=[("fix", "write", {"path": "app.py", "content": FIXED_APP})]),
               Reply(tool_calls=[("add", "write", {"path": "added/new.txt", "content": "new\n"})])]
    replies += [Reply(tool_calls=[(f"b{i}", "bash", {"command": command})]) for i, command in enumerate(bash)]
    runner.llm.enqueue_many([*replies, Reply(text="Done.")])
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7))
    github_env = runner.temp / "github_env_abc"
    github_env.write_text("", encoding="utf-8")
    env["GITHUB_ENV"] = str(github_env)
    if workspace_owner:  # as on a hosted runner: checkout, RUNNER_TEMP and file commands are the runner user's
        for path in (runner.workspace, runner.temp):
            subprocess.run(["chown", "-R", f"{workspace_owner}:{workspace_owner}", str(path)], check=True)
        runner.tmp.chmod(0o755)
    return runner.run(env), github_env


def owner_git(runner: Runner, *args: str) -> str:
    return git(runner.workspace, "-c", "safe.directory=*", *args)


@OWNERS
def test_the_workspace_goes_back_to_where_the_job_had_it(runner: Runner, workspace_owner: int) -> None:
    start = git(runner.workspace, "rev-parse", "HEAD")
    proc, _ = run_fix(runner, workspace_owner)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the workspace is back on `main`" in proc.stderr
    assert "could not all be killed" not in proc.stderr  # the uid sweep ended with nothing left
    assert owner_git(runner, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert owner_git(runner, "rev-parse", "HEAD") == start
    assert owner_git(runner, "--no-optional-locks", "status", "--porcelain", "--untracked-files=all") == ""
    assert not (runner.workspace / "added").exists()
    owned_by_root = [str(p) for p in runner.workspace.rglob("*") if p.lstat().st_uid == 0]
    assert workspace_owner == 0 or owned_by_root == []


COMMONDIR_FILTER = textwrap.dedent(f"""\
    set -e
    mkdir .git/evil
    cp -r .git/objects .git/refs .git/HEAD .git/config .git/evil/
    printf '[filter "p"]\\n\\tsmudge = sh -c "id -u > {PROOF}commondir-$(id -u); cat"\\n\\tclean = cat\\n' >> .git/evil/config
    mkdir -p .git/evil/info && echo '* filter=p' > .git/evil/info/attributes
    echo evil > .git/commondir
    echo planted
""")


@OWNERS
def test_a_planted_common_dir_runs_nothing(runner: Runner, workspace_owner: int) -> None:
    proc, github_env = run_fix(runner, workspace_owner, COMMONDIR_FILTER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "planted" in str([r.body for r in runner.llm.requests])
    assert list(Path("/tmp").glob(f"{PROOF.rsplit('/', 1)[1]}*")) == []
    assert github_env.read_text() == "" and not (runner.workspace / ".git" / "commondir").exists()


SYMLINKED_START = textwrap.dedent(f"""\
    set -e
    link=$(printf %s {VICTIM_DIR} | git hash-object -w --stdin)
    tree=$(printf '120000 blob %s\\td\\n' "$link" | git mktree)
    git update-ref refs/heads/main $(git -c user.name=x -c user.email=x@x commit-tree "$tree" -m evil)
    mkdir d && echo mine > d/file
    echo planted
""")


@OWNERS
def test_a_moved_start_branch_neither_deletes_through_a_link_nor_is_checked_out(runner: Runner,
                                                                                workspace_owner: int) -> None:
    start = git(runner.workspace, "rev-parse", "HEAD")
    proc, _ = run_fix(runner, workspace_owner, SYMLINKED_START)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (VICTIM_DIR / "file").read_text() == "root's file\n"
    assert owner_git(runner, "rev-parse", "HEAD") == start  # main as the job had it, not the agent's commit
    assert not (runner.workspace / "d").is_symlink()


def test_a_reflog_planted_as_a_link_is_not_written_through(runner: Runner) -> None:
    victim = VICTIM_DIR / "file"
    proc, _ = run_fix(runner, 0, f"rm -f .git/logs/HEAD && ln -s {victim} .git/logs/HEAD && echo planted")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert victim.read_text() == "root's file\n"


HOPPER = textwrap.dedent(r"""
    import os, sys, time
    temp, victim = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:  # succeeds only once the runner's directories are unlocked, i.e. after the agent
            os.symlink(victim, os.path.join(temp, "opi-7-4242.patch"))
            with open(os.path.join(temp, "github_env_abc"), "a") as env:
                env.write("INJECTED=1\n")
            open(sys.argv[3], "w").close()
            break
        except OSError:
            pass
        if os.fork():  # a new pid every hop: never the process a scan of /proc saw
            os._exit(0)
""")


def test_a_pid_hopper_dies_with_the_agent(runner: Runner) -> None:
    hopper = runner.tmp / "hop.py"
    hopper.write_text(HOPPER)
    escaped = Path(f"{PROOF}hopper")
    command = (f"setsid python3 {hopper} {runner.temp} {VICTIM_DIR / 'file'} {escaped} </dev/null >/dev/null 2>&1 & "
               "sleep 1; echo started")
    proc, github_env = run_fix(runner, 1001, command)
    time.sleep(1.5)  # what a survivor needs to notice the unlocked directories and act
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not escaped.exists() and github_env.read_text() == ""
    assert "could not all be killed" not in proc.stderr
    assert (VICTIM_DIR / "file").read_text() == "root's file\n"
    survivors = [entry for entry in os.listdir("/proc") if entry.isdigit() and _cmdline(entry).startswith(b"python3")
                 and str(hopper).encode() in _cmdline(entry)]
    assert survivors == []


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""
