"""Start the agent worker under its own uid, feed it the request, read its events, and stop it for good.

What comes back on the worker's stdout is untrusted: tool subprocesses share its uid. Lines are bounded,
parsed as JSON and validated; anything else is logged (prefixed, so a line cannot pose as a workflow
command) and ignored. When the worker is done, times out or the run is cancelled, every process it left
behind is killed before the broker does anything else: the broker is a child subreaper, so even a
double-forked daemon is still its descendant.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import bot
from bot.action.sandbox import AgentIdentity, kill_every_process_of, processes_of
from bot.agent.worker import WORKER_RESULT, WORKER_SESSION, WorkerRequest, WorkerResult
from bot.tools import proc

MAX_EVENT_LINE = 1 << 20  # a tool result is already truncated far below this
_STOP_GRACE_SECONDS = 10.0  # after SIGTERM: time to save the partial answer


@dataclass
class WorkerOutcome:
    result: WorkerResult | None
    session_path: Path | None = None
    exit_code: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    stderr_tail: list[str] = field(default_factory=list)


def worker_command() -> list[str]:
    """The broker's own interpreter and its own copy of `bot`, whatever the environment says.

    -I: no PYTHONPATH, user site or working directory on sys.path (the workspace is the PR's code), so
    the package's directory is put first explicitly; -B: the agent's uid may not be able to write
    bytecode next to the package."""
    package_parent = str(Path(bot.__file__).resolve().parent.parent)
    code = (f"import sys; sys.path.insert(0, {package_parent!r}); "
            "from bot.agent.worker import main; raise SystemExit(main(sys.argv[1:]))")
    return [sys.executable, "-I", "-B", "-c", code]


def _restricted_child() -> Callable[[], None]:
    """Runs in the worker after the uid switch: it dies with the broker, and no setuid binary or file
    capability can ever raise its privileges again (no_new_privs is inherited by all it starts)."""
    die_with_parent = proc.pdeathsig_preexec()

    def preexec() -> None:
        die_with_parent()
        proc.set_no_new_privs()

    return preexec


class AgentProcess:
    def __init__(self, request: WorkerRequest, identity: AgentIdentity, env: Mapping[str, str], *,
                 on_event: Callable[[dict[str, Any]], None], log: Callable[[str], None]) -> None:
        self.request = request
        self.identity = identity
        self.env = dict(env)
        self.on_event = on_event
        self.log = log
        self.outcome = WorkerOutcome(result=None)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sweep_uid = False  # whether every process of the agent's uid is the agent's (see stop)

    def run(self, *, timeout: float | None, cancelled: threading.Event) -> WorkerOutcome:
        proc.set_child_subreaper()
        uid = self.identity.uid
        self._sweep_uid = self.identity.separate and uid is not None and not processes_of(uid)
        self._proc = self._start()
        readers = [threading.Thread(target=self._read_events, args=(self._proc.stdout,), daemon=True),
                   threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True)]
        for reader in readers:
            reader.start()
        try:
            self._feed(self._proc)
            self._wait(self._proc, timeout, cancelled)
        finally:
            self.stop()
            for reader in readers:
                reader.join(timeout=5)
        self.outcome.exit_code = self._proc.returncode
        return self.outcome

    def stop(self) -> None:
        """SIGTERM the worker (it saves its partial answer), then kill it and everything it left."""
        worker = self._proc
        if worker is not None and worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        proc.kill_descendants(os.getpid())
        if self._sweep_uid and not kill_every_process_of(self.identity):
            self.log(f"opi: warning: processes of the agent's uid {self.identity.uid} could not all be killed")
        proc.kill_descendants(os.getpid())  # reaps what the sweep killed (they were reparented here)

    def _start(self) -> subprocess.Popen[bytes]:
        identity = self.identity
        kwargs: dict[str, Any] = {}
        if identity.separate:
            kwargs.update(user=identity.uid, group=identity.gid, extra_groups=[])
        return subprocess.Popen(
            worker_command(), cwd=self.request.workspace, env=self.env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            preexec_fn=_restricted_child(), **kwargs,
        )

    def _feed(self, worker: subprocess.Popen[bytes]) -> None:
        assert worker.stdin is not None
        try:
            worker.stdin.write(self.request.model_dump_json().encode("utf-8"))
            worker.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; its stderr says why

    def _wait(self, worker: subprocess.Popen[bytes], timeout: float | None,
              cancelled: threading.Event) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        with proc.exit_waiter(worker) as exited:
            while worker.poll() is None:
                # Woken at once when the worker exits; a cancel or the deadline is noticed within 0.2 s.
                exited(0.2)
                if cancelled.is_set():
                    self.outcome.cancelled = True
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    self.outcome.timed_out = True
                    self.log("opi: the agent outlived its time limit; stopping it")
                    return

    def _read_events(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        while True:
            line = stream.readline(MAX_EVENT_LINE)
            if not line:
                return
            if not line.endswith(b"\n"):  # over-long: drop the rest of it
                while (rest := stream.readline(MAX_EVENT_LINE)) and not rest.endswith(b"\n"):
                    pass
                self.log("opi: warning: dropped an over-long line from the agent")
                continue
            self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self.log(f"opi: agent: {line[:300].decode('utf-8', 'replace').rstrip()}")
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == WORKER_RESULT:
            try:
                self.outcome.result = WorkerResult.model_validate(event)
            except ValueError as exc:
                self.log(f"opi: warning: the agent's result was malformed: {exc}")
        elif kind == WORKER_SESSION and isinstance(event.get("path"), str):
            self.outcome.session_path = Path(event["path"])
        try:
            self.on_event(event)
        except Exception as exc:  # a progress display must never stop the run
            self.log(f"opi: warning: event handler failed: {type(exc).__name__}: {exc}")

    def _read_stderr(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        tail = self.outcome.stderr_tail
        while line := stream.readline(8192):
            text = line.decode("utf-8", "replace").rstrip()
            tail.append(text)
            del tail[:-40]
            # Prefixed: the runner treats a line starting with `::` as a workflow command.
            self.log(f"opi: agent stderr: {text}")
