"""Interactive `opi`: a REPL that streams the agent's work, asks before it mutates and drives sessions.

Threads: the agent runs in a worker thread; the main thread owns the terminal. Between turns it shows
a prompt-toolkit prompt. During a turn it reads keys itself (cbreak mode, so Ctrl+C still raises
SIGINT) to queue follow-up messages and to answer approval questions, while `Renderer` draws the
stream in a rich Live region. Ctrl+C during a turn sets the agent's cancel event: the loop saves the
partial assistant message as aborted and the bash tool kills its process group.

rich and prompt_toolkit are imported inside `run_repl`, never at module level, so importing this module
costs nothing on the `opi --version` path.
"""

from __future__ import annotations

import argparse
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
from typing import TYPE_CHECKING, Any, TypeVar

from bot.agent.loop import Agent, Outcome, RunResult
from bot.llm.messages import AssistantMessage, UserMessage

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession
    from rich.console import Console
    from rich.text import Text

    from bot.agent.config import Settings
    from bot.agent.runtime import SessionHandle
    from bot.cli.approval import ApprovalRequest, Approver
    from bot.cli.render import Renderer

T = TypeVar("T")

EXIT_OK, EXIT_FAILURE, EXIT_INTERRUPTED = 0, 1, 130
KEY_POLL_SECONDS = 0.05
# Ctrl+C presses during one turn before the REPL stops waiting for the worker and exits.
HARD_EXIT_PRESSES = 3


class _ExitRepl(Exception):
    def __init__(self, code: int = EXIT_OK) -> None:
        self.code = code


def run_repl(args: argparse.Namespace, initial_message: str | None = None) -> int:
    """Entry point from `bot.cli.main` (stdin and stdout are terminals)."""
    from rich.console import Console

    from bot.agent.config import SettingsError, load_settings
    from bot.agent.runtime import open_session
    from bot.cli.main import settings_flags
    from bot.cli.print_mode import error_exit_code
    from bot.llm.errors import ModelError

    console = Console(highlight=False)
    cwd = Path.cwd()
    handle: SessionHandle | None = None
    try:
        settings = load_settings(cwd, flags=settings_flags(args),
                                 config_path=Path(args.config) if args.config else None)
        handle = open_session(settings, cwd, resume=args.resume, continue_=args.continue_, fork=args.fork)
        repl = Repl(settings, cwd, handle, console, explicit_model=args.model is not None)
    except (SettingsError, ModelError, ValueError, LookupError, OSError) as exc:
        if handle is not None:
            handle.discard_if_unused()
        print(f"opi: {exc}", file=sys.stderr)
        return error_exit_code(exc) if not isinstance(exc, ValueError | LookupError) else 2
    return repl.run(initial_message)


@dataclass
class TurnInput:
    """What the main thread collects while the agent works."""

    buffer: str = ""
    queued: list[str] = field(default_factory=list)
    interrupts: int = 0
    reason: str | None = None  # the refusal reason being typed, when answering "n"


