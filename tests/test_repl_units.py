"""The REPL's parts without a terminal: rendering, approval hand-off, slash parsing, @file and !command."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import pytest
from rich.console import Console

from bot.agent import events as ev
from bot.agent.loop import Agent, Outcome
from bot.cli import slash
from bot.cli.approval import CANCELLED_REASON, NO_REASON, Approver, parse_answer
from bot.cli.input import InputError, expand_references, find_references, run_shell
from bot.cli.render import FooterStats, Renderer, describe_tool_call, format_tokens, tool_result
from bot.cli.repl import _edit_line
from bot.llm.messages import (
    AssistantMessage,
    Cost,
    ImageContent,
    TextContent,
    ThinkingContent,
    ToolCall,
    UserMessage,
)
from bot.llm.mock import MockModel
from bot.tools.base import Tool, ToolContext, ToolOutput


def _console(width: int = 80) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, force_terminal=False, color_system=None, highlight=False), out


class _Touch(Tool):
    """A mutating tool that records it ran."""

    name = "touch"
    description = "create a file"
    mutating = True

    from pydantic import BaseModel as _Base

    class Params(_Base):
        path: str

    def run(self, params: Params, ctx: ToolContext) -> ToolOutput:
        (ctx.workspace / params.path).write_text("x")
        return ToolOutput(f"created {params.path}")


# -- rendering -----------------------------------------------------------------------------------------

def test_agent_run_renders_text_tool_lines_and_results(tmp_path: Path) -> None:
    console, out = _console()
    renderer = Renderer(console)
    model = MockModel()
    model.enqueue("Creating it.", tool_calls=[ToolCall(id="c1", name="touch", arguments={"path": "a.txt"})])
    model.enqueue("# Done\n\nThe file **a.txt** exists now.")
    agent = Agent(model, [_Touch()], ToolContext(workspace=tmp_path), "system")
    agent.subscribe(renderer.handle)
    renderer.start()
    result = agent.run("make a.txt")
    renderer.stop()
    text = out.getvalue()
    assert result.outcome is Outcome.COMPLETED
    assert "Creating it." in text
    assert "● touch path=a.txt" in text
    assert "created a.txt" in text
    assert "Done" in text and "The file a.txt exists now." in text  # Markdown rendered, ** gone
    assert text.index("Creating it.") < text.index("● touch") < text.index("The file")
    assert not any(line != line.rstrip() for line in text.splitlines()), "no padding to the full width"


def test_long_streaming_answer_reaches_scrollback_in_order() -> None:
    console, out = _console()
    renderer = Renderer(console)
    renderer.commit_interval = 0  # commit on every delta: the path a long answer takes over time
    renderer.start()
    renderer.handle(ev.MessageStart(role="assistant"))
    paragraphs = [f"Paragraph number {i} of a long answer." for i in range(120)]
    for paragraph in paragraphs:
        renderer.handle(ev.MessageUpdate(kind="text", index=0, delta=paragraph + "\n\n"))
    message = AssistantMessage(content=[TextContent(text="\n\n".join(paragraphs))], provider="p", model="m",
                               api="mock")
    renderer.handle(ev.MessageEnd(message=message))
    renderer.stop()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("Paragraph")]
    assert lines == paragraphs  # every paragraph once, in order, none lost between commits


def test_thinking_is_collapsed_then_expandable() -> None:
    console, out = _console()
    renderer = Renderer(console)
    renderer.handle(ev.MessageUpdate(kind="thinking", index=0, delta="First I consider the files.\n"))
    renderer.handle(ev.MessageUpdate(kind="thinking", index=0, delta="Then the tests.\nThen the docs.\n"))
    renderer.handle(ev.MessageUpdate(kind="text", index=1, delta="Answer."))
    renderer.handle(ev.MessageEnd(message=AssistantMessage(
        content=[ThinkingContent(thinking="x"), TextContent(text="Answer.")], provider="p", model="m",
        api="mock")))
    text = out.getvalue()
    assert "✻ thinking: First I consider the files.  (+2 lines, /thinking to expand)" in text
    assert "Then the docs." not in text
    assert "Answer." in text
    renderer.print_thinking_expanded()
    assert "Then the docs." in out.getvalue()


def test_edit_result_is_a_coloured_diff() -> None:
    diff = "--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n-old = 1\n+new = 2\n keep\n"
    text = tool_result(ev.ToolEnd(tool_call_id="1", tool_name="edit", is_error=False,
                                  text="Edited x.py", details={"diff": diff}))
    assert "-old = 1" in text.plain and "+new = 2" in text.plain
    styles = {text.plain[span.start:span.end].strip(): str(span.style) for span in text.spans}
    assert styles["-old = 1"] == "red"
    assert styles["+new = 2"] == "green"
    assert styles["@@ -1,2 +1,2 @@"] == "cyan"


def test_bash_result_shows_exit_code_and_tail() -> None:
    output = "\n".join(f"line {i}" for i in range(1, 21)) + "\n\nexit code 3"
    text = tool_result(ev.ToolEnd(tool_call_id="1", tool_name="bash", is_error=True, text=output,
                                  details={"exit_code": 3}))
    assert text.plain.startswith("  exit 3")
    assert "line 20" in text.plain and "line 10" not in text.plain
    assert "earlier lines hidden" in text.plain


def test_error_results_are_red_and_bounded() -> None:
    message = "\n".join(f"problem {i}" for i in range(20))
    text = tool_result(ev.ToolEnd(tool_call_id="1", tool_name="read", is_error=True, text=message))
    assert text.plain.startswith("  ✗ problem 0")
    assert "problem 19" not in text.plain and "14 more lines" in text.plain


def test_tool_call_descriptions() -> None:
    assert describe_tool_call(ToolCall(id="1", name="bash", arguments={"command": "ls -la"})) == "ls -la"
    assert describe_tool_call(ToolCall(id="1", name="read", arguments={"path": "a.py", "offset": 10,
                                                                         "limit": 5})) == "a.py:10-14"
    assert describe_tool_call(ToolCall(id="1", name="write",
                                       arguments={"path": "b.py", "content": "a\nb\n"})) == "b.py (2 lines)"
    assert describe_tool_call(ToolCall(id="1", name="grep", arguments={"pattern": "TODO", "path": "src"})) \
        == "TODO in src"
    long = describe_tool_call(ToolCall(id="1", name="other", arguments={"text": "x" * 500}))
    assert len(long) < 80 and long.endswith("…")


def test_footer_line() -> None:
    stats = FooterStats(model="anthropic:claude", context_used=12_345, context_window=200_000,
                        cost=Cost(total=0.01234))
    assert stats.line() == "anthropic:claude · ctx 12.3k/200k (6%) · $0.0123"
    assert "cost unknown" in FooterStats("m", 0, 1000, Cost()).line()
    assert format_tokens(999) == "999" and format_tokens(1_500_000) == "1.5M"


def test_retry_and_compaction_events_are_shown() -> None:
    console, out = _console()
    renderer = Renderer(console)
    renderer.handle(ev.Retry(attempt=1, delay_seconds=2.0, error="anthropic HTTP 529: Overloaded"))
    renderer.handle(ev.CompactionStart(reason="manual", tokens_before=50_000))
    renderer.handle(ev.CompactionEnd(reason="manual", tokens_before=50_000, tokens_after=4_000))
    text = out.getvalue()
    assert "retrying in 2.0s (attempt 1): anthropic HTTP 529: Overloaded" in text
    assert "compacted: 50.0k → 4.0k tokens" in text


# -- approval ------------------------------------------------------------------------------------------

def _answer_in_thread(approver: Approver, answer: str, reason: str = "") -> threading.Thread:
    def answer_it() -> None:
        while (request := approver.pending()) is None:
            threading.Event().wait(0.01)
        if answer == "y":
            request.allow()
        elif answer == "a":
            request.allow(always=True)
        else:
            request.refuse(reason)

    thread = threading.Thread(target=answer_it)
    thread.start()
    return thread


def test_refusal_reason_reaches_the_model_and_the_tool_does_not_run(tmp_path: Path) -> None:
    approver = Approver()
    model = MockModel()
    model.enqueue("", tool_calls=[ToolCall(id="c1", name="touch", arguments={"path": "no.txt"})])
    model.enqueue("Understood.")
    agent = Agent(model, [_Touch()], ToolContext(workspace=tmp_path), "s", approver=approver)
    thread = _answer_in_thread(approver, "n", "use a different name")
    result = agent.run("go")
    thread.join()
    assert result.outcome is Outcome.COMPLETED
    assert not (tmp_path / "no.txt").exists()
    tool_result_message = model.requests[1].messages[-1]
    assert "refused" in tool_result_message.text and "use a different name" in tool_result_message.text  # type: ignore[union-attr]


def test_always_allows_the_tool_for_the_rest_of_the_session(tmp_path: Path) -> None:
    approver = Approver()
    model = MockModel()
    model.enqueue("", tool_calls=[ToolCall(id="c1", name="touch", arguments={"path": "a.txt"})])
    model.enqueue("", tool_calls=[ToolCall(id="c2", name="touch", arguments={"path": "b.txt"})])
    model.enqueue("done")
    agent = Agent(model, [_Touch()], ToolContext(workspace=tmp_path), "s", approver=approver)
    thread = _answer_in_thread(approver, "a")
    agent.run("go")
    thread.join()
    assert (tmp_path / "a.txt").exists() and (tmp_path / "b.txt").exists()
    assert approver.always == {"touch"}
    assert approver.pending() is None  # the second call was never asked


def test_empty_reason_and_cancel() -> None:
    approver = Approver()
    call, tool = ToolCall(id="1", name="touch", arguments={}), _Touch()
    thread = _answer_in_thread(approver, "n", "   ")
    assert approver(call, tool) == NO_REASON
    thread.join()
    cancel = threading.Event()
    cancel.set()
    assert Approver(cancel=cancel)(call, tool) == CANCELLED_REASON
    assert Approver(allow_all=True)(call, tool) is None
    assert [parse_answer(k) for k in ("Y", "n", "a", "\r", "x")] == ["y", "n", "a", None, None]


# -- slash commands ------------------------------------------------------------------------------------

def test_slash_parsing() -> None:
    command, args = slash.parse("/model  openai:gpt-4.1 ")
    assert command.name == "model" and args == "openai:gpt-4.1"
    assert slash.parse("/exit")[0].name == "quit"
    assert slash.parse("/compact keep the API notes\nand the plan")[1] == "keep the API notes\nand the plan"
    with pytest.raises(slash.SlashError, match=r"unknown command /modle\. Did you mean /model\?"):
        slash.parse("/modle x")
    assert slash.is_command("/help") and not slash.is_command("//etc/hosts is odd")


def test_commands_without_arguments_reject_them() -> None:
    class Host:
        def show_cost(self) -> None:
            raise AssertionError("must not run")

    with pytest.raises(slash.SlashError, match="/cost takes no arguments"):
        slash.dispatch(Host(), "/cost now")  # type: ignore[arg-type]


def test_every_command_is_completed_and_documented() -> None:
    names = {name for name, _ in slash.completions()}
    assert {"help", "model", "compact", "cost", "session", "name", "new", "resume", "fork", "tree",
            "export", "quit"} <= names
    documented = " ".join(usage for usage, _ in slash.help_lines())
    assert all(f"/{name}" in documented for name in names)


# -- @file references and !commands -------------------------------------------------------------------

def test_at_references_attach_files(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("print('hi')\n")
    (tmp_path / "my notes.txt").write_text("remember\n")
    prepared = expand_references('fix @src/app.py, and see @"my notes.txt" (ping @alice)', tmp_path)
    assert [a.shown_as for a in prepared.attachments] == ["src/app.py", "my notes.txt"]
    message = prepared.to_user_message(["I ran `ls`"])
    assert isinstance(message.content, list)
    texts = [part.text for part in message.content if isinstance(part, TextContent)]
    assert texts[0] == "I ran `ls`"
    assert texts[1].startswith("fix @src/app.py")
    assert texts[2] == "<file path=\"src/app.py\">\nprint('hi')\n\n</file>"


def test_at_reference_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2" * 10)
    (tmp_path / "big.txt").write_text("x" * 300_000)
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InputError, match=r"@missing\.py: no such file"):
        expand_references("look at @missing.py", tmp_path)
    with pytest.raises(InputError, match=r"@blob\.bin: it is a binary file"):
        expand_references("@blob.bin", tmp_path)
    with pytest.raises(InputError, match=r"@big\.txt: the file is 292 KB"):
        expand_references("@big.txt", tmp_path)
    with pytest.raises(InputError, match=r"@latin\.txt: it is not UTF-8"):
        expand_references("@latin.txt", tmp_path)


def test_images_and_directories(tmp_path: Path) -> None:
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
    (tmp_path / "shot.png").write_bytes(png)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("")
    prepared = expand_references("see @shot.png and @pkg", tmp_path)
    image, listing = (a.content for a in prepared.attachments)
    assert isinstance(image, ImageContent) and image.mime_type == "image/png"
    assert isinstance(listing, TextContent) and "a.py" in listing.text
    assert find_references("@a.py. @b.py) @a.py") == ["a.py", "b.py"]


def test_plain_message_stays_a_string() -> None:
    message = expand_references("hello", Path.cwd()).to_user_message()
    assert message == UserMessage(content="hello", timestamp=message.timestamp)


def test_shell_command_output_exit_code_and_scrubbed_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    result = run_shell("echo out; echo err >&2; echo key=$ANTHROPIC_API_KEY; exit 4", tmp_path)
    assert result.exit_code == 4
    assert result.output == "out\nerr\nkey=\n"
    block = result.context_block()
    assert "exit code 4" in block and "sk-secret" not in block
    slow = run_shell("echo started; sleep 30", tmp_path, timeout=0.5)
    assert slow.exit_code is None and "started" in slow.output
    assert "timed out" in slow.context_block()


# -- typing while the agent works ----------------------------------------------------------------------

def test_line_editor_queues_on_enter_and_ignores_escape_sequences() -> None:
    queued: list[str] = []
    buffer = _edit_line("", "fix it\x1b[Aplease\x7f\x7f\x7f\x7f\x7f\x7f\r", on_enter=queued.append)
    assert queued == ["fix it"] and buffer == ""
    buffer = _edit_line("", "one\x1b\rtwo", on_enter=queued.append)
    assert buffer == "one\ntwo"
    assert _edit_line("abc", "\x15x", on_enter=queued.append) == "x"
    assert _edit_line("", "   \r", on_enter=queued.append) == "" and queued == ["fix it"]


def test_completion_of_commands_and_paths(tmp_path: Path) -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from bot.cli.input import ReplCompleter

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("")
    (tmp_path / "setup.cfg").write_text("")
    (tmp_path / ".hidden").write_text("")
    completer = ReplCompleter(slash.completions(), tmp_path)

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert complete("/re") == ["/resume"]
    assert complete("/model openai") == []  # arguments are not commands
    assert complete("look at @s") == ["setup.cfg", "src/"]
    assert complete("look at @src/a") == ["src/app.py"]
    assert complete("@.h") == [".hidden"]
    assert complete("no reference") == []


def test_importing_the_repl_does_not_load_rich_or_prompt_toolkit() -> None:
    import subprocess
    import sys

    code = "import sys, bot.cli.repl, bot.cli.main; print(sorted(m for m in ('rich', 'prompt_toolkit') if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_parallel_results_name_their_call_and_errors_end_the_turn_visibly(tmp_path: Path) -> None:
    from bot.llm.errors import AuthError

    console, out = _console(100)
    renderer = Renderer(console)
    first = ToolCall(id="r1", name="read", arguments={"path": "a.py"})
    second = ToolCall(id="r2", name="read", arguments={"path": "b.py"})
    renderer.handle(ev.ToolStart(tool_call=first))
    renderer.handle(ev.ToolStart(tool_call=second))
    renderer.handle(ev.ToolEnd(tool_call_id="r1", tool_name="read", is_error=False, text="1\n2\n"))
    renderer.handle(ev.ToolEnd(tool_call_id="r2", tool_name="read", is_error=False, text="3\n"))
    text = out.getvalue()
    assert "↳ ● read a.py\n  2 lines" in text
    assert "↳ ● read b.py" in text

    model = MockModel()
    model.enqueue(AuthError("invalid x-api-key", provider="anthropic", status=401))
    agent = Agent(model, [], ToolContext(workspace=tmp_path), "s")
    agent.subscribe(renderer.handle)
    assert agent.run("hi").outcome is Outcome.ERROR
    assert "✗ error: anthropic HTTP 401: invalid x-api-key" in out.getvalue()


def test_the_approval_preview_shows_what_would_change(tmp_path: Path) -> None:
    from bot.cli.render import preview_tool_call

    (tmp_path / "app.py").write_text("colour = 'red'\nsize = 1\n")
    edit = ToolCall(id="e", name="edit", arguments={"path": "app.py", "edits": [
        {"old_text": "colour = 'red'", "new_text": "colour = 'blue'"},
        {"old_text": "size = 1", "new_text": "size = 2"}]})
    edit_preview = preview_tool_call(edit, tmp_path)
    assert edit_preview is not None
    assert all(line in edit_preview.plain for line in ("-colour = 'red'", "+colour = 'blue'", "-size = 1", "+size = 2"))

    write = ToolCall(id="w", name="write", arguments={"path": "app.py", "content": "colour = 'red'\nsize = 3\n"})
    write_preview = preview_tool_call(write, tmp_path)
    assert write_preview is not None and "-size = 1" in write_preview.plain and "+size = 3" in write_preview.plain
    assert "-colour" not in write_preview.plain and "+colour" not in write_preview.plain  # unchanged: context only

    new_file = ToolCall(id="n", name="write", arguments={"path": "new.txt", "content": "hello"})
    new_preview = preview_tool_call(new_file, tmp_path)
    assert new_preview is not None and "+hello" in new_preview.plain

    assert preview_tool_call(ToolCall(id="b", name="bash", arguments={"command": "ls"}), tmp_path) is None
    script = ToolCall(id="s", name="bash", arguments={"command": "set -e\npytest -q"})
    script_preview = preview_tool_call(script, tmp_path)
    assert script_preview is not None and "pytest -q" in script_preview.plain


# -- the turn supervisor, alone: a pipe stands in for the terminal, a recorder for the screen -------------

class RecordingView:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def start(self) -> None:
        self.events.append(("start", None))

    def stop(self) -> None:
        self.events.append(("stop", None))

    def set_busy(self, busy: bool) -> None:
        self.events.append(("busy", busy))

    def note(self, text: str, style: str = "") -> None:
        self.events.append(("note", text))

    def show_typing(self, queued: list[str], buffer: str) -> None:
        self.events.append(("typing", (list(queued), buffer)))

    def show_question(self, request: object, cwd: Path, reason: str | None) -> None:
        self.events.append(("question", reason))

    def show_answer(self, request: object) -> None:
        self.events.append(("answer", None))


def _supervised(keys_before: bytes, keys_after_question: bytes,
                tmp_path: Path) -> tuple[str | None, bool, RecordingView]:
    """Run a job that asks one approval. `keys_before` are typed before the question (still unread in the
    terminal's queue, or read as typing); `keys_after_question` once it is on screen."""
    import contextlib
    import os
    from collections.abc import Iterator

    from bot.cli.turn import TurnSupervisor
    from bot.llm.messages import ToolCall

    read_fd, write_fd = os.pipe()
    view = RecordingView()
    approver = Approver()

    def show_question(request: object, cwd: Path, reason: str | None) -> None:
        view.events.append(("question", reason))
        if reason is None:
            os.write(write_fd, keys_after_question)  # pressed while the question is shown

    view.show_question = show_question  # type: ignore[method-assign]

    @contextlib.contextmanager
    def terminal() -> Iterator[int]:
        yield read_fd

    class Bash:
        name = "bash"

    def job() -> str | None:
        os.write(write_fd, keys_before)
        return approver(ToolCall(id="c1", name="bash", arguments={"command": "rm -rf build"}),
                        Bash())  # type: ignore[arg-type]

    supervisor = TurnSupervisor(view, approver, threading.Event(), tmp_path, terminal=terminal)  # type: ignore[arg-type]
    try:
        answer, error, _ = supervisor.run(job, "test-job")
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert error is None
    return answer, "bash" in approver.always, view


def test_typed_ahead_text_never_answers_an_approval(tmp_path: Path) -> None:
    # "please" holds an "a" (always) and "y"s would allow: none of it may count.
    answer, always, _ = _supervised(b"please say yes", b"n\r", tmp_path)
    assert answer == NO_REASON and not always


def test_a_key_pressed_after_the_question_answers_it(tmp_path: Path) -> None:
    answer, always, _ = _supervised(b"", b"a", tmp_path)
    assert answer is None and always


def test_no_spinner_while_a_question_waits(tmp_path: Path) -> None:
    _, _, view = _supervised(b"", b"y", tmp_path)
    kinds = [kind for kind, _ in view.events]
    asked = kinds.index("question")
    assert ("busy", False) in view.events[:asked + 1] and view.events[asked - 1] == ("busy", False)
    answered = kinds.index("answer")
    assert ("busy", True) in view.events[answered:]


def test_esc_while_the_agent_works_interrupts(tmp_path: Path) -> None:
    from bot.cli.turn import TurnInput, TurnSupervisor

    view = RecordingView()
    cancel = threading.Event()
    supervisor = TurnSupervisor(view, Approver(), cancel, tmp_path)  # type: ignore[arg-type]
    state = TurnInput()
    supervisor.type_while_busy("half a follow", state)
    assert not cancel.is_set()
    supervisor.type_while_busy("\x1b[A", state)  # an arrow key is a whole sequence, not Esc
    assert not cancel.is_set()
    supervisor.type_while_busy("\x1b", state)
    assert cancel.is_set() and state.interrupts == 1 and state.buffer == "half a follow"


def test_slash_commands_need_only_the_repl_host_protocol(tmp_path: Path) -> None:
    """A small host implementing `ReplHost` is enough to run commands: they never reach past it."""
    from typing import Any

    from bot.cli.render import two_columns

    said: list[str] = []
    shown: list[Any] = []

    class Host:
        draft = ""
        cwd = tmp_path
        thinking_toggled = False

        def __init__(self) -> None:
            self.agent = Agent(MockModel(), [], ToolContext(workspace=tmp_path), "s")

        def say(self, text: str, style: str = "") -> None:
            said.append(text)

        def show(self, renderable: Any) -> None:
            shown.append(renderable)

        def show_help(self) -> None:
            self.show(two_columns(slash.help_lines()))

        def toggle_thinking(self) -> None:
            self.thinking_toggled = True

        def context_used(self) -> int:
            return 0

        def context_bound(self) -> int:
            return 1000

    host = Host()
    for command in ("/help", "/cost", "/thinking"):
        slash.dispatch(host, command)  # type: ignore[arg-type]
    assert host.thinking_toggled and len(shown) == 2
    console = Console(file=io.StringIO(), width=100)
    for renderable in shown:
        console.print(renderable)
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert "/thinking" in printed and "cache write" in printed
    with pytest.raises(slash.SlashError, match=r"unknown command /thinkin\. Did you mean /thinking"):
        slash.dispatch(host, "/thinkin")  # type: ignore[arg-type]


def test_escape_sequences_are_not_the_esc_key() -> None:
    from bot.cli.turn import strip_escape_sequences

    # An arrow key and a late cursor-position report must not answer "no" or abort; a lone Esc stays.
    assert strip_escape_sequences("\x1b[Ay\x1b[12;1R") == "y"
    assert strip_escape_sequences("\x1bOPn") == "n"
    assert strip_escape_sequences("\x1b") == "\x1b" and strip_escape_sequences("\x1b\r") == "\x1b\r"
