"""Session artifacts: upload from inside the container, and list/download through the REST API.

Upload speaks the Actions artifact service (v4) the way `@actions/artifact` does, so the JSONL lands as
an artifact without an `actions/upload-artifact` step:

1. `POST $ACTIONS_RESULTS_URL/twirp/github.actions.results.api.v1.ArtifactService/CreateArtifact`
   with `{workflow_run_backend_id, workflow_job_run_backend_id, name, version: 4}`; the backend ids come
   from the `scp` claim of the `ACTIONS_RUNTIME_TOKEN` JWT (`Actions.Results:<run>:<job>`); the answer
   carries `signed_upload_url`.
2. Upload the zip to that URL as an Azure block blob: one `PUT` with `x-ms-blob-type: BlockBlob`, or for
   large files `PUT ...&comp=block&blockid=...` per block and a final `PUT ...&comp=blocklist`.
3. `POST .../FinalizeArtifact` with `{..., name, size, hash: "sha256:<hex>"}`; the answer carries
   `artifact_id`.

Each request is retried with backoff on connection errors, 429 and 5xx. A 409 on `CreateArtifact` means
this job already has an artifact of that name (the post step uploading what the main step already had):
`ListArtifacts` with a name filter finds it, and the upload counts as done. A failed upload never raises
out of `upload_session`: it returns an `UploadResult` with the reason, and the local file stays put.

Download goes through the REST API: `GET /repos/{o}/{r}/actions/artifacts` (newest first),
`GET .../actions/runs/{id}/artifacts`, and `GET .../actions/artifacts/{id}/zip`, which answers 302 to a
short-lived signed URL (410 once the artifact has expired).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import random
import re
import stat
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx2

SERVICE_PATH = "/twirp/github.actions.results.api.v1.ArtifactService"
ARTIFACT_PREFIX = "opi-session-"
SINGLE_PUT_LIMIT = 64 * 1024 * 1024  # above this the zip goes up in blocks
BLOCK_SIZE = 8 * 1024 * 1024
MAX_SESSION_BYTES = 1024 * 1024 * 1024  # refuse to inflate a zip member beyond this (zip bombs)


class ArtifactError(Exception):
    """Any artifact failure, with a message that says what and where."""


class ArtifactNotFound(ArtifactError):
    pass


class ArtifactExpired(ArtifactError):
    pass


class ArtifactConflict(ArtifactError):
    """HTTP 409: an artifact of that name already exists for this job (e.g. the post step uploading what the
    main step already had)."""


class _Retryable(ArtifactError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


# -- names and zips ----------------------------------------------------------------------------------

def session_artifact_name(number: int | None, run_id: str | int) -> str:
    """`opi-session-<issue-or-pr-number>-<run id>`; scheduled runs have no thread and say so."""
    return f"{ARTIFACT_PREFIX}{number if number is not None else 'scheduled'}-{run_id}"


def thread_prefix(number: int) -> str:
    return f"{ARTIFACT_PREFIX}{number}-"


def zip_session(path: Path, extras: Sequence[Path] = ()) -> bytes:
    """A zip holding the JSONL under its own name (what `gh run download` unpacks), plus `extras` such
    as the run's patch, each under its own name."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for item in (path, *extras):
            archive.writestr(item.name, _regular_file(item))
    return buffer.getvalue()


