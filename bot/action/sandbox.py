"""Where and as whom the agent runs: an unprivileged uid, its own home and temp, a scrubbed environment.

The broker (this process) holds every secret; the agent worker must get none of them. Started as root (the
container action, a self-hosted runner), the broker runs the worker as the workspace owner (uid 1001 on
hosted runners) or, when the workspace belongs to root, as a dedicated uid that owns nothing else. A process
of another uid cannot read the broker's `/proc/<pid>/environ` or memory, and the broker is non-dumpable
besides. The runner's file commands (`GITHUB_ENV`, `GITHUB_OUTPUT`, …) would let the agent inject
environment into the job's later steps, RUNNER_TEMP holds the broker's state, and the step's HOME what
earlier steps left (credentials among it): those directories are locked for the length of the run.

Started as an ordinary user (a laptop's `opi action --dry-run`), the worker shares the broker's uid: it then
relies on the broker being non-dumpable and holding its secrets in memory only, which is logged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.tools.base import is_secret_env_name

# Owns no file on a runner image; nobody is 65534 and may own things, so a uid of its own.
DEDICATED_UID = 65532
# The variables that point at the runner's file commands: writing them changes later steps.
FILE_COMMAND_VARIABLES = ("GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_STATE", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")
# Never handed to the agent even though their names look harmless.
_WITHHELD = frozenset({*FILE_COMMAND_VARIABLES, "GITHUB_EVENT_PATH", "OPI_SECRETS_FD", "RUNNER_TEMP",
                       "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "LD_PRELOAD", "LD_LIBRARY_PATH",
                       "BASH_ENV", "ENV"})
# XDG_*: they would point back into the step's HOME, which the agent gets a fresh one of.
_WITHHELD_PREFIXES = ("INPUT_", "ACTIONS_", "STATE_", "GIT_CONFIG", "OPI_", "XDG_")


@dataclass(frozen=True)
class AgentIdentity:
    uid: int | None  # None: the broker's own uid (the broker is not root)
    gid: int | None
    dedicated: bool = False  # the uid owns nothing but what this run gave it

    @property
    def separate(self) -> bool:
        return self.uid is not None and self.uid != os.geteuid()

    def describe(self) -> str:
        if not self.separate:
            return f"uid {os.geteuid()} (the broker's own: start `opi action` as root for a separate uid)"
        return f"uid {self.uid}" + (" (dedicated)" if self.dedicated else " (the workspace owner)")


def choose_identity(workspace: Path) -> AgentIdentity:
    if os.geteuid() != 0:
        return AgentIdentity(None, None)
    info = workspace.stat()
    if info.st_uid != 0:
        return AgentIdentity(info.st_uid, info.st_gid)
    return AgentIdentity(DEDICATED_UID, DEDICATED_UID, dedicated=True)


def processes_of(uid: int) -> list[int]:
    """The pids whose real uid is `uid` (from /proc: those this process can see)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as status:
                line = next(line for line in status if line.startswith("Uid:"))
            if int(line.split()[1]) == uid:
                found.append(int(entry.name))
    return found


# Runs as the agent's uid. One kill(-1) reaches every process of the uid at once (the kernel holds the
# task list while it signals, and a fork racing it is aborted); the loop then waits until none is alive
# (zombies, which the broker reaps, do not count) and signals again if one is.
_SWEEP = """
import os, signal, sys, time

def alive():
    me, found = os.getpid(), False
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) == os.getuid() and not fields["State"].strip().startswith(("Z", "X")):
            found = True
    return found

for _ in range(500):
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        sys.exit(0)
    if not alive():
        sys.exit(0)
    time.sleep(0.01)
sys.exit(1)
"""


def kill_every_process_of(identity: AgentIdentity) -> bool:
    """SIGKILL every process of the agent's uid, as that uid: kill(-1) reaches each one, however it was
    started, until none is left. A tree walk from the broker cannot catch a process that forks and exits
    faster than one scan of /proc (its pid changes every hop). Only for a uid that ran nothing before the
    agent (checked by the caller): on a self-hosted runner the workspace owner may be the runner itself.
    True when the uid is left with no process."""
    if not identity.separate or identity.uid is None:
        return False
    done = subprocess.run([sys.executable, "-I", "-S", "-c", _SWEEP], user=identity.uid, group=identity.gid,
                          extra_groups=[], env={}, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False)
    return done.returncode == 0


def agent_environment(source: Mapping[str, str], secrets: Iterable[str], *, home: Path, tmp: Path) -> dict[str, str]:
    """The worker's environment: the step's, minus every secret by name or by value, minus the runner's
    file commands and inputs, with a fresh HOME and TMPDIR that hold nothing from earlier steps."""
    values = [value for value in secrets if len(value) >= 6]
    env = {
        name: value for name, value in source.items()
        if not is_secret_env_name(name) and name not in _WITHHELD and not name.startswith(_WITHHELD_PREFIXES)
        and not any(secret in value for secret in values)
    }
    env.update({"HOME": str(home), "TMPDIR": str(tmp), "GIT_TERMINAL_PROMPT": "0",
                "PYTHONDONTWRITEBYTECODE": "1"})
    env.setdefault("PATH", os.defpath)
    return env


@dataclass
class AgentDirs:
    root: Path  # owned by the broker; removed at the end
    home: Path
    tmp: Path
    sessions: Path
    logs: Path  # read-only for the agent: CI logs the broker downloaded


