"""A fake GitHub REST API on loopback, for subprocess runs of `opi action` (PyGithub with `base_url`).

It keeps a little state (pull requests, comments, reactions, permissions, opened PRs) and records every
request. Routes are registered with `route(method, pattern, handler)`, so other tests can add endpoints
(e.g. the artifact listing and a zip download answering 302) without touching this module:

    def list_artifacts(request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        return FakeResponse(200, {"total_count": 0, "artifacts": []})

    github.route("GET", r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/actions/artifacts", list_artifacts)

Later registrations win over earlier ones, so a test can also override a built-in route, and
`fail(method, pattern, status, message)` makes the next matching request fail once.

For issue 10 it also plays a GitHub App (`install_app`: the JWT's RS256 signature is verified with the
app's real public key, installation tokens are minted for the installed repositories only and then
accepted like `token`: `minted` records each), check runs
shaped as GitHub's REST description says (`add_check_run`, with a job log served as GitHub does: 302 to
a signed URL on another host name, which answers 400 when sent an Authorization header, as Azure blob
storage does), review-comment replies, and a PR's commits and labels. `FakeGitHub(check_requests=True)`
validates each request body against GitHub's OpenAPI description (tests/github_openapi.py) and answers
422 naming the problem when it does not fit.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
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


# The lifecycle every loopback test server shares. It lives here, not in a module of its own, because this
# file is also served standalone (outside pytest, with only tests/ on sys.path) and imports no sibling.
class LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1 (an ephemeral port), served by a daemon thread; a context
    manager. A subclass says how requests are handled (`handler()`)."""

    poll_interval = 0.5  # how often serve_forever looks for shutdown(), in seconds

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": self.poll_interval},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, no trailing slash."""
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"


