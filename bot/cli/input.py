"""The REPL's input line: prompt-toolkit with history, multi-line editing and completion, plus the
message preprocessing that turns `@path` references into attached files and `!command` into context.

Keys: Enter sends; Alt+Enter (Esc then Enter) and Shift+Enter insert a newline. Terminals do not agree
on Shift+Enter: most send the same byte as Enter, so it cannot be told apart; xterm with
`modifyOtherKeys` sends `ESC[27;2;13~` and kitty/foot/WezTerm with the CSI-u protocol send
`ESC[13;2u`. Both are mapped to a newline here. Where Shift+Enter is indistinguishable, use Alt+Enter.
Ctrl+J (a line feed) also sends: keys typed ahead while the terminal is in cooked mode (while a command
runs) have Enter translated to a line feed, and they must still send.

Only the REPL imports this module (lazily), so prompt_toolkit stays off the `opi --version` path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input.ansi_escape_sequences import ANSI_SEQUENCES
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys

# The message preprocessing lives in bot.cli.references (no prompt_toolkit); importable from here too.
from bot.cli.references import MAX_ATTACHMENT_BYTES as MAX_ATTACHMENT_BYTES
from bot.cli.references import Attachment as Attachment
from bot.cli.references import InputError as InputError
from bot.cli.references import PreparedMessage as PreparedMessage
from bot.cli.references import expand_references as expand_references
from bot.cli.references import find_references as find_references
from bot.tools.base import scrubbed_env

MAX_SHELL_OUTPUT_CHARS = 30_000
SHELL_TIMEOUT_SECONDS = 120.0


# -- !command --------------------------------------------------------------------------------------

@dataclass
class ShellResult:
    command: str
    exit_code: int | None  # None: it timed out
    output: str

    def context_block(self) -> str:
        """How the output reaches the model: as part of the next user message."""
        status = "timed out" if self.exit_code is None else f"exit code {self.exit_code}"
        output = self.output
        if len(output) > MAX_SHELL_OUTPUT_CHARS:
            output = f"[… {len(output) - MAX_SHELL_OUTPUT_CHARS} earlier characters cut]\n" + \
                output[-MAX_SHELL_OUTPUT_CHARS:]
        return f"I ran `{self.command}` in the shell ({status}). Output:\n```\n{output.rstrip()}\n```"


def run_shell(command: str, cwd: Path, *, timeout: float = SHELL_TIMEOUT_SECONDS) -> ShellResult:
    """Run a user's `!command` with the same scrubbed environment the agent's bash tool gets. It runs in
    its own process group, killed whole on timeout or Ctrl+C (KeyboardInterrupt is re-raised)."""
    process = subprocess.Popen(
        command, shell=True, cwd=cwd, env=scrubbed_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        output, _ = process.communicate()
        return ShellResult(command, None, output.decode("utf-8", "replace"))
    except KeyboardInterrupt:
        _kill_group(process)
        process.communicate()
        raise
    return ShellResult(command, process.returncode, output.decode("utf-8", "replace"))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
        os.killpg(process.pid, signal.SIGKILL)


# -- prompt-toolkit --------------------------------------------------------------------------------

def history_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "opi" / "repl-history"


def _register_shift_enter() -> None:
    # Shift+Enter as xterm's modifyOtherKeys and as CSI-u: make both behave like Alt+Enter.
    for sequence in ("\x1b[27;2;13~", "\x1b[13;2u"):
        ANSI_SEQUENCES[sequence] = (Keys.Escape, Keys.ControlM)


class ReplCompleter(Completer):
    """Completes `/commands` at the start of the line and `@paths` anywhere."""

    def __init__(self, commands: Iterable[tuple[str, str]], cwd: Path) -> None:
        self.commands = sorted(commands)
        self.cwd = cwd

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        before = document.text_before_cursor
        if before.startswith("/") and " " not in before:
            for name, help_text in self.commands:
                if name.startswith(before[1:]):
                    yield Completion("/" + name, start_position=-len(before), display_meta=help_text)
            return
        word = before.split()[-1] if before and not before[-1].isspace() else ""
        if word.startswith("@"):
            yield from self._paths(word[1:])

    def _paths(self, partial: str) -> Iterable[Completion]:
        directory, _, prefix = partial.rpartition("/")
        base = (self.cwd / Path(directory).expanduser()) if directory else self.cwd
        try:
            entries = sorted(base.iterdir(), key=lambda p: p.name)
        except OSError:
            return
        show_hidden = prefix.startswith(".")
        for entry in entries:
            name = entry.name
            if not name.startswith(prefix) or (name.startswith(".") and not show_hidden):
                continue
            suffix = "/" if entry.is_dir() else ""
            text = f"{directory}/{name}{suffix}" if directory else f"{name}{suffix}"
            yield Completion(text, start_position=-len(partial), display=name + suffix)


def make_session(commands: Iterable[tuple[str, str]], cwd: Path) -> PromptSession[str]:
    _register_shift_enter()
    bindings = KeyBindings()

    @bindings.add("enter")
    @bindings.add("c-j")
    def _send(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and state.current_completion is not None:
            buffer.apply_completion(state.current_completion)
            return
        buffer.validate_and_handle()

    @bindings.add("tab")
    def _complete(event: KeyPressEvent) -> None:
        # A single candidate is inserted at once; several open (or step through) the menu.
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and len(state.completions) > 1:
            buffer.complete_next()
            return
        completer = buffer.completer
        found = list(completer.get_completions(buffer.document, CompleteEvent(completion_requested=True))) \
            if completer is not None else []
        if len(found) == 1:
            buffer.apply_completion(found[0])
        elif found:
            buffer.start_completion(insert_common_part=True)

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        # With text: clear it (like a shell). At an empty prompt: tell the REPL (twice in a row exits).
        buffer = event.current_buffer
        if buffer.text:
            buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt())

    @bindings.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    history: History
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        history = FileHistory(str(path))
    except OSError:
        history = InMemoryHistory()  # an unwritable data dir must not stop the REPL

    session: PromptSession[str] = PromptSession(
        history=history, multiline=True, key_bindings=bindings, completer=ReplCompleter(commands, cwd),
        complete_while_typing=True, enable_history_search=False,
        prompt_continuation=lambda width, line_number, wrap_count: "  ",
    )
    return session
