"""Benchmark: `opi -p` for a 20-turn task against the scripted model server, which answers instantly.

Prints wall time, CPU (user+sys of the child), peak RSS, per-turn harness overhead (wall time minus the
time spent inside the server's request handlers, divided by turns) and the median `opi --version` time.

Bytecode: opi is measured as installed, with a `.pyc` for every module it imports, as `pip install`
writes them (and as Python writes `__pycache__` on the first run of an editable install). The harness
does not rely on the machine for this: the children use their own PYTHONPYCACHEPREFIX, filled by one
warm-up run, so a developer's PYTHONDONTWRITEBYTECODE=1 (set on the dev machine) does not make every
run recompile opi's own modules. The same runs are repeated without bytecode for opi's modules (its
dependencies keep theirs) and reported beside; the targets apply to the installed figure.
When pi 0.73.1 is installed (`npm install --prefix /tmp/opi-ci-pi @mariozechner/pi-coding-agent@0.73.1`),
pi runs the same task against the same server (its models.json points a provider at it), interleaved
with opi's runs so both see the same machine load, and the ratio of the best wall times is reported.

    python benchmarks/harness.py [--turns 20] [--runs 3] [--version-runs 15] [--dialect anthropic|openai]
                                 [--pi PREFIX|none] [--json]

Targets on the 2-core dev machine: `opi --version` < 40 ms (timed by hyperfine when installed); the 20-turn run < 1.0 s wall, at most 0.30x
pi's wall time, and < 80 MiB peak RSS. The exit code is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_llm import FakeLLMServer, RecordedRequest, Reply  # noqa: E402

TARGET_VERSION_MS = 40.0  # the interpreter alone takes 15-20 ms here
TARGET_WALL_S = 1.0
TARGET_RSS_MIB = 80.0
TARGET_PI_RATIO = 0.30  # opi's 20-turn wall time against pi's, measured in the same run


class HandlerClock:
    """Adds up the time the server spends inside its request handlers (thread-safe), and keeps each
    request's (start, end) so a benchmark can measure the client's own time between two requests."""

    def __init__(self, *, nodelay: bool = True) -> None:
        self.nodelay = nodelay
        self.total = 0.0
        self.count = 0
        self.spans: list[tuple[float, float]] = []
        # When set, the client's main-thread CPU time (ns) is read at the start of each request.
        self.client_pid: int | None = None
        self.client_cpu_ns: list[int] = []
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
                clock.read_client_cpu()
                try:
                    super().do_POST()
                finally:
                    clock.add(started, time.perf_counter())

        httpd.RequestHandlerClass = TimedHandler

    def read_client_cpu(self) -> None:
        if self.client_pid is None:
            return
        try:  # the first field is the time the thread group leader (the main thread) ran, in ns
            with open(f"/proc/{self.client_pid}/schedstat", encoding="ascii") as handle:
                cpu = int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return
        with self._lock:
            self.client_cpu_ns.append(cpu)

    def add(self, started: float, ended: float) -> None:
        with self._lock:
            self.total += ended - started
            self.count += 1
            self.spans.append((started, ended))

    def gaps_ms(self) -> list[float]:
        """The client's time between the end of each response and the start of the next request: what the
        agent does in a turn apart from waiting for the model (tools, session writes, building requests)."""
        with self._lock:
            spans = sorted(self.spans)
        return [(nxt[0] - cur[1]) * 1000 for cur, nxt in itertools.pairwise(spans)]


def opi_command() -> list[str]:
    """The venv's `opi` script when it runs this tree; otherwise (a copy of another version, e.g. to
    measure before and after a change) `python -m bot` with PYTHONPATH pointing here (see child_env)."""
    script = shutil.which("opi", path=str(Path(sys.executable).parent))
    return [script] if script and installed_tree() == ROOT else [sys.executable, "-m", "bot"]


def installed_tree() -> Path | None:
    """Where the venv's `bot` package comes from, without importing it from this tree."""
    probe = subprocess.run([sys.executable, "-I", "-c", "import bot; print(bot.__file__)"], capture_output=True,
                           text=True, cwd="/", timeout=30)
    return Path(probe.stdout.strip()).parent.parent if probe.returncode == 0 else None


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
        # The tree this script belongs to, even when another copy of opi is installed in the venv.
        "PYTHONPATH": str(ROOT),
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".data"),
        "ANTHROPIC_BASE_URL": server.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-bench",
        "OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": "sk-bench",
    })
    return env


@dataclass
class ChildRun:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float
    peak_rss_mib: float


