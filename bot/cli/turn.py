"""The REPL's turn supervisor: while a job (an agent turn, /compact) runs on a worker thread, the main
thread reads the keyboard, queues follow-ups, answers approval questions and turns Ctrl+C or Esc into
the job's cancel event.

It talks to the screen only through `TurnView` (the REPL's `Renderer`) and to the terminal through a
file descriptor, so a test can drive it with a pipe and a recording view, with no terminal at all.

Approval questions read only keys pressed after the question is on screen: everything typed ahead (in
the kernel's queue or already read) is dropped when the question appears, so text typed for a
follow-up can never answer it ("please" holds an `a`, which would mean "always").
"""

from __future__ import annotations

import codecs
import contextlib
import os
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

from bot.cli.approval import CANCELLED_REASON, ApprovalRequest, Approver, parse_answer

T = TypeVar("T")

KEY_POLL_SECONDS = 0.05
# Ctrl+C presses during one turn before the REPL stops waiting for the worker and exits.
HARD_EXIT_PRESSES = 3
ESC = "\x1b"


class HardExit(Exception):
    """Ctrl+C pressed HARD_EXIT_PRESSES times: the user wants out even though the worker still runs."""


class TurnView(Protocol):
    """What the supervisor shows. `Renderer` implements it."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def set_busy(self, busy: bool) -> None: ...

    def note(self, text: str, style: str = "") -> None: ...

    def show_typing(self, queued: list[str], buffer: str) -> None: ...

    def show_question(self, request: ApprovalRequest, cwd: Path, reason: str | None) -> None: ...

    def show_answer(self, request: ApprovalRequest) -> None: ...


@dataclass
class TurnInput:
    """What the main thread collects while the agent works."""

    buffer: str = ""
    queued: list[str] = field(default_factory=list)
    interrupts: int = 0
    reason: str | None = None  # the refusal reason being typed, when answering "n"


@dataclass
class TurnOutcome:
    value: object = None
    error: BaseException | None = None
    input: TurnInput = field(default_factory=TurnInput)


class TurnSupervisor:
    def __init__(self, view: TurnView, approver: Approver, cancel: threading.Event, cwd: Path, *,
                 terminal: Callable[[], contextlib.AbstractContextManager[int | None]] | None = None) -> None:
        self.view = view
        self.approver = approver
        self.cancel = cancel
        self.cwd = cwd
        self.terminal = terminal or cbreak_stdin

    def run(self, job: Callable[[], T], name: str) -> tuple[T | None, BaseException | None, TurnInput]:
        """Run `job()` on a worker thread while this thread supervises the keyboard."""
        outcome: dict[str, object] = {}

        def work() -> None:
            try:
                outcome["value"] = job()
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=work, name=name, daemon=True)
        state = TurnInput()
        self.view.start()
        try:
            worker.start()
            self.supervise(worker, state)
        finally:
            self.view.stop()
        error = outcome.get("error")
        value = outcome.get("value")
        return value, error if isinstance(error, BaseException) else None, state  # type: ignore[return-value]

    def supervise(self, worker: threading.Thread, state: TurnInput) -> None:
        """Read keys and answer approvals until the worker finishes."""
        with self.terminal() as fd, self._sigint_cancels(state):
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            while worker.is_alive():
                if state.interrupts >= HARD_EXIT_PRESSES:
                    raise HardExit
                request = self.approver.pending()
                if request is not None:
                    self.ask_approval(request, state, fd, decoder)
                    continue
                keys = read_keys(fd, decoder, KEY_POLL_SECONDS)
                if keys:
                    self.type_while_busy(keys, state)
            worker.join()

    def interrupt(self, state: TurnInput) -> None:
        state.interrupts += 1
        self.cancel.set()
        note = "aborting…" if state.interrupts == 1 else \
            f"still stopping (Ctrl+C {HARD_EXIT_PRESSES - state.interrupts} more time(s) to quit)"
        self.view.note(note, "yellow")

    @contextlib.contextmanager
    def _sigint_cancels(self, state: TurnInput) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread (tests drive this from others)
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.interrupt(state)

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def type_while_busy(self, keys: str, state: TurnInput) -> None:
        if keys.endswith(ESC) and not keys.endswith(ESC * 2):
            # A lone Esc (not the start of an arrow key's sequence, which arrives whole) interrupts.
            keys = keys[:-1]
            self.interrupt(state)
        state.buffer = edit_line(state.buffer, keys, on_enter=state.queued.append)
        self.view.show_typing(state.queued, state.buffer)

    # -- approvals ---------------------------------------------------------------------------------
    def ask_approval(self, request: ApprovalRequest, state: TurnInput, fd: int | None,
                     decoder: codecs.IncrementalDecoder) -> None:
        self.view.set_busy(False)  # no spinner while a question waits for the user
        drop_typeahead(fd, decoder)  # only a key pressed once the question is on screen answers it
        self.view.show_question(request, self.cwd, None)
        interrupts = state.interrupts
        try:
            while not request.done.is_set():
                if state.interrupts != interrupts:
                    request.refuse(CANCELLED_REASON)
                    break
                keys = read_keys(fd, decoder, KEY_POLL_SECONDS)
                if fd is None and not keys:
                    request.refuse("no terminal to ask for approval")
                    break
                for key in strip_escape_sequences(keys):
                    if self.approval_key(request, state, key):
                        break
        finally:
            state.reason = None
            self.view.show_answer(request)
            self.view.set_busy(True)
            self.view.show_typing(state.queued, state.buffer)
        # Keys after the answer in the same read are dropped with it: nothing typed while the question
        # was up counts as a follow-up, so a double press cannot leak into the next question.
        drop_typeahead(fd, decoder)

    def approval_key(self, request: ApprovalRequest, state: TurnInput, key: str) -> bool:
        """Handle one key; True once the request is answered."""
        if key == ESC and state.reason is None:
            self.interrupt(state)
            request.refuse(CANCELLED_REASON)
            return True
        if state.reason is not None:
            if key in "\r\n":
                reason, state.reason = state.reason, None
                request.refuse(reason)
                return True
            state.reason = edit_line(state.reason, key, on_enter=lambda line: None)
            self.view.show_question(request, self.cwd, state.reason)
            return False
        answer = parse_answer(key)
        if answer == "y":
            request.allow()
            return True
        if answer == "a":
            request.allow(always=True)
            return True
        if answer == "n":
            state.reason = ""
            self.view.show_question(request, self.cwd, "")
        return False


# -- terminal helpers ----------------------------------------------------------------------------------

@contextlib.contextmanager
def cbreak_stdin() -> Iterator[int | None]:
    """Keys arrive one by one, unechoed; Ctrl+C still raises SIGINT. Yields None without a terminal."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        yield None
        return
    if not os.isatty(fd):
        yield None
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)  # TCSAFLUSH would drop keys typed ahead for a follow-up
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def read_keys(fd: int | None, decoder: codecs.IncrementalDecoder, timeout: float) -> str:
    if fd is None:
        threading.Event().wait(timeout)
        return ""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return ""
    data = os.read(fd, 4096)
    if not data:
        return ""
    return decoder.decode(data)


