"""The artifact client against the loopback fake of the Actions results service and the REST API."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import zipfile
from pathlib import Path

import pytest

from bot.action.artifacts import (
    ArtifactError,
    ArtifactExpired,
    ArtifactNotFound,
    ArtifactUploader,
    Backoff,
    GitHubArtifacts,
    backend_ids_from_token,
    extract_session,
    session_artifact_name,
    thread_prefix,
    upload_session,
    zip_session,
)
from tests.fake_artifacts import FakeArtifactService, make_jwt

FAST = Backoff(attempts=3, base_delay=0.01, max_delay=0.05)
HEADER = {"type": "session", "version": 1, "id": "abc123", "timestamp": "2026-01-01T00:00:00Z", "cwd": "/w"}


@pytest.fixture
def session_file(tmp_path: Path) -> Path:
    path = tmp_path / "runner-temp" / "abc123.jsonl"
    path.parent.mkdir()
    lines = [HEADER] + [{"type": "message", "id": f"e{i}", "parent_id": f"e{i - 1}" if i else None,
                         "timestamp": "2026-01-01T00:00:00Z",
                         "message": {"role": "user", "content": f"line {i} " + "x" * 200}} for i in range(50)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def env_for(service: FakeArtifactService, **extra: str) -> dict[str, str]:
    return {"ACTIONS_RUNTIME_TOKEN": service.runtime_token(), "ACTIONS_RESULTS_URL": service.base_url + "/",
            "GITHUB_REPOSITORY": service.repo, "GITHUB_RUN_ID": str(service.run_id),
            "GITHUB_SERVER_URL": "https://github.example", **extra}


def unzip_single(data: bytes) -> tuple[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (name,) = archive.namelist()
        return name, archive.read(name)


# -- the runtime token ---------------------------------------------------------------------------------

def test_backend_ids_come_from_the_scp_claim() -> None:
    token = make_jwt({"scp": "Actions.ExampleScope Actions.Results:run-uuid:job-uuid"})
    ids = backend_ids_from_token(token)
    assert (ids.workflow_run_backend_id, ids.workflow_job_run_backend_id) == ("run-uuid", "job-uuid")


@pytest.mark.parametrize(("token", "problem"), [
    ("not-a-jwt", "not a JWT"),
    ("a.!!!.c", "unreadable claims"),
    (make_jwt({"sub": "x"}), "no `scp` claim"),
    (make_jwt({"scp": "Actions.ExampleScope Actions.Results:only-one"}), "no Actions.Results scope"),
])
def test_bad_runtime_tokens_are_named(token: str, problem: str) -> None:
    with pytest.raises(ArtifactError, match=problem):
        backend_ids_from_token(token)


def test_artifact_names() -> None:
    assert session_artifact_name(42, 987654) == "opi-session-42-987654"
    assert session_artifact_name(None, "77") == "opi-session-scheduled-77"
    assert session_artifact_name(4, 1).startswith(thread_prefix(4))
    assert not session_artifact_name(42, 1).startswith(thread_prefix(4))


# -- upload ------------------------------------------------------------------------------------------

def test_upload_sends_the_zip_whose_bytes_and_sha256_match(fake_artifacts: FakeArtifactService,
                                                           session_file: Path) -> None:
    result = upload_session(session_file, "opi-session-7-1000", env_for(fake_artifacts), backoff=FAST)
    assert result is not None and result.ok, result
    stored = fake_artifacts.by_name("opi-session-7-1000")
    assert stored.finalized
    assert result.artifact_id == stored.id
    assert result.url == f"https://github.example/octo/repo/actions/runs/1000/artifacts/{stored.id}"
    assert result.sha256 == hashlib.sha256(stored.data).hexdigest() and result.size == len(stored.data)
    assert unzip_single(stored.data) == ("abc123.jsonl", session_file.read_bytes())

    create = fake_artifacts.requests_to("CreateArtifact")[0].json()
    assert create == {"workflow_run_backend_id": fake_artifacts.run_backend_id,
                      "workflow_job_run_backend_id": fake_artifacts.job_backend_id,
                      "name": "opi-session-7-1000", "version": 4}
    finalize = fake_artifacts.requests_to("FinalizeArtifact")[0].json()
    assert finalize["size"] == str(len(stored.data))
    assert finalize["hash"] == "sha256:" + result.sha256
    (put,) = fake_artifacts.requests_to("/blob/")
    assert put.headers["x-ms-blob-type"] == "BlockBlob"
    assert "authorization" not in put.headers  # the signed URL is the credential; the token stays home


def test_large_uploads_go_up_in_blocks(fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    payload = tmp_path / "big.jsonl"
    noise = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(3000))  # does not compress
    payload.write_bytes(json.dumps(HEADER).encode() + b"\n" + noise)
    data = zip_session(payload)
    uploader = ArtifactUploader(fake_artifacts.base_url, fake_artifacts.runtime_token(), backoff=FAST,
                                single_put_limit=10_000, block_size=16_384)
    artifact_id, digest = uploader.upload("opi-session-1-1000", data)
    stored = fake_artifacts.by_name("opi-session-1-1000")
    assert stored.id == artifact_id and stored.data == data
    assert digest == hashlib.sha256(data).hexdigest()
    blocks = [r for r in fake_artifacts.requests_to("/blob/") if r.query.get("comp") == "block"]
    assert len(blocks) == -(-len(data) // 16_384) > 1
    assert fake_artifacts.requests_to("/blob/")[-1].query.get("comp") == "blocklist"


def test_transient_failures_are_retried(fake_artifacts: FakeArtifactService, session_file: Path) -> None:
    fake_artifacts.fail("CreateArtifact", 503, times=2)
    fake_artifacts.fail("blob", 500, times=1)
    fake_artifacts.fail("FinalizeArtifact", 429, times=2)
    logged: list[str] = []
    result = upload_session(session_file, "opi-session-7-1000", env_for(fake_artifacts), backoff=FAST,
                            log=logged.append)
    assert result is not None and result.ok, result
    assert len(fake_artifacts.requests_to("CreateArtifact")) == 3
    assert len(fake_artifacts.requests_to("/blob/")) == 2
    assert len(fake_artifacts.requests_to("FinalizeArtifact")) == 3
    assert any("CreateArtifact: attempt 1 of 3 failed" in line and "503" in line for line in logged)


def test_persistent_failure_is_reported_and_the_local_file_survives(
        fake_artifacts: FakeArtifactService, session_file: Path) -> None:
    before = session_file.read_bytes()
    fake_artifacts.fail("FinalizeArtifact", 503, times=10)
    result = upload_session(session_file, "opi-session-7-1000", env_for(fake_artifacts), backoff=FAST)
    assert result is not None and not result.ok
    assert result.error is not None
    assert "FinalizeArtifact failed after 3 attempts" in result.error and "503" in result.error
    assert session_file.read_bytes() == before
    assert len(fake_artifacts.requests_to("FinalizeArtifact")) == 3


def test_refusals_are_not_retried(fake_artifacts: FakeArtifactService, session_file: Path) -> None:
    scope = f"Actions.Results:{fake_artifacts.run_backend_id}:{fake_artifacts.job_backend_id}"
    env = env_for(fake_artifacts, ACTIONS_RUNTIME_TOKEN=make_jwt({"scp": scope, "other": 1}))
    result = upload_session(session_file, "opi-session-7-1000", env, backoff=FAST)
    assert result is not None and not result.ok
    assert result.error is not None and "HTTP 401" in result.error and "bad runtime token" in result.error
    assert len(fake_artifacts.requests_to("CreateArtifact")) == 1


def test_unreachable_service_is_reported(session_file: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"ACTIONS_RUNTIME_TOKEN": make_jwt({"scp": "Actions.Results:r:j"}),
           "ACTIONS_RESULTS_URL": f"http://127.0.0.1:{port}/"}
    result = upload_session(session_file, "opi-session-7-1", env, backoff=FAST)
    assert result is not None and not result.ok
    assert result.error is not None and "CreateArtifact failed after 3 attempts" in result.error
    assert session_file.exists()


def test_bad_token_in_env_is_reported_not_raised(session_file: Path) -> None:
    result = upload_session(session_file, "n", {"ACTIONS_RUNTIME_TOKEN": "garbage",
                                                "ACTIONS_RESULTS_URL": "http://127.0.0.1:9/"})
    assert result is not None and not result.ok and result.error is not None and "not a JWT" in result.error


def test_missing_session_file_is_reported(fake_artifacts: FakeArtifactService, tmp_path: Path) -> None:
    result = upload_session(tmp_path / "gone.jsonl", "n", env_for(fake_artifacts))
    assert result is not None and not result.ok and result.error is not None
    assert "cannot read the session file" in result.error


def test_without_runtime_variables_nothing_is_uploaded(session_file: Path) -> None:
    assert upload_session(session_file, "n", {}) is None
    assert upload_session(session_file, "n", {"ACTIONS_RUNTIME_TOKEN": "x"}) is None


# -- REST listing and download ------------------------------------------------------------------------------

def zipped(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


def session_bytes(session_id: str) -> bytes:
    return (json.dumps({**HEADER, "id": session_id}) + "\n").encode()


def test_listing_by_prefix_is_newest_first(fake_artifacts: FakeArtifactService) -> None:
    fake_artifacts.add_artifact("opi-session-4-10", b"a", run_id=10, age_minutes=30)
    fake_artifacts.add_artifact("opi-session-4-12", b"b", run_id=12, age_minutes=5)
    fake_artifacts.add_artifact("opi-session-42-13", b"c", run_id=13, age_minutes=1)
    fake_artifacts.add_artifact("other", b"d", run_id=13)
    api = GitHubArtifacts(fake_artifacts.repo, "ghs_fake_token", api_url=fake_artifacts.base_url)
    found = api.list_artifacts(prefix=thread_prefix(4))
    assert [a.name for a in found] == ["opi-session-4-12", "opi-session-4-10"]
    assert found[0].run_id == 12
    assert sorted(a.name for a in api.run_artifacts(13)) == ["opi-session-42-13", "other"]


def test_listing_pages_until_it_finds_the_thread(fake_artifacts: FakeArtifactService) -> None:
    fake_artifacts.add_artifact("opi-session-9-1", b"old", run_id=1, age_minutes=500)
    for index in range(120):
        fake_artifacts.add_artifact(f"noise-{index}", b"n", run_id=2, age_minutes=100 - index / 2)
    api = GitHubArtifacts(fake_artifacts.repo, "ghs_fake_token", api_url=fake_artifacts.base_url)
    assert [a.name for a in api.list_artifacts(prefix=thread_prefix(9))] == ["opi-session-9-1"]
    assert [r.query["page"] for r in fake_artifacts.requests_to("/actions/artifacts")] == ["1", "2"]


def test_download_follows_the_redirect_without_the_token(fake_artifacts: FakeArtifactService,
                                                         tmp_path: Path) -> None:
    artifact = fake_artifacts.add_artifact("opi-session-4-12", zipped("s1.jsonl", session_bytes("s1")),
                                           run_id=12)
    api = GitHubArtifacts(fake_artifacts.repo, "ghs_fake_token", api_url=fake_artifacts.base_url)
    data = api.download_zip(api.get(artifact.id))
    path = extract_session(data, tmp_path / "sessions")
    assert path == tmp_path / "sessions" / "s1.jsonl"
    assert path.read_bytes() == session_bytes("s1")
    (download,) = fake_artifacts.requests_to("/download/")
    assert "authorization" not in download.headers


def test_expired_and_missing_artifacts_are_named(fake_artifacts: FakeArtifactService) -> None:
    expired = fake_artifacts.add_artifact("opi-session-4-1", b"", run_id=1, expired=True)
    api = GitHubArtifacts(fake_artifacts.repo, "ghs_fake_token", api_url=fake_artifacts.base_url)
    with pytest.raises(ArtifactExpired, match="expired"):
        api.download_zip(api.get(expired.id))
    with pytest.raises(ArtifactNotFound, match="404"):
        api.get(99999)


def test_expired_flag_lagging_behind_still_gives_a_clear_410(fake_artifacts: FakeArtifactService) -> None:
    artifact = fake_artifacts.add_artifact("opi-session-4-1", b"zip", run_id=1)
    api = GitHubArtifacts(fake_artifacts.repo, "ghs_fake_token", api_url=fake_artifacts.base_url)
    listed = api.get(artifact.id)
    artifact.expired = True  # expires between listing and download
    with pytest.raises(ArtifactExpired, match="HTTP 410"):
        api.download_zip(listed)


def test_bad_credentials_are_named(fake_artifacts: FakeArtifactService) -> None:
    api = GitHubArtifacts(fake_artifacts.repo, "wrong", api_url=fake_artifacts.base_url)
    with pytest.raises(ArtifactError, match=r"HTTP 401: Bad credentials.*actions: read"):
        api.list_artifacts(prefix="opi-session-")


# -- extraction ---------------------------------------------------------------------------------------

def test_extract_refuses_what_is_not_a_session(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a zip file"):
        extract_session(b"PK-not-really", tmp_path)
    with pytest.raises(ArtifactError, match=r"no \.jsonl session file \(it holds notes.txt\)"):
        extract_session(zipped("notes.txt", b"hi"), tmp_path)
    with pytest.raises(ArtifactError, match="not a session header"):
        extract_session(zipped("x.jsonl", b'{"type": "message"}\n'), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_extract_never_writes_outside_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    path = extract_session(zipped("../../evil.jsonl", session_bytes("evil")), dest)
    assert path == dest / "evil.jsonl" and path.exists()
    assert not (tmp_path / "evil.jsonl").exists()


# -- 409: already uploaded ---------------------------------------------------------------------------------

def test_a_second_upload_of_the_same_name_finds_the_first(fake_artifacts: FakeArtifactService,
                                                          session_file: Path) -> None:
    first = upload_session(session_file, "opi-session-7-1000", env_for(fake_artifacts), backoff=FAST)
    logged: list[str] = []
    second = upload_session(session_file, "opi-session-7-1000", env_for(fake_artifacts), backoff=FAST,
                            log=logged.append)
    assert first is not None and second is not None and first.ok and second.ok, second
    assert second.already_uploaded and not first.already_uploaded
    assert second.artifact_id == first.artifact_id and second.url == first.url
    assert [a.name for a in fake_artifacts.artifacts] == ["opi-session-7-1000"]  # nothing created twice
    (listed,) = fake_artifacts.requests_to("ListArtifacts")
    assert listed.json()["name_filter"] == "opi-session-7-1000"
    assert any("already exists" in line for line in logged)


def test_a_409_for_an_interrupted_upload_is_a_named_failure(fake_artifacts: FakeArtifactService,
                                                            session_file: Path) -> None:
    fake_artifacts.fail("CreateArtifact", 409)
    result = upload_session(session_file, "opi-session-7-1000", env_for(fake_artifacts), backoff=FAST)
    assert result is not None and not result.ok
    assert result.error is not None and "interrupted before it was finalized" in result.error


# -- thread comments, newest first -------------------------------------------------------------------------

def test_issue_comments_are_read_newest_first_from_the_last_page(fake_artifacts: FakeArtifactService) -> None:
    fake_artifacts.rest_token = None
    for index in range(250):
        fake_artifacts.add_comment(4, f"comment {index}", login="someone")
    api = GitHubArtifacts(fake_artifacts.repo, "", api_url=fake_artifacts.base_url, backoff=FAST)
    fake_artifacts.requests.clear()
    comments = api.issue_comments_newest_first(4)
    assert [next(comments)["body"] for _ in range(3)] == ["comment 249", "comment 248", "comment 247"]
    pages = [r.query.get("page") for r in fake_artifacts.requests_to("/issues/4/comments")]
    assert pages == ["1", "3"]  # the first page only for its Link header, then the last one
    assert len(list(api.issue_comments_newest_first(4, max_pages=2))) == 150
    assert list(api.issue_comments_newest_first(5)) == []