def run_child(command: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300,
              on_start: Any = None, rss_probe: bool = False) -> ChildRun:
    """Run one process and measure it alone: wall time, its own CPU (user+sys) and its own peak RSS
    (os.wait4, so a heavier process run earlier, such as pi, does not leak into the figure).

    Linux records the old address space's high-water mark at exec, so a child forked straight from this
    process would report at least this process's own peak (which grows with the server's recorded
    requests). With rss_probe, GNU time (`/usr/bin/time`, ~2 MB) is put in between when installed and
    the peak RSS comes from its report; it adds ~4 ms of wall time, so timed runs leave it out and
    their RSS figure is an upper bound."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin") if rss_probe and on_start is None else None
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r", suffix=".rss") as rss_report:
        spawned = [gnu_time, "-f", "%M", "-o", rss_report.name, *command] if gnu_time else command
        started = time.perf_counter()
        process = subprocess.Popen(spawned, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        if on_start is not None:
            on_start(process.pid)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                raise SystemExit(f"{command[0]} timed out after {timeout:g} s")
            time.sleep(0.001)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        peak_kib = int(rss_report.read().split()[-1]) if gnu_time else usage.ru_maxrss  # Linux: KiB
        return ChildRun(process.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                        wall, usage.ru_utime + usage.ru_stime, peak_kib / 1024)


def time_version(runs: int, env: dict[str, str]) -> list[float]:
    return time_command([*opi_command(), "--version"], runs, env)


def time_command(command: list[str], runs: int, env: dict[str, str]) -> list[float]:
    """Milliseconds per run. With hyperfine installed (`apt-get install hyperfine`) it does the timing,
    without a shell and without this Python process's fork cost in the figure."""
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", str(max(runs, 2)), "--export-json",
                            report.name, shlex.join(command)], env=env, check=True, capture_output=True, timeout=300)
            return [t * 1000 for t in json.loads(Path(report.name).read_text())["results"][0]["times"]]
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=30)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def pi_cli(prefix: str | None) -> Path | None:
    """pi's CLI script under an npm prefix (`npm install --prefix PREFIX @mariozechner/pi-coding-agent@0.73.1`)."""
    if not prefix or not shutil.which("node"):
        return None
    cli = Path(prefix) / "node_modules/@mariozechner/pi-coding-agent/dist/cli.js"
    return cli if cli.is_file() else None


def pi_home(home: Path, server: FakeLLMServer) -> None:
    """A pi configuration pointing at the scripted server, as tests/data/pi/make_pi_session.py does."""
    agent_dir = home / ".pi" / "agent"
    agent_dir.mkdir(parents=True, exist_ok=True)
    models = {"providers": {"fake": {
        "baseUrl": server.anthropic_base_url, "api": "anthropic-messages", "apiKey": "fake-key",
        "models": [{"id": "claude-sonnet-4-5", "name": "Fake", "reasoning": False, "contextWindow": 200000,
                    "maxTokens": 8192, "cost": {"input": 3, "output": 15, "cacheRead": 0.3, "cacheWrite": 3.75}}]}}}
    (agent_dir / "models.json").write_text(json.dumps(models), encoding="utf-8")


PROMPT = "Read the modules and tell me what they do."


def run_opi(server: FakeLLMServer, workspace: Path, env: dict[str, str], model: str, turns: int, *,
            rss_probe: bool = False) -> ChildRun:
    run = run_child([*opi_command(), "-p", PROMPT, "--model", model, "--max-turns", str(turns + 5), "--json"],
                    cwd=workspace, env=env, rss_probe=rss_probe)
    if run.returncode != 0:
        raise SystemExit(f"opi failed with exit code {run.returncode}:\n{run.stderr}")
    summary = json.loads(run.stdout.splitlines()[-1])
    if summary.get("turns") != turns:
        raise SystemExit(f"expected {turns} turns, the run reported {summary.get('turns')}")
    return run


def run_pi(cli: Path, server: FakeLLMServer, workspace: Path, env: dict[str, str], sessions: Path, *,
           rss_probe: bool = False) -> ChildRun:
    pi_env = {**env, "PI_OFFLINE": "1"}
    run = run_child(["node", str(cli), "--provider", "fake", "--model", "claude-sonnet-4-5", "--session-dir",
                     str(sessions), "--no-extensions", "--no-skills", "--no-context-files", "-p", PROMPT],
                    cwd=workspace, env=pi_env, rss_probe=rss_probe)
    if run.returncode != 0:
        raise SystemExit(f"pi failed with exit code {run.returncode}:\n{run.stderr}")
    return run


