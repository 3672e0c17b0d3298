"""Every GitHub call the action makes, through PyGithub against `responses`: the request sent, the success
case and each failure (403, 404, 422, rate limit) as a clear GitHubError."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses

from bot.action.github_api import GitHubClient, GitHubError
from bot.action.redact import Redactor

API = "https://api.github.test"
# PyGithub spells the default port out in the URLs it requests.
BASE = "https://api.github.test:443/repos/octo/hello"
TOKEN = "ghs_0123456789abcdefghijklmnopqrstuv"


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def client() -> GitHubClient:
    return GitHubClient(TOKEN, "octo/hello", api_url=API, redact=Redactor())


def _only_call(mock: responses.RequestsMock) -> Any:
    assert len(mock.calls) == 1, [c.request.url for c in mock.calls]
    request = mock.calls[0].request
    assert request.headers["Authorization"] == f"token {TOKEN}"
    return request


def _body(request: Any) -> Any:
    return json.loads(request.body)


# -- permission -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("permission", "role", "can_write"), [
    ("admin", "admin", True), ("write", "maintain", True), ("write", "write", True),
    ("read", "triage", False), ("read", "read", False), ("none", "none", False),
])
def test_permission_reads_role_name_and_permission(mock: responses.RequestsMock, client: GitHubClient,
                                                   permission: str, role: str, can_write: bool) -> None:
    mock.get(f"{BASE}/collaborators/alice/permission", json={"permission": permission, "role_name": role})
    result = client.permission("alice")
    assert (result.permission, result.role_name, result.can_write) == (permission, role, can_write)
    assert _only_call(mock).method == "GET"


def test_permission_of_a_non_collaborator_is_none(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.get(f"{BASE}/collaborators/stranger/permission", status=404, json={"message": "Not Found"})
    assert not client.permission("stranger").can_write


def test_permission_without_role_name_falls_back_to_permission(mock: responses.RequestsMock,
                                                               client: GitHubClient) -> None:
    mock.get(f"{BASE}/collaborators/old/permission", json={"permission": "write"})
    assert client.permission("old").can_write


# -- each call, success ---------------------------------------------------------------------------------
def test_reaction_on_an_issue_comment(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.post(f"{BASE}/issues/comments/11/reactions", status=201, json={"id": 1, "content": "eyes"})
    client.add_reaction("issue", 11)
    request = _only_call(mock)
    assert _body(request) == {"content": "eyes"}


def test_reaction_on_a_review_comment_uses_the_pulls_endpoint(mock: responses.RequestsMock,
                                                              client: GitHubClient) -> None:
    mock.post(f"{BASE}/pulls/comments/12/reactions", status=201, json={"id": 1, "content": "eyes"})
    client.add_reaction("review", 12, pull_number=3)
    assert _body(_only_call(mock)) == {"content": "eyes"}


def test_create_comment_redacts_the_body(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.post(f"{BASE}/issues/5/comments", status=201,
              json={"id": 99, "html_url": "https://github.com/octo/hello/issues/5#issuecomment-99", "body": "x"})
    ref = client.create_comment(5, f"token is {TOKEN}")
    assert ref.id == 99 and ref.html_url.endswith("issuecomment-99")
    assert _body(_only_call(mock)) == {"body": "token is ***"}


def test_edit_comment(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.patch(f"{BASE}/issues/comments/99", json={"id": 99, "body": "new"})
    client.edit_comment(99, "new")
    request = _only_call(mock)
    assert request.method == "PATCH" and _body(request) == {"body": "new"}


def test_get_pull(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.get(f"{BASE}/pulls/4", json={
        "number": 4, "title": "t", "body": None, "html_url": "h", "url": f"{BASE}/pulls/4",
        "head": {"ref": "feature", "sha": "a" * 40, "repo": {"full_name": "fork/hello"}},
        "base": {"ref": "main", "sha": "b" * 40, "repo": {"full_name": "octo/hello"}},
    })
    pull = client.get_pull(4)
    assert pull.head.ref == "feature" and pull.is_fork
    assert _only_call(mock).method == "GET"


def test_find_open_pull_filters_by_head_and_base(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.get(f"{BASE}/pulls", json=[{"number": 8, "html_url": "https://github.com/octo/hello/pull/8"}])
    found = client.find_open_pull("opi/issue-1", "main")
    assert found is not None and found.number == 8
    request = _only_call(mock)
    assert "head=octo%3Aopi%2Fissue-1" in request.url and "base=main" in request.url
    assert "state=open" in request.url


def test_find_open_pull_none(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.get(f"{BASE}/pulls", json=[])
    assert client.find_open_pull("opi/issue-1", "main") is None


def test_create_pull(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.post(f"{BASE}/pulls", status=201, json={"number": 9, "html_url": "https://github.com/octo/hello/pull/9"})
    ref = client.create_pull(title="opi: t", body=f"Resolves #1 {TOKEN}", head="opi/issue-1", base="main")
    assert ref.number == 9
    assert _body(_only_call(mock)) == {"title": "opi: t", "body": "Resolves #1 ***", "head": "opi/issue-1",
                                       "base": "main"}


def test_pull_feedback_collects_failing_checks_reviews_and_comments(mock: responses.RequestsMock,
                                                                    client: GitHubClient) -> None:
    sha = "c" * 40
    mock.get(f"{BASE}/commits/{sha}/check-runs", json={"total_count": 3, "check_runs": [
        {"id": 1, "name": "tests", "conclusion": "failure", "output": {"title": "2 failed", "summary": "x" * 2000}},
        {"id": 2, "name": "lint", "conclusion": "success", "output": {"title": "ok"}},
        {"id": 3, "name": "build", "conclusion": "timed_out", "output": {}},
    ]})
    mock.get(f"{BASE}/pulls/4/comments", json=[
        {"id": 5, "path": "a.py", "line": 3, "body": "rename", "user": {"login": "rev", "id": 1}},
        {"id": 6, "path": "b.py", "line": None, "original_line": 9, "body": "why?", "user": {"login": "rev", "id": 1}},
    ])
    mock.get(f"{BASE}/pulls/4/reviews", json=[
        {"id": 7, "state": "CHANGES_REQUESTED", "body": "needs tests", "user": {"login": "lead", "id": 2}},
        {"id": 8, "state": "APPROVED", "body": "lgtm", "user": {"login": "other", "id": 3}},
    ])
    feedback = client.pull_feedback(4, sha)
    assert feedback.failing_checks[0].startswith("- tests: failure: 2 failed - xxx")
    assert feedback.failing_checks[0].endswith("[...]") and feedback.failing_checks[1] == "- build: timed_out"
    assert feedback.review_comments == ("- a.py:3 (@rev): rename", "- b.py:9 (@rev): why?")
    assert feedback.reviews == ("- @lead: needs tests",)
    text = feedback.markdown()
    assert text.index("Failing checks") < text.index("Reviews asking") < text.index("Review comments:")
    assert len(feedback.markdown(limit=50)) < 80


def test_pull_feedback_failure_names_the_call(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.get(f"{BASE}/commits/{'c' * 40}/check-runs", status=403, json={"message": "Resource not accessible"})
    with pytest.raises(GitHubError, match="could not read the checks of ccccccc: HTTP 403"):
        client.pull_feedback(4, "c" * 40)


# -- each call, failures ------------------------------------------------------------------------------------
CALLS: dict[str, tuple[str, str, Callable[[GitHubClient], object]]] = {
    "permission": ("GET", f"{BASE}/collaborators/alice/permission", lambda c: c.permission("alice")),
    "reaction": ("POST", f"{BASE}/issues/comments/11/reactions", lambda c: c.add_reaction("issue", 11)),
    "review_reaction": ("POST", f"{BASE}/pulls/comments/12/reactions",
                        lambda c: c.add_reaction("review", 12, pull_number=1)),
    "create_comment": ("POST", f"{BASE}/issues/5/comments", lambda c: c.create_comment(5, "b")),
    "edit_comment": ("PATCH", f"{BASE}/issues/comments/99", lambda c: c.edit_comment(99, "b")),
    "get_pull": ("GET", f"{BASE}/pulls/4", lambda c: c.get_pull(4)),
    "find_pull": ("GET", f"{BASE}/pulls", lambda c: c.find_open_pull("b", "main")),
    "create_pull": ("POST", f"{BASE}/pulls", lambda c: c.create_pull(title="t", body="b", head="h", base="main")),
    "pull_feedback": ("GET", f"{BASE}/commits/{'c' * 40}/check-runs", lambda c: c.pull_feedback(4, "c" * 40)),
}

FAILURES = {
    "403": (403, {"message": "Resource not accessible by integration"}, {}, r"HTTP 403: Resource not accessible"),
    "404": (404, {"message": "Not Found"}, {}, r"HTTP 404: Not Found"),
    "422": (422, {"message": "Validation Failed", "errors": [{"message": "A pull request already exists"}]}, {},
            r"HTTP 422: Validation Failed \(A pull request already exists\)"),
    "rate_limit": (403, {"message": "API rate limit exceeded for installation ID 1."},
                   {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000000"},
                   r"rate limit exceeded \(resets at epoch 1700000000\)"),
    "secondary_rate_limit": (429, {"message": "You have exceeded a secondary rate limit."},
                             {"Retry-After": "60"}, r"rate limit"),
}


# A 404 for the permission call means "not a collaborator" (tested above), not a failure.
CASES = [(call, failure) for call in sorted(CALLS) for failure in sorted(FAILURES)
         if (call, failure) != ("permission", "404")]


@pytest.mark.parametrize(("call", "failure"), CASES)
def test_failures_become_clear_errors(mock: responses.RequestsMock, client: GitHubClient, call: str,
                                      failure: str) -> None:
    method, url, invoke = CALLS[call]
    status, body, headers, pattern = FAILURES[failure]
    mock.add(method, url, status=status, json=body, headers=headers)
    with pytest.raises(GitHubError, match=pattern) as info:
        invoke(client)
    assert info.value.status == status
    assert "could not" in str(info.value)
    assert len(mock.calls) == 1  # no retries: a failure is reported, not slept through


def test_error_messages_never_carry_the_token(mock: responses.RequestsMock, client: GitHubClient) -> None:
    mock.post(f"{BASE}/issues/5/comments", status=422, json={"message": f"bad body {TOKEN}"})
    with pytest.raises(GitHubError) as info:
        client.create_comment(5, "x")
    assert TOKEN not in str(info.value)


def test_connection_failure_is_reported(client: GitHubClient) -> None:
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{BASE}/pulls/4", body=ConnectionError("refused"))
        with pytest.raises(GitHubError, match="could not read pull request #4"):
            client.get_pull(4)


def test_missing_token_and_bad_repo_are_named() -> None:
    with pytest.raises(GitHubError, match="no GitHub token"):
        GitHubClient("", "octo/hello")
    with pytest.raises(GitHubError, match="OWNER/NAME"):
        GitHubClient(TOKEN, "hello")