def _regular_file(path: Path) -> bytes:
    """The content of `path` if it is a regular file, never read through a link: what goes into a
    published artifact must be the file the broker wrote, not a link swapped in for it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ArtifactError(f"{path.name} is not a regular file; not uploaded")
        return handle.read()


def extract_session(data: bytes, dest_dir: Path, *, source: str = "artifact") -> Path:
    """Extract the one `.jsonl` of a session artifact into dest_dir (never outside it)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ArtifactError(f"{source} is not a zip file ({len(data)} bytes)") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and m.filename.endswith(".jsonl")]
        if not members:
            names = ", ".join(m.filename for m in archive.infolist()) or "nothing"
            raise ArtifactError(f"{source} holds no .jsonl session file (it holds {names})")
        member = max(members, key=lambda m: m.file_size)  # the session, should a stray file be beside it
        if member.file_size > MAX_SESSION_BYTES:
            raise ArtifactError(f"{source}: {member.filename} would inflate to {member.file_size} bytes; refused")
        name = PurePosixPath(member.filename).name  # drops any directory part, so no path traversal
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / name
        with archive.open(member) as src:
            content = src.read(MAX_SESSION_BYTES + 1)
    _check_session_header(content, f"{source} ({member.filename})")
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(content)
    partial.replace(target)  # never leaves a half-written session where `--resume` would find it
    return target


def _check_session_header(content: bytes, where: str) -> None:
    first = content.split(b"\n", 1)[0]
    try:
        header = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("type") != "session":
        raise ArtifactError(f"{where} is not a session file: its first line is not a session header")


# -- the runtime token -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackendIds:
    workflow_run_backend_id: str
    workflow_job_run_backend_id: str


