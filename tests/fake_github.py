"""A fake GitHub REST API on loopback, for subprocess runs of `opi action` (PyGithub with `base_url`).

It keeps a little state (pull requests, comments, reactions, permissions, opened PRs) and records every
request. Routes are registered with `route(method, pattern, handler)`, so other tests can add endpoints
(e.g. the artifact listing and a zip download answering 302) without touching this module:

    def list_artifacts(request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        return FakeResponse(200, {"total_count": 0, "artifacts": []})

    github.route("GET", r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/actions/artifacts", list_artifacts)

Later registrations win over earlier ones, so a test can also override a built-in route, and
`fail(method, pattern, status, message)` makes the next matching request fail once.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")


@dataclass
class FakeResponse:
    status: int = 200
    json_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as-is instead of json_body


Handler = Callable[[FakeRequest, "re.Match[str]"], FakeResponse]
_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"


class FakeGitHub:
    def __init__(self, *, token: str = "ghs_fake_token_for_tests_0123456789") -> None:
        self.token = token
        self.requests: list[FakeRequest] = []
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.failures: list[tuple[str, re.Pattern[str], FakeResponse]] = []
        self.permissions: dict[str, tuple[str, str]] = {}  # login -> (permission, role_name)
        self.pulls: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.reactions: list[dict[str, Any]] = []
        self.check_runs: dict[str, list[dict[str, Any]]] = {}  # head sha -> check runs
        self.review_comments: dict[int, list[dict[str, Any]]] = {}  # PR number -> review comments
        self.reviews: dict[int, list[dict[str, Any]]] = {}  # PR number -> reviews
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._register_builtin_routes()

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> FakeGitHub:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- configuration ------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method.upper(), re.compile(pattern + r"/?$"), handler))

    def fail(self, method: str, pattern: str, status: int, message: str = "failure",
             headers: dict[str, str] | None = None) -> None:
        self.failures.append((method.upper(), re.compile(pattern + r"/?$"),
                              FakeResponse(status, {"message": message}, headers or {})))

    def set_permission(self, login: str, permission: str, role_name: str | None = None) -> None:
        self.permissions[login] = (permission, role_name or permission)

    def add_pull(self, number: int, *, head_ref: str, base_ref: str = "main", repo: str = "o/r",
                 head_repo: str | None = None, head_sha: str = "0" * 40, title: str = "A pull request",
                 body: str = "") -> dict[str, Any]:
        pull = {
            "number": number, "title": title, "body": body, "state": "open",
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "url": f"{self.url}/repos/{repo}/pulls/{number}",
            "head": {"ref": head_ref, "sha": head_sha, "repo": {"full_name": head_repo or repo}},
            "base": {"ref": base_ref, "sha": "1" * 40, "repo": {"full_name": repo}},
        }
        self.pulls[number] = pull
        return pull

    # -- inspection ---------------------------------------------------------------------------------
    def calls(self, method: str | None = None, path_pattern: str | None = None) -> list[FakeRequest]:
        pattern = re.compile(path_pattern) if path_pattern else None
        return [r for r in self.requests
                if (method is None or r.method == method.upper()) and (pattern is None or pattern.search(r.path))]

    # -- dispatch -----------------------------------------------------------------------------------
    def handle(self, request: FakeRequest) -> FakeResponse:
        with self._lock:
            self.requests.append(request)
            for index, (method, pattern, failure) in enumerate(self.failures):
                if method == request.method and pattern.match(request.path):
                    del self.failures[index]
                    return failure
        if self.token and request.authorization not in (f"token {self.token}", f"Bearer {self.token}"):
            return FakeResponse(401, {"message": "Bad credentials"})
        for method, pattern, handler in reversed(self.routes):
            match = pattern.match(request.path)
            if method == request.method and match:
                with self._lock:
                    return handler(request, match)
        return FakeResponse(404, {"message": f"Not Found: {request.method} {request.path} (no fake route)"})

    def _register_builtin_routes(self) -> None:
        self.route("GET", _REPO, self._get_repo)
        self.route("GET", _REPO + r"/collaborators/(?P<user>[^/]+)/permission", self._get_permission)
        self.route("GET", _REPO + r"/issues/(?P<number>\d+)", self._get_issue)
        self.route("POST", _REPO + r"/issues/(?P<number>\d+)/comments", self._create_comment)
        self.route("GET", _REPO + r"/issues/comments/(?P<id>\d+)", self._get_comment)
        self.route("PATCH", _REPO + r"/issues/comments/(?P<id>\d+)", self._edit_comment)
        self.route("POST", _REPO + r"/issues/comments/(?P<id>\d+)/reactions", self._react("issue"))
        self.route("POST", _REPO + r"/pulls/comments/(?P<id>\d+)/reactions", self._react("review"))
        self.route("GET", _REPO + r"/pulls/(?P<number>\d+)", self._get_pull)
        self.route("GET", _REPO + r"/pulls", self._list_pulls)
        self.route("GET", _REPO + r"/pulls/(?P<number>\d+)/comments", self._list_review_comments)
        self.route("GET", _REPO + r"/pulls/(?P<number>\d+)/reviews", self._list_reviews)
        self.route("GET", _REPO + r"/commits/(?P<sha>[0-9a-f]+)/check-runs", self._list_check_runs)
        self.route("POST", _REPO + r"/pulls", self._create_pull)

    def _next_id(self) -> int:
        return next(self._ids)

    def _get_repo(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        full = f"{match['owner']}/{match['repo']}"
        return FakeResponse(200, {"id": 1, "name": match["repo"], "full_name": full, "default_branch": "main",
                                  "url": f"{self.url}/repos/{full}", "html_url": f"https://github.com/{full}"})

    def _get_permission(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        user = match["user"]
        if user not in self.permissions:
            return FakeResponse(404, {"message": f"{user} is not a user"})
        permission, role = self.permissions[user]
        return FakeResponse(200, {"permission": permission, "role_name": role, "user": {"login": user}})

    def _get_issue(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        number = int(match["number"])
        issue: dict[str, Any] = {"number": number, "title": f"Issue {number}", "state": "open"}
        if number in self.pulls:
            issue["pull_request"] = {"url": self.pulls[number]["url"]}
        return FakeResponse(200, issue)

    def _create_comment(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        comment_id = self._next_id()
        full = f"{match['owner']}/{match['repo']}"
        comment = {"id": comment_id, "body": request.json()["body"], "issue_number": int(match["number"]),
                   "url": f"{self.url}/repos/{full}/issues/comments/{comment_id}",
                   "html_url": f"https://github.com/{full}/issues/{match['number']}#issuecomment-{comment_id}",
                   "edits": 0}
        self.comments[comment_id] = comment
        return FakeResponse(201, comment)

    def _get_comment(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        comment = self.comments.get(int(match["id"]))
        return FakeResponse(200, comment) if comment else FakeResponse(404, {"message": "Not Found"})

    def _edit_comment(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        comment = self.comments.get(int(match["id"]))
        if comment is None:
            return FakeResponse(404, {"message": "Not Found"})
        comment["body"] = request.json()["body"]
        comment["edits"] += 1
        return FakeResponse(200, comment)

    def _react(self, kind: str) -> Handler:
        def handler(request: FakeRequest, match: re.Match[str]) -> FakeResponse:
            reaction = {"id": self._next_id(), "content": request.json()["content"], "kind": kind,
                        "comment_id": int(match["id"])}
            self.reactions.append(reaction)
            return FakeResponse(201, reaction)

        return handler

    def _get_pull(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        pull = self.pulls.get(int(match["number"]))
        return FakeResponse(200, pull) if pull else FakeResponse(404, {"message": "Not Found"})

    def _list_pulls(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        head = request.query.get("head", [""])[0]
        base = request.query.get("base", [""])[0]
        owner = match["owner"]
        found = [p for p in self.pulls.values()
                 if p["state"] == "open"
                 and (not head or f"{owner}:{p['head']['ref']}" == head)
                 and (not base or p["base"]["ref"] == base)]
        return FakeResponse(200, found)

    def _list_review_comments(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        return FakeResponse(200, self.review_comments.get(int(match["number"]), []))

    def _list_reviews(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        return FakeResponse(200, self.reviews.get(int(match["number"]), []))

    def _list_check_runs(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        runs = self.check_runs.get(match["sha"], [])
        return FakeResponse(200, {"total_count": len(runs), "check_runs": runs})

    def _create_pull(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        data = request.json()
        full = f"{match['owner']}/{match['repo']}"
        if any(p["head"]["ref"] == data["head"] and p["state"] == "open" for p in self.pulls.values()):
            return FakeResponse(422, {"message": "Validation Failed",
                                      "errors": [{"message": f"A pull request already exists for {data['head']}."}]})
        number = max([*self.pulls, 100]) + 1
        pull = self.add_pull(number, head_ref=data["head"], base_ref=data["base"], repo=full,
                             title=data["title"], body=data.get("body") or "")
        pull["created_by_api"] = True
        return FakeResponse(201, pull)


def _make_handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            # PyGithub prefixes paths with base_url's path (empty here); strip an /api/v3 GHES prefix too.
            path = parts.path.removeprefix("/api/v3")
            request = FakeRequest(self.command, path, parse_qs(parts.query),
                                  {k.lower(): v for k, v in self.headers.items()}, body)
            response = fake.handle(request)
            payload = response.raw if response.raw is not None else json.dumps(response.json_body).encode()
            self.send_response(response.status)
            headers = {"Content-Type": "application/json; charset=utf-8", **response.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch

    return RequestHandler
