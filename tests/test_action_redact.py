"""Redaction: one function behind every output path."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from bot.action.redact import MASK, Redactor
from bot.action.workflow import append_summary, write_output
from tests.action_support import parse_github_output

TOKEN = "ghs_abcdefghijklmnopqrstuvwxyz0123456789"
KEY = "sk-ant-api03-verysecretkeymaterial-0123456789"


def test_from_env_collects_tokens_keys_and_inputs() -> None:
    redact = Redactor.from_env({
        "GITHUB_TOKEN": "tok-one-123", "INPUT_GITHUB_TOKEN": "tok-two-456", "INPUT_ANTHROPIC_API_KEY": "key-789xyz",
        "ACTIONS_RUNTIME_TOKEN": "runtime-abc", "MY_SERVICE_SECRET": "hunter2hunter2", "HOME": "/github/home",
        "INPUT_MODEL": "anthropic:claude",
    })
    text = "tok-one-123 tok-two-456 key-789xyz runtime-abc hunter2hunter2 /github/home anthropic:claude"
    assert redact(text) == f"{MASK} {MASK} {MASK} {MASK} {MASK} /github/home anthropic:claude"


def test_short_values_are_not_masked_everywhere() -> None:
    redact = Redactor(["abc", "", "   "])
    assert redact("abc is a word") == "abc is a word"


def test_longest_secret_wins_and_multiline_values_mask_each_line() -> None:
    redact = Redactor(["secret-value", "secret-value-longer"])
    assert redact("x secret-value-longer y") == f"x {MASK} y"
    pem = "-----BEGIN KEY-----\nMIIEpAIBAAKCAQEA1234\n-----END KEY-----"
    redact.add(pem)
    assert "MIIEpAIBAAKCAQEA1234" not in redact("line: MIIEpAIBAAKCAQEA1234")


def test_base64_basic_auth_form_of_a_token_is_masked() -> None:
    redact = Redactor([TOKEN])
    header = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert header not in redact(f"extraheader = AUTHORIZATION: basic {header}")


def test_known_token_shapes_are_masked_even_when_unregistered() -> None:
    redact = Redactor()
    text = f"{TOKEN} github_pat_11ABCDEFG0123456789_abcdefghijklmnop {KEY} AKIAIOSFODNN7EXAMPLE"
    assert redact(text) == " ".join([MASK] * 4)


def test_mask_registers_and_tells_the_runner() -> None:
    redact = Redactor()
    out = io.StringIO()
    redact.mask("derived-secret-1\nsecond-line-2", out)
    commands = out.getvalue().splitlines()
    assert all(line.startswith("::add-mask::") for line in commands)
    masked = {_runner_unescape(line.removeprefix("::add-mask::")) for line in commands}
    assert {"derived-secret-1", "second-line-2", "derived-secret-1\nsecond-line-2"} <= masked
    assert base64.b64encode(b"derived-secret-1").decode() in masked
    assert redact("derived-secret-1") == MASK
    again = io.StringIO()
    redact.mask("derived-secret-1", again)
    assert again.getvalue() == ""  # nothing new to tell


def _runner_unescape(data: str) -> str:
    """What the Actions runner registers for `::add-mask::DATA` (ActionCommand.UnescapeData)."""
    return data.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def test_value_redacts_nested_json() -> None:
    redact = Redactor(["supersecret"])
    data = {"a": ["x supersecret", {"supersecret": 1}], "n": 3, "b": None}
    assert redact.value(data) == {"a": [f"x {MASK}", {MASK: 1}], "n": 3, "b": None}


def test_jsonl_file_is_redacted_through_json_escaping(tmp_path: Path) -> None:
    secret = 'quote"and\\backslash-secret'
    redact = Redactor([secret])
    path = tmp_path / "s.jsonl"
    clean = json.dumps({"type": "session", "id": "1"}, separators=(",", ":"))
    dirty = json.dumps({"type": "message", "message": {"content": [{"text": f"got {secret}"}]}})
    path.write_text(f"{clean}\n{dirty}\n{{torn line with {secret}", encoding="utf-8")
    assert redact.file_jsonl(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == clean  # untouched lines keep their bytes
    assert json.loads(lines[1])["message"]["content"][0]["text"] == f"got {MASK}"
    assert secret not in path.read_text(encoding="utf-8")
    assert lines[2] == f"{{torn line with {MASK}"
    assert not redact.file_jsonl(path)  # idempotent
    assert not redact.file_jsonl(tmp_path / "missing.jsonl")


def test_jsonl_lines_holding_unicode_line_separators_stay_whole(tmp_path: Path) -> None:
    # JSON keeps U+2028, U+2029 and U+0085 raw inside strings: they are not line ends.
    redact = Redactor(["supersecret"])
    path = tmp_path / "s.jsonl"
    entries = [{"text": "one\u2028two\u2029three\x85four"}, {"text": "and supersecret\u2028here"}]
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    assert redact.file_jsonl(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and [json.loads(line) for line in lines[:-1]] == \
        [entries[0], {"text": f"and {MASK}\u2028here"}]
    assert not redact.file_jsonl(path)


def test_outputs_and_summary_are_redacted_and_multiline_safe(tmp_path: Path) -> None:
    redact = Redactor([TOKEN])
    output = tmp_path / "output"
    write_output(output, "answer", f"line one\nline two {TOKEN}\nEOF\n", redact)
    write_output(output, "turns", "3", redact)
    text = output.read_text(encoding="utf-8")
    assert TOKEN not in text
    assert parse_github_output(text) == {"answer": f"line one\nline two {MASK}\nEOF\n", "turns": "3"}
    summary = tmp_path / "summary.md"
    append_summary(summary, f"cost {TOKEN}", redact)
    assert summary.read_text(encoding="utf-8") == f"cost {MASK}\n"
    write_output(None, "x", "y", redact)  # no GITHUB_OUTPUT: nothing to do, no error


# -- encoded forms ---------------------------------------------------------------------------------------
ODD = "p@ss/w+rd=&?\"quoted\"\\ and space-0123"  # every character some encoding changes


def _forms_of(value: str) -> dict[str, str]:
    """The encodings an attacker gets for free from a shell or a standard library."""
    raw = value.encode()
    return {
        "raw": value,
        "base64": base64.b64encode(raw).decode(),
        "base64 unpadded": base64.b64encode(raw).decode().rstrip("="),
        "urlsafe base64": base64.urlsafe_b64encode(raw).decode(),
        "quote": quote(value, safe=""),
        "quote default": quote(value),
        "quote_plus": quote_plus(value),
        "lower-case percent": re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(value, safe="")),
        "json": json.dumps(value)[1:-1],
        "json ascii": json.dumps(value + "é", ensure_ascii=True)[1:-1],
        "checkout header": base64.b64encode(f"x-access-token:{value}".encode()).decode(),
        "user:token": base64.b64encode(f"someone:{value}".encode()).decode(),
    }


@pytest.mark.parametrize("value", [TOKEN, KEY, ODD])
def test_every_encoded_form_is_masked(value: str) -> None:
    redact = Redactor([value])
    for name, form in _forms_of(value).items():
        masked = redact(f"before {form} after")
        assert MASK in masked, name
        assert value not in masked and form not in masked, name


@pytest.mark.parametrize("value", [TOKEN, ODD])
@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"user:", b"x-access-token:"])
def test_base64_of_the_value_inside_longer_data_is_masked_at_every_alignment(value: str, prefix: bytes) -> None:
    encoded = base64.b64encode(prefix + value.encode() + b"\nmore data after it").decode()
    masked = Redactor([value])(f"blob: {encoded}")
    assert MASK in masked
    # Whatever is left around the mask decodes to at most a few bytes of the value.
    for piece in masked.removeprefix("blob: ").split(MASK):
        assert len(piece) < 8 or value.encode() not in _b64decode_loose(piece)


def _b64decode_loose(text: str) -> bytes:
    text = text[: len(text) - len(text) % 4]
    return base64.b64decode(text + "=" * (-len(text) % 4)) if text else b""


def test_checkout_header_is_masked_whole() -> None:
    header = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert Redactor([TOKEN])(f"AUTHORIZATION: basic {header}") == f"AUTHORIZATION: basic {MASK}"


def test_mask_commands_cover_every_form_and_survive_the_runners_unescaping() -> None:
    redact = Redactor([ODD, TOKEN])
    commands = redact.mask_commands()
    assert all(line.startswith("::add-mask::") and "\n" not in line for line in commands)
    registered = {_runner_unescape(line.removeprefix("::add-mask::")) for line in commands}
    for value in (ODD, TOKEN):
        for name, form in _forms_of(value).items():
            if name in ("lower-case percent", "json ascii", "user:token", "base64 unpadded"):
                continue  # covered by other forms: checked through masking above
            assert form in registered, (value, name)
    percent = quote(ODD, safe="")
    assert f"::add-mask::{percent.replace('%', '%25')}" in commands  # escaped, or the runner decodes it


def test_short_values_register_no_forms() -> None:
    redact = Redactor(["abc"])
    assert redact.mask_commands() == []
    assert redact(base64.b64encode(b"abc").decode()) == "YWJj"


def test_ordinary_text_is_left_alone() -> None:
    redact = Redactor([TOKEN, KEY, ODD])
    text = "def parse(text: str) -> list[str]:\n    return text.split('/')  # see https://example.com?a=b\n"
    assert redact(text) == text


def test_mask_tells_the_runner_about_a_value_registered_earlier() -> None:
    # A minted app token is registered by the minting code first; masking it must still reach the runner.
    redact = Redactor()
    redact.add("ghs_mintedToken0123456789abcdef")
    out = io.StringIO()
    redact.mask("ghs_mintedToken0123456789abcdef", out)
    assert "::add-mask::ghs_mintedToken0123456789abcdef" in out.getvalue().splitlines()
