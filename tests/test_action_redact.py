"""Redaction: one function behind every output path."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from bot.action.redact import MASK, Redactor
from bot.action.workflow import append_summary, write_output

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
    assert out.getvalue() == "::add-mask::derived-secret-1\n::add-mask::second-line-2\n"
    assert redact("derived-secret-1") == MASK


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


def test_outputs_and_summary_are_redacted_and_multiline_safe(tmp_path: Path) -> None:
    redact = Redactor([TOKEN])
    output = tmp_path / "output"
    write_output(output, "answer", f"line one\nline two {TOKEN}\nEOF\n", redact)
    write_output(output, "turns", "3", redact)
    text = output.read_text(encoding="utf-8")
    assert TOKEN not in text
    assert _parse_outputs(text) == {"answer": f"line one\nline two {MASK}\nEOF\n", "turns": "3"}
    summary = tmp_path / "summary.md"
    append_summary(summary, f"cost {TOKEN}", redact)
    assert summary.read_text(encoding="utf-8") == f"cost {MASK}\n"
    write_output(None, "x", "y", redact)  # no GITHUB_OUTPUT: nothing to do, no error


def _parse_outputs(text: str) -> dict[str, str]:
    """The runner's parser for `name<<DELIM` blocks."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines) and lines[i]:
        name, delimiter = lines[i].split("<<", 1)
        end = lines.index(delimiter, i + 1)
        values[name] = "\n".join(lines[i + 1:end])
        i = end + 1
    return values
