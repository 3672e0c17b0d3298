"""Benchmark: does a turn cost the same at turn 400 as at turn 1? `opi -p` runs a long task against the
scripted model server with compaction off; every turn reads a short file (or, with --output-bytes, a file
of that size) with all seven tools offered.

The agent's own time in a turn is measured from outside, as the gap between the end of the server's
response and the start of the next request: parsing the end of the stream, the session write, the tool,
and building and sending the next request. The server runs in this process and opi in its own, so
neither's CPU slows the other's clock (beyond sharing the machine).

    python benchmarks/turns.py [--turns 400] [--window 50] [--dialect anthropic|openai] [--json]

The agent's main-thread CPU time from one request to the next is read from /proc/PID/schedstat (Linux),
which a busy machine distorts much less than wall time.

Prints the median and mean over the first and last `window` turns and their ratio (goal: the last
window's mean CPU within 1.5x of the first's), and the size of the first and last requests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import FakeLLMServer, HandlerClock, child_env, opi_command, run_child

from tests.fake_llm import RecordedRequest, Reply

TARGET_RATIO = 1.5


def assistant_turns(request: RecordedRequest) -> int:
    return len([m for m in (request.body or {}).get("messages", []) if m.get("role") == "assistant"])


def reading_turns(turns: int) -> Any:
    def respond(request: RecordedRequest) -> Reply:
        turn = assistant_turns(request) + 1
        if turn < turns:
            return Reply(tool_calls=[(f"call_{turn}", "read", {"path": f"notes_{turn % 7}.txt"})])
        return Reply(text=f"Read {turns - 1} notes.")

    return respond


def write_notes(workspace: Path, output_bytes: int) -> None:
    for index in range(7):
        line = f"note {index}: the quick brown fox jumps over the lazy dog\n"
        (workspace / f"notes_{index}.txt").write_text(line * max(1, output_bytes // len(line)), encoding="utf-8")


def no_compaction_config(home: Path) -> None:
    config = home / ".config" / "opi"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text("[compaction]\nenabled = false\n", encoding="utf-8")


def window_figures(gaps: list[float], start: int, stop: int) -> dict[str, float]:
    part = gaps[start:stop]
    return {"median_ms": round(statistics.median(part), 2), "mean_ms": round(statistics.fmean(part), 2)}


def run(turns: int, window: int, dialect: str, output_bytes: int) -> dict[str, Any]:
    model = "anthropic:claude-sonnet-4-5" if dialect == "anthropic" else "openai:gpt-4.1"
    with tempfile.TemporaryDirectory(prefix="opi-bench-turns-") as tmp, FakeLLMServer() as server:
        root = Path(tmp)
        workspace = root / "work"
        workspace.mkdir()
        write_notes(workspace, output_bytes)
        clock = HandlerClock()
        clock.install(server)
        server.responder = reading_turns(turns)
        env = child_env(server, root / "home")
        env["OPI_SESSIONS_DIR"] = str(root / "sessions")
        no_compaction_config(root / "home")
        def watch(pid: int) -> None:
            clock.client_pid = pid

        result = run_child([*opi_command(), "-p", "Read the notes, one at a time.", "--model", model,
                            "--allow-mutating", "--max-turns", str(turns + 5)],
                           cwd=workspace, env=env, timeout=1800, on_start=watch)
        if result.returncode != 0:
            raise SystemExit(f"opi failed with exit code {result.returncode}:\n{result.stderr[-2000:]}")
        server.verify()
        sizes = [len(request.raw) for request in server.requests]
        gaps = clock.gaps_ms()  # gaps[i] follows response i+1, i.e. the agent's work in turn i+1
        # The main thread's CPU from one request to the next: the same work, and what a busy machine
        # distorts least.
        cpu = [(b - a) / 1e6 for a, b in itertools.pairwise(clock.client_cpu_ns)]
    first = window_figures(gaps, 0, window)
    last = window_figures(gaps, len(gaps) - window, len(gaps))
    first_cpu = window_figures(cpu, 0, window)
    last_cpu = window_figures(cpu, len(cpu) - window, len(cpu))
    return {
        "dialect": dialect, "turns": turns, "requests": len(sizes), "tool_output_bytes": output_bytes,
        "first_window": first, "last_window": last,
        "ratio_of_means": round(last["mean_ms"] / first["mean_ms"], 2),
        "first_window_cpu": first_cpu, "last_window_cpu": last_cpu,
        "cpu_ratio_of_means": round(last_cpu["mean_ms"] / first_cpu["mean_ms"], 2),
        "first_request_bytes": sizes[0], "last_request_bytes": sizes[-1],
        "wall_s": round(result.wall_s, 2), "cpu_s": round(result.cpu_s, 2),
        "peak_rss_mib": round(result.peak_rss_mib, 1), "server_s": round(clock.total, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--dialect", choices=("anthropic", "openai"), default="anthropic")
    parser.add_argument("--output-bytes", type=int, default=120, help="size of the file each turn reads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.turns < 2 * args.window + 1:
        parser.error("--turns must be more than twice --window")
    figures = run(args.turns, args.window, args.dialect, args.output_bytes)
    ok = figures["cpu_ratio_of_means"] <= TARGET_RATIO
    if args.json:
        print(json.dumps({**figures, "target_met": ok}))
        return 0 if ok else 1
    first, last, w = figures["first_window"], figures["last_window"], args.window
    print(f"{figures['turns']} turns ({figures['dialect']}, compaction off, {figures['tool_output_bytes']}-byte "
          f"tool outputs): {figures['wall_s']} s wall, {figures['cpu_s']} s CPU, {figures['peak_rss_mib']} MiB")
    print(f"  agent time per turn, turns 1-{w}: median {first['median_ms']} ms, mean {first['mean_ms']} ms")
    print(f"  agent time per turn, last {w} turns: median {last['median_ms']} ms, mean {last['mean_ms']} ms")
    print(f"  last / first (means): {figures['ratio_of_means']} (goal <= {TARGET_RATIO})")
    fc, lc = figures["first_window_cpu"], figures["last_window_cpu"]
    print(f"  main-thread CPU per turn: turns 1-{w} median {fc['median_ms']} ms, mean {fc['mean_ms']} ms; "
          f"last {w} median {lc['median_ms']} ms, mean {lc['mean_ms']} ms; ratio {figures['cpu_ratio_of_means']}")
    print(f"  request size: first {figures['first_request_bytes']:,} B, last {figures['last_request_bytes']:,} B")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
