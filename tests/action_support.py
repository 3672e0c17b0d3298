"""Webhook payloads for the action's tests: the real octokit/webhooks examples, and crafted variants made
by editing them, every one validated against the published JSON schema before a test uses it."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

FIXTURES = Path(__file__).resolve().parent / "data" / "github-webhooks"
SCHEMAS = FIXTURES / "schemas"

SCHEMA_FOR = {
    ("issue_comment", "created"): "issue_comment/created.schema.json",
    ("issue_comment", "edited"): "issue_comment/edited.schema.json",
    ("issue_comment", "deleted"): "issue_comment/deleted.schema.json",
    ("pull_request_review_comment", "created"): "pull_request_review_comment/created.schema.json",
    ("pull_request_review_comment", "edited"): "pull_request_review_comment/edited.schema.json",
    ("workflow_dispatch", None): "workflow_dispatch/event.schema.json",
}


def load(relative: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / relative).read_text(encoding="utf-8"))
    return data


@cache
def registry() -> Registry[Any]:
    resources = []
    for path in sorted((SCHEMAS / "common").glob("*.schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents, default_specification=DRAFT7)))
    return Registry().with_resources(resources)


def validate(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Raise jsonschema.ValidationError unless GitHub could really send this payload."""
    schema = json.loads((SCHEMAS / SCHEMA_FOR[(event, payload.get("action"))]).read_text(encoding="utf-8"))
    Draft7Validator(schema, registry=registry()).validate(payload)
    return payload


def issue_comment(body: str, *, on_pull: bool = False, action: str = "created", login: str = "Codertocat",
                  user_id: int = 21031067, user_type: str = "User", number: int = 1) -> dict[str, Any]:
    payload = copy.deepcopy(load(f"issue_comment/{action}.payload.json"))
    payload["comment"]["body"] = body
    for user in (payload["comment"]["user"], payload["sender"]):
        user.update(login=login, id=user_id, type=user_type)
    payload["issue"]["number"] = number
    if on_pull:
        repo = payload["repository"]["full_name"]
        payload["issue"]["pull_request"] = {
            "url": f"https://api.github.com/repos/{repo}/pulls/{number}",
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "diff_url": f"https://github.com/{repo}/pull/{number}.diff",
            "patch_url": f"https://github.com/{repo}/pull/{number}.patch",
            "merged_at": None,
        }
    return validate("issue_comment", payload)


def review_comment(body: str, *, fork: bool = False, login: str = "Codertocat", user_type: str = "User",
                   action: str = "created") -> dict[str, Any]:
    payload = copy.deepcopy(load(f"pull_request_review_comment/{action}.payload.json"))
    payload["comment"]["body"] = body
    for user in (payload["comment"]["user"], payload["sender"]):
        user.update(login=login, type=user_type)
    if fork:
        head_repo = payload["pull_request"]["head"]["repo"]
        head_repo["full_name"] = "someone/Hello-World"
        head_repo["owner"]["login"] = "someone"
        head_repo["fork"] = True
    return validate("pull_request_review_comment", payload)


def workflow_dispatch(prompt: str | None = None) -> dict[str, Any]:
    payload = copy.deepcopy(load("workflow_dispatch/payload.json"))
    payload["inputs"] = {"prompt": prompt} if prompt is not None else None
    return validate("workflow_dispatch", payload)


# -- git ---------------------------------------------------------------------------------------------------
def git(cwd: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def remote_and_clone(tmp_path: Path, *, branches: dict[str, dict[str, str]] | None = None) -> tuple[Path, Path]:
    """A bare remote holding `main` (and any `branches`: name -> files), and a clone of it on `main`,
    the way actions/checkout leaves the workspace."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "app.py").write_text("def add(a, b):\n    return a - b\n", encoding="utf-8")
    (seed / "README.md").write_text("# demo\n", encoding="utf-8")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "initial")
    for name, files in (branches or {}).items():
        git(seed, "checkout", "-q", "-b", name, "main")
        for file, content in files.items():
            (seed / file).write_text(content, encoding="utf-8")
        git(seed, "add", "-A")
        git(seed, "commit", "-q", "-m", f"work on {name}")
    git(seed, "checkout", "-q", "main")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    workspace = tmp_path / "workspace"
    git(tmp_path, "clone", "-q", "--branch", "main", str(remote), str(workspace))
    return remote, workspace


def push_from_elsewhere(tmp_path: Path, remote: Path, branch: str, file: str, content: str) -> str:
    """Someone else pushes to `branch` meanwhile; returns the new remote head."""
    other = tmp_path / f"other-{branch.replace('/', '-')}"
    git(tmp_path, "clone", "-q", "--branch", branch, str(remote), str(other))
    (other / file).write_text(content, encoding="utf-8")
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", "concurrent change")
    git(other, "push", "-q", "origin", branch)
    return git(other, "rev-parse", "HEAD")


# -- runner file commands ----------------------------------------------------------------------------------
def parse_github_output(text: str) -> dict[str, str]:
    """A `GITHUB_OUTPUT` file as the runner reads it: `name<<DELIMITER` blocks (the only form the action
    writes). A line of any other form fails the test, naming the line."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines) and lines[i]:
        name, marker, delimiter = lines[i].partition("<<")
        assert marker and name and delimiter, f"GITHUB_OUTPUT line {i + 1} is not `name<<DELIMITER`: {lines[i]!r}"
        assert delimiter in lines[i + 1:], f"GITHUB_OUTPUT: {name}'s delimiter {delimiter!r} never closes it"
        end = lines.index(delimiter, i + 1)
        values[name] = "\n".join(lines[i + 1:end])
        i = end + 1
    return values


# -- GitHub App keys ---------------------------------------------------------------------------------------
def rsa_key_pair() -> tuple[str, bytes]:
    """A fresh RSA key as a GitHub App's private key (PEM text) and its public key (PEM bytes), which
    tests/fake_github.py verifies JWTs with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public



def removing_proof_files(prefix: str) -> Iterator[None]:
    """For an autouse fixture: what an attack wrote to `/tmp/<prefix>*` (its proof that planted code ran)
    is removed before the test and after it, so a file left by an earlier run never counts."""
    for path in Path("/tmp").glob(f"{prefix}*"):
        path.unlink()
    yield
    for path in Path("/tmp").glob(f"{prefix}*"):
        path.unlink()
