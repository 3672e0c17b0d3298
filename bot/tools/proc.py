"""Process hardening and process-tree cleanup (Linux), shared by the tools, the CLI and the action's broker.

- `harden_current_process()` makes this process non-dumpable (`PR_SET_DUMPABLE` 0): a process of the same
  uid, such as a tool subprocess, can then no longer read its `/proc/PID/environ`, `/proc/PID/mem` or
  `/proc/PID/cmdline`-adjacent secrets, nor ptrace it. (Root with CAP_SYS_PTRACE still can: privilege
  separation by uid is what protects against that.) The flag is reset by `execve`, so children are
  ordinary, dumpable processes.
- `tool_command(argv, env)` (or `tool_popen_kwargs(env)`) is how every tool subprocess is started: the
  given (scrubbed) environment, a new session (so its own process group), and `PR_SET_PDEATHSIG` SIGKILL
  so that it dies when the thread that started it (and so the agent) dies.
- `set_child_subreaper()` keeps orphans of descendants (`setsid cmd &`, double-forked daemons) inside this
  process's tree, where `descendants()` finds them and `kill_descendants()` kills them.

On other systems the prctl helpers do nothing and return False; `unsupported_reason()` says why.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from functools import cache
from typing import Any

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38

# A process is identified by (pid, start time in clock ticks since boot): a pid alone may be reused.
ProcessKey = tuple[int, int]

_KILL_ROUNDS = 1000
_GIVE_UP_SECONDS = 10.0
_DEATH_WAIT_SECONDS = 1.0


class _Prctl:
    def __init__(self) -> None:
        self.function: Any = None
        self.reason = ""
        if not sys.platform.startswith("linux"):
            self.reason = f"prctl exists only on Linux (this is {sys.platform})"
            return
        try:
            # The process's own symbols include libc's: no `ctypes.util.find_library`, which runs
            # `ldconfig -p` in a subprocess at every start.
            function = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError) as exc:
            self.reason = f"libc's prctl could not be loaded: {exc}"
            return
        function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        function.restype = ctypes.c_int
        self.function = function

    def __call__(self, option: int, arg2: int = 0) -> int:
        """prctl(option, arg2, 0, 0, 0); raises OSError on failure, or when prctl is unavailable."""
        if self.function is None:
            raise OSError(self.reason)
        result: int = self.function(option, arg2, 0, 0, 0)
        if result < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        return result


@cache
def _prctl() -> _Prctl:
    return _Prctl()


def unsupported_reason() -> str:
    """Why the prctl helpers are no-ops here, or "" when they work."""
    return _prctl().reason


def _try_prctl(option: int, arg2: int) -> bool:
    prctl = _prctl()
    if prctl.function is None:
        return False
    prctl(option, arg2)
    return True


def set_dumpable(dumpable: bool) -> bool:
    """PR_SET_DUMPABLE. Non-dumpable: same-uid processes cannot read /proc/PID/{environ,mem,...} of this
    process or ptrace it, and it writes no core dump. False when unsupported (not Linux)."""
    return _try_prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def is_dumpable() -> bool | None:
    """None when unknown (not Linux)."""
    prctl = _prctl()
    return None if prctl.function is None else bool(prctl(PR_GET_DUMPABLE))


def set_no_new_privs() -> bool:
    """PR_SET_NO_NEW_PRIVS: neither this process nor any descendant can gain privileges through execve
    (setuid binaries such as sudo, file capabilities). Irreversible. False when unsupported."""
    return _try_prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_child_subreaper() -> bool:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants are re-parented to this process instead of init, so
    they stay findable with `descendants(os.getpid())`. This process should then reap them
    (`kill_descendants` does). False when unsupported."""
    return _try_prctl(PR_SET_CHILD_SUBREAPER, 1)


def is_child_subreaper() -> bool:
    prctl = _prctl()
    if prctl.function is None:
        return False
    value = ctypes.c_int(0)
    result: int = prctl.function(PR_GET_CHILD_SUBREAPER, ctypes.addressof(value), 0, 0, 0)
    return result == 0 and value.value != 0


def harden_current_process() -> bool:
    """What `opi` and the agent worker do at start: become non-dumpable, so that the commands the model
    runs (same uid) cannot read this process's environment or memory. True when it took effect."""
    return set_dumpable(False)


