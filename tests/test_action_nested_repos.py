"""The agent plants a nested repository where the pull request has a gitlink, and configures a clean filter
in it. Any git process that looks inside that repository (`git status` there, which git starts to see
whether a submodule changed) runs the filter with its own uid. The broker reads the agent's work tree with
git after the agent has finished, as root: it must never look inside, or the agent's code runs as root
and can read the secrets from the broker's memory.

A positive control inside the run (the agent's own `git status`, as its uid, leaving the nested index
stale) proves the plant fires whenever git looks inside.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import action_support as payloads
from tests.action_runner import REPO, Runner
from tests.action_support import git, removing_proof_files
from tests.fake_llm import Reply

pytestmark = pytest.mark.slow

PROOF = "/tmp/opi-nested-repo-proof"
# An empty commit anyone can recreate byte for byte: the agent rebuilds it so its nested repository's
# HEAD is exactly the commit the gitlink names (git then compares the nested work tree, running filters).
FIXED_COMMIT_ENV = {"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@example.com", "GIT_COMMITTER_NAME": "x",
                    "GIT_COMMITTER_EMAIL": "x@example.com", "GIT_AUTHOR_DATE": "1000000000 +0000",
                    "GIT_COMMITTER_DATE": "1000000000 +0000"}


def push_gitlink(runner: Runner) -> str:
    """The PR branch gets a gitlink at `sub` naming the fixed empty commit; returns the new head."""
    fixed = runner.tmp / "fixed"
    subprocess.run(["git", "init", "-q", str(fixed)], check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "sub"], cwd=fixed, check=True,
                   env={**os.environ, **FIXED_COMMIT_ENV})
    sha = git(fixed, "rev-parse", "HEAD")
    clone = runner.tmp / "author"
    git(runner.tmp, "clone", "-q", "--branch", "feature", str(runner.remote), clone.name)
    git(clone, "update-index", "--add", "--cacheinfo", f"160000,{sha},sub")
    git(clone, "-c", "user.name=a", "-c", "user.email=a@example.com", "commit", "-q", "-m", "add a submodule")
    git(clone, "push", "-q", "origin", "feature")
    return git(runner.remote, "rev-parse", "refs/heads/feature")


def plant_script() -> str:
    fixed_env = " ".join(f"{name}='{value}'" for name, value in FIXED_COMMIT_ENV.items())
    return textwrap.dedent(f"""\
        set -e
        rm -rf sub && mkdir sub && cd sub && git init -q
        env {fixed_env} git commit -q --allow-empty -m sub
        echo a > f && touch -d 2000-01-01 f && git add f
        git config filter.planted.clean "sh -c 'id -u > {PROOF}-\\$(id -u); cat'"
        printf 'f filter=planted\\n' > .gitattributes
        echo b > f && touch -d 2001-01-01 f
        cd .. && git -c safe.directory='*' --no-optional-locks status --porcelain > /dev/null
        echo planted
    """)


@pytest.fixture(autouse=True)
def _clean_proof_files() -> Iterator[None]:
    yield from removing_proof_files("opi-nested-repo-proof-")


@pytest.mark.parametrize("workspace_owner", [0, 1001], ids=["root-owned-workspace", "runner-owned-workspace"])
def test_the_broker_never_runs_a_filter_planted_in_a_nested_repository(runner: Runner, workspace_owner: int) -> None:
    head = push_gitlink(runner)
    runner.github.add_pull(7, head_ref="feature", repo=REPO, head_sha=head)
    runner.llm.enqueue_many([Reply(tool_calls=[("plant", "bash", {"command": plant_script()})]),
                             Reply(text="Done.")])
    env = runner.env("issue_comment", payloads.issue_comment("/opi fix", on_pull=True, number=7))
    if workspace_owner:  # as on a hosted runner: the checkout belongs to the runner user
        subprocess.run(["chown", "-R", f"{workspace_owner}:{workspace_owner}", str(runner.workspace)], check=True)
    proc = runner.run(env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    agent_uid = 65532 if workspace_owner == 0 else workspace_owner
    ran_as = sorted(path.name.rsplit("-", 1)[1] for path in Path("/tmp").glob("opi-nested-repo-proof-*"))
    assert str(agent_uid) in ran_as  # the control: the plant fires when git looks inside
    assert ran_as == [str(agent_uid)]  # and nothing else ever looked: no root, no other uid