def backend_ids_from_token(token: str) -> BackendIds:
    """Read the run and job backend ids from the JWT's `scp` claim. The signature is not verified: the
    service verifies it, we only need the claims it was issued with."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ArtifactError("ACTIONS_RUNTIME_TOKEN is not a JWT (expected three dot-separated parts)")
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        raise ArtifactError("ACTIONS_RUNTIME_TOKEN has an unreadable claims part") from None
    scopes = claims.get("scp") if isinstance(claims, dict) else None
    if not isinstance(scopes, str):
        raise ArtifactError("ACTIONS_RUNTIME_TOKEN has no `scp` claim")
    for scope in scopes.split(" "):
        pieces = scope.split(":")
        if len(pieces) == 3 and pieces[0] == "Actions.Results" and pieces[1] and pieces[2]:
            return BackendIds(pieces[1], pieces[2])
    raise ArtifactError("ACTIONS_RUNTIME_TOKEN grants no Actions.Results scope, so artifacts cannot be uploaded")


# -- retrying ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backoff:
    attempts: int = 5
    base_delay: float = 2.0
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_delay)
        return min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1)) * (0.5 + random.random() / 2)


Log = Callable[[str], None]


def _with_retries(what: str, backoff: Backoff, log: Log, operation: Callable[[], Any]) -> Any:
    import httpx2

    for attempt in range(1, backoff.attempts + 1):
        try:
            return operation()
        except (_Retryable, httpx2.TransportError) as exc:
            reason = str(exc) or type(exc).__name__
            if attempt == backoff.attempts:
                raise ArtifactError(f"{what} failed after {attempt} attempts: {reason}") from exc
            delay = backoff.delay(attempt, getattr(exc, "retry_after", None))
            log(f"{what}: attempt {attempt} of {backoff.attempts} failed ({reason}); retrying in {delay:.1f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _raise_for(response: httpx2.Response, what: str) -> None:
    """Retryable statuses become `_Retryable`; other failures a plain ArtifactError naming the status."""
    status = response.status_code
    if status < 300:
        return
    detail = _error_detail(response)
    message = f"{what}: HTTP {status}{': ' + detail if detail else ''}"
    if status in (408, 429) or status >= 500:
        raise _Retryable(message, _retry_after(response))
    if status == 409:
        raise ArtifactConflict(message)
    raise ArtifactError(message)


def _error_detail(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip()
    if isinstance(body, dict):  # twirp: {code, msg}; GitHub REST: {message}
        return str(body.get("msg") or body.get("message") or body)[:300]
    return str(body)[:300]


# -- upload ------------------------------------------------------------------------------------------

@dataclass
class UploadResult:
    name: str
    ok: bool
    size: int = 0
    sha256: str = ""
    artifact_id: int | None = None
    url: str | None = None
    error: str | None = None
    already_uploaded: bool = False  # the artifact existed (409) and was found by name: still a success


@dataclass(frozen=True)
class Uploaded:
    artifact_id: int
    sha256: str  # "" when the artifact already existed: its bytes were not sent again
    size: int
    already_uploaded: bool = False


class ArtifactUploader:
    """Client of the Actions results service, for one job (its backend ids come from the token)."""

    def __init__(self, results_url: str, runtime_token: str, *, backoff: Backoff | None = None,
                 log: Log | None = None, timeout: float = 60.0, single_put_limit: int = SINGLE_PUT_LIMIT,
                 block_size: int = BLOCK_SIZE) -> None:
        self.results_url = results_url.rstrip("/")
        self.single_put_limit = single_put_limit
        self.block_size = block_size
        self.token = runtime_token
        self.ids = backend_ids_from_token(runtime_token)
        self.backoff = backoff or Backoff()
        self.log: Log = log or (lambda _message: None)
        self.timeout = timeout

    def upload(self, name: str, data: bytes) -> tuple[int, str]:
        """Create, upload and finalize; returns (artifact_id, sha256 hex). Raises ArtifactError (and
        ArtifactConflict when the name is taken)."""
        import httpx2

        with httpx2.Client(timeout=self.timeout) as client:
            return self._create_upload_finalize(client, name, data)

    def upload_or_find(self, name: str, data: bytes) -> Uploaded:
        """Upload, or, when the service answers 409 because this job already has an artifact of that name
        (the main step uploaded it before it died, and this is the post step), find that artifact by name
        and return it as a success. Raises ArtifactError."""
        import httpx2

        with httpx2.Client(timeout=self.timeout) as client:
            try:
                artifact_id, digest = self._create_upload_finalize(client, name, data)
            except ArtifactConflict:
                self.log(f"artifact {name} already exists for this job; looking it up by name")
                found = self._find_by_name(client, name)
                if found is None:
                    raise ArtifactError(f"artifact {name!r} already exists for this job but is not listed: an "
                                        "earlier upload of it was interrupted before it was finalized") from None
                return found
        return Uploaded(artifact_id, digest, len(data))

    def _find_by_name(self, client: httpx2.Client, name: str) -> Uploaded | None:
        """`ListArtifacts` of the results service, filtered by name: the finalized artifacts of this run."""
        answer = self._twirp(client, "ListArtifacts", {**self._ids(), "name_filter": name})
        for item in answer.get("artifacts") or []:
            if not isinstance(item, dict) or item.get("name") != name:
                continue
            artifact_id = item.get("database_id") or item.get("databaseId")
            if artifact_id is None:
                continue
            return Uploaded(int(artifact_id), "", int(item.get("size") or 0), already_uploaded=True)
        return None

    def _create_upload_finalize(self, client: httpx2.Client, name: str, data: bytes) -> tuple[int, str]:
        digest = hashlib.sha256(data).hexdigest()
        created = self._twirp(client, "CreateArtifact", {**self._ids(), "name": name, "version": 4})
        signed_url = created.get("signed_upload_url") or created.get("signedUploadUrl")
        if not created.get("ok") or not isinstance(signed_url, str):
            raise ArtifactError(f"CreateArtifact for {name!r} was refused: {created}")
        self._upload_blob(client, signed_url, data)
        finalized = self._twirp(client, "FinalizeArtifact", {
            **self._ids(), "name": name, "size": str(len(data)), "hash": f"sha256:{digest}"})
        artifact_id = finalized.get("artifact_id") or finalized.get("artifactId")
        if not finalized.get("ok") or artifact_id is None:
            raise ArtifactError(f"FinalizeArtifact for {name!r} was refused: {finalized}")
        return int(artifact_id), digest

    def _ids(self) -> dict[str, str]:
        return {"workflow_run_backend_id": self.ids.workflow_run_backend_id,
                "workflow_job_run_backend_id": self.ids.workflow_job_run_backend_id}

    def _twirp(self, client: httpx2.Client, method: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.results_url}{SERVICE_PATH}/{method}"
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

        def call() -> dict[str, Any]:
            response = client.post(url, content=json.dumps(body).encode(), headers=headers)
            _raise_for(response, method)
            try:
                answer = response.json()
            except ValueError:
                raise _Retryable(f"{method}: the answer is not JSON: {response.text[:200]!r}") from None
            if not isinstance(answer, dict):
                raise ArtifactError(f"{method}: unexpected answer {answer!r}")
            return answer

        result: dict[str, Any] = _with_retries(method, self.backoff, self.log, call)
        return result

    def _upload_blob(self, client: httpx2.Client, signed_url: str, data: bytes) -> None:
        if len(data) <= self.single_put_limit:
            self._put(client, "blob upload", signed_url, data,
                      {"x-ms-blob-type": "BlockBlob", "Content-Type": "application/zip"})
            return
        block_ids: list[str] = []
        for index, start in enumerate(range(0, len(data), self.block_size)):
            block_id = base64.b64encode(f"block-{index:08d}".encode()).decode()  # equal lengths, as Azure requires
            block_ids.append(block_id)
            self._put(client, f"block {index}", _with_query(signed_url, f"comp=block&blockid={block_id}"),
                      data[start:start + self.block_size], {})
        block_list = "".join(f"<Latest>{block_id}</Latest>" for block_id in block_ids)
        xml = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{block_list}</BlockList>'.encode()
        self._put(client, "block list commit", _with_query(signed_url, "comp=blocklist"), xml,
                  {"Content-Type": "application/xml", "x-ms-blob-content-type": "application/zip"})

    def _put(self, client: httpx2.Client, what: str, url: str, data: bytes, headers: dict[str, str]) -> None:
        def call() -> None:
            _raise_for(client.put(url, content=data, headers=headers), what)

        _with_retries(what, self.backoff, self.log, call)


def _last_page(link: str) -> int:
    """The page number of `rel="last"` in a `Link` header; 1 when there is none (a single page)."""
    for part in link.split(","):
        if 'rel="last"' in part:
            match = re.search(r"[?&]page=(\d+)", part)
            if match:
                return max(1, int(match.group(1)))
    return 1


def _with_query(url: str, query: str) -> str:
    from urllib.parse import quote

    # blockid is base64 and may hold '+', '/' or '=': they must be escaped inside a query string.
    key, _, rest = query.partition("&blockid=")
    encoded = f"{key}&blockid={quote(rest, safe='')}" if rest else query
    return f"{url}{'&' if '?' in url else '?'}{encoded}"


def upload_session(path: Path, name: str, env: Mapping[str, str], *, backoff: Backoff | None = None,
                   log: Log | None = None, extras: Sequence[Path] = ()) -> UploadResult | None:
    """Upload the session at `path` as artifact `name`. Returns None when the runtime variables are
    absent (the workflow then uploads `session_path` itself), and never raises: a failure is reported in
    the result while the local file stays where it is."""
    token, results_url = env.get("ACTIONS_RUNTIME_TOKEN"), env.get("ACTIONS_RESULTS_URL")
    if not token or not results_url:
        return None
    try:
        data = zip_session(path, extras)
    except OSError as exc:
        return UploadResult(name, ok=False, error=f"cannot read the session file {path}: {exc}")
    try:
        uploader = ArtifactUploader(results_url, token, backoff=backoff, log=log)
        uploaded = uploader.upload_or_find(name, data)
    except ArtifactError as exc:
        return UploadResult(name, ok=False, size=len(data), error=str(exc))
    except Exception as exc:  # an upload bug must not fail the run the session describes
        return UploadResult(name, ok=False, size=len(data), error=f"{type(exc).__name__}: {exc}")
    return UploadResult(name, ok=True, size=uploaded.size, sha256=uploaded.sha256,
                        artifact_id=uploaded.artifact_id, url=artifact_web_url(env, uploaded.artifact_id),
                        already_uploaded=uploaded.already_uploaded)


def artifact_web_url(env: Mapping[str, str], artifact_id: int) -> str | None:
    """The page `actions/upload-artifact` links to: .../actions/runs/<run>/artifacts/<id>."""
    repo, run_id = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if not repo or not run_id:
        return None
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    return f"{server}/{repo}/actions/runs/{run_id}/artifacts/{artifact_id}"


# -- REST: list and download -----------------------------------------------------------------------

@dataclass(frozen=True)
class RemoteArtifact:
    id: int
    name: str
    size_in_bytes: int
    expired: bool
    created_at: str
    run_id: int | None
    head_sha: str | None
    # The run's repository and the repository its code came from: they differ for fork pull-request runs.
    repository_id: int | None = None
    head_repository_id: int | None = None

    @property
    def from_fork(self) -> bool:
        return (self.repository_id is not None and self.head_repository_id is not None
                and self.repository_id != self.head_repository_id)

    @property
    def known_same_repository(self) -> bool:
        """Positive evidence that the run's code came from this repository (a listing's artifact is trusted
        only with it: GitHub may leave the ids out, e.g. once a fork is deleted)."""
        return self.repository_id is not None and self.repository_id == self.head_repository_id

    @staticmethod
    def from_api(data: Mapping[str, Any]) -> RemoteArtifact:
        run = data.get("workflow_run") or {}
        return RemoteArtifact(id=int(data["id"]), name=str(data["name"]),
                              size_in_bytes=int(data.get("size_in_bytes") or 0),
                              expired=bool(data.get("expired")), created_at=str(data.get("created_at") or ""),
                              run_id=int(run["id"]) if run.get("id") is not None else None,
                              head_sha=run.get("head_sha"), repository_id=run.get("repository_id"),
                              head_repository_id=run.get("head_repository_id"))


class GitHubArtifacts:
    """The repository's artifacts through the REST API (`GITHUB_API_URL`, default api.github.com)."""

    def __init__(self, repo: str, token: str, *, api_url: str = "https://api.github.com",
                 timeout: float = 60.0, backoff: Backoff | None = None, log: Log | None = None) -> None:
        if repo.count("/") != 1:
            raise ArtifactError(f"repository must be OWNER/NAME, got {repo!r}")
        self.repo = repo
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.backoff = backoff or Backoff(attempts=3, base_delay=1.0)
        self.log: Log = log or (lambda _message: None)

    def _client(self) -> httpx2.Client:
        import httpx2

        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": "opi-bot"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # Redirects are followed by hand so the token never travels to the storage host.
        return httpx2.Client(timeout=self.timeout, headers=headers, follow_redirects=False)

    def _get_json(self, path: str, params: dict[str, str | int] | None = None) -> Any:
        return self._get_page(path, params)[0]

    def _get_page(self, path: str, params: dict[str, str | int] | None = None) -> tuple[Any, str]:
        """The JSON answer and its `Link` header (for pagination)."""
        url = f"{self.api_url}/repos/{self.repo}{path}"

        def call() -> tuple[Any, str]:
            with self._client() as client:
                response = client.get(url, params=params)
            self._raise_rest(response, f"GET {path}")
            try:
                return response.json(), response.headers.get("link", "")
            except ValueError:
                raise ArtifactError(f"GET {path}: the answer is not JSON: {response.text[:200]!r}") from None

        result: tuple[Any, str] = _with_retries(f"GET {path}", self.backoff, self.log, call)
        return result

    def issue_comments_newest_first(self, number: int, *, max_pages: int = 3) -> Iterator[dict[str, Any]]:
        """The comments of issue/PR `number`, newest first. GitHub lists them oldest first, so this reads
        the first page only for its `Link: rel="last"`, then walks back from the last page: the newest
        report is found in two requests however long the thread."""
        path = f"/issues/{number}/comments"
        first, link = self._get_page(path, {"per_page": 100, "page": 1})
        last = _last_page(link)
        for page in range(last, max(0, last - max_pages), -1):
            data = first if page == 1 else self._get_page(path, {"per_page": 100, "page": page})[0]
            if not isinstance(data, list):
                raise ArtifactError(f"GET {path}: expected a list of comments, got {type(data).__name__}")
            yield from (item for item in reversed(data) if isinstance(item, dict))

    def _raise_rest(self, response: httpx2.Response, what: str) -> None:
        status = response.status_code
        if status == 404:
            raise ArtifactNotFound(f"{what}: not found in {self.repo} (HTTP 404: {_error_detail(response)}); "
                                   "check the URL and that the token can read this repository's Actions")
        if status == 410:
            raise ArtifactExpired(f"{what}: the artifact has expired (HTTP 410); artifacts are kept for the "
                                  "repository's retention period")
        if status in (401, 403) and response.headers.get("x-ratelimit-remaining") != "0":
            raise ArtifactError(f"{what}: HTTP {status}: {_error_detail(response)} (is the token valid, with "
                                "`actions: read` permission?)")
        _raise_for(response, what)

    def list_artifacts(self, *, prefix: str = "", name: str | None = None, max_pages: int = 10) -> list[RemoteArtifact]:
        """Artifacts of the repository whose name starts with prefix, newest first."""
        found: list[RemoteArtifact] = []
        for page in range(1, max_pages + 1):
            params: dict[str, str | int] = {"per_page": 100, "page": page}
            if name is not None:
                params["name"] = name
            data = self._get_json("/actions/artifacts", params)
            batch = [RemoteArtifact.from_api(item) for item in data.get("artifacts", [])]
            found += [artifact for artifact in batch if artifact.name.startswith(prefix)]
            if len(batch) < 100 or (found and prefix):
                break  # the listing is newest first: the first page with a match holds the newest
        return sorted(found, key=lambda a: (a.created_at, a.id), reverse=True)

    def run_artifacts(self, run_id: int) -> list[RemoteArtifact]:
        data = self._get_json(f"/actions/runs/{run_id}/artifacts", {"per_page": 100})
        return [RemoteArtifact.from_api(item) for item in data.get("artifacts", [])]

    def get(self, artifact_id: int) -> RemoteArtifact:
        return RemoteArtifact.from_api(self._get_json(f"/actions/artifacts/{artifact_id}"))

    def download_zip(self, artifact: RemoteArtifact) -> bytes:
        """The artifact's zip: the API answers 302 to a signed URL, fetched without our token."""
        if artifact.expired:
            raise ArtifactExpired(f"artifact {artifact.name} (id {artifact.id}) has expired and can no longer "
                                  "be downloaded")
        path = f"/actions/artifacts/{artifact.id}/zip"

        def call() -> bytes:
            import httpx2

            with self._client() as client:
                response = client.get(f"{self.api_url}/repos/{self.repo}{path}")
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise ArtifactError(f"GET {path}: redirect without a Location header")
                    with httpx2.Client(timeout=self.timeout, follow_redirects=True) as storage:
                        response = storage.get(location)
                    self._raise_storage(response, artifact)
                    return response.content
            self._raise_rest(response, f"GET {path}")
            return response.content

        data: bytes = _with_retries(f"download of {artifact.name}", self.backoff, self.log, call)
        return data

    def _raise_storage(self, response: httpx2.Response, artifact: RemoteArtifact) -> None:
        if response.status_code in (403, 404, 410):
            raise ArtifactExpired(f"the download link of artifact {artifact.name} was refused (HTTP "
                                  f"{response.status_code}); it may have expired")
        _raise_for(response, f"download of {artifact.name}")
