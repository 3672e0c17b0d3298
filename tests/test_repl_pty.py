"""The real `opi` REPL in a real pseudo-terminal (tmux), against the loopback scripted model server.

Each test starts `opi` in a private tmux server, types into it with send-keys and reads the rendered
screen (scrollback included) with capture-pane. Every wait polls the screen until a text appears or a
deadline passes, so the tests are as fast as the program and never depend on fixed sleeps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_llm import FakeLLMServer, Reply

pytestmark = [
    pytest.mark.slow,
    # CI must run these (.ci/run installs tmux when missing); a developer without tmux may skip them.
    pytest.mark.skipif(shutil.which("tmux") is None and not os.environ.get("CI"),
                       reason="tmux is needed to drive a terminal"),
]

OPI = str(Path(sys.executable).with_name("opi"))
WAIT_SECONDS = 20.0
MODEL = "anthropic:claude-sonnet-4-5"


class Terminal:
    """One `opi` process in a tmux pane of a private tmux server."""

    def __init__(self, socket: Path, cwd: Path, env: dict[str, str]) -> None:
        self.socket = socket
        self.cwd = cwd
        self.env = env

    def tmux(self, *args: str) -> str:
        completed = subprocess.run(["tmux", "-S", str(self.socket), *args], env=self.env, capture_output=True,
                                   text=True, timeout=20)
        if completed.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {completed.stderr.strip()}")
        return completed.stdout

    def start(self, *args: str) -> None:
        command = " ".join([OPI, *args]) + "; echo \"[opi exited with $?]\"; sleep 600"
        self.tmux("new-session", "-d", "-x", "110", "-y", "45", "-c", str(self.cwd), command)
        self.tmux("set-option", "-g", "history-limit", "20000")

    def type(self, text: str, *, enter: bool = True) -> None:
        self.tmux("send-keys", "-l", text)
        if enter:
            self.tmux("send-keys", "Enter")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-")

    def wait_for(self, pattern: str, *, count: int = 1, timeout: float = WAIT_SECONDS) -> str:
        """Wait until `pattern` (a regex) occurs at least `count` times on the screen; return the screen."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            screen = self.screen()
            if len(regex.findall(screen)) >= count:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r} (x{count}); the screen:\n{screen}")
            time.sleep(0.05)

    def wait_for_prompt(self, count: int) -> str:
        """The footer is printed once per finished turn, right before the next prompt."""
        return self.wait_for(rf"{re.escape(MODEL)} · ctx", count=count)

    def stop(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=20)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture
