"""Benchmark: `opi -p` for a 20-turn task against the scripted model server, which answers instantly.

Prints wall time, CPU (user+sys of the child), peak RSS, per-turn harness overhead (wall time minus the
time spent inside the server's request handlers, divided by turns) and the median `opi --version` time.

    python benchmarks/harness.py [--turns 20] [--version-runs 15] [--dialect anthropic|openai] [--json]

Targets on the 2-core dev machine: `opi --version` < 150 ms; the 20-turn run < 1.0 s wall and < 80 MiB
peak RSS. The exit code is 1 when a target is missed, so CI can run it as a check.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_llm import FakeLLMServer, RecordedRequest, Reply  # noqa: E402

TARGET_VERSION_MS = 150.0
TARGET_WALL_S = 1.0
TARGET_RSS_MIB = 80.0


class HandlerClock:
    """Adds up the time the server spends inside its request handlers (thread-safe)."""

    def __init__(self, *, nodelay: bool = True) -> None:
        self.nodelay = nodelay
        self.total = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def install(self, server: FakeLLMServer) -> None:
        # The benchmark measures the server from outside; wrapping its handler class keeps fake_llm unaware.
        httpd = server._httpd
        base = httpd.RequestHandlerClass
        clock = self

        class TimedHandler(base):  # type: ignore[valid-type,misc]
            def setup(self) -> None:
                super().setup()
                # With Nagle's algorithm on, each small SSE chunk waits for the client's delayed ACK
                # (~40 ms on Linux loopback): a test-server artefact, not opi's cost. Off by default
                # (fake_llm turns it off too); --server-nagle shows the difference.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(clock.nodelay))

            def do_POST(self) -> None:
                started = time.perf_counter()
                try:
                    super().do_POST()
                finally:
                    clock.add(time.perf_counter() - started)

        httpd.RequestHandlerClass = TimedHandler

    def add(self, seconds: float) -> None:
        with self._lock:
            self.total += seconds
            self.count += 1


def opi_command() -> list[str]:
    script = shutil.which("opi", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "bot"]


def make_workspace(root: Path, files: int) -> None:
    subprocess.run(["git", "init", "-q", str(root)], check=True, timeout=30)
    for index in range(files):
        body = "".join(f"def function_{index}_{n}(x):\n    return x * {n}\n\n" for n in range(40))
        (root / f"module_{index}.py").write_text(body, encoding="utf-8")


def scripted_turns(turns: int) -> Any:
    """A responder: every turn but the last reads a file; the last answers."""

    def respond(request: RecordedRequest) -> Reply:
        turn = len([m for m in (request.body or {}).get("messages", []) if m.get("role") == "assistant"]) + 1
        if turn < turns:
            return Reply(tool_calls=[(f"call_{turn}", "read", {"path": f"module_{turn % 5}.py"})])
        return Reply(text=f"Read {turns - 1} files; all functions multiply their argument.")

    return respond


def child_env(server: FakeLLMServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPI_", "ANTHROPIC_", "OPENAI_"))}
    env.update({
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".data"),
        "ANTHROPIC_BASE_URL": server.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-bench",
        "OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": "sk-bench",
    })
    return env


def time_version(runs: int, env: dict[str, str]) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*opi_command(), "--version"], env=env, check=True, capture_output=True, timeout=30)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def run_benchmark(turns: int, version_runs: int, dialect: str, *, nodelay: bool = True) -> dict[str, Any]:
    model = "anthropic:claude-sonnet-4-5" if dialect == "anthropic" else "openai:gpt-4.1"
    with tempfile.TemporaryDirectory(prefix="opi-bench-") as tmp, FakeLLMServer() as server:
        tmp_path = Path(tmp)
        workspace = tmp_path / "work"
        workspace.mkdir()
        make_workspace(workspace, files=5)
        clock = HandlerClock(nodelay=nodelay)
        clock.install(server)
        server.responder = scripted_turns(turns)
        env = child_env(server, tmp_path / "home")
        env["OPI_SESSIONS_DIR"] = str(tmp_path / "sessions")

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run([*opi_command(), "-p", "Read the modules and tell me what they do.",
                               "--model", model, "--max-turns", str(turns + 5), "--json"],
                              cwd=workspace, env=env, capture_output=True, text=True, timeout=120)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"opi failed with exit code {proc.returncode}:\n{proc.stderr}")
        server.verify()
        summary = json.loads(proc.stdout.splitlines()[-1])
        if summary.get("turns") != turns:
            raise SystemExit(f"expected {turns} turns, the run reported {summary.get('turns')}")
        versions = time_version(version_runs, env)

    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "dialect": dialect,
        "server_nodelay": nodelay,
        "turns": turns,
        "requests": clock.count,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mib": round(after.ru_maxrss / 1024, 1),  # Linux reports KiB
        "server_s": round(clock.total, 3),
        "overhead_per_turn_ms": round((wall - clock.total) / turns * 1000, 2),
        # the agent loop alone (from the run's own summary): no interpreter start-up, no imports
        "loop_s": summary["duration_seconds"],
        "loop_overhead_per_turn_ms": round((summary["duration_seconds"] - clock.total) / turns * 1000, 2),
        "version_median_ms": round(statistics.median(versions), 1),
        "version_min_ms": round(min(versions), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--version-runs", type=int, default=15)
    parser.add_argument("--dialect", choices=("anthropic", "openai"), default="anthropic")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--server-nagle", action="store_true",
                        help="leave Nagle's algorithm on in the scripted server (adds ~40 ms per request)")
    args = parser.parse_args()
    figures = run_benchmark(args.turns, args.version_runs, args.dialect, nodelay=not args.server_nagle)
    misses = [name for name, ok in (
        ("opi --version", figures["version_median_ms"] < TARGET_VERSION_MS),
        ("wall time", figures["wall_s"] < TARGET_WALL_S),
        ("peak RSS", figures["peak_rss_mib"] < TARGET_RSS_MIB),
    ) if not ok]
    if args.json:
        print(json.dumps({**figures, "missed_targets": misses}))
    else:
        nagle = "" if figures["server_nodelay"] else ", server with Nagle on"
        print(f"{figures['turns']}-turn run ({figures['dialect']}, {figures['requests']} requests{nagle})")
        print(f"  wall time          {figures['wall_s']:.3f} s   (target < {TARGET_WALL_S} s)")
        print(f"  CPU user+sys       {figures['cpu_s']:.3f} s")
        print(f"  peak RSS           {figures['peak_rss_mib']:.1f} MiB (target < {TARGET_RSS_MIB:g} MiB)")
        print(f"  in server handlers {figures['server_s']:.3f} s")
        print(f"  overhead per turn  {figures['overhead_per_turn_ms']:.2f} ms (includes process start-up)")
        print(f"  agent loop         {figures['loop_s']:.3f} s, "
              f"{figures['loop_overhead_per_turn_ms']:.2f} ms per turn outside the server")
        print(f"opi --version        {figures['version_median_ms']:.1f} ms median, "
              f"{figures['version_min_ms']:.1f} ms min (target < {TARGET_VERSION_MS:g} ms)")
        print("all targets met" if not misses else "missed: " + ", ".join(misses))
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
