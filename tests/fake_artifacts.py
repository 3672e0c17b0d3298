"""A loopback fake of the Actions artifact service and of GitHub's artifact REST endpoints.

- Results service (twirp JSON): `POST /twirp/github.actions.results.api.v1.ArtifactService/CreateArtifact`
  answers a signed upload URL on this server; `FinalizeArtifact` checks size and `sha256:` hash against
  the uploaded bytes. The bearer token must be the runtime token the fake issued (`runtime_token()`), and
  the backend ids must be the ones in its `scp` claim.
- Blob storage (Azure-like): `PUT /blob/<key>?sig=...` with `x-ms-blob-type: BlockBlob`, or
  `&comp=block&blockid=` per block then `&comp=blocklist` with the XML block list.
- `ListArtifacts` (with `name_filter`) lists this run's finalized artifacts, as `@actions/artifact`'s
  `getArtifact` uses it; `CreateArtifact` answers 409 for a name this run already has.
- REST: `GET /repos/{o}/{r}/actions/artifacts[?name=]` (newest first, paginated), `.../artifacts/{id}`,
  `.../artifacts/{id}/zip` (302 to `/download/<id>?sig=...`, 410 when expired), and
  `.../actions/runs/{run}/artifacts`; `GET /repos/{o}/{r}/issues/{n}/comments` (oldest first, paginated
  with a `Link` header like GitHub's) from `add_comment(...)`.

Failures are injected per operation with `fail(operation, status, times)`; every request is recorded
in `requests`. `handle()` is transport-independent so the REST routes can also be mounted on the fake
GitHub server (`mount_on()`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SERVICE = "/twirp/github.actions.results.api.v1.ArtifactService/"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(status: int, data: Any) -> Response:
        return Response(status, json.dumps(data).encode(), {"Content-Type": "application/json"})


@dataclass
class FakeArtifact:
    id: int
    name: str
    run_id: int
    data: bytes = b""
    workflow_run_backend_id: str = ""
    workflow_job_run_backend_id: str = ""
    finalized: bool = False
    expired: bool = False
    digest: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    blob_key: str = ""
    head_repository_id: int | None = 1  # 1 is the repository itself; anything else a fork; None: not said

    def to_api(self, base: str, repo: str) -> dict[str, Any]:
        created = self.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "id": self.id, "node_id": f"MDg6QXJ0aWZhY3Q{self.id}", "name": self.name,
            "size_in_bytes": len(self.data), "url": f"{base}/repos/{repo}/actions/artifacts/{self.id}",
            "archive_download_url": f"{base}/repos/{repo}/actions/artifacts/{self.id}/zip",
            "expired": self.expired, "digest": f"sha256:{hashlib.sha256(self.data).hexdigest()}",
            "created_at": created, "updated_at": created,
            "expires_at": (self.created_at + timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "workflow_run": {"id": self.run_id, "repository_id": 1, "head_repository_id": self.head_repository_id,
                             "head_branch": "main", "head_sha": "0" * 40},
        }


def make_jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeArtifactService:
    def __init__(self, repo: str = "octo/repo", *, rest_token: str | None = "ghs_fake_token") -> None:
        self.repo = repo
        self.rest_token = rest_token
        self.run_backend_id = str(uuid.uuid4())
        self.job_backend_id = str(uuid.uuid4())
        self.run_id = 1000  # the GITHUB_RUN_ID uploads from this service belong to
        self.artifacts: list[FakeArtifact] = []
        self.requests: list[Request] = []
        self.failures: dict[str, list[int]] = {}
        self.blocks: dict[str, dict[str, bytes]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}  # issue number -> comments, oldest first
        self._next_id = 500
        self._lock = threading.Lock()
        self.base_url = ""  # set by start() or mount_on()
        self._server: ThreadingHTTPServer | None = None

    # -- set-up helpers --------------------------------------------------------------------------------
    def runtime_token(self, scp: str | None = None) -> str:
        scope = scp if scp is not None else (
            f"Actions.ExampleScope Actions.Results:{self.run_backend_id}:{self.job_backend_id}")
        return make_jwt({"scp": scope, "iss": "vstoken.actions.githubusercontent.com"})

    def fail(self, operation: str, status: int, times: int = 1) -> None:
        """Make the next `times` requests of `operation` (CreateArtifact, FinalizeArtifact, blob, zip,
        download, list) answer `status`."""
        self.failures.setdefault(operation, []).extend([status] * times)

    def add_artifact(self, name: str, data: bytes, *, run_id: int, age_minutes: float = 0,
                     expired: bool = False, from_fork: bool = False, origin_unknown: bool = False) -> FakeArtifact:
        with self._lock:
            self._next_id += 1
            head = None if origin_unknown else 2 if from_fork else 1
            artifact = FakeArtifact(id=self._next_id, name=name, run_id=run_id, data=data, finalized=True,
                                    expired=expired, head_repository_id=head,
                                    created_at=datetime.now(UTC) - timedelta(minutes=age_minutes))
            self.artifacts.append(artifact)
        return artifact

    def add_comment(self, number: int, body: str, *, login: str = "github-actions[bot]") -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            comment = {"id": self._next_id, "body": body, "user": {"login": login,
                                                                   "type": "Bot" if login.endswith("[bot]") else "User"}}
            self.comments.setdefault(number, []).append(comment)
        return comment

    def by_name(self, name: str) -> FakeArtifact:
        matches = [a for a in self.artifacts if a.name == name]
        assert matches, f"no artifact named {name}; have {[a.name for a in self.artifacts]}"
        return matches[-1]

    def requests_to(self, fragment: str) -> list[Request]:
        return [r for r in self.requests if fragment in r.path]

    # -- serving -----------------------------------------------------------------------------------------
    def start(self) -> FakeArtifactService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                request = Request(self.command, parts.path, query,
                                  {k.lower(): v for k, v in self.headers.items()}, body)
                response = service.handle(request) or Response.json(404, {"message": "Not Found"})
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_POST = do_PUT = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeArtifactService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- routing -----------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response | None:
        with self._lock:
            self.requests.append(request)
        if request.method == "POST" and request.path.startswith(SERVICE):
            return self._twirp(request, request.path[len(SERVICE):])
        if request.method == "PUT" and request.path.startswith("/blob/"):
            return self._blob(request)
        if request.method == "GET" and request.path.startswith("/download/"):
            return self._download(request)
        if request.method == "GET":
            return self._rest(request)
        return None

    def _injected(self, operation: str) -> Response | None:
        with self._lock:
            pending = self.failures.get(operation)
            if not pending:
                return None
            status = pending.pop(0)
        headers = {"Retry-After": "0"} if status in (429, 503) else {}
        return Response(status, json.dumps({"code": "unavailable", "msg": f"injected {status}"}).encode(),
                        {"Content-Type": "application/json", **headers})

    # -- twirp -------------------------------------------------------------------------------------------
    def _twirp(self, request: Request, method: str) -> Response:
        injected = self._injected(method)
        if injected:
            return injected
        if request.headers.get("authorization") != f"Bearer {self.runtime_token()}":
            return Response.json(401, {"code": "unauthenticated", "msg": "bad runtime token"})
        body = request.json()
        if (body.get("workflow_run_backend_id") != self.run_backend_id
                or body.get("workflow_job_run_backend_id") != self.job_backend_id):
            return Response.json(400, {"code": "invalid_argument", "msg": "backend ids do not match the token"})
        if method == "CreateArtifact":
            return self._create(body)
        if method == "FinalizeArtifact":
            return self._finalize(body)
        if method == "ListArtifacts":
            return self._twirp_list(body)
        return Response.json(404, {"code": "bad_route", "msg": f"no method {method}"})

    def _create(self, body: dict[str, Any]) -> Response:
        if body.get("version") != 4:
            return Response.json(400, {"code": "invalid_argument", "msg": "version must be 4"})
        name = body.get("name")
        if any(a.name == name and a.run_id == self.run_id for a in self.artifacts):
            return Response.json(409, {"code": "already_exists", "msg": f"artifact {name} already exists"})
        with self._lock:
            self._next_id += 1
            artifact = FakeArtifact(id=self._next_id, name=str(name), run_id=self.run_id,
                                    workflow_run_backend_id=self.run_backend_id,
                                    workflow_job_run_backend_id=self.job_backend_id,
                                    blob_key=uuid.uuid4().hex)
            self.artifacts.append(artifact)
        url = f"{self.base_url}/blob/{artifact.blob_key}?sv=2023-01-03&sig=s3cr3t%2Bsig"
        return Response.json(200, {"ok": True, "signed_upload_url": url})

    def _finalize(self, body: dict[str, Any]) -> Response:
        pending = [a for a in self.artifacts if a.name == body.get("name") and not a.finalized]
        if not pending:
            return Response.json(404, {"code": "not_found", "msg": "no artifact being uploaded with that name"})
        artifact = pending[-1]
        digest = f"sha256:{hashlib.sha256(artifact.data).hexdigest()}"
        if str(body.get("size")) != str(len(artifact.data)) or body.get("hash") != digest:
            return Response.json(400, {"code": "invalid_argument",
                                       "msg": f"size/hash mismatch: got {body.get('size')}/{body.get('hash')}, "
                                              f"stored {len(artifact.data)}/{digest}"})
        artifact.finalized, artifact.digest = True, digest
        return Response.json(200, {"ok": True, "artifact_id": str(artifact.id)})

    def _twirp_list(self, body: dict[str, Any]) -> Response:
        wanted = body.get("name_filter")
        items = [a for a in self.artifacts if a.finalized and a.run_id == self.run_id
                 and (wanted is None or a.name == wanted)]
        return Response.json(200, {"artifacts": [
            {"workflow_run_backend_id": self.run_backend_id, "workflow_job_run_backend_id": self.job_backend_id,
             "database_id": str(a.id), "name": a.name, "size": str(len(a.data)),
             "created_at": a.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")} for a in items]})

    # -- blob storage ------------------------------------------------------------------------------------
    def _blob(self, request: Request) -> Response:
        injected = self._injected("blob")
        if injected:
            return injected
        key = request.path.rsplit("/", 1)[-1]
        artifact = next((a for a in self.artifacts if a.blob_key == key), None)
        if artifact is None or request.query.get("sig") != "s3cr3t+sig":
            return Response(403, b"<Error><Code>AuthenticationFailed</Code></Error>")
        if artifact.finalized:
            return Response(409, b"<Error><Code>BlobImmutable</Code></Error>")
        comp = request.query.get("comp")
        if comp == "block":
            self.blocks.setdefault(key, {})[request.query["blockid"]] = request.body
        elif comp == "blocklist":
            ids = re.findall(r"<Latest>([^<]+)</Latest>", request.body.decode())
            staged = self.blocks.get(key, {})
            if any(block_id not in staged for block_id in ids):
                return Response(400, b"<Error><Code>InvalidBlockList</Code></Error>")
            artifact.data = b"".join(staged[block_id] for block_id in ids)
        elif request.headers.get("x-ms-blob-type") == "BlockBlob":
            artifact.data = request.body
        else:
            return Response(400, b"<Error><Code>MissingRequiredHeader</Code><Detail>x-ms-blob-type</Detail></Error>")
        return Response(201)

    # -- REST ----------------------------------------------------------------------------------------------
    def _rest(self, request: Request) -> Response | None:
        prefix = f"/repos/{self.repo}/actions/"
        comments = re.fullmatch(rf"/repos/{re.escape(self.repo)}/issues/(\d+)/comments", request.path)
        if not request.path.startswith(prefix) and comments is None:
            return None
        if self.rest_token and request.headers.get("authorization") not in (
                f"Bearer {self.rest_token}", f"token {self.rest_token}"):
            return Response.json(401, {"message": "Bad credentials"})
        if comments is not None:
            return self._list_comments(request, int(comments.group(1)))
        rest = request.path[len(prefix):]
        if rest == "artifacts":
            return self._list(request, lambda a: True)
        if match := re.fullmatch(r"runs/(\d+)/artifacts", rest):
            return self._list(request, lambda a: a.run_id == int(match.group(1)))
        if match := re.fullmatch(r"artifacts/(\d+)(/zip)?", rest):
            artifact = next((a for a in self.artifacts if a.id == int(match.group(1)) and a.finalized), None)
            if artifact is None:
                return Response.json(404, {"message": "Not Found"})
            if not match.group(2):
                return Response.json(200, artifact.to_api(self.base_url, self.repo))
            return self._zip_redirect(artifact)
        return None

    def _list(self, request: Request, keep: Any) -> Response:
        injected = self._injected("list")
        if injected:
            return injected
        items = [a for a in self.artifacts if a.finalized and keep(a)]
        if "name" in request.query:
            items = [a for a in items if a.name == request.query["name"]]
        items.sort(key=lambda a: (a.created_at, a.id), reverse=True)
        per_page = min(int(request.query.get("per_page", 30)), 100)
        page = int(request.query.get("page", 1))
        chunk = items[(page - 1) * per_page: page * per_page]
        return Response.json(200, {"total_count": len(items),
                                   "artifacts": [a.to_api(self.base_url, self.repo) for a in chunk]})

    def _list_comments(self, request: Request, number: int) -> Response:
        injected = self._injected("comments")
        if injected:
            return injected
        items = self.comments.get(number, [])
        per_page = min(int(request.query.get("per_page", 30)), 100)
        page = int(request.query.get("page", 1))
        last = max(1, -(-len(items) // per_page))
        url = f"{self.base_url}/repos/{self.repo}/issues/{number}/comments?per_page={per_page}"
        links = [f'<{url}&page={page + 1}>; rel="next"', f'<{url}&page={last}>; rel="last"'] if page < last else []
        headers = {"Link": ", ".join(links)} if links else {}
        chunk = items[(page - 1) * per_page: page * per_page]
        return Response(200, json.dumps(chunk).encode(), {"Content-Type": "application/json", **headers})

    def _zip_redirect(self, artifact: FakeArtifact) -> Response:
        injected = self._injected("zip")
        if injected:
            return injected
        if artifact.expired:
            return Response.json(410, {"message": "Artifact has expired"})
        return Response(302, headers={"Location": f"{self.base_url}/download/{artifact.id}?sig=dl"})

    def _download(self, request: Request) -> Response:
        injected = self._injected("download")
        if injected:
            return injected
        artifact_id = int(request.path.rsplit("/", 1)[-1])
        artifact = next((a for a in self.artifacts if a.id == artifact_id), None)
        if artifact is None or request.query.get("sig") != "dl":
            return Response(403, b"<Error><Code>AuthenticationFailed</Code></Error>")
        if "authorization" in request.headers:  # a real storage host would reject a stray GitHub token
            return Response(400, b"<Error><Code>InvalidAuthenticationInfo</Code></Error>")
        return Response(200, artifact.data, {"Content-Type": "application/zip"})


def mount_on(service: FakeArtifactService, github: Any, *, bot_login: str = "github-actions[bot]") -> None:
    """Serve the REST artifact routes from the fake GitHub (`tests.fake_github.FakeGitHub`), which checks
    the token itself; the zip redirect still points at this service, like GitHub's storage host. Also lists
    the fake GitHub's issue comments, authored by `bot_login` unless a comment names its own "user"."""
    from tests.fake_github import FakeRequest, FakeResponse

    service.rest_token = None

    def handler(request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        query = {k: v[-1] for k, v in request.query.items()}
        answer = service.handle(Request(request.method, request.path, query, request.headers, request.body))
        if answer is None:
            return FakeResponse(404, {"message": "Not Found"})
        return FakeResponse(answer.status, raw=answer.body, headers=answer.headers)

    repo = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/actions"
    for pattern in (r"/artifacts", r"/artifacts/\d+", r"/artifacts/\d+/zip", r"/runs/\d+/artifacts"):
        github.route("GET", repo + pattern, handler)

    def list_comments(request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        # The fake GitHub's own comments (those the action posted are the bot's; a test adds others with a
        # "user"), oldest first and paginated like GitHub, so continuation can read the thread's last report.
        number = int(match["number"])
        items = [{**c, "user": c.get("user") or {"login": bot_login, "type": "Bot"}}
                 for c in github.comments.values() if c.get("issue_number") == number]
        per_page = min(int(request.query.get("per_page", ["30"])[-1]), 100)
        page = int(request.query.get("page", ["1"])[-1])
        last = max(1, -(-len(items) // per_page))
        url = f"{github.url}{request.path}?per_page={per_page}"
        headers = {"Link": f'<{url}&page={page + 1}>; rel="next", <{url}&page={last}>; rel="last"'} if page < last else {}
        return FakeResponse(200, items[(page - 1) * per_page: page * per_page], headers)

    github.route("GET", r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/(?P<number>\d+)/comments", list_comments)

