"""bot.tools.proc on real processes: non-dumpable really hides a process's environment from a same-uid
child (with the positive control), PR_SET_PDEATHSIG kills a tool's subprocess when the agent is SIGKILLed,
and a subreaper's kill_descendants leaves nothing behind, not even `setsid` daemons.

Root bypasses the dumpable check (CAP_SYS_PTRACE, and on some kernels root may read a root process's
environ regardless), so the environment checks run the child as a real unprivileged uid.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.tools import proc

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux-only")

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534


@functools.cache
def unprivileged_python() -> tuple[str, dict[str, Any], dict[str, str]]:
    """(interpreter, subprocess kwargs, environment additions) that run this repository's code without
    CAP_SYS_PTRACE: as ourselves when we are not root, else as uid 65534. The venv's interpreter may sit
    where that uid cannot reach it (e.g. under /root), so an interpreter of the same version with the
    venv's site-packages on PYTHONPATH is tried next. Skips the test when there is none."""
    pythonpath = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])
    env = {"PYTHONPATH": pythonpath}
    if os.geteuid() != 0:
        return sys.executable, {}, env
    kwargs: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, shutil.which(version), f"/usr/bin/{version}", f"/usr/local/bin/{version}"]
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            done = subprocess.run([candidate, "-c", "import bot, pydantic, httpx2"], cwd="/", capture_output=True,
                                  timeout=60, check=False, env={**os.environ, **env}, **kwargs)
        except OSError:
            continue
        if done.returncode == 0:
            return candidate, kwargs, env
    pytest.skip(f"no {version} interpreter that uid {NOBODY} can run with this venv's packages")


# The child reads its parent's environment the way a bash tool call would.
PROBE = """
import os, subprocess, sys
from bot.tools.proc import harden_current_process
if sys.argv[1] == "harden":
    assert harden_current_process()
read = subprocess.run(["sh", "-c", "tr '\\\\0' '\\\\n' < /proc/$PPID/environ; head -c 16 /proc/$PPID/mem"],
                      capture_output=True, text=True)
print(read.stdout + read.stderr)
"""


def run_probe(mode: str) -> str:
    python, kwargs, extra = unprivileged_python()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra, "PROBE_SECRET": "canary-4c1d"}
    done = subprocess.run([python, "-c", PROBE, mode], env=env, cwd="/", capture_output=True, text=True,
                          timeout=60, check=True, **kwargs)
    return done.stdout


def test_a_same_uid_child_can_read_the_environment_of_a_dumpable_parent() -> None:
    assert "PROBE_SECRET=canary-4c1d" in run_probe("plain")  # the positive control: the threat is real


def test_a_same_uid_child_cannot_read_the_environment_or_memory_of_a_hardened_parent() -> None:
    output = run_probe("harden")
    assert "canary-4c1d" not in output
    assert "Permission denied" in output


