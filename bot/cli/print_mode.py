"""`opi -p`: run one prompt to completion without a terminal UI.

stdout gets only the final answer (or, with `--json`, one JSON object per line: every agent event, then
a summary), so it can be piped; everything a human watching wants to know goes to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from bot.agent import events as ev
from bot.agent.config import Settings, load_settings
from bot.agent.loop import Agent, Outcome, RunResult
from bot.agent.runtime import SETUP_ERRORS as RUNTIME_SETUP_ERRORS
from bot.agent.runtime import PreparedRun, RunSetupError, SessionHandle, SessionOptions, prepare_run
from bot.cli.model_choice import recorded_model
from bot.cli.references import PreparedMessage, collect_references
from bot.cli.setup_errors import check_session_dir, describe_setup_error
from bot.cli.setup_errors import error_exit_code as error_exit_code  # importable from here too
from bot.llm.base import Model
from bot.llm.messages import Cost, Usage, UserMessage

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_AUTH, EXIT_PROVIDER, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

LIMIT_OUTCOMES = {Outcome.MAX_TURNS, Outcome.MAX_COST, Outcome.TIMEOUT}


@dataclass
class PrintOptions:
    prompt: str  # what the user typed: its `@path` references are attached
    piped: str = ""  # stdin, appended after a blank line; never scanned for `@path` (it may be hostile)
    json: bool = False
    config_path: str | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)
    resume: str | None = None
    continue_: bool = False
    fork: str | None = None
    cwd: Path = field(default_factory=Path.cwd)


def exit_code(result: RunResult) -> int:
    if result.outcome is Outcome.COMPLETED:
        return EXIT_OK
    if result.outcome is Outcome.ABORTED:
        return EXIT_INTERRUPTED
    if result.outcome in LIMIT_OUTCOMES:
        return EXIT_FAILURE
    if result.model_error is not None:
        return error_exit_code(result.model_error)
    return EXIT_FAILURE


# -- rendering ---------------------------------------------------------------------------------------
class HumanRenderer:
    """Diagnostics for a person on stderr: one line per tool call, retries, warnings, the limit hit."""

    def __init__(self, err: TextIO) -> None:
        self.err = err

    def __call__(self, event: ev.Event) -> None:
        line = ev.human_line(event)
        if line is not None:
            self._line(line)

    def _line(self, text: str) -> None:
        print(text, file=self.err, flush=True)


class JsonRenderer:
    """Every event as one JSON line on stdout, flushed so a consumer sees it as it happens."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: ev.Event) -> None:
        write_stdout(self.out, event.to_json() + "\n")


def write_stdout(out: TextIO, text: str) -> None:
    """Write and flush; a reader that went away (`opi --json | head -3`) must not crash the run, which
    goes on (and keeps saving its session) with stdout discarded."""
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())  # also silences the flush at interpreter exit
            os.close(devnull)
        except (OSError, ValueError):
            pass


@dataclass(frozen=True)
class Spend:
    """What this run spent (`RunResult.run_usage`/`run_cost`), apart from a resumed session's earlier spend."""

    usage: Usage
    cost: Cost

    @staticmethod
    def of_run(result: RunResult, before: SessionHandle | None = None) -> Spend:
        return Spend(result.run_usage, result.run_cost)


def _dollars(cost: Cost) -> str:
    return "unknown price" if cost.total is None else f"${cost.total:.4f}"


def usage_line(result: RunResult, spend: Spend, resumed: bool) -> str:
    u = spend.usage
    line = (f"{result.outcome.value} · {result.turns} turn{'s' if result.turns != 1 else ''} · tokens: "
            f"{u.input} in, {u.output} out, {u.cache_read} cache read, {u.cache_write} cache write · "
            f"cost {_dollars(spend.cost)} · {result.duration_seconds:.1f}s")
    if resumed:
        line += f" (session total {result.usage.total_tokens} tokens, {_dollars(result.cost)})"
    return line


def _tokens(usage: Usage) -> dict[str, int]:
    return {"input": usage.input, "output": usage.output, "cache_read": usage.cache_read,
            "cache_write": usage.cache_write, "total": usage.total_tokens}


def summary(result: RunResult | None, *, code: int, session: SessionHandle | None,
            error: str | None = None) -> dict[str, Any]:
    """The last `--json` line. Tokens and cost are this run's; `session_total` includes what a resumed
    session had spent before. A null cost means the price is unknown, never 0."""
    spend = Spend.of_run(result, session) if result else Spend(Usage(), Cost())
    return {
        "type": "summary",
        "outcome": result.outcome.value if result else "error",
        "exit_code": code,
        "turns": result.turns if result else 0,
        "tokens": _tokens(spend.usage),
        "cost": spend.cost.total,
        "cost_breakdown": spend.cost.model_dump(mode="json"),
        "session_total": {"tokens": _tokens(result.usage), "cost": result.cost.total} if result else None,
        "compactions": result.compactions if result else 0,
        "duration_seconds": round(result.duration_seconds, 3) if result else 0.0,
        "error": error if error is not None else result.error if result else None,
        "session": str(session.path) if session and session.path else None,
        "final_text": result.final_text if result and result.ok else None,
    }


