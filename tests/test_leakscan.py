"""The outgoing-secret scanner: every form of every secret, in everything a run would publish."""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from bot.action.leakscan import Hit, Item, describe, scan
from bot.action.redact import encoded_forms

TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
KEY = "sk-ant-api03-Zx9/Qw+Er=Ty_Ui-Op0123456789"
SECRETS = {"GitHub token": TOKEN, "ANTHROPIC_API_KEY": KEY}
CHECKOUT_HEADER = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


def _file(name: str, content: bytes | str) -> Item:
    return Item(kind="file", name=name, data=content)


def _only(hits: list[Hit]) -> Hit:
    assert len(hits) == 1, hits
    return hits[0]


def test_secret_on_a_text_file_line() -> None:
    content = f"# settings\nname = demo\ntoken = {TOKEN}\n"
    hit = _only(scan(SECRETS, [_file("config/x.txt", content.encode())]))
    assert (hit.kind, hit.name, hit.line, hit.offset) == ("file", "config/x.txt", 3, None)
    assert (hit.secret, hit.encoding) == ("GitHub token", "raw")


def test_secret_in_a_binary_file_reports_the_byte_offset() -> None:
    blob = bytes(range(256)) * 4 + b"\0\0" + TOKEN.encode() + os.urandom(512)
    hit = _only(scan(SECRETS, [_file("assets/logo.png", blob)]))
    assert hit.offset == 1026 and hit.line is None


def test_secret_inside_compressed_data_is_not_claimed() -> None:
    # What the scan does not cover, stated by a test: a gzip stream hides the value.
    blob = gzip.compress(TOKEN.encode() * 3)
    assert scan(SECRETS, [_file("x.gz", blob)]) == []


def test_utf16_secret_in_a_binary_file() -> None:
    blob = b"\xff\xfe" + f"token={TOKEN}".encode("utf-16-le")
    assert _only(scan(SECRETS, [_file("res.rc", blob)])).encoding == "UTF-16"


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"abcd"])
def test_base64_at_every_alignment(prefix: bytes) -> None:
    encoded = base64.b64encode(prefix + TOKEN.encode() + b" trailing bytes").decode()
    hit = _only(scan(SECRETS, [_file("data.txt", f"first line\nblob: {encoded}\n")]))
    assert (hit.line, hit.encoding, hit.secret) == (2, "base64", "GitHub token")


def test_base64_of_the_value_alone_and_urlsafe() -> None:
    for encoded in (base64.b64encode(KEY.encode()), base64.urlsafe_b64encode(KEY.encode())):
        hit = _only(scan(SECRETS, [_file("k", encoded)]))
        assert (hit.secret, hit.encoding) == ("ANTHROPIC_API_KEY", "base64")


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


@pytest.mark.parametrize("encode", [lambda v: quote(v, safe=""), quote, quote_plus,
                                    lambda v: _lower_hex(quote(v, safe=""))])
def test_url_encoded(encode: Callable[[str], str]) -> None:
    url = f"https://example.com/hook?key={encode(KEY)}&x=1"
    hit = _only(scan(SECRETS, [_file("hook.sh", f"curl '{url}'\n")]))
    assert (hit.secret, hit.encoding) == ("ANTHROPIC_API_KEY", "URL-encoded")


def test_json_escaped() -> None:
    secret = 'pa"ss\\word-with/slash'
    hit = _only(scan({"deploy password": secret}, [_file("a.json", json.dumps({"p": secret}))]))
    assert hit.encoding == "JSON-escaped"


def test_checkout_header_copied_from_git_config(tmp_path: Path) -> None:
    # What actions/checkout writes with persist-credentials, then `cp .git/config leaked.txt`.
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "http.https://github.com/.extraheader",
                    f"AUTHORIZATION: basic {CHECKOUT_HEADER}"], check=True)
    config = (repo / ".git" / "config").read_bytes()
    line = config.decode().splitlines().index(f"\textraheader = AUTHORIZATION: basic {CHECKOUT_HEADER}") + 1
    hit = _only(scan(SECRETS, [_file("leaked.txt", config)]))
    assert (hit.line, hit.encoding, hit.secret) == (line, "basic-auth", "GitHub token")
    # `base64 .git/config`: wrapped at 76 columns, the header encoded a second time.
    wrapped = subprocess.run(["base64"], input=config, capture_output=True, check=True).stdout
    assert b"\n" in wrapped.strip()
    assert _only(scan(SECRETS, [_file("config.b64", wrapped)])).encoding == "base64 twice"