class Repl:
    def __init__(self, settings: Settings, cwd: Path, handle: SessionHandle, console: Console, *,
                 explicit_model: bool = False) -> None:
        from bot.cli import slash
        from bot.cli.approval import Approver
        from bot.cli.input import make_session
        from bot.cli.render import Renderer

        self.settings = settings
        self.base_settings = settings  # before a resumed session's model or /model changed it
        self.cwd = cwd
        self.handle = handle
        self.console = console
        self.renderer: Renderer = Renderer(console)
        self.approver: Approver = Approver(allow_all=settings.allow_mutating)
        self.notes: list[str] = [str(w) for w in getattr(handle, "warnings", [])]
        self.agent: Agent = self._build_agent(None if explicit_model else self._recorded_model())
        self.prompt: PromptSession[str] = make_session(slash.completions(), cwd)
        self.queued: list[str] = []
        self.pending_context: list[str] = []  # !command output waiting for the next message
        self.draft = ""  # text to put back in the editor (a refused message, an edited branch point)
        self._last_prompt_interrupted = False

    # -- setup -------------------------------------------------------------------------------------
    def _build_agent(self, model: Any = None) -> Agent:
        from bot.agent.runtime import build_agent

        agent = build_agent(self.settings, self.cwd, interactive=True, approver=self.approver,
                            session=self.handle, model=model)
        agent.subscribe(self.renderer.handle)
        self.approver.cancel = agent.cancel
        return agent

    def _recorded_model(self) -> Any:
        """A resumed session continues with the model it last used (a /model switch included), unless
        --model says otherwise; when that model is not available here, the configured one is used."""
        from bot.agent.runtime import resolve_settings_model
        from bot.llm.errors import ModelError

        session = self.handle.session
        current = session.current_model() if session is not None and session.entries else None
        if not current or not all(current) or current[0] in ("mock", "replay"):
            return None
        spec = f"{current[0]}:{current[1]}"
        if spec == self.settings.model:
            return None
        candidate = self.settings.model_copy(update={"model": spec})
        try:
            model = resolve_settings_model(candidate, os.environ)
        except (ModelError, ValueError) as exc:
            self.notes.append(f"the session used {spec}, which is not available here ({exc}); "
                              f"continuing with {self.settings.model}")
            return None
        self.settings = candidate
        return model

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, initial_message: str | None = None) -> int:
        self._banner()
        pending = initial_message
        try:
            while True:
                if pending is not None:
                    text, pending = pending, None
                    self._echo_user(text)
                elif self.queued:
                    text = self.queued.pop(0)
                    self._echo_user(text)
                else:
                    read = self._read_prompt()
                    if read is None:
                        break
                    text = read
                # Keys typed while a command runs stay in the terminal's queue for the next prompt.
                try:
                    with _cbreak_stdin():
                        self.handle_input(text)
                except KeyboardInterrupt:  # Ctrl+C in a slash command: stop it, keep the REPL
                    self.console.print("interrupted", style="yellow")
        except _ExitRepl as exit_:
            self._goodbye()
            return exit_.code
        self._goodbye()
        return EXIT_OK

    def _banner(self) -> None:
        from rich.text import Text

        info = self.agent.model.info
        session = f" · session {self.handle.path}" if self.handle.path else " · no session file"
        self.console.print(Text(f"opi · {info.spec}{session}", style="bold"), soft_wrap=True)
        for note in self.notes:
            self.console.print(Text(f"! {note}", style="yellow"), soft_wrap=True)
        if self.agent.conversation.context():
            from bot.cli.slash import show_recent

            show_recent(self)
        self.console.print(Text("Enter sends · Alt+Enter new line · /help · Ctrl+D quits", style="dim"))

    def _goodbye(self) -> None:
        from rich.text import Text

        if self.handle.path:
            self.console.print(Text(f"session saved: {self.handle.path}", style="dim"), soft_wrap=True)

    def _echo_user(self, text: str) -> None:
        from rich.text import Text

        line = Text("› ", style="bold")
        line.append(text)
        self.console.print(line)

    def _read_prompt(self) -> str | None:
        """One message from the editor; None to exit (Ctrl+D, or Ctrl+C twice at an empty prompt)."""
        from rich.text import Text

        default, self.draft = self.draft, ""
        try:
            text = self.prompt.prompt("› ", default=default)
        except EOFError:
            return None
        except KeyboardInterrupt:
            if self._last_prompt_interrupted:
                return None
            self._last_prompt_interrupted = True
            self.console.print(Text("(Ctrl+C again or Ctrl+D to quit)", style="dim"))
            return ""
        self._last_prompt_interrupted = False
        return text

    def handle_input(self, text: str) -> None:
        from rich.text import Text

        from bot.cli import slash

        stripped = text.strip()
        if not stripped:
            return
        if slash.is_command(stripped):
            try:
                slash.dispatch(self, stripped)
            except slash.SlashError as exc:
                self.console.print(Text(f"✗ {exc}", style="red"))
            return
        if stripped.startswith("!"):
            self.run_shell_command(stripped)
            return
        if stripped.startswith("//"):
            text = text.lstrip()[1:]
        self.send(text)

    # -- messages ----------------------------------------------------------------------------------
    def send(self, text: str) -> RunResult | None:
        from rich.text import Text

        from bot.cli.input import InputError, expand_references

        try:
            prepared = expand_references(text, self.cwd)
        except (InputError, OSError) as exc:
            self.console.print(Text(f"✗ not sent: {exc}", style="red"))
            self.draft = text  # nothing typed is lost: it comes back in the editor
            return None
        for attachment in prepared.attachments:
            self.console.print(Text(f"  📎 attached {attachment.shown_as}", style="dim"))
        message = prepared.to_user_message(self.pending_context)
        self.pending_context = []
        return self.run_turn(message)

    def run_turn(self, message: UserMessage) -> RunResult | None:
        from rich.text import Text

        result, error = self._run_in_worker(lambda: self.agent.run(message), "opi-agent")
        if error is not None:
            self.console.print(Text(f"✗ internal error: {error!r}", style="bold red"))
            return None
        assert isinstance(result, RunResult)
        if result.outcome is Outcome.ABORTED:
            self.console.print(Text("turn aborted; the partial answer is saved in the session", style="yellow"))
        self._footer()
        return result

    def _after_turn(self, state: TurnInput) -> None:
        from rich.text import Text

        aborted = state.interrupts > 0
        if aborted and (state.queued or state.buffer):
            # After an abort, nothing queued is sent on its own: it goes back to the editor.
            self.draft = "\n".join([*state.queued, state.buffer]).strip("\n")
            self.console.print(Text("queued messages moved back to the editor", style="dim"))
            return
        self.queued.extend(state.queued)
        for text in state.queued:
            self.prompt.history.append_string(text)  # queued messages are history like typed ones
        if state.buffer:
            self.draft = state.buffer

    def _footer(self) -> None:
        from bot.cli.render import FooterStats

        info = self.agent.model.info
        self.renderer.footer(FooterStats(model=info.spec, context_used=self.context_used(),
                                         context_window=self.context_bound(), cost=self.agent.cost,
                                         usage=self.agent.usage))

    def _context_used(self) -> int:
        for message in reversed(self.agent.conversation.context()):
            if isinstance(message, AssistantMessage) and message.stop_reason != "aborted":
                return message.usage.total_tokens
        return 0

    # -- the main thread during a turn -------------------------------------------------------------
    def _supervise(self, worker: threading.Thread, state: TurnInput) -> None:
        """Read keys and answer approvals until the worker finishes."""
        with _cbreak_stdin() as fd, self._sigint_cancels(state):
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            while worker.is_alive():
                if state.interrupts >= HARD_EXIT_PRESSES:
                    raise _ExitRepl(EXIT_INTERRUPTED)
                request = self.approver.pending()
                if request is not None:
                    self._ask_approval(request, state, fd, decoder)
                    continue
                keys = _read_keys(fd, decoder, KEY_POLL_SECONDS)
                if keys:
                    self._type_while_busy(keys, state)
            worker.join()

    @contextlib.contextmanager
    def _sigint_cancels(self, state: TurnInput) -> Iterator[None]:
        from rich.text import Text

        def handler(signum: int, frame: FrameType | None) -> None:
            state.interrupts += 1
            self.agent.cancel.set()
            note = "aborting…" if state.interrupts == 1 else \
                f"still stopping (Ctrl+C {HARD_EXIT_PRESSES - state.interrupts} more time(s) to quit)"
            self.renderer.print(Text(note, style="yellow"))

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _type_while_busy(self, keys: str, state: TurnInput) -> None:
        state.buffer = _edit_line(state.buffer, keys, on_enter=lambda line: state.queued.append(line))
        self._show_status(state)

    def _show_status(self, state: TurnInput, question: list[Text] | None = None) -> None:
        from bot.cli.render import iter_status

        lines = list(question or [])
        lines.extend(iter_status(state.queued, state.buffer if state.reason is None else ""))
        self.renderer.set_status(lines)

    def _ask_approval(self, request: ApprovalRequest, state: TurnInput, fd: int | None,
                      decoder: codecs.IncrementalDecoder) -> None:
        from rich.text import Text

        from bot.cli.approval import CANCELLED_REASON
        from bot.cli.render import describe_tool_call, preview_tool_call

        # The proposed change comes first, so what is being allowed is on screen while the user decides.
        question = preview_tool_call(request.call, self.cwd) or Text()
        if question.plain:
            question.append("\n")
        question.append("? ", style="bold yellow")
        question.append(f"allow {request.tool_name} {describe_tool_call(request.call)}? ", style="bold")
        question.append("[y]es  [n]o  [a]lways for this tool", style="yellow")
        self._show_status(state, [question])
        interrupts = state.interrupts
        rest = ""
        while not request.done.is_set():
            if state.interrupts != interrupts:
                request.refuse(CANCELLED_REASON)
                break
            keys = _read_keys(fd, decoder, KEY_POLL_SECONDS)
            if fd is None and not keys:
                request.refuse("no terminal to ask for approval")
                break
            for position, key in enumerate(keys):
                if self._approval_key(request, state, key, question):
                    rest = keys[position + 1:]
                    break
            else:
                rest = ""
        self._report_approval(request, state)
        if rest:
            self._type_while_busy(rest, state)  # typed after the answer: a follow-up, not lost

    def _approval_key(self, request: ApprovalRequest, state: TurnInput, key: str, question: Text) -> bool:
        from rich.text import Text

        from bot.cli.approval import parse_answer

        if state.reason is not None:
            if key in "\r\n":
                reason, state.reason = state.reason, None
                request.refuse(reason)
                return True
            state.reason = _edit_line(state.reason, key, on_enter=lambda line: None)
            line = Text("  reason for the model (Enter sends; empty: none): ", style="yellow")
            line.append(state.reason)
            line.append("▏", style="dim")
            self._show_status(state, [question, line])
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
            self._show_status(state, [question, Text("  reason for the model (Enter sends; empty: none): ",
                                                     style="yellow")])
        return False

    def _report_approval(self, request: ApprovalRequest, state: TurnInput) -> None:
        from rich.text import Text

        state.reason = None
        self._show_status(state)
        if request.answer is None:
            always = f" (always for {request.tool_name} in this session)" if request.always else ""
            self.renderer.print(Text(f"  ✓ allowed{always}", style="green"))
        else:
            self.renderer.print(Text(f"  ✗ refused: {request.answer}", style="red"))

    # -- !command ----------------------------------------------------------------------------------
    def run_shell_command(self, text: str) -> None:
        from rich.text import Text

        from bot.cli.input import run_shell

        keep_private = text.startswith("!!")
        command = text[2:] if keep_private else text[1:]
        command = command.strip()
        if not command:
            self.console.print(Text("✗ give a command after ! (e.g. !git status)", style="red"))
            return
        try:
            result = run_shell(command, self.cwd)
        except KeyboardInterrupt:
            self.console.print(Text("✗ command interrupted", style="yellow"))
            return
        except OSError as exc:
            self.console.print(Text(f"✗ could not run the command: {exc}", style="red"))
            return
        lines = result.output.rstrip("\n").splitlines()
        for line in lines[-30:]:
            self.console.print(Text(line), soft_wrap=True)
        status = "timed out" if result.exit_code is None else f"exit {result.exit_code}"
        style = "green" if result.exit_code == 0 else "red"
        if keep_private:
            self.console.print(Text(f"{status} (not added to the context)", style=style))
            return
        self.pending_context.append(result.context_block())
        self.console.print(Text(f"{status} · the output goes with your next message", style=style))

    # -- slash command host (see bot.cli.slash.ReplHost) -------------------------------------------
    def show_help(self) -> None:
        from rich.table import Table
        from rich.text import Text

        from bot.cli.slash import help_lines

        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_column(no_wrap=True, style="bold")
        table.add_column(style="dim")
        for usage, text in help_lines():
            table.add_row(Text(usage), Text(text))  # Text: "[path]" is not rich markup
        self.console.print(table)

    def quit(self) -> None:
        raise _ExitRepl(EXIT_OK)

    def toggle_thinking(self) -> None:
        from rich.text import Text

        self.renderer.print_thinking_expanded()
        self.renderer.show_thinking = not self.renderer.show_thinking
        state = "shown in full" if self.renderer.show_thinking else "collapsed"
        self.console.print(Text(f"thinking will be {state} from now on", style="dim"))

    # -- used by the session commands in bot.cli.slash ---------------------------------------------
    def switch_session(self, handle: SessionHandle) -> None:
        """Continue in another session (new, resumed, forked): same settings, fresh agent."""
        from rich.text import Text

        old = self.handle.session
        if old is not None and hasattr(old, "close"):
            old.close()  # everything is already on disk; this only releases the file
        self.handle = handle
        self.settings = self.base_settings
        notes = len(self.notes)
        self.agent = self._build_agent(self._recorded_model())
        self.pending_context = []
        for note in self.notes[notes:]:
            self.console.print(Text(f"! {note}", style="yellow"), soft_wrap=True)

    def rebuild_agent(self, model: Any) -> None:
        """A new agent on the same session (after /model): totals so far carry over."""
        self.handle.usage, self.handle.cost = self.agent.usage, self.agent.cost
        self.agent = self._build_agent(model)

    def run_job(self, job: Callable[[], T]) -> T | None:
        """Run `job()` in a worker with the live region up and Ctrl+C setting the agent's cancel event
        (used for /compact and branch summaries, which call the model)."""
        from rich.text import Text

        self.agent.cancel.clear()
        value, error = self._run_in_worker(job, "opi-job")
        if error is not None:
            self.console.print(Text(f"✗ {error}", style="red"))
            return None
        return value

    def _run_in_worker(self, job: Callable[[], T], name: str) -> tuple[T | None, BaseException | None]:
        """Run `job()` on a worker thread while this thread supervises the keyboard (Ctrl+C sets the
        agent's cancel event; typing queues a follow-up), so the terminal stays responsive."""
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["value"] = job()
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=work, name=name, daemon=True)
        state = TurnInput()
        self.renderer.start()
        try:
            worker.start()
            self._supervise(worker, state)
        finally:
            self.renderer.stop()
        self._after_turn(state)
        return outcome.get("value"), outcome.get("error")

    def context_used(self) -> int:
        tokens = getattr(self.agent.compactor, "context_tokens", None)
        if callable(tokens):
            return int(tokens(self.agent))
        return self._context_used()

    def context_bound(self) -> int:
        threshold = getattr(self.agent.compactor, "threshold", None)
        if callable(threshold):
            return int(threshold(self.agent))
        return self.settings.compaction.threshold_tokens or self.agent.model.info.context_window

    def ask_line(self, message: str) -> str | None:
        """A one-off question at the prompt (pickers); None when the user cancels."""
        try:
            answer = self.prompt.prompt(message)
        except (KeyboardInterrupt, EOFError):
            return None
        return answer.strip()


# -- terminal helpers ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _cbreak_stdin() -> Iterator[int | None]:
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
        tty.setcbreak(fd, termios.TCSANOW)  # TCSAFLUSH would drop keys typed ahead
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def _read_keys(fd: int | None, decoder: codecs.IncrementalDecoder, timeout: float) -> str:
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


def _edit_line(buffer: str, keys: str, *, on_enter: Callable[[str], object]) -> str:
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
        elif key == "\x1b":
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
