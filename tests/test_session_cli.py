"""Sessions through the real `opi` program (subprocesses, scripted loopback model): resume a pi file, resume
an opi session by id prefix, `-c`, `opi export` in every format, `opi --list-sessions`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bot.agent.session import Session
from bot.agent.session_store import load_session
from tests.fake_llm import FakeLLMServer, Reply

pytest_plugins = ["tests.fake_llm"]

PI_FILE = Path(__file__).parent / "data" / "pi" / "pi-0.73.1-edit-session.jsonl"
MODEL = "anthropic:claude-sonnet-4-5"


def run(args: list[str], cwd: Path, server: FakeLLMServer, sessions: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANTHROPIC_BASE_URL": server.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-dummy",
           "OPI_SESSIONS_DIR": str(sessions)}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def test_resume_a_pi_file_continue_export_and_list(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    work, sessions = tmp_path / "work", tmp_path / "sessions"
    work.mkdir()
    pi_copy = tmp_path / "from-pi.jsonl"
    shutil.copy(PI_FILE, pi_copy)

    # 1. `opi --resume` of a pi file: the model sees pi's conversation, then the new prompt
    fake_llm.enqueue(Reply(text="It prints hello, world (resumed from pi)."))
    done = run(["-p", "Remind me what hello.py prints.", "--resume", str(pi_copy), "--model", MODEL],
               work, fake_llm, sessions)
    assert done.returncode == 0, done.stderr
    assert "resumed from pi" in done.stdout and "imported the pi session" in done.stderr
    sent = fake_llm.requests[-1].body["messages"]
    wire = json.dumps(sent)
    assert "Make hello.py greet the world." in wire and "toolu_01" in wire and "hello, world" in wire
    assert sent[-1]["content"][0]["text"] == "Remind me what hello.py prints."
    assert pi_copy.read_bytes() == PI_FILE.read_bytes()
    [made] = sessions.glob("*.jsonl")
    session = Session.load(made)
    assert session.header.parent_session == load_session(PI_FILE).header.id
    spent = session.totals().cost.total
    assert spent is not None and spent > 0.0188  # pi's four calls, plus ours

    # 2. `-c` continues that session in the same file, with the whole context
    fake_llm.enqueue(Reply(text="Still hello, world."))
    done = run(["-p", "And now?", "-c", "--model", MODEL], work, fake_llm, sessions)
    assert done.returncode == 0, done.stderr
    assert list(sessions.glob("*.jsonl")) == [made]
    assert "Remind me what hello.py prints." in json.dumps(fake_llm.requests[-1].body["messages"])

    # 3. `opi --list-sessions` shows it; `opi export` in each format, by id prefix
    listing = run(["--list-sessions"], work, fake_llm, sessions)
    assert listing.returncode == 0 and session.header.id[:8] in listing.stdout
    prefix = session.header.id[:8]
    markdown = run(["export", prefix], work, fake_llm, sessions)
    assert markdown.returncode == 0, markdown.stderr
    assert "## User\n\nMake hello.py greet the world." in markdown.stdout and "Still hello, world." in markdown.stdout
    out = tmp_path / "export.json"
    assert run(["export", prefix, "--format", "json", "-o", str(out)], work, fake_llm, sessions).returncode == 0
    exported = json.loads(out.read_text())
    assert exported["header"]["id"] == session.header.id and exported["context"][-1]["role"] == "assistant"
    pi_out = tmp_path / "back-to-pi.jsonl"
    assert run(["export", prefix, "--format", "pi", "-o", str(pi_out)], work, fake_llm, sessions).returncode == 0
    assert json.loads(pi_out.read_text().splitlines()[0])["version"] == 3
    back = load_session(pi_out)
    assert [m.model_dump() for m in back.context()] == [m.model_dump() for m in Session.load(made).context()]

    # 4. bad references are usage errors that name the problem
    missing = run(["export", "zzzz"], work, fake_llm, sessions)
    assert missing.returncode == 2 and "no session matches 'zzzz'" in missing.stderr
    bogus = tmp_path / "bogus.jsonl"
    bogus.write_text("just text\n")
    refused = run(["-p", "hi", "--resume", str(bogus), "--model", MODEL], work, fake_llm, sessions)
    assert refused.returncode == 2 and "bogus.jsonl: not a session file" in refused.stderr