def test_wrapped_base64_reports_the_original_line() -> None:
    wrapped = base64.encodebytes(b"x" * 100 + TOKEN.encode() + b"y" * 100)  # 76-column lines
    hit = _only(scan(SECRETS, [_file("w.txt", b"header\n" + wrapped)]))
    # The value's base64 starts at character 134 of the encoding: on its second 76-column line.
    assert (hit.encoding, hit.line) == ("base64", 3)


def test_commit_message_pr_body_title_comment_and_branch() -> None:
    items = [
        Item("commit message", "commit message", f"fix the build\n\nused {TOKEN}"),
        Item("pull request title", "pull request title", f"leak {quote_plus(KEY)}"),
        Item("pull request body", "pull request body", f"Done.\n\n{base64.b64encode(KEY.encode()).decode()}"),
        Item("comment", "comment", f"see {CHECKOUT_HEADER}"),
        Item("branch name", "opi/x", f"opi/{TOKEN}"),
    ]
    hits = scan(SECRETS, items)
    assert [(h.kind, h.line, h.encoding) for h in hits] == [
        ("commit message", 3, "raw"), ("pull request title", 1, "URL-encoded"),
        ("pull request body", 3, "base64"), ("comment", 1, "basic-auth"), ("branch name", 1, "raw")]
    notice = describe(hits)
    assert "the commit message line 3 contains the GitHub token" in notice
    _assert_no_secret(notice)


def test_a_file_path_holding_the_secret_is_a_hit_and_is_shown_masked() -> None:
    hits = scan(SECRETS, [_file(f"notes/{TOKEN}.txt", b"harmless")])
    hit = _only(hits)
    assert hit.kind == "file path" and hit.name == "notes/***.txt"
    _assert_no_secret(describe(hits))


def test_no_false_positive_on_ordinary_text() -> None:
    rng = random.Random(7)
    words = ["token", "ghs", "sk-ant", "api", "key", "basic", "x-access-token", "AUTHORIZATION:", "%2F", "=="]
    prose = " ".join(rng.choice(words) for _ in range(50_000))
    items = [_file("README.md", prose), _file("random.bin", rng.randbytes(2_000_000)),
             Item("pull request body", "pull request body", "Fixes the tokenizer; see base64 docs.")]
    assert scan(SECRETS, items) == []


def test_large_inputs_are_scanned() -> None:
    # No timing assertion: one bytes.find per needle keeps this linear in the data.
    big = os.urandom(8 * 1024 * 1024)
    hit = _only(scan(SECRETS, [_file("big.bin", big + b"\0" + KEY.encode() + big[:1000])]))
    assert hit.offset == len(big) + 1


def test_a_repeated_secret_is_reported_a_bounded_number_of_times() -> None:
    hits = scan(SECRETS, [_file("many.txt", f"{TOKEN}\n" * 10_000)])
    assert 1 <= len(hits) <= 50 and hits[0].line == 1 and hits[1].line == 2
    assert len(describe(hits)) <= 1500


def test_an_unknown_item_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown outgoing item kind 'diff'"):
        Item("diff", "x", b"")


def test_short_or_empty_secrets_are_skipped() -> None:
    assert scan({"empty": "", "short": "abc"}, [_file("a", b"abc abc")]) == []


# -- the notice --------------------------------------------------------------------------------------------
def test_describe_names_file_line_and_encoding() -> None:
    content = f"a\nb\n{base64.b64encode(TOKEN.encode()).decode()}\n"
    notice = describe(scan(SECRETS, [_file("config/x.txt", content)]))
    assert notice == "push blocked: `config/x.txt` line 3 contains the GitHub token (base64-encoded)"


def test_describe_names_binary_offsets_and_env_labels() -> None:
    notice = describe(scan(SECRETS, [_file("b.bin", b"\0" + KEY.encode())]), action="comment withheld")
    assert notice == "comment withheld: `b.bin` (binary) at byte 1 contains the value of `ANTHROPIC_API_KEY`"


def test_describe_is_bounded_and_never_shows_a_secret_form() -> None:
    items = [_file(f"dir/{form.text[:40]}`\n<b>/{n}.txt", form.text) for n, form in enumerate(encoded_forms(TOKEN))]
    items += [_file(f"{'very-long-name/' * 30}{n}.txt", f"{TOKEN}\n") for n in range(200)]
    hits = scan(SECRETS, items)
    notice = describe(hits, limit=1000)
    assert len(notice) <= 1000 and notice.endswith("more")
    _assert_no_secret(notice)
    assert "\n" not in notice and "`<b>" not in notice
    assert describe([]) == ""


def _assert_no_secret(text: str) -> None:
    for value in SECRETS.values():
        for form in encoded_forms(value):
            assert form.text not in text, form