def test_dumpable_flag_round_trip_in_a_child() -> None:
    code = ("from bot.tools import proc; print(proc.is_dumpable()); proc.harden_current_process(); "
            "print(proc.is_dumpable()); proc.set_no_new_privs(); "
            "print([l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].split()[1])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["True", "False", "1"]
    assert proc.unsupported_reason() == ""


def wait_for(predicate: Callable[[], bool], within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def gone(pid: int) -> bool:
    """No such process, or a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:].split()[0] == b"Z"


def read_pids(path: Path) -> list[int]:
    assert wait_for(lambda: path.exists() and path.read_text().endswith("\n")), f"{path} never written"
    return [int(word) for word in path.read_text().split()]


# An "agent": runs one bash tool call that never ends, reporting the shell's pid and a background child's.
AGENT = """
import sys
from pathlib import Path
from bot.tools.base import ToolContext
from bot.tools.bash import BashTool
workspace = Path(sys.argv[1])
BashTool().execute({"command": "sleep 300 & echo $$ $! > pids.tmp; mv pids.tmp pids; sleep 300"},
                   ToolContext(workspace=workspace, bash_timeout=600))
"""


def test_the_shell_of_a_tool_call_dies_with_the_agent(tmp_path: Path) -> None:
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(tmp_path)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        shell, _ = read_pids(tmp_path / "pids")
        agent.send_signal(signal.SIGKILL)  # no chance to clean up: only the kernel's PDEATHSIG acts
        agent.wait()
        assert wait_for(lambda: gone(shell))
    finally:
        agent.kill()
        agent.wait()
        for pid in read_pids(tmp_path / "pids"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# A "broker": a subreaper that runs the agent above, SIGKILLs it, then cleans up after it.
BROKER = """
import json, os, signal, subprocess, sys, time
from pathlib import Path
from bot.tools import proc
assert proc.set_child_subreaper() and proc.is_child_subreaper()
workspace = Path(sys.argv[1])
agent = subprocess.Popen([sys.executable, "-c", sys.argv[2], str(workspace)])
while not (workspace / "pids").exists():
    time.sleep(0.02)
pids = [int(p) for p in (workspace / "pids").read_text().split()]
subprocess.run(["setsid", "sh", "-c", "sleep 300 & echo $! > daemon.tmp; mv daemon.tmp daemon"], cwd=workspace)
while not (workspace / "daemon").exists():
    time.sleep(0.02)
daemon = int((workspace / "daemon").read_text())
before = proc.descendants(os.getpid())
agent.send_signal(signal.SIGKILL)
agent.wait()
killed = proc.kill_descendants(os.getpid())
print(json.dumps({"before": before, "watched": pids + [daemon], "killed": killed,
                  "after": proc.descendants(os.getpid())}))
"""


def test_a_subreaper_kills_everything_an_agent_left_behind(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", BROKER, str(tmp_path), AGENT], capture_output=True, text=True,
                          timeout=120, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    report = json.loads(done.stdout)
    assert set(report["watched"]) <= set(report["before"])  # the setsid daemon is found too
    assert set(report["watched"]) - {report["watched"][0]} <= set(report["killed"])
    assert report["after"] == []  # nothing left, zombies reaped
    assert all(gone(pid) for pid in report["watched"])


def test_kill_descendants_spares_what_it_is_told_to_keep() -> None:
    keep = subprocess.Popen(["sleep", "300"])
    try:
        snapshot = proc.descendant_keys(os.getpid())
        assert keep.pid in {pid for pid, _ in snapshot}
        extra = subprocess.Popen(["sleep", "300"])
        killed = proc.kill_descendants(os.getpid(), keep=snapshot)
        assert extra.pid in killed and keep.pid not in killed
        assert extra.wait(timeout=30) == -signal.SIGKILL or gone(extra.pid)
        assert keep.poll() is None
    finally:
        keep.kill()
        keep.wait()


PDEATHSIG_PROBE = ("import ctypes, os; libc = ctypes.CDLL(None); sig = ctypes.c_int(); "
                   "libc.prctl(2, ctypes.byref(sig), 0, 0, 0); "  # PR_GET_PDEATHSIG
                   "print(os.getsid(0) == os.getpid(), sorted(k for k in os.environ if k.startswith('ONLY')), "
                   "sig.value)")


def test_tool_popen_kwargs_give_the_exact_environment_a_session_and_pdeathsig() -> None:
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "1"}
    done = subprocess.run([sys.executable, "-c", PDEATHSIG_PROBE], capture_output=True, text=True, timeout=60,
                          check=True, **proc.tool_popen_kwargs(env))
    assert done.stdout.strip() == f"True ['ONLY_THIS'] {int(signal.SIGKILL)}"


def test_tool_command_gives_the_same_guarantees() -> None:
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "1"}
    argv, kwargs = proc.tool_command([sys.executable, "-c", PDEATHSIG_PROBE], env)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True, **kwargs)
    assert done.stdout.strip() == f"True ['ONLY_THIS'] {int(signal.SIGKILL)}"


GREP_AGENT = """
import sys
from pathlib import Path
from bot.tools.base import ToolContext
from bot.tools.grep import GrepTool
workspace = Path(sys.argv[1])
(workspace / "long.txt").write_text("a" * 64 + "b\\n")
GrepTool(backend="python").execute({"pattern": "(a+)+$"}, ToolContext(workspace=workspace, search_timeout=600))
"""


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_python_search_of_a_grep_call_dies_with_the_agent(tmp_path: Path) -> None:
    agent = subprocess.Popen([sys.executable, "-c", GREP_AGENT, str(tmp_path)],
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    searches: list[int] = []
    try:
        def searching() -> bool:
            searches[:] = [pid for pid in proc.descendants(agent.pid) if b"grep_fallback.py" in cmdline(pid)]
            return bool(searches)

        assert wait_for(searching)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        assert wait_for(lambda: all(gone(pid) for pid in searches))
    finally:
        agent.kill()
        agent.wait()
        for pid in searches:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