def make_agent_dirs(identity: AgentIdentity, parent: Path | None = None) -> AgentDirs:
    """Fresh directories outside every runner directory (those are locked during the run)."""
    root = Path(tempfile.mkdtemp(prefix="opi-agent-", dir=parent or _system_temp()))
    os.chmod(root, 0o711)  # the agent may reach its own subdirectories, not list the broker's
    dirs = AgentDirs(root, root / "home", root / "tmp", root / "sessions", root / "ci-logs")
    for path in (dirs.home, dirs.tmp, dirs.sessions):
        path.mkdir(mode=0o700)
        if identity.separate:
            os.chown(path, identity.uid or 0, identity.gid or 0)
    dirs.logs.mkdir(mode=0o755)
    return dirs


def _system_temp() -> Path:
    # Not TMPDIR: a runner may point it into RUNNER_TEMP, which is locked while the agent runs.
    return Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())


def remove_agent_dirs(dirs: AgentDirs) -> None:
    shutil.rmtree(dirs.root, ignore_errors=True)


def runner_dirs_to_lock(env: Mapping[str, str], keep_reachable: Iterable[Path]) -> list[Path]:
    """The runner's directories the agent must not reach: the file commands (`GITHUB_ENV` injects
    environment into later steps), RUNNER_TEMP (the broker's state for the post step) and the step's HOME
    (earlier steps leave credentials there: docker, npm, gh). A directory that holds the workspace or
    the agent's own directories stays open."""
    candidates = {Path(env[name]).parent for name in FILE_COMMAND_VARIABLES if env.get(name)}
    candidates |= {Path(env[name]) for name in ("RUNNER_TEMP", "HOME") if env.get(name)}
    reachable = [path.resolve() for path in keep_reachable]
    chosen = []
    for directory in candidates:
        resolved = directory.resolve()
        if resolved == Path("/") or any(path.is_relative_to(resolved) for path in reachable):
            continue
        chosen.append(directory)
    return sorted(chosen)


@contextlib.contextmanager
def locked_dirs(directories: Iterable[Path], identity: AgentIdentity,
                log: Callable[[str], None]) -> Iterator[list[tuple[Path, os.stat_result]]]:
    """Make `directories` unreachable for the agent's uid while it runs: as root they are handed to root
    with mode 0700 and given back afterwards. When the agent shares our uid nothing can be locked, which
    is logged (the paths are not in its environment, but could be guessed). Yields what was changed, so a
    post step can give it back should this process be killed."""
    directories = list(directories)
    if not identity.separate or os.geteuid() != 0:
        if directories:
            log("opi: warning: the agent runs as this process's uid, so the runner's directories (file "
                "commands, RUNNER_TEMP, HOME) cannot be locked against it")
        yield []
        return
    saved: list[tuple[Path, os.stat_result]] = []
    try:
        for directory in directories:
            with contextlib.suppress(FileNotFoundError):
                info = directory.lstat()
                if not stat.S_ISDIR(info.st_mode):
                    continue
                saved.append((directory, info))
                os.chown(directory, 0, 0, follow_symlinks=False)
                os.chmod(directory, 0o700)
        yield saved
    finally:
        unlock(saved)


def unlock(saved: Iterable[tuple[Path, os.stat_result]]) -> None:
    for directory, info in saved:
        with contextlib.suppress(OSError):
            os.chown(directory, info.st_uid, info.st_gid, follow_symlinks=False)
            os.chmod(directory, stat.S_IMODE(info.st_mode))


def _blocked_ancestors(path: Path) -> list[tuple[Path, int]]:
    """Ancestors without o+x, of the path as given and of where its links lead (a venv's `python` is a
    link into the base interpreter's tree)."""
    blocked: dict[Path, int] = {}
    if not path.exists():  # e.g. a site-packages directory Python lists but the install never made
        return []
    for ancestor in (*path.absolute().parents, *path.resolve().parents):
        mode = stat.S_IMODE(ancestor.stat().st_mode)
        if not mode & stat.S_IXOTH:
            blocked.setdefault(ancestor, mode)
    return list(blocked.items())


@contextlib.contextmanager
def reachable_for(path: Path, identity: AgentIdentity) -> Iterator[None]:
    """Let the agent's uid traverse to the workspace: an ancestor without o+x (a root-owned `mktemp -d`)
    gets it for the run and loses it afterwards. Traversal only: nothing can be listed that could not be
    before."""
    changed = _blocked_ancestors(path) if identity.separate and os.geteuid() == 0 else []
    for ancestor, mode in changed:
        os.chmod(ancestor, mode | stat.S_IXOTH)
    try:
        yield
    finally:
        for ancestor, mode in changed:
            with contextlib.suppress(OSError):
                os.chmod(ancestor, mode)


def grant_traversal(paths: Iterable[Path], identity: AgentIdentity, log: Callable[[str], None]) -> None:
    """Let the agent's uid reach the Python it runs and this package (an interpreter under /root, say).
    Kept afterwards: another run may be starting its agent from the same interpreter meanwhile, and
    taking it back would cut that agent off. Logged, since it changes the machine."""
    if not identity.separate or os.geteuid() != 0:
        return
    for path in paths:
        for ancestor, mode in _blocked_ancestors(path):
            os.chmod(ancestor, mode | stat.S_IXOTH)
            log(f"opi: made {ancestor} traversable (o+x) so that the agent's uid can run {path}")


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Hand a tree to uid:gid without following symlinks (a link the agent planted must not make root
    chown what it points to)."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for directory, subdirs, files in os.walk(root, followlinks=False):
        for name in (*subdirs, *files):
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def give_to_owner_of(directory: Path, paths: Iterable[Path]) -> None:
    """Files the broker (root) left under a runner directory go to that directory's owner, so the job's
    later steps and the runner's own clean-up, which run as that user, can read and delete them."""
    if os.geteuid() != 0:
        return
    try:
        owner = directory.stat()
    except OSError:
        return
    for path in paths:
        with contextlib.suppress(OSError):
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)

