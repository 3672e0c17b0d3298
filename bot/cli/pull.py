"""`opi pull <artifact-url|run-url>`: download a CI session artifact and print how to resume it.

Accepted URLs:
- `https://github.com/OWNER/REPO/actions/runs/RUN/artifacts/ID` (the link in the bot's comment),
- `https://github.com/OWNER/REPO/actions/runs/RUN` (every `opi-session-*` artifact of that run),
- `https://api.github.com/repos/OWNER/REPO/actions/artifacts/ID[/zip]`.

The token comes from `--token`, `GITHUB_TOKEN`, `GH_TOKEN` or `gh auth token`; the API from `--api-url`,
`GITHUB_API_URL`, or the URL's host (github.com → api.github.com, a GitHub Enterprise host → /api/v3).
The session lands in the sessions directory (`--session-dir`, `OPI_SESSIONS_DIR`, default
`~/.local/share/opi/sessions`). An existing different file of the same name is never overwritten
without `--force`.

The artifact REST client lives with the action (`bot.action.artifacts`); it is imported lazily, like the
`opi action` dispatch, so the CLI does not load it at start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from bot.action.artifacts import GitHubArtifacts, RemoteArtifact

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

_WEB_PATH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/actions/runs/(?P<run>\d+)"
                       r"(?:/artifacts/(?P<artifact>\d+)|/attempts/\d+|/job/\d+)?/?$")
_API_PATH = re.compile(r"^(?:/api/v3)?/repos/(?P<repo>[^/]+/[^/]+)/actions/"
                       r"(?:artifacts/(?P<artifact>\d+)(?:/zip)?|runs/(?P<run>\d+)(?:/artifacts)?)/?$")


class PullError(Exception):
    """A problem with the request itself (exit code 2)."""


@dataclass(frozen=True)
class Target:
    repo: str
    run_id: int | None
    artifact_id: int | None
    api_url: str  # derived from the URL's host


def parse_target(url: str) -> Target:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PullError(f"not a URL: {url!r} (expected https://github.com/OWNER/REPO/actions/runs/RUN"
                        "[/artifacts/ID])")
    host = parts.netloc
    for pattern, api in ((_API_PATH, f"{parts.scheme}://{host}"), (_WEB_PATH, _api_for_host(parts.scheme, host))):
        match = pattern.match(parts.path)
        if match:
            if pattern is _API_PATH and parts.path.startswith("/api/v3"):
                api += "/api/v3"
            run, artifact = match.group("run"), match.group("artifact")
            return Target(match.group("repo"), int(run) if run else None, int(artifact) if artifact else None,
                          api)
    raise PullError(f"cannot read {url!r}: expected a run URL (.../OWNER/REPO/actions/runs/RUN) or an "
                    "artifact URL (.../actions/runs/RUN/artifacts/ID)")


def _api_for_host(scheme: str, host: str) -> str:
    if host in ("github.com", "www.github.com"):
        return "https://api.github.com"
    return f"{scheme}://{host}/api/v3"  # GitHub Enterprise Server


def find_token(explicit: str | None, env: Mapping[str, str]) -> str | None:
    if explicit:
        return explicit
    for name in ("GITHUB_TOKEN", "GH_TOKEN"):
        if env.get(name):
            return env[name]
    gh = shutil.which("gh")
    if gh is None:
        return None
    try:
        done = subprocess.run([gh, "auth", "token"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    token = done.stdout.strip()
    return token if done.returncode == 0 and token else None


def build_parser() -> argparse.ArgumentParser:
    from bot.cli.args import OpiArgumentParser  # flags spelled out in full, the nearest one on a typo

    parser = OpiArgumentParser(
        prog="opi pull", description="Download a session that opi saved as a GitHub Actions artifact.",
        epilog="Without a token: gh run download RUN -R OWNER/REPO -n opi-session-N-RUN "
               "-D ~/.local/share/opi/sessions")
    parser.add_argument("url", help="the artifact URL from the bot's comment, or the run URL")
    parser.add_argument("--token", help="GitHub token (default: $GITHUB_TOKEN, $GH_TOKEN, `gh auth token`)")
    parser.add_argument("--api-url", help="REST API base (default: $GITHUB_API_URL or from the URL's host)")
    parser.add_argument("--session-dir", help="where to put the session (default: the session_dir setting, "
                                              "$OPI_SESSIONS_DIR or ~/.local/share/opi/sessions)")
    parser.add_argument("--force", action="store_true", help="overwrite a different local file of the same name")
    return parser


def run_pull(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser().parse_args(list(argv))
    try:
        target = parse_target(args.url)
        token = find_token(args.token, env)
        if token is None:
            raise PullError("no GitHub token: pass --token, set GITHUB_TOKEN or GH_TOKEN, or log in with "
                            "`gh auth login` (the token needs read access to the repository's Actions)")
    except PullError as exc:
        print(f"opi pull: {exc}", file=sys.stderr)
        return EXIT_USAGE
    api_url = args.api_url or env.get("GITHUB_API_URL") or target.api_url
    from bot.agent.config import SettingsError, load_settings
    from bot.agent.session_store import sessions_dir

    try:  # the directory `opi --resume` searches: the config's session_dir and OPI_SESSIONS_DIR apply
        resume_dir = sessions_dir(load_settings(Path.cwd()).session_path)
    except SettingsError as exc:
        print(f"opi pull: {exc}", file=sys.stderr)
        return EXIT_USAGE
    dest = sessions_dir(args.session_dir) if args.session_dir else resume_dir
    from bot.action.artifacts import ArtifactError  # lazy: the CLI does not load the action at start-up

    try:
        pulled = pull_sessions(target, token, api_url, dest, force=args.force)
    except (ArtifactError, PullError) as exc:
        print(f"opi pull: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for path, session_id in pulled:
        where = session_id if path.parent.resolve() == resume_dir.resolve() else str(path)
        print(f"Pulled session {session_id} to {path}")
        print(f"Resume it with:\n  opi --resume {where}")
    return EXIT_OK


def pull_sessions(target: Target, token: str, api_url: str, dest: Path, *,
                  force: bool = False) -> list[tuple[Path, str]]:
    """Download the target's session artifact(s) into dest; returns (path, session id) pairs."""
    from bot.action.artifacts import ARTIFACT_PREFIX, GitHubArtifacts

    api = GitHubArtifacts(target.repo, token, api_url=api_url)
    if target.artifact_id is not None:
        artifacts = [api.get(target.artifact_id)]
    else:
        assert target.run_id is not None
        found = api.run_artifacts(target.run_id)
        artifacts = [a for a in found if a.name.startswith(ARTIFACT_PREFIX)]
        if not artifacts:
            names = ", ".join(a.name for a in found) or "none"
            raise PullError(f"run {target.run_id} of {target.repo} has no {ARTIFACT_PREFIX}* artifact "
                            f"(its artifacts: {names})")
    return [_pull_one(api, artifact, dest, force) for artifact in artifacts]


def _pull_one(api: GitHubArtifacts, artifact: RemoteArtifact, dest: Path, force: bool) -> tuple[Path, str]:
    from bot.action.artifacts import extract_session

    data = api.download_zip(artifact)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".pull-") as staging:
        extracted = extract_session(data, Path(staging), source=f"artifact {artifact.name}")
        session_id = _session_id(extracted)
        target = dest / f"{session_id}.jsonl"
        if target.exists() and target.read_bytes() != extracted.read_bytes() and not force:
            if target.read_bytes().startswith(extracted.read_bytes()):
                return target, session_id  # the local copy already holds it and went on from there
            raise PullError(f"{target} already exists and differs from artifact {artifact.name}; "
                            "pass --force to overwrite it, or --session-dir to put the download elsewhere")
        extracted.replace(target)
    return target, session_id


def _session_id(path: Path) -> str:
    with path.open("rb") as handle:
        header = json.loads(handle.readline())
    session_id = header.get("id")
    if not isinstance(session_id, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", session_id):
        raise PullError(f"{path.name}: the session header has no usable id ({session_id!r})")
    return session_id