# -- tool subprocesses ---------------------------------------------------------------------------------
def pdeathsig_preexec(parent_pid: int | None = None) -> Callable[[], None]:
    """A `preexec_fn` that sets PR_SET_PDEATHSIG SIGKILL in the child.

    The child only gets the signal if the parent dies *after* the prctl, so it then checks that its parent
    is still the process that forked it (`parent_pid`, default: the caller) and kills itself otherwise.
    Note the kernel sends the signal when the *thread* that forked the child exits; tools wait for their
    subprocesses in the thread that started them, so that thread outlives them.
    """
    expected = os.getpid() if parent_pid is None else parent_pid
    prctl = _prctl()  # loaded before the fork: the child must not load libraries

    def preexec() -> None:
        if prctl.function is None:
            return
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != expected:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def tool_popen_kwargs(env: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for `subprocess.Popen`/`run` of any tool subprocess: exactly `env` (pass the
    context's scrubbed environment, never os.environ), its own session and process group, and
    PR_SET_PDEATHSIG SIGKILL set by a `preexec_fn` (which makes Python fork rather than vfork: a few ms
    per start in a large process; `tool_command` avoids that where it can)."""
    return {"env": dict(env), "start_new_session": True, "preexec_fn": pdeathsig_preexec()}


def tool_command(argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, Any]]:
    """(argv, Popen keyword arguments) for a tool subprocess, with the guarantees of `tool_popen_kwargs`.

    Where util-linux's `setpriv --pdeathsig` exists, the command is run through it (setpriv sets the signal
    and execs the program in the same process), which keeps Python's fast vfork path; otherwise the
    `preexec_fn` is used. Unlike the preexec_fn, setpriv does not re-check that its parent is still
    alive, so an agent killed within the millisecond between the fork and setpriv's prctl leaves the
    command orphaned (a subreaper above it, such as the action's broker, still kills it). Give `argv[0]` as
    an absolute path found beforehand: through setpriv, a missing program is exit status 127 with a
    message on stderr rather than an OSError from Popen.
    """
    kwargs: dict[str, Any] = {"env": dict(env), "start_new_session": True}
    setpriv = _setpriv_with_pdeathsig()
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "KILL", "--", *argv], kwargs
    if _prctl().function is not None:
        kwargs["preexec_fn"] = pdeathsig_preexec()
    return list(argv), kwargs


_SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


@cache
def _setpriv_with_pdeathsig() -> str | None:
    """setpriv from the system directories (never the tools' PATH), if it supports --pdeathsig."""
    if _prctl().function is None:
        return None
    path = shutil.which("setpriv", path=_SYSTEM_PATH)
    if path is None:
        return None
    try:
        probe = subprocess.run([path, "--pdeathsig", "KILL", "--", path, "--version"], env={"PATH": _SYSTEM_PATH},
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if probe.returncode == 0 else None


@contextlib.contextmanager
def exit_waiter(proc: subprocess.Popen[Any]) -> Iterator[Callable[[float], None]]:
    """A wait of at most N seconds that returns the moment `proc` exits: a pidfd where Linux has one
    (no polling back-off), else `Popen.wait` with that timeout. Callers check their own stop conditions
    between waits."""
    try:
        pidfd: int | None = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or a kernel older than 5.3
        pidfd = None

    def wait(seconds: float) -> None:
        if pidfd is not None:
            select.select([pidfd], [], [], seconds)
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=seconds)

    try:
        yield wait
    finally:
        if pidfd is not None:
            os.close(pidfd)


# -- process trees ---------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) from /proc/PID/stat, or None if the process is gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name may hold spaces and parentheses: the fields that matter follow the last ')'.
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return fields[0].decode(), int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _process_table() -> dict[int, tuple[str, int, int]]:
    table: dict[int, tuple[str, int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                table[int(name)] = stat
    return table


def _descendant_states(of_pid: int) -> dict[int, tuple[str, int, int]]:
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, tuple[str, int, int]] = {}
    pending = list(children.get(of_pid, ()))
    while pending:
        pid = pending.pop()
        if pid in found or pid == of_pid:
            continue
        found[pid] = table[pid]
        pending.extend(children.get(pid, ()))
    return found


def _children_of(pid: int) -> list[int] | None:
    """Children of every thread of `pid` from /proc/PID/task/TID/children; None when the kernel does not
    offer that file (CONFIG_PROC_CHILDREN)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # gone
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(child) for child in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread exited meanwhile
            return None
        except OSError:
            continue
    return found


def _descendants_by_children_files(of_pid: int) -> dict[int, tuple[str, int, int]] | None:
    """Like `_descendant_states`, reading only the subtree: much cheaper than scanning every process, but
    the kernel documents the children files as racy while the tree changes, so this is only used for
    snapshots of a quiet tree, never to decide that nothing is left to kill."""
    found: dict[int, tuple[str, int, int]] = {}
    pending = [of_pid]
    while pending:
        children = _children_of(pending.pop())
        if children is None:
            return None
        for child in children:
            stat = _stat(child)
            if stat is not None and child not in found and child != of_pid:
                found[child] = stat
                pending.append(child)
    return found


def descendants(of_pid: int) -> list[int]:
    """Every process below `of_pid` (children, their children, ...), zombies included, read from /proc.
    Empty where /proc is not available."""
    return sorted(_descendant_states(of_pid))


def descendant_keys(of_pid: int) -> frozenset[ProcessKey]:
    """(pid, start time) of every descendant: a snapshot to pass to `kill_descendants(keep=...)`. Take it
    while the tree is quiet (no process in it forking or exiting): it may then read only the subtree."""
    states = _descendants_by_children_files(of_pid)
    if states is None:
        states = _descendant_states(of_pid)
    return frozenset((pid, start) for pid, (_, _, start) in states.items())


def kill_descendants(of_pid: int, except_pids: Collection[int] = (), *,
                     keep: Collection[ProcessKey] = ()) -> list[int]:
    """SIGKILL every descendant of `of_pid` except `except_pids` and the processes in `keep` (a
    `descendant_keys` snapshot), over and over until none is left alive. Returns the pids it killed.

    Repeating handles a descendant that forks while being killed, and orphans re-parented to `of_pid` (a
    subreaper) or to a spared process meanwhile. Signals go through a pidfd opened and then checked against
    the start time read from /proc, so a recycled pid is never signalled. The descendants of a spared
    process are not spared. When `of_pid` is this process, the zombie children this leaves are reaped.
    Gives up after about 10 s (a process in uninterruptible sleep cannot die until it wakes; its SIGKILL
    stays pending).
    """
    spared = set(keep)
    killed: set[int] = set()
    zombies: set[int] = set()
    give_up = time.monotonic() + _GIVE_UP_SECONDS
    for _ in range(_KILL_ROUNDS):
        if time.monotonic() > give_up:
            break  # e.g. stuck in uninterruptible sleep: the pending SIGKILL ends it when it wakes
        states = _descendant_states(of_pid)
        zombies = {pid for pid, (state, _, _) in states.items() if state == "Z"}
        alive = {pid: start for pid, (state, _, start) in states.items()
                 if state not in ("Z", "X") and pid not in except_pids and (pid, start) not in spared}
        if not alive:
            break
        fds = [fd for pid, start in alive.items() if (fd := _kill(pid, start)) is not None]
        killed.update(alive)
        _wait_for_exit(fds)
    if of_pid == os.getpid():
        _reap(killed | zombies, except_pids, spared)
    return sorted(killed)


def _kill(pid: int, start: int) -> int | None:
    """SIGKILL `pid` if it is still the process that started at `start`; the open pidfd, to wait on."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        # No pidfd (old kernel or not Linux): plain kill after a fresh identity check.
        stat = _stat(pid)
        if stat is not None and stat[2] == start:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return None
    stat = _stat(pid)
    if stat is None or stat[2] != start:
        os.close(fd)
        return None
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    return fd


def _wait_for_exit(fds: list[int]) -> None:
    """Wait (briefly) until every pidfd reports its process exited; closes them."""
    try:
        pending = list(fds)
        while pending:
            ready, _, _ = select.select(pending, [], [], _DEATH_WAIT_SECONDS)
            if not ready:
                return  # e.g. stuck in uninterruptible sleep: the next round looks again
            pending = [fd for fd in pending if fd not in ready]
    finally:
        for fd in fds:
            os.close(fd)


def _reap(pids: Collection[int], except_pids: Collection[int], spared: Collection[ProcessKey]) -> None:
    spared_pids = {pid for pid, _ in spared} | set(except_pids)
    for pid in pids:
        if pid in spared_pids:
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # only our own children can be reaped; others raise