def drop_typeahead(fd: int | None, decoder: codecs.IncrementalDecoder) -> None:
    """Discard every key typed so far: the terminal's input queue, and whatever is readable now."""
    decoder.reset()
    if fd is None:
        return
    with contextlib.suppress(termios.error, OSError):
        termios.tcflush(fd, termios.TCIFLUSH)  # not a terminal (a test's pipe): drained below instead
    while select.select([fd], [], [], 0)[0]:
        if not os.read(fd, 4096):
            break


def ask_key(fd: int | None, allowed: str, show: Callable[[], None], default: str | None = None) -> str | None:
    """A one-key question, answered the same way as an approval: typed-ahead keys are dropped, `show()`
    puts the question on screen, then the first key in `allowed` (case-insensitive) is the answer.
    Enter gives `default`; Esc, Ctrl+C, Ctrl+D or no terminal give None."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    drop_typeahead(fd, decoder)
    show()
    if fd is None:
        return None
    while True:
        keys = read_keys(fd, decoder, KEY_POLL_SECONDS)
        for key in strip_escape_sequences(keys):
            lowered = key.lower()
            if lowered in allowed.lower():
                return lowered
            if key in "\r\n" and default is not None:
                return default
            if key in (ESC, "\x03", "\x04"):
                return None


def strip_escape_sequences(keys: str) -> str:
    """`keys` without CSI/SS3 sequences (arrow keys, a terminal's cursor-position report arriving late):
    only a lone Esc is the Esc key. Alt+Enter (Esc, Enter) is kept."""
    out: list[str] = []
    i = 0
    while i < len(keys):
        if keys[i] == ESC and i + 1 < len(keys) and keys[i + 1] in "[O":
            i += 2
            while i < len(keys) and not ("@" <= keys[i] <= "~"):
                i += 1
            i += 1
            continue
        out.append(keys[i])
        i += 1
    return "".join(out)


def edit_line(buffer: str, keys: str, *, on_enter: Callable[[str], object]) -> str:
    """A minimal line editor for typing while the agent works: printable keys, Backspace, Ctrl+U,
    Enter (queues the line), Alt+Enter (newline). Other escape sequences (arrows) are ignored."""
    i = 0
    while i < len(keys):
        key = keys[i]
        i += 1
        if key in "\r\n":
            if buffer.strip():
                on_enter(buffer)
            buffer = ""
        elif key in "\x7f\x08":
            buffer = buffer[:-1]
        elif key == "\x15":
            buffer = ""
        elif key == ESC:
            if i < len(keys) and keys[i] in "\r\n":
                buffer += "\n"
                i += 1
                continue
            # Skip a CSI/SS3 sequence: ESC [ params final-byte, or ESC O x.
            if i < len(keys) and keys[i] in "[O":
                i += 1
                while i < len(keys) and not ("@" <= keys[i] <= "~"):
                    i += 1
                i += 1
        elif key >= " " or key == "\t":
            buffer += key
    return buffer
