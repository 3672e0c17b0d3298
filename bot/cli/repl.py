"""Interactive `opi`: a REPL that streams the agent's work, asks before it mutates and drives sessions.

Threads: the agent runs in a worker thread; the main thread owns the terminal. Between turns it shows
a prompt-toolkit prompt. During a turn `bot.cli.turn.TurnSupervisor` reads keys itself (cbreak mode,
so Ctrl+C still raises SIGINT; Esc interrupts too) to queue follow-up messages and to answer approval
questions, while `Renderer` draws the stream in a rich Live region. Interrupting sets the agent's cancel
event: the loop saves the partial assistant message as aborted and the bash tool kills its process group.

`Repl` is the host the slash commands (`bot.cli.slash.ReplHost`) work through. rich and prompt_toolkit
are imported when the REPL starts (`Repl.__init__`), never at module level, so importing this module
costs nothing on the `opi --version` path.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.agent.loop import Agent, Outcome, RunResult
from bot.cli.args import EXIT_INTERRUPTED, EXIT_OK, PICK_SESSION, settings_flags
from bot.cli.turn import HardExit, TurnInput, TurnSupervisor, ask_key, cbreak_stdin
from bot.cli.turn import edit_line as _edit_line  # noqa: F401 - the tests' name for the line editor
from bot.llm.messages import AssistantMessage, UserMessage

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession
    from rich.console import Console, RenderableType

    from bot.agent.config import Settings
    from bot.agent.runtime import SessionHandle
    from bot.cli.approval import Approver
    from bot.cli.render import Renderer

T = TypeVar("T")


class _ExitRepl(Exception):
    def __init__(self, code: int = EXIT_OK) -> None:
        self.code = code


def run_repl(args: argparse.Namespace, initial_message: str | None = None) -> int:
    """Entry point from `bot.cli.main` (stdin and stdout are terminals)."""
    from rich.console import Console

    from bot.agent.config import load_settings
    from bot.agent.runtime import SETUP_ERRORS, RunSetupError, SessionOptions, prepare_run
    from bot.cli.setup_errors import check_session_dir, describe_setup_error

    console = Console(highlight=False)
    cwd = Path.cwd()
    settings: Settings | None = None
    pick = args.resume == PICK_SESSION
    repl: Repl | None = None

    def make_repl(settings: Settings, handle: SessionHandle) -> Agent:
        nonlocal repl
        repl = Repl(settings, cwd, handle, console, explicit_model=args.model is not None)
        return repl.agent

    def setup_failed(exc: Exception) -> int:
        code, message = describe_setup_error(exc, settings, flags=settings_flags(args), cwd=cwd,
                                             config_path=args.config)
        print(f"opi: {message}", file=sys.stderr)
        return code

    try:
        settings = load_settings(cwd, flags=settings_flags(args),
                                 config_path=Path(args.config) if args.config else None)
        check_session_dir(settings)
    except SETUP_ERRORS as exc:
        return setup_failed(exc)
    options = SessionOptions(resume=None if pick else args.resume, continue_=args.continue_, fork=args.fork)
    try:
        with prepare_run(settings, cwd, session=options, interactive=True, make_agent=make_repl):
            assert repl is not None
            return repl.run(initial_message, startup="/resume" if pick else None)
    except RunSetupError as exc:
        return setup_failed(exc.error)


class Repl:
    """The REPL host: owns the agent, the session handle, the prompt and the screen."""

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
        self.explicit_model = explicit_model
        self.agent: Agent = self._build_agent_for_session()
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

    def _build_agent_for_session(self) -> Agent:
        """The session's recorded model unless --model was given; when no model can be built (no key
        set), the REPL still opens on the session, and a turn says what to set or to use /model."""
        from bot.agent.runtime import resolve_settings_model
        from bot.cli.model_choice import UnavailableModel, recorded_model
        from bot.llm.errors import ConfigError

        choice = recorded_model(self.settings, self.handle, explicit_model=self.explicit_model)
        self.settings = choice.settings
        self.notes.extend(choice.notes)
        model = choice.model
        if model is None:
            try:
                model = resolve_settings_model(self.settings, os.environ)
            except ConfigError as exc:
                if not self.handle.resumed or exc.detail.startswith(("invalid model spec", "unknown provider")):
                    raise
                model = UnavailableModel.for_spec(self.settings.model, exc)
                self.notes.append(f"{exc}; set it, or switch with /model PROVIDER:MODEL")
        return self._build_agent(model)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, initial_message: str | None = None, *, startup: str | None = None) -> int:
        self._banner()
        pending = initial_message
        try:
            if startup is not None:
                self.handle_input(startup)
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
                    with cbreak_stdin():
                        self.handle_input(text)
                except KeyboardInterrupt:  # Ctrl+C in a slash command: stop it, keep the REPL
                    self.say("interrupted", "yellow")
        except _ExitRepl as exit_:
            self._goodbye()
            return exit_.code
        self._goodbye()
        return EXIT_OK

    def _banner(self) -> None:
        info = self.agent.model.info
        session = f" · session {self.handle.path}" if self.handle.path else " · no session file"
        self.say(f"opi · {info.spec}{session}", "bold")
        for note in self.notes:
            self.say(f"! {note}", "yellow")
        if self.agent.conversation.context():
            from bot.cli.slash import show_recent

            show_recent(self)
        self.say("Enter sends · Alt+Enter new line · /help · Esc or Ctrl+C stops a turn · Ctrl+D quits", "dim")

    def _goodbye(self) -> None:
        if self.handle.path:
            self.say(f"session saved: {self.handle.path}", "dim")

    def _echo_user(self, text: str) -> None:
        self.say("› " + text, "bold")

    def _read_prompt(self) -> str | None:
        """One message from the editor; None to exit (Ctrl+D, or Ctrl+C twice at an empty prompt)."""
        default, self.draft = self.draft, ""
        try:
            text = self.prompt.prompt("› ", default=default)
        except EOFError:
            return None
        except KeyboardInterrupt:
            if self._last_prompt_interrupted:
                return None
            self._last_prompt_interrupted = True
            self.say("(Ctrl+C again or Ctrl+D to quit)", "dim")
            return ""
        self._last_prompt_interrupted = False
        return text

    def handle_input(self, text: str) -> None:
        from bot.cli import slash

        stripped = text.strip()
        if not stripped:
            return
        if slash.is_command(stripped):
            try:
                slash.dispatch(self, stripped)
            except slash.SlashError as exc:
                self.say(f"✗ {exc}", "red")
            return
        if stripped.startswith("!"):
            self.run_shell_command(stripped)
            return
        if stripped.startswith("//"):
            text = text.lstrip()[1:]
        self.send(text)

    # -- messages ----------------------------------------------------------------------------------
    def send(self, text: str) -> RunResult | None:
        from bot.cli.references import InputError, expand_references

        try:
            prepared = expand_references(text, self.cwd)
        except (InputError, OSError) as exc:
            self.say(f"✗ not sent: {exc}", "red")
            self.draft = text  # nothing typed is lost: it comes back in the editor
            return None
        for attachment in prepared.attachments:
            self.say(f"  📎 attached {attachment.shown_as}", "dim")
        message = prepared.to_user_message(self.pending_context)
        self.pending_context = []
        return self.run_turn(message)

    def run_turn(self, message: UserMessage) -> RunResult | None:
        result, error = self._run_in_worker(lambda: self.agent.run(message), "opi-agent")
        if error is not None:
            self.say(f"✗ internal error: {error!r}", "bold red")
            return None
        assert isinstance(result, RunResult)
        if result.outcome is Outcome.ABORTED:
            self.say("turn aborted; the partial answer is saved in the session", "yellow")
        self._footer()
        return result

    def _after_turn(self, state: TurnInput) -> None:
        aborted = state.interrupts > 0
        if aborted and (state.queued or state.buffer):
            # After an abort, nothing queued is sent on its own: it goes back to the editor.
            self.draft = "\n".join([*state.queued, state.buffer]).strip("\n")
            self.say("queued messages moved back to the editor", "dim")
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

    # -- !command ----------------------------------------------------------------------------------
    def run_shell_command(self, text: str) -> None:
        from bot.cli.input import run_shell

        keep_private = text.startswith("!!")
        command = text[2:] if keep_private else text[1:]
        command = command.strip()
        if not command:
            self.say("✗ give a command after ! (e.g. !git status)", "red")
            return
        try:
            result = run_shell(command, self.cwd)
        except KeyboardInterrupt:
            self.say("✗ command interrupted", "yellow")
            return
        except OSError as exc:
            self.say(f"✗ could not run the command: {exc}", "red")
            return
        lines = result.output.rstrip("\n").splitlines()
        for line in lines[-30:]:
            self.say(line)
        status = "timed out" if result.exit_code is None else f"exit {result.exit_code}"
        style = "green" if result.exit_code == 0 else "red"
        if keep_private:
            self.say(f"{status} (not added to the context)", style)
            return
        self.pending_context.append(result.context_block())
        self.say(f"{status} · the output goes with your next message", style)

    # -- the slash command host (bot.cli.slash.ReplHost) -------------------------------------------
    def say(self, text: str, style: str = "") -> None:
        self.renderer.say(text, style)

    def show(self, renderable: RenderableType) -> None:
        self.renderer.print(renderable)

    def show_help(self) -> None:
        from bot.cli.render import two_columns
        from bot.cli.slash import help_lines

        self.show(two_columns(help_lines()))

    def quit(self) -> None:
        raise _ExitRepl(EXIT_OK)

    def toggle_thinking(self) -> None:
        self.renderer.print_thinking_expanded()
        self.renderer.show_thinking = not self.renderer.show_thinking
        state = "shown in full" if self.renderer.show_thinking else "collapsed"
        self.say(f"thinking will be {state} from now on", "dim")

    def switch_session(self, handle: SessionHandle) -> None:
        """Continue in another session (new, resumed, forked): same settings, fresh agent."""
        old = self.handle.session
        if old is not None and hasattr(old, "close"):
            old.close()  # everything is already on disk; this only releases the file
        self.handle = handle
        self.settings = self.base_settings
        notes = len(self.notes)
        self.agent = self._build_agent_for_session()
        self.pending_context = []
        for note in self.notes[notes:]:
            self.say(f"! {note}", "yellow")

    def rebuild_agent(self, model: Any) -> None:
        """A new agent on the same session (after /model): totals so far carry over."""
        self.handle.usage, self.handle.cost = self.agent.usage, self.agent.cost
        self.agent = self._build_agent(model)

    def run_job(self, job: Callable[[], T]) -> T | None:
        """Run `job()` in a worker with the live region up and Ctrl+C setting the agent's cancel event
        (used for /compact and branch summaries, which call the model)."""
        self.agent.cancel.clear()
        value, error = self._run_in_worker(job, "opi-job")
        if error is not None:
            self.say(f"✗ {error}", "red")
            return None
        return value

    def _run_in_worker(self, job: Callable[[], T], name: str) -> tuple[T | None, BaseException | None]:
        supervisor = TurnSupervisor(self.renderer, self.approver, self.agent.cancel, self.cwd)
        try:
            value, error, state = supervisor.run(job, name)
        except HardExit:
            raise _ExitRepl(EXIT_INTERRUPTED) from None
        self._after_turn(state)
        return value, error

    def context_used(self) -> int:
        measured = self.agent.context_tokens()
        return measured[0] if measured is not None else self._context_used()

    def context_bound(self) -> int:
        measured = self.agent.context_tokens()
        if measured is not None:
            return measured[1]
        return self.settings.compaction.threshold_tokens or self.agent.model.info.context_window

    def ask_line(self, message: str) -> str | None:
        """A one-off question at the prompt (pickers); None when the user cancels."""
        try:
            answer = self.prompt.prompt(message)
        except (KeyboardInterrupt, EOFError):
            return None
        return answer.strip()

    def confirm(self, question: str) -> bool:
        """A y/n question answered like an approval: one key pressed after the question is shown
        (typed-ahead keys are dropped); Enter, Esc and Ctrl+C mean no."""
        from bot.cli.render import yes_no_question

        with cbreak_stdin() as fd:
            answer = ask_key(fd, "yn", lambda: self.show(yes_no_question(question)), default="n")
        self.say("  ✓ yes" if answer == "y" else "  ✗ no", "green" if answer == "y" else "dim")
        return answer == "y"