class FakeGitHub(LoopbackServer):
    def __init__(self, *, token: str = "ghs_fake_token_for_tests_0123456789", check_requests: bool = False) -> None:
        self.token = token
        self.check_requests = check_requests
        self.unauthenticated: list[re.Pattern[str]] = []  # routes that check credentials themselves (JWT, blobs)
        self.apps: dict[int, FakeApp] = {}  # app id -> app
        self.minted: list[dict[str, Any]] = []  # access token requests that succeeded (installation id, body)
        self.minted_tokens: set[str] = set()  # installation tokens handed out: accepted like `token`
        self.job_logs: dict[int, bytes] = {}  # job id -> log text
        self.blob_requests: list[FakeRequest] = []  # requests to the log storage host
        self.pull_commits: dict[int, list[dict[str, Any]]] = {}  # PR number -> commits
        self.users: dict[str, dict[str, Any]] = {}  # login -> user
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
        super().__init__()
        self._register_builtin_routes()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    # -- configuration ------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler, *, authenticated: bool = True) -> None:
        compiled = re.compile(pattern + r"/?$")
        self.routes.append((method.upper(), compiled, handler))
        if not authenticated:
            self.unauthenticated.append(compiled)

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
        for method, pattern, handler in reversed(self.routes):
            match = pattern.match(request.path)
            if method == request.method and match:
                if pattern not in self.unauthenticated and self.token and not self._authorized(request):
                    return FakeResponse(401, {"message": "Bad credentials"})
                invalid = self._invalid_request(request)
                if invalid:
                    return FakeResponse(422, {"message": f"Invalid request (OpenAPI): {invalid}"})
                with self._lock:
                    return handler(request, match)
        if self.token and not self._authorized(request):
            return FakeResponse(401, {"message": "Bad credentials"})
        return FakeResponse(404, {"message": f"Not Found: {request.method} {request.path} (no fake route)"})

    def _authorized(self, request: FakeRequest) -> bool:
        scheme, _, token = request.authorization.partition(" ")
        return scheme in ("token", "Bearer") and (token == self.token or token in self.minted_tokens)

    def _invalid_request(self, request: FakeRequest) -> str:
        if not self.check_requests or request.path.startswith("/_blobs/"):
            return ""
        try:
            from tests.github_openapi import validate_request
        except ImportError:  # served standalone with tests/ on sys.path
            from github_openapi import validate_request  # type: ignore[no-redef]
        try:
            validate_request(request.method, request.path, request.json() if request.body else None)
        except KeyError:
            return ""  # an operation outside the subset: not checked
        except Exception as exc:  # jsonschema.ValidationError, AssertionError, JSONDecodeError
            return str(exc).splitlines()[0]
        return ""

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
        self.route("GET", _REPO + r"/actions/jobs/(?P<job>\d+)/logs", self._job_log_redirect)
        self.route("GET", r"/_blobs/job-logs/(?P<job>\d+)", self._job_log_blob, authenticated=False)
        self.route("POST", _REPO + r"/pulls/(?P<number>\d+)/comments/(?P<id>\d+)/replies", self._reply)
        self.route("PATCH", _REPO + r"/pulls/comments/(?P<id>\d+)", self._edit_review_comment)
        self.route("GET", _REPO + r"/pulls/(?P<number>\d+)/commits", self._list_pull_commits)
        self.route("GET", _REPO + r"/issues/(?P<number>\d+)/labels", self._list_labels)
        self.route("GET", r"/app", self._get_app, authenticated=False)
        self.route("GET", _REPO + r"/installation", self._get_installation, authenticated=False)
        self.route("POST", r"/app/installations/(?P<id>\d+)/access_tokens", self._mint, authenticated=False)
        self.route("GET", r"/users/(?P<login>[^/]+)", self._get_user, authenticated=False)

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


    # -- issue 10: check runs, job logs, replies, commits, labels ------------------------------------------
    def add_check_run(self, head_sha: str, name: str, conclusion: str | None, *, app_slug: str = "github-actions",
                      log: str | bytes | None = None, output: dict[str, Any] | None = None,
                      details_url: str | None = None, repo: str = "o/r") -> dict[str, Any]:
        """A check run of `head_sha`; for a GitHub Actions one, `log` is its job's log (job id = run id)."""
        run_id = self._next_id()
        run = check_run_json(run_id, name, conclusion, head_sha=head_sha, app_slug=app_slug, repo=repo,
                             output=output, details_url=details_url)
        self.check_runs.setdefault(head_sha, []).append(run)
        if log is not None:
            self.job_logs[run_id] = log.encode() if isinstance(log, str) else log
        return run

    def add_pull_commit(self, number: int, sha: str, *, login: str | None, email: str,
                        message: str = "commit") -> dict[str, Any]:
        commit = {"sha": sha, "author": simple_user(login) if login else None,
                  "commit": {"message": message, "author": {"name": login or "x", "email": email},
                             "committer": {"name": login or "x", "email": email}}}
        self.pull_commits.setdefault(number, []).append(commit)
        return commit

    def _job_log_redirect(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        job = int(match["job"])
        if job not in self.job_logs:
            return FakeResponse(404, {"message": "Not Found"})
        # Another host name for the same server: the client must treat it as a foreign host.
        port = self.url.rsplit(":", 1)[1]
        location = f"http://localhost:{port}/_blobs/job-logs/{job}?sig=signed-{job}"
        return FakeResponse(302, None, {"Location": location}, raw=b"")

    def _job_log_blob(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        self.blob_requests.append(request)
        if request.authorization or request.query.get("sig") != [f"signed-{match['job']}"]:
            return FakeResponse(400, None, {"Content-Type": "application/xml"},
                                raw=b"<Error><Code>InvalidAuthenticationInfo</Code></Error>")
        return FakeResponse(200, None, {"Content-Type": "text/plain; charset=utf-8"},
                            raw=self.job_logs[int(match["job"])])

    def _reply(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        number, parent = int(match["number"]), int(match["id"])
        comment_id = self._next_id()
        full = f"{match['owner']}/{match['repo']}"
        comment = {"id": comment_id, "body": request.json()["body"], "in_reply_to_id": parent,
                   "html_url": f"https://github.com/{full}/pull/{number}#discussion_r{comment_id}", "edits": 0}
        self.review_comments.setdefault(number, []).append(comment)
        return FakeResponse(201, comment)

    def _edit_review_comment(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        for comments in self.review_comments.values():
            for comment in comments:
                if comment["id"] == int(match["id"]):
                    comment["body"] = request.json()["body"]
                    comment["edits"] = comment.get("edits", 0) + 1
                    return FakeResponse(200, comment)
        return FakeResponse(404, {"message": "Not Found"})

    def _list_pull_commits(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        return FakeResponse(200, self.pull_commits.get(int(match["number"]), []))

    def _list_labels(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        pull = self.pulls.get(int(match["number"])) or {}
        return FakeResponse(200, [{"id": i, "name": name} for i, name in enumerate(pull.get("labels", []))])

    # -- issue 10: a GitHub App -------------------------------------------------------------------------
    def install_app(self, app_id: int, public_key_pem: bytes, *, slug: str = "opi-test-app",
                    installation_id: int = 4242, repos: tuple[str, ...] = ("o/r",), bot_user_id: int = 90001,
                    permissions: dict[str, str] | None = None) -> FakeApp:
        app = FakeApp(app_id, public_key_pem, slug, installation_id, repos, permissions or {
            "contents": "write", "pull_requests": "write", "issues": "write", "actions": "read",
            "checks": "read", "metadata": "read"})
        self.apps[app_id] = app
        login = f"{slug}[bot]"
        self.users[login] = {**simple_user(login, bot_user_id, "Bot")}
        return app

    def _jwt_app(self, request: FakeRequest) -> FakeApp | FakeResponse:
        """The app whose key signed the request's JWT, or GitHub's 401."""
        import jwt

        scheme, _, token = request.authorization.partition(" ")
        if scheme != "Bearer" or token.count(".") != 2:
            return FakeResponse(401, {"message": "A JSON web token could not be decoded"})
        try:
            issuer = str(jwt.decode(token, options={"verify_signature": False}).get("iss"))
            app = self.apps.get(int(issuer))
        except (jwt.PyJWTError, ValueError):
            return FakeResponse(401, {"message": "A JSON web token could not be decoded"})
        if app is None:
            return FakeResponse(401, {"message": f"Integration not found: {issuer}"})
        try:
            claims = jwt.decode(token, app.public_key_pem, algorithms=["RS256"],
                                options={"require": ["iat", "exp", "iss"]}, leeway=60)
        except jwt.PyJWTError as exc:
            return FakeResponse(401, {"message": f"A JSON web token could not be decoded ({exc})"})
        if int(claims["exp"]) - int(claims["iat"]) > 660:
            return FakeResponse(401, {"message": "'Expiration time' claim ('exp') is too far in the future"})
        return app

    def _get_app(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        app = self._jwt_app(request)
        if isinstance(app, FakeResponse):
            return app
        return FakeResponse(200, integration_json(app.app_id, app.slug, app.permissions))

    def _get_installation(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        app = self._jwt_app(request)
        if isinstance(app, FakeResponse):
            return app
        full = f"{match['owner']}/{match['repo']}"
        if full not in app.repos:
            return FakeResponse(404, {"message": "Not Found",
                                      "documentation_url": "https://docs.github.com/rest/apps/apps"})
        return FakeResponse(200, installation_json(app, match["owner"]))

    def _mint(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        app = self._jwt_app(request)
        if isinstance(app, FakeResponse):
            return app
        if int(match["id"]) != app.installation_id:
            return FakeResponse(404, {"message": "Not Found"})
        body = request.json() or {}
        names = {repo.split("/")[1] for repo in app.repos}
        unknown = [name for name in body.get("repositories", []) if name not in names]
        if unknown:
            return FakeResponse(422, {"message": f"There is at least one repository that does not exist or is "
                                                 f"not accessible to the parent installation: {unknown}"})
        levels = {"read": 1, "write": 2, "admin": 3}
        wanted = body.get("permissions") or app.permissions
        denied = [k for k, v in wanted.items() if levels.get(app.permissions.get(k, ""), 0) < levels.get(v, 9)]
        if denied:
            return FakeResponse(422, {"message": "The permissions requested are not granted to this installation."})
        token = f"ghs_minted{len(self.minted):02d}" + "x" * 26
        self.minted.append({"installation_id": app.installation_id, "body": body, "token": token})
        self.minted_tokens.add(token)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        return FakeResponse(201, {"token": token, "expires_at": expires, "permissions": wanted,
                                  "repository_selection": "selected"})

    def _get_user(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        from urllib.parse import unquote

        user = self.users.get(unquote(match["login"]))
        return FakeResponse(200, user) if user else FakeResponse(404, {"message": "Not Found"})


@dataclass
class FakeApp:
    app_id: int
    public_key_pem: bytes
    slug: str
    installation_id: int
    repos: tuple[str, ...]
    permissions: dict[str, str]


def simple_user(login: str, user_id: int = 1, user_type: str = "User") -> dict[str, Any]:
    """A user as GitHub's REST description requires one."""
    api = f"https://api.github.com/users/{login}"
    return {
        "login": login, "id": user_id, "node_id": f"U_{user_id}", "type": user_type, "site_admin": False,
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}", "gravatar_id": "",
        "url": api, "html_url": f"https://github.com/{login}", "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}", "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs", "repos_url": f"{api}/repos", "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
    }


def integration_json(app_id: int, slug: str, permissions: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "id": app_id, "slug": slug, "node_id": f"A_{app_id}", "owner": simple_user("octo-org", 6, "Organization"),
        "name": slug, "description": None, "external_url": "https://example.com",
        "html_url": f"https://github.com/apps/{slug}", "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z", "permissions": permissions or {}, "events": [],
    }


def installation_json(app: FakeApp, owner: str) -> dict[str, Any]:
    return {
        "id": app.installation_id, "app_id": app.app_id, "app_slug": app.slug, "target_id": 6,
        "target_type": "Organization", "single_file_name": None, "repository_selection": "selected",
        "access_tokens_url": f"https://api.github.com/app/installations/{app.installation_id}/access_tokens",
        "html_url": f"https://github.com/organizations/{owner}/settings/installations/{app.installation_id}",
        "repositories_url": "https://api.github.com/installation/repositories", "events": [],
        "account": simple_user(owner, 6, "Organization"), "permissions": app.permissions,
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
        "suspended_by": None, "suspended_at": None,
    }


def check_run_json(run_id: int, name: str, conclusion: str | None, *, head_sha: str = "0" * 40,
                   app_slug: str = "github-actions", repo: str = "o/r", output: dict[str, Any] | None = None,
                   details_url: str | None = None) -> dict[str, Any]:
    """A check run as GitHub's REST description says one looks (Actions: details_url names the job)."""
    actions = app_slug == "github-actions"
    return {
        "id": run_id, "head_sha": head_sha, "node_id": f"CR_{run_id}", "external_id": "", "name": name,
        "url": f"https://api.github.com/repos/{repo}/check-runs/{run_id}",
        "html_url": f"https://github.com/{repo}/runs/{run_id}",
        "details_url": details_url or (f"https://github.com/{repo}/actions/runs/77/job/{run_id}" if actions
                                       else f"https://ci.example.com/build/{run_id}"),
        "status": "completed" if conclusion else "in_progress", "conclusion": conclusion,
        "started_at": "2026-01-01T00:00:00Z", "completed_at": "2026-01-01T00:01:00Z" if conclusion else None,
        "output": {"title": None, "summary": None, "text": None, "annotations_count": 0,
                   "annotations_url": f"https://api.github.com/repos/{repo}/check-runs/{run_id}/annotations",
                   **(output or {})},
        "check_suite": {"id": 5}, "pull_requests": [],
        "app": integration_json(15368 if actions else 777, app_slug),
    }


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