def run_benchmark(turns: int, version_runs: int, dialect: str, *, nodelay: bool = True, runs: int = 3,
                  pi_prefix: str | None = None) -> dict[str, Any]:
    """Best of `runs` for opi (and pi, interleaved so both see the same machine load)."""
    model = "anthropic:claude-sonnet-4-5" if dialect == "anthropic" else "openai:gpt-4.1"
    cli = pi_cli(pi_prefix) if dialect == "anthropic" else None
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
        if cli is not None:
            pi_home(tmp_path / "home", server)
        env, cold_env = bytecode_envs(env, tmp_path, lambda warm: run_opi(server, workspace, warm, model, turns))
        opi_runs: list[tuple[ChildRun, float, int]] = []
        turn_gaps: list[list[float]] = []  # per opi run: the client's time between consecutive requests
        cold_runs: list[ChildRun] = []
        pi_runs: list[ChildRun] = []
        for _ in range(runs):
            server_before, count_before = clock.total, clock.count
            opi_runs.append((run_opi(server, workspace, env, model, turns), clock.total - server_before,
                             clock.count - count_before))
            turn_gaps.append(clock.gaps_ms()[count_before:])
            cold_runs.append(run_opi(server, workspace, cold_env, model, turns))
            if cli is not None:
                pi_runs.append(run_pi(cli, server, workspace, env, tmp_path / "pi-sessions"))
        # Peak memory from one more run of each, measured apart (see run_child).
        opi_rss = run_opi(server, workspace, env, model, turns, rss_probe=True).peak_rss_mib
        pi_rss = run_pi(cli, server, workspace, env, tmp_path / "pi-sessions", rss_probe=True).peak_rss_mib \
            if cli is not None else None
        server.verify()
        versions = time_version(version_runs, env)
        floor = time_command([sys.executable, "-c", "pass"], version_runs, env)  # the interpreter alone

    best_index = min(range(len(opi_runs)), key=lambda i: opi_runs[i][0].wall_s)
    best, server_s, requests = opi_runs[best_index]
    gaps = turn_gaps[best_index]
    summary = json.loads(best.stdout.splitlines()[-1])
    figures: dict[str, Any] = {
        "dialect": dialect,
        "server_nodelay": nodelay,
        "turns": turns,
        "runs": runs,
        "requests": requests,
        "wall_s": round(best.wall_s, 3),
        "wall_median_s": round(statistics.median(r.wall_s for r, _, _ in opi_runs), 3),
        "cpu_s": round(best.cpu_s, 3),
        "peak_rss_mib": round(opi_rss, 1),
        "server_s": round(server_s, 3),
        "overhead_per_turn_ms": round((best.wall_s - server_s) / turns * 1000, 2),
        # the agent loop alone (from the run's own summary): no interpreter start-up, no imports
        "loop_s": summary["duration_seconds"],
        "loop_overhead_per_turn_ms": round((summary["duration_seconds"] - server_s) / turns * 1000, 2),
        # after the first request (which pays the HTTP client's import): a turn's own time, steady state
        "turn_gap_median_ms": round(statistics.median(gaps[: requests - 1]), 2) if requests > 1 else None,
        "version_median_ms": round(statistics.median(versions), 1),
        "version_min_ms": round(min(versions), 1),
        "python_startup_median_ms": round(statistics.median(floor), 1),
        "no_bytecode_wall_s": round(min(r.wall_s for r in cold_runs), 3),
    }
    if pi_runs:
        pi_best = min(pi_runs, key=lambda r: r.wall_s)
        figures.update({
            "pi_wall_s": round(pi_best.wall_s, 3),
            "pi_cpu_s": round(pi_best.cpu_s, 3),
            "pi_peak_rss_mib": round(pi_rss or 0.0, 1),
            "wall_ratio_to_pi": round(best.wall_s / pi_best.wall_s, 3),
            "no_bytecode_wall_ratio_to_pi": round(figures["no_bytecode_wall_s"] / pi_best.wall_s, 3),
        })
    return figures