def sessions_dir(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def terminal_factory(fake_llm: FakeLLMServer, workspace: Path, sessions_dir: Path) -> Iterator[Any]:
    # A short socket path: unix socket paths are limited to about 100 bytes.
    socket_dir = Path(tempfile.mkdtemp(prefix="opi-tmux-"))
    env = {**os.environ, **fake_llm.env(), "OPI_SESSIONS_DIR": str(sessions_dir), "OPI_MODEL": MODEL,
           "TERM": "xterm-256color", "COLUMNS": "110", "LINES": "45"}
    env.pop("TMUX", None)
    terminals: list[Terminal] = []

    def make() -> Terminal:
        terminal = Terminal(socket_dir / f"t{len(terminals)}", workspace, env)
        terminals.append(terminal)
        return terminal

    yield make
    for terminal in terminals:
        terminal.stop()
    shutil.rmtree(socket_dir, ignore_errors=True)


def session_files(sessions_dir: Path) -> list[Path]:
    return sorted(sessions_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def messages(path: Path) -> list[dict[str, Any]]:
    return [e["message"] for e in entries(path) if e["type"] == "message"]


def texts_sent(fake_llm: FakeLLMServer, index: int) -> str:
    return json.dumps(fake_llm.requests[index].body)


# -- the tests ---------------------------------------------------------------------------------------

def test_two_turn_conversation_streams_and_is_saved(fake_llm: FakeLLMServer, terminal_factory: Any,
                                                    sessions_dir: Path) -> None:
    words = [f"word{i}" for i in range(12)]
    fake_llm.enqueue(Reply(text="Streaming: " + " ".join(words), chunks=6, delay=0.25))
    fake_llm.enqueue(Reply(thinking="Let me think about fruit.\nApples first.\nThen pears.",
                           text="# Second answer\n\nIt has **bold** text and a list:\n\n- apples\n- pears\n"))
    term = terminal_factory()
    term.start()
    term.wait_for(r"Enter sends")
    term.type("first question")
    # The first chunk is on the screen while the last one has not been sent yet: it streams.
    partial = term.wait_for(r"Streaming:")
    assert "word11" not in partial
    term.wait_for_prompt(1)
    term.type("second question")
    screen = term.wait_for_prompt(2)
    assert "Streaming: " + " ".join(words) in screen
    assert "Second answer" in screen and "It has bold text" in screen and "• apples" in screen
    assert "**" not in screen  # rendered as Markdown, not shown raw
    assert "✻ thinking: Let me think about fruit.  (+2 lines, /thinking to expand)" in screen
    assert "Then pears." not in screen
    term.type("/thinking")
    term.wait_for(r"Then pears\.")
    assert "second question" in texts_sent(fake_llm, 1) and "word11" in texts_sent(fake_llm, 1)
    term.keys("C-d")
    term.wait_for(r"\[opi exited with 0\]")
    (path,) = session_files(sessions_dir)
    roles = [m["role"] for m in messages(path)]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert messages(path)[2]["content"] == "second question"
    history = Path(os.environ["XDG_DATA_HOME"], "opi", "repl-history").read_text()
    assert "+first question" in history and "+second question" in history  # kept for the next run


def test_an_edit_approved_and_one_refused(fake_llm: FakeLLMServer, terminal_factory: Any, workspace: Path,
                                          sessions_dir: Path) -> None:
    (workspace / "app.py").write_text("colour = 'red'\nsize = 1\n")
    fake_llm.enqueue(Reply(text="First edit.", tool_calls=[
        ("e1", "edit", {"path": "app.py", "old_text": "colour = 'red'", "new_text": "colour = 'blue'"})]))
    fake_llm.enqueue(Reply(text="Second edit.", tool_calls=[
        ("e2", "edit", {"path": "app.py", "old_text": "size = 1", "new_text": "size = 99"})]))
    fake_llm.enqueue(Reply(text="Understood, size stays."))
    term = terminal_factory()
    term.start()
    term.wait_for(r"Enter sends")
    term.type("change the colour and the size")
    # The proposed change is on screen, above the question, before anything is allowed.
    term.wait_for(r"-colour = 'red'\s*\n\s*\+colour = 'blue'\s*\n\? allow edit app\.py\? \[y\]es")
    assert (workspace / "app.py").read_text() == "colour = 'red'\nsize = 1\n"
    term.keys("y")
    term.wait_for(r"Second edit\.\n● edit app\.py\n(.*\n)*\s*-size = 1\s*\n\s*\+size = 99\s*\n\? allow edit app\.py\?")
    term.keys("n")
    term.wait_for(r"reason for the model")
    term.type("the size must stay 1")
    screen = term.wait_for_prompt(1)
    assert "✓ allowed" in screen
    assert "-colour = 'red'" in screen and "+colour = 'blue'" in screen  # the diff of the first edit
    assert "✗ refused: the size must stay 1" in screen
    assert "Understood, size stays." in screen
    assert (workspace / "app.py").read_text() == "colour = 'blue'\nsize = 1\n"
    refusal = texts_sent(fake_llm, 2)
    assert "refused" in refusal and "the size must stay 1" in refusal
    (path,) = session_files(sessions_dir)
    results = [m for m in messages(path) if m["role"] == "tool_result"]
    assert [r["is_error"] for r in results] == [False, True]


def test_ctrl_c_during_a_long_bash_kills_it_and_saves_the_turn(fake_llm: FakeLLMServer, terminal_factory: Any,
                                                               workspace: Path, sessions_dir: Path) -> None:
    fake_llm.enqueue(Reply(text="Running the slow thing.", tool_calls=[
        ("b1", "bash", {"command": "echo $$ > pid.txt; echo started; sleep 120"})]))
    fake_llm.enqueue(Reply(text="Still here after the abort."))
    term = terminal_factory()
    term.start("--allow-mutating")
    term.wait_for(r"Enter sends")
    term.type("run it")
    _wait_for_file(workspace / "pid.txt")
    pid = int((workspace / "pid.txt").read_text())
    term.keys("C-c")
    screen = term.wait_for(r"turn aborted")
    assert "aborting…" in screen
    assert "cancelled: the command and its children were killed" in screen
    _wait_until_gone(pid)
    assert len(fake_llm.requests) == 1  # no request went out after Ctrl+C
    # The REPL is still usable and the next turn sees what happened.
    term.wait_for_prompt(1)
    term.type("are you there?")
    term.wait_for(r"Still here after the abort\.")
    (path,) = session_files(sessions_dir)
    stored = messages(path)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool_result", "user", "assistant"]
    assert stored[2]["is_error"] is True and "cancelled" in json.dumps(stored[2]["content"])


def test_ctrl_c_while_streaming_saves_the_partial_answer(fake_llm: FakeLLMServer, terminal_factory: Any,
                                                         sessions_dir: Path) -> None:
    fake_llm.enqueue(Reply(text="partial-start " + "x " * 200 + "never-reached", chunks=40, delay=0.3))
    term = terminal_factory()
    term.start()
    term.wait_for(r"Enter sends")
    term.type("write a lot")
    term.wait_for(r"partial-start")
    term.keys("C-c")
    screen = term.wait_for(r"turn aborted")
    assert "⏹ aborted" in screen and "never-reached" not in screen
    (path,) = session_files(sessions_dir)
    assistant = messages(path)[-1]
    assert assistant["stop_reason"] == "aborted"
    assert assistant["content"][0]["text"].startswith("partial-start")


def test_typing_while_the_agent_works_queues_a_follow_up(fake_llm: FakeLLMServer, terminal_factory: Any,
                                                         sessions_dir: Path) -> None:
    fake_llm.enqueue(Reply(text="slow answer one two three", chunks=6, delay=0.3))
    fake_llm.enqueue(Reply(text="answer to the follow-up"))
    term = terminal_factory()
    term.start()
    term.wait_for(r"Enter sends")
    term.type("first line", enter=False)
    term.keys("M-Enter")  # Alt+Enter: a new line, not sent
    term.type("second line", enter=False)
    term.type("\x1b[13;2u", enter=False)  # Shift+Enter as CSI-u terminals (kitty, foot) report it
    term.type("third line")
    term.wait_for(r"slow answer")
    term.type("and also this")
    term.wait_for(r"queued: and also this")
    screen = term.wait_for_prompt(2)
    assert "answer to the follow-up" in screen
    (path,) = session_files(sessions_dir)
    users = [m["content"] for m in messages(path) if m["role"] == "user"]
    assert users == ["first line\nsecond line\nthird line", "and also this"]


def test_compact_then_resume_the_session_in_a_new_process(fake_llm: FakeLLMServer, terminal_factory: Any,
                                                          workspace: Path, sessions_dir: Path) -> None:
    (workspace / ".opi").mkdir()
    (workspace / ".opi" / "config.toml").write_text("[compaction]\nkeep_recent_tokens = 50\n")
    fake_llm.enqueue("The plan is to rename the module. " * 20)
    fake_llm.enqueue("Done renaming; tests pass. " * 20)
    fake_llm.enqueue("## Goal\nRename the module.\n\n## Progress\n### Done\n- [x] renamed\n")
    fake_llm.enqueue("Continuing from the summary.")
    fake_llm.enqueue("Back in the resumed session.")
    first = terminal_factory()
    first.start()
    first.wait_for(r"Enter sends")
    first.type("please rename the module")
    first.wait_for_prompt(1)
    first.type("and run the tests")
    first.wait_for_prompt(2)
    first.type("/compact keep the module names")
    screen = first.wait_for(r"compacted: .* tokens")
    assert "compacting the context (manual" in screen
    assert "keep the module names" in texts_sent(fake_llm, 2)  # the instructions reach the summary call
    first.type("what next?")
    first.wait_for_prompt(3)
    assert "Rename the module." in texts_sent(fake_llm, 3)  # the summary replaced the old messages
    first.type("/quit")
    first.wait_for(r"\[opi exited with 0\]")
    (original,) = session_files(sessions_dir)
    assert [e["type"] for e in entries(original)].count("compaction") == 1

    second = terminal_factory()
    second.start()
    second.wait_for(r"Enter sends")
    second.type("/resume")
    listing = second.wait_for(r"resume which number")
    assert re.search(r"1\. please rename the module .*(ago|just now) · 6 messages", listing), listing
    second.type("1")
    second.wait_for(r"resumed .*" + re.escape(original.name))
    second.type("are we done?")
    second.wait_for(r"Back in the resumed session\.")
    second.wait_for_prompt(1)
    last_request = texts_sent(fake_llm, 4)
    assert "Rename the module." in last_request and "what next?" in last_request
    assert messages(original)[-2]["content"] == "are we done?"  # appended to the resumed file


def test_tree_goes_back_and_continues_on_a_new_branch(fake_llm: FakeLLMServer, terminal_factory: Any,
                                                      sessions_dir: Path) -> None:
    fake_llm.enqueue("Answer about apples.")
    fake_llm.enqueue("Answer about pears.")
    fake_llm.enqueue("Answer about plums.")
    term = terminal_factory()
    term.start("'tell me about apples'")  # `opi "first message"` on a terminal opens the REPL with it
    term.wait_for(r"› tell me about apples")
    term.wait_for_prompt(1)
    term.type("tell me about pears")
    term.wait_for_prompt(2)
    term.type("/tree")
    listing = term.wait_for(r"go back to which number")
    number = re.search(r"(\d+)\. opi: Answer about apples\.", listing)
    assert number is not None and "◀ you are here" in listing
    term.type(number.group(1))
    term.wait_for(r"summarise the 2 messages you leave behind")
    term.keys("Enter")  # the default: no
    term.wait_for(r"moved to opi: Answer about apples\.")
    term.type("tell me about plums")
    term.wait_for_prompt(3)
    request = texts_sent(fake_llm, 2)
    assert "apples" in request and "pears" not in request  # the new branch forgot the abandoned one
    (path,) = session_files(sessions_dir)
    stored = entries(path)
    by_id = {e["id"]: e for e in stored}
    apples_answer = next(e for e in stored if e["type"] == "message"
                         and e["message"]["role"] == "assistant" and "apples" in json.dumps(e["message"]))
    leaf = [e for e in stored if e["type"] == "leaf"]
    assert len(leaf) == 1 and leaf[0]["entry_id"] == apples_answer["id"]
    children = [e for e in stored if e.get("parent_id") == apples_answer["id"] and e["type"] == "message"]
    assert sorted(e["message"]["content"] for e in children) == ["tell me about pears", "tell me about plums"]
    assert by_id[children[0]["id"]]["parent_id"] == apples_answer["id"]

    # Back to before one of my own messages, with a summary of the branch left behind: the message
    # returns to the editor, and sending it starts a third branch that knows the summary.
    fake_llm.enqueue("Plums were discussed: they are purple.")
    fake_llm.enqueue("Pears, once more.")
    term.type("/tree")
    tree = term.wait_for(r"go back to which number", count=2)
    assert "├─" in tree and "└─" in tree  # both branches are drawn
    number = re.findall(r"(\d+)\. ├─ you: tell me about pears", tree)[-1]
    term.type(number)
    term.wait_for(r"summarise the 2 messages you leave behind.*\[y\]es  \[N\]o")
    term.keys("y")  # one key, like an approval
    term.wait_for(r"moved to before you: tell me about pears \(with a summary")
    term.wait_for(r"your message is back in the editor")
    term.keys("Enter")  # send it unchanged
    term.wait_for(r"Pears, once more\.")
    term.wait_for_prompt(4)
    request = texts_sent(fake_llm, 4)
    assert "Plums were discussed: they are purple." in request and "tell me about pears" in request
    stored = entries(path)
    assert [e["type"] for e in stored].count("leaf") == 2
    (summary,) = [e for e in stored if e["type"] == "branch_summary"]
    assert summary["summary"].startswith("Plums were discussed")
    pears = [e for e in stored if e["type"] == "message" and e["message"].get("content") == "tell me about pears"]
    assert len(pears) == 2 and pears[1]["parent_id"] == summary["id"]


def test_slash_commands_at_files_and_shell(fake_llm: FakeLLMServer, terminal_factory: Any, workspace: Path,
                                           sessions_dir: Path) -> None:
    (workspace / "notes.txt").write_text("the secret word is turnip\n")
    fake_llm.enqueue("I read your notes.")
    term = terminal_factory()
    term.start()
    term.wait_for(r"Enter sends")
    term.type("/help")
    term.wait_for(r"/resume \[number\|id\]")
    term.type("/bogus")
    term.wait_for(r"unknown command /bogus")
    term.type("look at @missing.txt please")
    term.wait_for(r"not sent: @missing\.txt: no such file")
    term.keys("C-u")  # the refused text came back in the editor; clear it
    term.type("!echo shell-says-hi")
    term.wait_for(r"exit 0 · the output goes with your next message")
    term.type("/name my renaming job")
    term.wait_for(r"session named 'my renaming job'")
    term.type("summarise @notes.txt")
    term.wait_for_prompt(1)
    sent = texts_sent(fake_llm, 0)
    assert "the secret word is turnip" in sent and "shell-says-hi" in sent
    term.type("/session")
    screen = term.wait_for(r"entries: ")
    assert "name:     my renaming job" in screen
    term.type("/cost")
    term.wait_for(r"cache write")
    term.type("/export markdown out.md")
    term.wait_for(r"exported \(markdown\) to")
    assert "the secret word is turnip" in (workspace / "out.md").read_text()
    term.type("/export pdf out.pdf")
    term.wait_for(r"usage: /export \[markdown\|json\|pi\] \[path\]")
    term.type("/tree 99")
    term.wait_for(r"/tree: 99 is not in the list \(1-2\)")
    term.type("/resume")
    term.wait_for(r"no other sessions for ")
    term.type("/model nosuch:model")
    term.wait_for(r"cannot switch to 'nosuch:model'")
    term.type("/model openai:gpt-4.1")
    term.wait_for(r"model: openai:gpt-4\.1")
    term.type("/fork")
    screen = term.wait_for(r"forked \w+ into a new session: ")
    (original,) = [p for p in session_files(sessions_dir) if p.name in screen.split("the original is unchanged:")[1]]
    forked = next(p for p in session_files(sessions_dir) if p != original)
    header = json.loads(forked.read_text().splitlines()[0])
    assert header["parent_session"] == original.stem
    assert [m["role"] for m in messages(forked)] == ["user", "assistant"]
    term.type("/new")
    term.wait_for(r"new session: ")
    term.type("some text I change my mind about", enter=False)
    term.keys("C-c")  # clears the line, does not count towards quitting
    term.keys("C-c")
    term.wait_for(r"Ctrl\+C again or Ctrl\+D to quit")
    term.keys("C-c")
    term.wait_for(r"\[opi exited with 0\]")
    kinds = [e["type"] for e in entries(original)]
    assert "session_info" in kinds and "model_change" in kinds
    # Resuming continues with the model the session switched to.
    again = terminal_factory()
    again.start("--resume", original.stem[:8])
    screen = again.wait_for(r"Enter sends")
    assert "opi · openai:gpt-4.1 · session" in screen
    assert "last opi: I read your notes." in screen


def test_without_a_terminal_it_falls_back_to_print_mode(fake_llm: FakeLLMServer, workspace: Path,
                                                        sessions_dir: Path) -> None:
    fake_llm.enqueue("plain answer")
    env = {**os.environ, **fake_llm.env(), "OPI_SESSIONS_DIR": str(sessions_dir), "OPI_MODEL": MODEL}
    completed = subprocess.run([OPI], input="a question on stdin", capture_output=True, text=True, env=env,
                               cwd=workspace, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "plain answer\n"
    assert "\x1b[" not in completed.stdout


def _wait_for_file(path: Path, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        threading.Event().wait(0.05)


def _wait_until_gone(pid: int, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still runs after Ctrl+C")
        threading.Event().wait(0.05)


def test_a_long_streamed_answer_reaches_the_scrollback_once_and_in_order(fake_llm: FakeLLMServer,
                                                                          terminal_factory: Any) -> None:
    lines = [f"Line {i:03d} of a long answer." for i in range(150)]  # three screens
    fake_llm.enqueue(Reply(text="\n\n".join(lines), chunks=30, delay=0.02))
    term = terminal_factory()
    term.start()
    term.wait_for(r"Enter sends")
    term.type("write a lot")
    screen = term.wait_for_prompt(1)
    shown = [line for line in screen.splitlines() if line.startswith("Line ")]
    assert shown == lines


def test_typed_ahead_text_does_not_answer_an_approval(fake_llm: FakeLLMServer, terminal_factory: Any,
                                                      workspace: Path, sessions_dir: Path) -> None:
    fake_llm.enqueue(Reply(text="Let me look around first, slowly. " * 3, chunks=12, delay=0.2,
                           tool_calls=[("b1", "bash", {"command": "touch cleaned.txt"})]))
    fake_llm.enqueue(Reply(text="Fine, I will not run it."))
    term = terminal_factory()
    term.start()
    term.wait_for(r"Enter sends")
    term.type("tidy up")
    term.wait_for(r"Let me look around")
    term.type("please also clean up", enter=False)  # holds an "a" (always); typed before the question
    screen = term.wait_for(r"\? allow bash touch cleaned\.txt\? \[y\]es")
    assert "working…" not in screen  # no spinner while the question waits
    assert "✓ allowed" not in screen and not (workspace / "cleaned.txt").exists()
    term.keys("n")
    term.wait_for(r"reason for the model")
    term.keys("Enter")
    screen = term.wait_for_prompt(1)
    assert "✗ refused: no reason given" in screen and "always for bash" not in screen
    assert not (workspace / "cleaned.txt").exists()
    # Read as typing while the answer streamed, it is a draft: back in the editor, unsent.
    term.wait_for(r"› please also clean up")
    assert len(fake_llm.requests) == 2


def test_esc_interrupts_a_running_turn(fake_llm: FakeLLMServer, terminal_factory: Any,
                                       sessions_dir: Path) -> None:
    fake_llm.enqueue(Reply(text="esc-start " + "y " * 200 + "never-reached", chunks=40, delay=0.3))
    term = terminal_factory()
    term.start()
    term.wait_for(r"Enter sends")
    term.type("write a lot")
    term.wait_for(r"esc-start")
    term.keys("Escape")
    screen = term.wait_for(r"turn aborted")
    assert "never-reached" not in screen
    (path,) = session_files(sessions_dir)
    assert messages(path)[-1]["stop_reason"] == "aborted"


def test_tab_completes_a_single_candidate_at_once(fake_llm: FakeLLMServer, terminal_factory: Any,
                                                  workspace: Path) -> None:
    (workspace / "unique_notes.txt").write_text("carrots\n")
    (workspace / "other.md").write_text("x\n")
    fake_llm.enqueue("Read them.")
    term = terminal_factory()
    term.start()
    term.wait_for(r"Enter sends")
    term.type("summarise @uniq", enter=False)
    term.keys("Tab")
    term.wait_for(r"summarise @unique_notes\.txt")
    term.keys("Enter")
    term.wait_for(r"attached unique_notes\.txt")
    term.wait_for_prompt(1)
    assert "carrots" in texts_sent(fake_llm, 0)


def _print_mode_session(fake_llm: FakeLLMServer, workspace: Path, sessions_dir: Path, prompt: str,
                        model: str = MODEL) -> Path:
    env = {**os.environ, **fake_llm.env(), "OPI_SESSIONS_DIR": str(sessions_dir)}
    completed = subprocess.run([OPI, "-p", prompt, "--model", model], capture_output=True, text=True, env=env,
                               cwd=workspace, timeout=60)
    assert completed.returncode == 0, completed.stderr
    (path,) = session_files(sessions_dir)
    return path


def test_r_without_an_id_opens_the_picker(fake_llm: FakeLLMServer, terminal_factory: Any, workspace: Path,
                                          sessions_dir: Path) -> None:
    fake_llm.enqueue("An answer about turnips.")
    path = _print_mode_session(fake_llm, workspace, sessions_dir, "tell me about turnips")
    fake_llm.enqueue("More turnips.")
    term = terminal_factory()
    term.start("-r")
    listing = term.wait_for(r"resume which number")
    assert "1. tell me about turnips" in listing
    term.type("1")
    term.wait_for(r"resumed .*" + re.escape(path.name))
    term.type("and more?")
    term.wait_for(r"More turnips\.")
    assert messages(path)[-2]["content"] == "and more?"


def test_resume_without_any_key_still_opens_the_session(fake_llm: FakeLLMServer, terminal_factory: Any,
                                                        workspace: Path, sessions_dir: Path) -> None:
    fake_llm.enqueue("An answer worth keeping.")
    path = _print_mode_session(fake_llm, workspace, sessions_dir, "keep this", model="openai:gpt-4.1")
    term = terminal_factory()
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPI_MODEL"):
        term.env.pop(name, None)
    term.start("--resume", str(path))  # the command the action's comment prints
    screen = term.wait_for(r"Enter sends")
    assert "last opi: An answer worth keeping." in screen
    assert "no API key" in screen and "/model" in screen
    term.type("go on")
    term.wait_for(r"✗ .*no API key")
    term.wait_for(r"· ctx ")  # the footer: the turn is over and the prompt is back
    term.keys("C-d")
    term.wait_for(r"\[opi exited with 0\]")
