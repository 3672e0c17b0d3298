"""GitHub App authentication: turn `app_id` + `app_private_key` into an installation token for one
repository, and the app's bot identity for commits.

Why an app: GitHub starts no workflow runs for pushes and pull requests made with the workflow's own
`GITHUB_TOKEN`, so after `/opi fix` the new head would get no checks. Pushes made with an app's
installation token do start them.

Steps (GitHub's REST API, with PyGithub doing the RS256 JWT):
1. a JWT signed with the app's private key (`iss` = app id, valid for five minutes);
2. `GET /repos/{owner}/{repo}/installation` for the installation id, unless it is given;
3. `POST /app/installations/{id}/access_tokens` asking for this repository only and only the
   permissions the action needs (`workflows: write` only when allowed);
4. `GET /app` for the app's slug and `GET /users/<slug>[bot]` for the bot user's id, which make the
   commit identity `<slug>[bot] <<id>+<slug>[bot]@users.noreply.github.com>`.

Every failure is an `AppAuthError` whose message starts with "GitHub App authentication failed" and says
which of the three usual causes it is: a key that is not a private key, a key or app id GitHub rejects,
an app not installed on the repository (or without the permissions asked for).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from bot.action.github_api import GitHubError, RetryPolicy, call_with_retries
from bot.action.redact import Redactor

if TYPE_CHECKING:
    from github import Github

T = TypeVar("T")

# What the action does with the token: push commits and branches, comment, open PRs, read CI logs.
BASE_PERMISSIONS: Mapping[str, str] = {
    "contents": "write",
    "pull_requests": "write",
    "issues": "write",
    "actions": "read",
    "checks": "read",
}
_PREFIX = "GitHub App authentication failed"


class AppAuthError(Exception):
    """The app's credentials, installation or permissions do not give a token. Fail before any work."""


@dataclass(frozen=True)
class AppToken:
    token: str
    expires_at: str
    installation_id: int
    app_slug: str
    permissions: Mapping[str, str]
    bot_name: str  # "<slug>[bot]"
    bot_email: str  # "<user id>+<slug>[bot]@users.noreply.github.com"


def requested_permissions(*, allow_workflows: bool = False) -> dict[str, str]:
    """The permissions asked for: the action's needs, plus `workflows: write` only when it may edit
    `.github/workflows/` (GitHub refuses any push touching them without it)."""
    permissions = dict(BASE_PERMISSIONS)
    if allow_workflows:
        permissions["workflows"] = "write"
    return permissions


def normalise_private_key(key: str) -> str:
    """Accept the PEM as pasted into a secret: surrounding blank lines, CRLF, or `\\n` escapes on one line."""
    text = key.strip().replace("\r\n", "\n")
    if "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")
    return text + "\n"


