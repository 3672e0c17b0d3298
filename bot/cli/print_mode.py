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
from bot.agent.config import SettingsError, load_settings
from bot.agent.loop import Agent, Outcome, RunResult
from bot.agent.runtime import SessionHandle, SessionUnavailable, build_agent, open_session
from bot.agent.session import SessionError
from bot.llm import errors
from bot.llm.messages import Cost, Usage

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_AUTH, EXIT_PROVIDER, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

LIMIT_OUTCOMES = {Outcome.MAX_TURNS, Outcome.MAX_COST, Outcome.TIMEOUT}


@dataclass
class PrintOptions:
    prompt: str
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


def error_exit_code(error: BaseException) -> int:
    """Map a failure to the documented exit codes."""
    if isinstance(error, errors.RetriesExhausted):
        return error_exit_code(error.last)
    if isinstance(error, errors.AuthError):
        return EXIT_AUTH
    if isinstance(error, errors.ConfigError | SettingsError | SessionUnavailable | ValueError | LookupError):
        return EXIT_USAGE  # bad spec, missing key, unknown tool, session not found
    if isinstance(error, errors.ModelError):
        return EXIT_PROVIDER
    return EXIT_FAILURE


# -- rendering ---------------------------------------------------------------------------------------
class HumanRenderer:
    """Diagnostics for a person on stderr: one line per tool call, retries, warnings, the limit hit."""

    def __init__(self, err: TextIO) -> None:
        self.err = err

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.ToolStart):
            self._line(f"→ {event.tool_call.name} {_brief_arguments(event.tool_call.arguments)}".rstrip())
        elif isinstance(event, ev.ToolEnd) and event.is_error:
            self._line(f"  ✗ {event.tool_name}: {_first_line(event.text)}")
        elif isinstance(event, ev.Retry):
            self._line(f"retry {event.attempt} in {event.delay_seconds:.1f}s: {event.error}")
        elif isinstance(event, ev.Warning):
            self._line(f"warning: {event.message}")
        elif isinstance(event, ev.CompactionEnd):
            self._line(f"compacted context ({event.reason}): {event.tokens_before} → {event.tokens_after} "
                       "tokens" + (" (fallback summary)" if event.summary_fallback else ""))

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


def _brief_arguments(arguments: Mapping[str, Any], limit: int = 120) -> str:
    parts = []
    for key, value in arguments.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = text.replace("\n", "⏎")
        if len(text) > 60:
            text = text[:57] + "..."
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else "(no output)"


@dataclass(frozen=True)
class Spend:
    """What this run spent: the agent's totals minus what a resumed session had spent before."""

    usage: Usage
    cost: Cost

    @staticmethod
    def of_run(result: RunResult, before: SessionHandle | None) -> Spend:
        if before is None:
            return Spend(result.usage, result.cost)
        u, b = result.usage, before.usage
        usage = Usage(input=u.input - b.input, output=u.output - b.output,
                      cache_read=u.cache_read - b.cache_read, cache_write=u.cache_write - b.cache_write)
        return Spend(usage, _cost_difference(result.cost, before.cost))


def _cost_difference(after: Cost, before: Cost) -> Cost:
    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, a - b)

    return Cost(input=minus(after.input, before.input), output=minus(after.output, before.output),
                cache_read=minus(after.cache_read, before.cache_read),
                cache_write=minus(after.cache_write, before.cache_write), total=minus(after.total, before.total))


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
        "error": result.error if result else error,
        "session": str(session.path) if session and session.path else None,
        "final_text": result.final_text if result and result.ok else None,
    }


# -- running ---------------------------------------------------------------------------------------
def run_print(options: PrintOptions, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    handle: SessionHandle | None = None
    try:
        settings = load_settings(options.cwd, flags=options.flags,
                                 config_path=Path(options.config_path) if options.config_path else None)
        handle = open_session(settings, options.cwd, resume=options.resume, continue_=options.continue_,
                              fork=options.fork)
        agent = build_agent(settings, options.cwd, session=handle)
    except SETUP_ERRORS as exc:
        if handle is not None:
            handle.discard_if_unused()
        return _setup_failed(exc, options, out, err, handle)
    for warning in handle.warnings:
        print(f"opi: warning: {warning}", file=err)
    agent.subscribe(JsonRenderer(out) if options.json else HumanRenderer(err))
    try:
        with _cancel_on_sigint(agent, err):
            result = agent.run(options.prompt)
    except Exception as exc:  # a bug must still end with a message, a summary and exit 1
        traceback.print_exc(file=err)
        print(f"opi: internal error: {exc!r} (the session so far is saved"
              f"{f' in {handle.path}' if handle.path else ''})", file=err)
        if options.json:
            write_stdout(out, json.dumps(summary(None, code=EXIT_FAILURE, session=handle, error=repr(exc)))
                         + "\n")
        return EXIT_FAILURE
    finally:
        handle.close()
    code = exit_code(result)
    if options.json:
        write_stdout(out, json.dumps(summary(result, code=code, session=handle)) + "\n")
    else:
        _report(result, handle, out, err)
    return code


# Failures before the agent starts: bad settings, model spec, API key, tool selection, session.
SETUP_ERRORS = (SettingsError, errors.ModelError, SessionError, ValueError, LookupError, OSError)


def _setup_failed(exc: Exception, options: PrintOptions, out: TextIO, err: TextIO,
                  handle: SessionHandle | None) -> int:
    code = error_exit_code(exc)
    print(f"opi: {exc}", file=err)
    if options.json:
        write_stdout(out, json.dumps(summary(None, code=code, session=handle, error=str(exc))) + "\n")
    return code


def _report(result: RunResult, handle: SessionHandle, out: TextIO, err: TextIO) -> None:
    session = handle.path
    if result.ok:
        text = result.final_text
        write_stdout(out, text if text.endswith("\n") or not text else text + "\n")
    elif result.outcome in LIMIT_OUTCOMES:
        print(f"opi: stopped before finishing: {result.error}", file=err)
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
