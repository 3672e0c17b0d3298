"""`plan_branch`: where each kind of run works and how its result is delivered, as a table."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from bot.action.events import PullRequest, Task
from bot.action.inputs import Mode
from bot.action.main import BranchPlan, plan_branch

REPO = "o/r"


def pull(*, fork: bool = False, head: str = "feature") -> PullRequest:
    head_repo = "someone/r" if fork else REPO
    return PullRequest.model_validate({
        "number": 7, "title": "t", "head": {"ref": head, "sha": "a" * 40, "repo": {"full_name": head_repo}},
        "base": {"ref": "main", "sha": "b" * 40, "repo": {"full_name": REPO}}})


def task(kind: str, *, event: str = "issue_comment", number: int | None = 7, ref: str = "") -> Task:
    return Task(kind=kind, event_name=event, repo=REPO, instructions="do it", is_fix=False,  # type: ignore[arg-type]
                number=number, default_branch="main", ref=ref)


FORK_REASON = "This pull request comes from a fork, and opi never pushes to forks with the repository token."
COMMENT_REASON = "`mode: comment`: the patch is posted, not pushed."

CASES: list[tuple[str, Task, PullRequest | None, Mode, str, dict[str, Any]]] = [
    ("pr push", task("pr_comment"), pull(), "push", "",
     {"checkout": "pr_head", "branch": "feature", "push_to": "feature", "open_pr_into": None}),
    ("pr mode pr", task("pr_comment"), pull(), "pr", "",
     {"checkout": "new_branch", "branch": "opi/pr-7", "start_from": "feature", "push_to": "opi/pr-7",
      "open_pr_into": "feature"}),
    ("pr mode comment", task("pr_comment"), pull(), "comment", "",
     {"checkout": "pr_head", "branch": "feature", "push_to": None, "patch_only_reason": COMMENT_REASON}),
    ("review comment", task("review_comment", event="pull_request_review_comment"), pull(), "push", "",
     {"checkout": "pr_head", "branch": "feature", "push_to": "feature"}),
    ("fork pr, any mode", task("pr_comment"), pull(fork=True), "push", "",
     {"checkout": "pull_ref", "branch": "opi/pr-7", "push_to": None, "patch_only_reason": FORK_REASON}),
    ("fork pr, mode pr", task("pr_comment"), pull(fork=True), "pr", "",
     {"checkout": "pull_ref", "push_to": None, "open_pr_into": None}),
    ("issue", task("issue_comment"), None, "push", "",
     {"checkout": "new_branch", "branch": "opi/issue-7", "start_from": "main", "push_to": "opi/issue-7",
      "open_pr_into": "main"}),
    ("issue, base_branch input", task("issue_comment"), None, "pr", "develop",
     {"branch": "opi/issue-7", "start_from": "develop", "open_pr_into": "develop"}),
    ("issue, mode comment", task("issue_comment"), None, "comment", "",
     {"branch": "opi/issue-7", "start_from": "main", "push_to": None, "patch_only_reason": COMMENT_REASON}),
    ("schedule", task("scheduled", event="schedule", number=None), None, "push", "",
     {"branch": "opi/maintenance", "start_from": "main", "push_to": "opi/maintenance", "open_pr_into": "main"}),
    ("dispatch on a ref", task("scheduled", event="workflow_dispatch", number=None, ref="release/2"), None,
     "push", "", {"branch": "opi/maintenance", "start_from": "release/2", "open_pr_into": "release/2"}),
    ("dispatch, base_branch input wins", task("scheduled", event="workflow_dispatch", number=None,
                                              ref="release/2"), None, "push", "main",
     {"start_from": "main", "open_pr_into": "main"}),
]


@pytest.mark.parametrize(("name", "the_task", "the_pull", "mode", "base", "expected"), CASES,
                         ids=[case[0] for case in CASES])
def test_plan(name: str, the_task: Task, the_pull: PullRequest | None, mode: Mode, base: str,
              expected: dict[str, Any]) -> None:
    plan = asdict(plan_branch(the_task, the_pull, mode=mode, base_branch=base))
    assert {key: plan[key] for key in expected} == expected


def test_dry_run_works_where_it_is_and_pushes_nothing() -> None:
    assert plan_branch(task("pr_comment"), None, mode="push", dry_run=True) == BranchPlan(
        checkout="current", branch="", patch_only_reason="Dry run: nothing is pushed.")


def test_a_pull_request_task_without_its_pull_request_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="needs the pull request"):
        plan_branch(task("pr_comment"), None, mode="push")