def mint_installation_token(app_id: str | int, private_key: str, repo: str, *,
                            installation_id: int | str | None = None, allow_workflows: bool = False,
                            api_url: str = "https://api.github.com", timeout: int = 30,
                            redact: Redactor | None = None,
                            sleep: Callable[[float], None] = time.sleep) -> AppToken:
    """An installation token for `repo` ("owner/name") only, with `requested_permissions()`.

    Raises AppAuthError naming the cause; the private key and the token never appear in its message.
    """
    redact = redact or Redactor()
    app = _parse_int(app_id, "app_id")
    owner, name = _split_repo(repo)
    key = _load_private_key(app, private_key)
    redact.add(private_key.strip())
    gh = _app_client(app, key, api_url, timeout)

    def call(what: str, fn: Callable[[], T], *, write: bool = False) -> T:
        policy = RetryPolicy() if write else RetryPolicy(attempts=1)
        try:
            return call_with_retries(what, fn, redact=redact, policy=policy, sleep=sleep)
        except GitHubError as exc:
            raise AppAuthError(_explain(exc, app, repo)) from None

    def get(path: str) -> dict[str, Any]:
        _, data = gh.requester.requestJsonAndCheck("GET", path)
        return dict(data)

    slug = str(call("read the app (GET /app)", lambda: get("/app")).get("slug") or "")
    if installation_id is None or str(installation_id).strip() == "":
        found = call(f"find the app's installation on {repo}",
                     lambda: get(f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}/installation"))
        installation = int(found["id"])
    else:
        installation = _parse_int(installation_id, "app_installation_id")
    permissions = requested_permissions(allow_workflows=allow_workflows)

    def mint() -> dict[str, Any]:
        _, data = gh.requester.requestJsonAndCheck(
            "POST", f"/app/installations/{installation}/access_tokens",
            input={"repositories": [name], "permissions": permissions})
        return dict(data)

    minted = call(f"create an installation access token for {repo}", mint, write=True)
    token = str(minted.get("token") or "")
    if not token:
        raise AppAuthError(f"{_PREFIX}: GitHub answered without a token")
    redact.add(token)
    bot_name, bot_email = bot_identity(slug, token, api_url=api_url, timeout=timeout, redact=redact)
    return AppToken(token=token, expires_at=str(minted.get("expires_at") or ""), installation_id=installation,
                    app_slug=slug, permissions=dict(minted.get("permissions") or permissions),
                    bot_name=bot_name, bot_email=bot_email)


def bot_identity(slug: str, token: str, *, api_url: str = "https://api.github.com", timeout: int = 30,
                 redact: Redactor | None = None) -> tuple[str, str]:
    """(name, email) of the app's bot user: `<slug>[bot]`, `<id>+<slug>[bot]@users.noreply.github.com`."""
    from github import Auth, Github

    if not slug:
        raise AppAuthError(f"{_PREFIX}: GitHub did not say the app's slug")
    login = f"{slug}[bot]"
    gh = Github(auth=Auth.Token(token), base_url=api_url, timeout=timeout, retry=None,
                seconds_between_requests=None, seconds_between_writes=None, user_agent="opi-bot")

    def get_user() -> dict[str, Any]:
        _, data = gh.requester.requestJsonAndCheck("GET", f"/users/{quote(login, safe='')}")
        return dict(data)

    try:
        user = call_with_retries(f"read the bot user {login}", get_user, redact=redact or Redactor([token]))
    except GitHubError as exc:
        raise AppAuthError(f"{_PREFIX}: {exc}") from None
    return login, f"{int(user['id'])}+{login}@users.noreply.github.com"


# -- helpers ------------------------------------------------------------------------------------------
def _parse_int(value: str | int, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise AppAuthError(f"{_PREFIX}: `{what}` must be a number, got {str(value)[:40]!r}") from None
    if number <= 0:
        raise AppAuthError(f"{_PREFIX}: `{what}` must be a positive number, got {number}")
    return number


def _split_repo(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise AppAuthError(f"{_PREFIX}: repository must be OWNER/NAME, got {repo!r}")
    return owner, name


def _load_private_key(app_id: int, private_key: str) -> str:
    """The PEM text, checked by signing a JWT with it (GitHub signs app JWTs with RS256 only)."""
    from github import Auth

    if not private_key.strip():
        raise AppAuthError(f"{_PREFIX}: `app_private_key` is empty (pass the app's .pem as a secret)")
    text = normalise_private_key(private_key)
    try:
        Auth.AppAuth(app_id, text).token  # noqa: B018 - signing is the check
    except Exception:  # PyJWT and cryptography raise several types; their text may quote the key
        raise AppAuthError(f"{_PREFIX}: `app_private_key` is not an RSA private key in PEM format (expected "
                           "the '-----BEGIN RSA PRIVATE KEY-----' file GitHub generated for the app)") from None
    return text


def _app_client(app_id: int, private_key: str, api_url: str, timeout: int) -> Github:
    from github import Auth, Github

    return Github(auth=Auth.AppAuth(app_id, private_key), base_url=api_url, timeout=timeout, retry=None,
                  seconds_between_requests=None, seconds_between_writes=None, user_agent="opi-bot")


def _explain(exc: GitHubError, app_id: int, repo: str) -> str:
    if exc.status == 401:
        hint = (f"GitHub rejected the app's JWT: check that `app_id` ({app_id}) is the app's id and "
                "`app_private_key` is a current private key of that app")
    elif exc.status == 404 and "find the app's installation" in str(exc):
        hint = f"the app (id {app_id}) is not installed on {repo}: install it on the repository"
    elif exc.status == 404:
        hint = f"the installation was not found: check `app_installation_id` and that app {app_id} is installed"
    elif exc.status == 422:
        hint = (f"the installation does not grant what the action asks for on {repo} (repository access, or "
                f"the permissions {dict(BASE_PERMISSIONS)}, plus workflows: write when allowed)")
    elif exc.status == 403:
        hint = f"GitHub refused the app (suspended, or the owner blocks it) on {repo}"
    else:
        hint = "GitHub could not be asked"
    return f"{_PREFIX}: {hint}. ({exc})"