# -- running ---------------------------------------------------------------------------------------
def run_print(options: PrintOptions, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    settings: Settings | None = None
    try:
        settings = load_settings(options.cwd, flags=options.flags,
                                 config_path=Path(options.config_path) if options.config_path else None)
        check_session_dir(settings)
    except SETUP_ERRORS as exc:
        return _setup_failed(exc, options, out, err, None, settings)
    notes: list[str] = []

    def choose_model(settings: Settings, handle: SessionHandle) -> tuple[Settings, Model | None]:
        choice = recorded_model(settings, handle, explicit_model="model" in options.flags)
        notes.extend(choice.notes)
        return choice.settings, choice.model

    session = SessionOptions(resume=options.resume, continue_=options.continue_, fork=options.fork)
    try:
        with prepare_run(settings, options.cwd, session=session, choose_model=choose_model) as run:
            result = _run_agent(run, options, out, err, notes)
    except RunSetupError as exc:
        return _setup_failed(exc.error, options, out, err, None, settings)
    if result is None:
        return EXIT_FAILURE
    # Reported once the run is closed: a session the model never answered in is gone by now.
    code = exit_code(result)
    reason = limit_message(result, run.settings) if result.outcome in LIMIT_OUTCOMES else None
    if options.json:
        write_stdout(out, compact_json(summary(result, code=code, session=run.handle, error=reason)) + "\n")
    else:
        _report(result, run.handle, out, err, reason)
    return code


def _run_agent(run: PreparedRun, options: PrintOptions, out: TextIO, err: TextIO,
               notes: list[str]) -> RunResult | None:
    """The run itself; None after an internal error (already reported)."""
    agent, handle = run.agent, run.handle
    for warning in [*handle.warnings, *notes]:
        print(f"opi: warning: {warning}", file=err)
    message = prompt_message(options, err)
    agent.subscribe(JsonRenderer(out) if options.json else HumanRenderer(err))
    try:
        with _cancel_on_sigint(agent, err):
            return agent.run(message)
    except Exception as exc:  # a bug must still end with a message, a summary and exit 1
        traceback.print_exc(file=err)
        print(f"opi: internal error: {exc!r} (the session so far is saved"
              f"{f' in {handle.path}' if handle.path else ''})", file=err)
        if options.json:
            write_stdout(out, compact_json(summary(None, code=EXIT_FAILURE, session=handle, error=repr(exc)))
                         + "\n")
        return None


def compact_json(data: Mapping[str, Any]) -> str:
    """One line, no padding: the same shape as the event lines."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def prompt_message(options: PrintOptions, err: TextIO) -> UserMessage:
    """The typed prompt with its `@path` files attached (a reference naming no file is a warning: no one
    is there to fix it), then the piped text."""
    attachments, problems = collect_references(options.prompt, options.cwd)
    for problem in problems:
        print(f"opi: warning: {problem}; the prompt is sent without it", file=err)
    for attachment in attachments:
        print(f"opi: attached {attachment.shown_as}", file=err)
    text = "\n\n".join(part for part in (options.prompt, options.piped) if part)
    return PreparedMessage(text=text, attachments=attachments).to_user_message()


def limit_message(result: RunResult, settings: Settings) -> str:
    """Which limit stopped the run, in the user's terms (the loop only sees a cancelled request when the
    time limit interrupts it)."""
    if result.outcome is Outcome.TIMEOUT and settings.timeout_seconds:
        return f"time limit of {settings.timeout_seconds:g} s reached"
    if result.outcome is Outcome.MAX_TURNS and settings.max_turns:
        turns = settings.max_turns
        return f"reached the limit of {turns} turn{'s' if turns != 1 else ''}"
    return result.error or result.outcome.value


# Failures before the agent starts: bad settings, model spec, API key, tool selection, session.
SETUP_ERRORS = RUNTIME_SETUP_ERRORS


def _setup_failed(exc: Exception, options: PrintOptions, out: TextIO, err: TextIO,
                  handle: SessionHandle | None, settings: Settings | None) -> int:
    code, message = describe_setup_error(exc, settings, flags=options.flags, cwd=options.cwd,
                                         config_path=options.config_path)
    print(f"opi: {message}", file=err)
    if options.json:
        write_stdout(out, compact_json(summary(None, code=code, session=handle, error=message)) + "\n")
    return code


def _report(result: RunResult, handle: SessionHandle, out: TextIO, err: TextIO, reason: str | None) -> None:
    session = handle.path
    if result.ok:
        text = result.final_text
        write_stdout(out, text if text.endswith("\n") or not text else text + "\n")
    elif result.outcome in LIMIT_OUTCOMES:
        print(f"opi: stopped before finishing: {reason or result.error}", file=err)
    elif result.outcome is Outcome.ABORTED:
        print("opi: interrupted" + (" (the partial answer was saved)" if session else ""), file=err)
    else:
        print(f"opi: error: {result.error}", file=err)
    print(usage_line(result, Spend.of_run(result, handle), handle.resumed), file=err)
    if session:
        print(f"session: {session}", file=err)


@contextmanager
def _cancel_on_sigint(agent: Agent, err: TextIO) -> Iterator[None]:
    """First Ctrl+C cancels the run cleanly (partial message saved); a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    presses = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            raise KeyboardInterrupt
        print("\nopi: interrupting (Ctrl+C again to quit at once)", file=err, flush=True)
        agent.cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