def bytecode_envs(env: dict[str, str], tmp: Path, warm_up: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(as installed, without opi's bytecode): two children's environments with their own bytecode caches.

    One warm-up run writes a `.pyc` for every module opi imports into a private cache; the second cache
    is a copy without opi's own modules. Neither writes more, so every measured run sees the same files.
    """
    installed_cache, cold_cache = tmp / "pycache-installed", tmp / "pycache-no-opi"
    writing = {**env, "PYTHONPYCACHEPREFIX": str(installed_cache)}
    writing.pop("PYTHONDONTWRITEBYTECODE", None)
    warm_up(writing)
    shutil.copytree(installed_cache, cold_cache)
    shutil.rmtree(cold_cache / ROOT.relative_to(ROOT.anchor) / "bot")
    frozen = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    return ({**frozen, "PYTHONPYCACHEPREFIX": str(installed_cache)},
            {**frozen, "PYTHONPYCACHEPREFIX": str(cold_cache)})


def default_pi_prefix() -> str | None:
    return os.environ.get("OPI_TEST_PI_PREFIX") or ("/tmp/opi-ci-pi" if Path("/tmp/opi-ci-pi").is_dir() else None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="runs of each program; the best wall time counts")
    parser.add_argument("--version-runs", type=int, default=15)
    parser.add_argument("--dialect", choices=("anthropic", "openai"), default="anthropic")
    parser.add_argument("--pi", metavar="PREFIX", default=default_pi_prefix(),
                        help="npm prefix where pi 0.73.1 is installed, to run it on the same task "
                             "(default: $OPI_TEST_PI_PREFIX or /tmp/opi-ci-pi); 'none' skips pi")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--server-nagle", action="store_true",
                        help="leave Nagle's algorithm on in the scripted server (adds ~40 ms per request)")
    args = parser.parse_args()
    pi_prefix = None if args.pi == "none" else args.pi
    figures = run_benchmark(args.turns, args.version_runs, args.dialect, nodelay=not args.server_nagle,
                            runs=args.runs, pi_prefix=pi_prefix)
    checks = [
        ("opi --version", figures["version_median_ms"] < TARGET_VERSION_MS),
        ("wall time", figures["wall_s"] < TARGET_WALL_S),
        ("peak RSS", figures["peak_rss_mib"] < TARGET_RSS_MIB),
    ]
    if "wall_ratio_to_pi" in figures:
        checks.append(("wall time against pi", figures["wall_ratio_to_pi"] <= TARGET_PI_RATIO))
    misses = [name for name, ok in checks if not ok]
    if args.json:
        print(json.dumps({**figures, "missed_targets": misses}))
    else:
        print_figures(figures, misses)
    return 1 if misses else 0


def print_figures(figures: dict[str, Any], misses: list[str]) -> None:
    nagle = "" if figures["server_nodelay"] else ", server with Nagle on"
    print(f"{figures['turns']}-turn run ({figures['dialect']}, {figures['requests']} requests{nagle}, "
          f"best of {figures['runs']})")
    print(f"  wall time          {figures['wall_s']:.3f} s   (median {figures['wall_median_s']:.3f} s, "
          f"target < {TARGET_WALL_S} s)")
    print(f"  CPU user+sys       {figures['cpu_s']:.3f} s")
    print(f"  peak RSS           {figures['peak_rss_mib']:.1f} MiB (target < {TARGET_RSS_MIB:g} MiB)")
    print(f"  in server handlers {figures['server_s']:.3f} s")
    print(f"  overhead per turn  {figures['overhead_per_turn_ms']:.2f} ms (includes process start-up)")
    print(f"  agent loop         {figures['loop_s']:.3f} s, "
          f"{figures['loop_overhead_per_turn_ms']:.2f} ms per turn outside the server (the first turn "
          "imports the HTTP client)")
    if figures["turn_gap_median_ms"] is not None:
        print(f"  one turn           {figures['turn_gap_median_ms']:.2f} ms median between a response's end "
              "and the next request")
    cold_ratio = (f", {figures['no_bytecode_wall_ratio_to_pi']:.2f}x pi's"
                  if "no_bytecode_wall_ratio_to_pi" in figures else "")
    print(f"  without bytecode for opi's modules: {figures['no_bytecode_wall_s']:.3f} s wall{cold_ratio} "
          "(for information; no target)")
    if "pi_wall_s" in figures:
        print(f"pi on the same task  {figures['pi_wall_s']:.3f} s wall, {figures['pi_cpu_s']:.3f} s CPU, "
              f"{figures['pi_peak_rss_mib']:.1f} MiB peak RSS")
        print(f"  opi / pi wall time {figures['wall_ratio_to_pi']:.2f} (target <= {TARGET_PI_RATIO:g})")
    else:
        print("pi                  not run (not installed, or --pi none)")
    print(f"opi --version        {figures['version_median_ms']:.1f} ms median, "
          f"{figures['version_min_ms']:.1f} ms min (target < {TARGET_VERSION_MS:g} ms; "
          f"`python -c pass`: {figures['python_startup_median_ms']:.1f} ms)")
    print("all targets met" if not misses else "missed: " + ", ".join(misses))


if __name__ == "__main__":
    raise SystemExit(main())
