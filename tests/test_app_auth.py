"""Minting a GitHub App installation token against the fake GitHub, which verifies the JWT's RS256
signature with the app's real public key: a good key, a wrong key, a wrong app id, an app not installed
on the repository, a bad PEM, missing permissions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bot.action.app_auth import AppAuthError, mint_installation_token, requested_permissions
from bot.action.redact import Redactor
from tests.action_support import rsa_key_pair
from tests.fake_github import FakeGitHub
from tests.github_openapi import validate_request

APP_ID = 123456


@pytest.fixture(scope="module")
def app_key() -> tuple[str, bytes]:
    return rsa_key_pair()


@pytest.fixture
def github(app_key: tuple[str, bytes]) -> Iterator[FakeGitHub]:
    with FakeGitHub(check_requests=True) as fake:
        fake.install_app(APP_ID, app_key[1], slug="opi-test-app", installation_id=4242, repos=("o/r",),
                         bot_user_id=90001)
        yield fake


def test_a_good_key_mints_a_token_for_this_repository_only(github: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    token = mint_installation_token(APP_ID, app_key[0], "o/r", api_url=github.url)
    [minted] = github.minted
    assert token.token == minted["token"] != github.token and token.installation_id == 4242
    assert (token.bot_name, token.bot_email) == ("opi-test-app[bot]", "90001+opi-test-app[bot]@users.noreply.github.com")
    assert minted["body"] == {"repositories": ["r"], "permissions": {
        "contents": "write", "pull_requests": "write", "issues": "write", "actions": "read", "checks": "read"}}
    validate_request("POST", "/app/installations/4242/access_tokens", minted["body"])
    assert [r.path for r in github.requests] == [
        "/app", "/repos/o/r/installation", "/app/installations/4242/access_tokens", "/users/opi-test-app%5Bbot%5D"]
    # The JWT went only to the app endpoints; the bot user was read with the minted token.
    assert all(r.authorization.startswith("Bearer ey") for r in github.requests[:3])
    assert github.requests[3].authorization == f"token {token.token}"


def test_a_given_installation_id_skips_the_lookup(github: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    mint_installation_token(str(APP_ID), app_key[0], "o/r", installation_id="4242", api_url=github.url)
    assert not github.calls("GET", r"/installation$")


def test_a_key_pasted_with_escaped_newlines_works(github: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    escaped = "\n" + app_key[0].strip().replace("\n", "\\n") + "\n\n"
    assert mint_installation_token(APP_ID, escaped, "o/r", api_url=github.url).token in github.minted_tokens


def test_a_wrong_key_fails_naming_app_authentication(github: FakeGitHub) -> None:
    other_key, _ = rsa_key_pair()
    with pytest.raises(AppAuthError, match=r"^GitHub App authentication failed: GitHub rejected the app's JWT") as info:
        mint_installation_token(APP_ID, other_key, "o/r", api_url=github.url)
    assert "BEGIN" not in str(info.value) and not github.minted


def test_a_wrong_app_id_fails_naming_app_authentication(github: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    with pytest.raises(AppAuthError, match=r"`app_id` \(999\) is the app's id"):
        mint_installation_token(999, app_key[0], "o/r", api_url=github.url)
    assert not github.minted


def test_an_app_not_installed_on_the_repository(github: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    with pytest.raises(AppAuthError, match=r"app \(id 123456\) is not installed on o/other"):
        mint_installation_token(APP_ID, app_key[0], "o/other", api_url=github.url)
    assert not github.minted


def test_workflows_write_is_asked_only_when_allowed(github: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    assert "workflows" not in requested_permissions()
    with pytest.raises(AppAuthError, match="does not grant what the action asks for"):
        mint_installation_token(APP_ID, app_key[0], "o/r", allow_workflows=True, api_url=github.url)
    github.apps[APP_ID].permissions["workflows"] = "write"
    mint_installation_token(APP_ID, app_key[0], "o/r", allow_workflows=True, api_url=github.url)
    assert github.minted[-1]["body"]["permissions"]["workflows"] == "write"


@pytest.mark.parametrize(("key", "message"), [
    ("", "is empty"),
    ("not a key at all", "not an RSA private key in PEM format"),
    ("-----BEGIN RSA PRIVATE KEY-----\nAAAAsecretish\n-----END RSA PRIVATE KEY-----", "not an RSA private key"),
])
def test_a_bad_private_key_fails_before_any_request(github: FakeGitHub, key: str, message: str) -> None:
    with pytest.raises(AppAuthError, match=message) as info:
        mint_installation_token(APP_ID, key, "o/r", api_url=github.url)
    assert "secretish" not in str(info.value) and not github.requests


def test_a_non_rsa_key_is_refused(github: FakeGitHub) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(AppAuthError, match="not an RSA private key in PEM format"):
        mint_installation_token(APP_ID, key, "o/r", api_url=github.url)


@pytest.mark.parametrize(("app_id", "repo", "message"), [
    ("abc", "o/r", "`app_id` must be a number"), (0, "o/r", "positive"), (APP_ID, "nope", "OWNER/NAME"),
])
def test_bad_inputs_are_named(app_key: tuple[str, bytes], app_id: object, repo: str, message: str) -> None:
    with pytest.raises(AppAuthError, match=message):
        mint_installation_token(app_id, app_key[0], repo, api_url="http://127.0.0.1:9")  # type: ignore[arg-type]


def test_the_token_is_registered_with_the_redactor(github: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    redact = Redactor()
    token = mint_installation_token(APP_ID, app_key[0], "o/r", api_url=github.url, redact=redact)
    assert token.token not in redact(f"x {token.token} y")


def test_an_unreachable_github_is_an_app_auth_error(app_key: tuple[str, bytes]) -> None:
    with pytest.raises(AppAuthError, match="GitHub App authentication failed: GitHub could not be asked"):
        mint_installation_token(APP_ID, app_key[0], "o/r", api_url="http://127.0.0.1:9", timeout=2)


def test_the_minted_token_works_for_the_rest_calls(github: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    from bot.action.github_api import GitHubClient

    token = mint_installation_token(APP_ID, app_key[0], "o/r", api_url=github.url)
    client = GitHubClient(token.token, "o/r", api_url=github.url)
    client.create_comment(1, "hello")
    assert github.calls("POST", r"/issues/1/comments$")[-1].authorization == f"token {token.token}"
