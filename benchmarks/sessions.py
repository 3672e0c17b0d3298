"""Session benchmarks: append cost at entry 10 vs entry 100,000, load + reconstruct for 1k / 10k / 100k
entries (about 100 MB at 100k), and compaction time. Prints the figures.

    python benchmarks/sessions.py [--quick]

Files are generated with realistic entries (~1 KB each: user prompts, assistant messages with a tool call
and usage/cost, tool results) under a temporary directory. "compacted" files have a compaction entry
every 500 entries, as a long session under a bounded context does; "uncompacted" is the worst case where
every message is on the active branch and in the context.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.agent.compaction import CompactionConfig, compact
from bot.agent.session import Session, SessionConversation, iso_now
from bot.llm.base import Done, ModelInfo, ModelRequest, StreamEvent
from bot.llm.messages import AssistantMessage, TextContent, Usage, UserMessage

FILLER = "lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 14  # ~800 characters


def entry_stream(count: int, compact_every: int | None) -> Iterator[dict[str, Any]]:
    parent: str | None = None
    first_kept: str | None = None
    for n in range(count):
        entry_id = f"{n:08x}"
        stamp = iso_now()
        kind = n % 3
        entry: dict[str, Any]
        if compact_every and n and n % compact_every == 0:
            entry = {"type": "compaction", "id": entry_id, "parent_id": parent, "timestamp": stamp,
                     "summary": "## Goal\n" + FILLER, "first_kept_entry_id": first_kept, "tokens_before": 90_000,
                     "tokens_after": 20_000, "details": {"read_files": ["a.py"], "modified_files": ["b.py"]}}
        elif kind == 0:
            entry = {"type": "message", "id": entry_id, "parent_id": parent, "timestamp": stamp,
                     "message": {"role": "user", "content": f"step {n}: " + FILLER, "timestamp": 1}}
        elif kind == 1:
            entry = {"type": "message", "id": entry_id, "parent_id": parent, "timestamp": stamp, "message": {
                "role": "assistant", "content": [
                    {"type": "text", "text": FILLER[:300]},
                    {"type": "tool_call", "id": f"call_{n}", "name": "read", "arguments": {"path": f"src/f{n}.py"}}],
                "provider": "anthropic", "model": "claude-sonnet-4-5", "api": "anthropic",
                "usage": {"input": 1200, "output": 80, "cache_read": 40_000, "cache_write": 300},
                "cost": {"input": 0.0036, "output": 0.0012, "cache_read": 0.012, "cache_write": 0.001,
                         "total": 0.0178},
                "stop_reason": "tool_use", "error_message": None, "timestamp": 1}}
        else:
            entry = {"type": "message", "id": entry_id, "parent_id": parent, "timestamp": stamp, "message": {
                "role": "tool_result", "tool_call_id": f"call_{n - 1}", "tool_name": "read",
                "content": [{"type": "text", "text": FILLER[:500]}], "is_error": False, "details": None,
                "timestamp": 1}}
        if compact_every and n % compact_every == compact_every - 30:
            first_kept = entry_id if kind != 2 else first_kept
        parent = entry_id
        yield entry


def write_file(path: Path, count: int, compact_every: int | None) -> None:
    header = {"type": "session", "version": 1, "id": f"bench-{count}", "timestamp": iso_now(), "cwd": "/bench",
              "parent_session": None, "metadata": {}}
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(header) + "\n")
        for entry in entry_stream(count, compact_every):
            handle.write(json.dumps(entry, separators=(",", ":")) + "\n")


def timed(fn: Any, repeat: int = 3) -> tuple[float, float, Any]:
    """Best wall time and best CPU time of `repeat` runs (CPU time is what a busy machine distorts least)."""
    best, best_cpu, value = float("inf"), float("inf"), None
    for _ in range(repeat):
        value = None  # free the previous result outside the timed part
        started, started_cpu = time.perf_counter(), time.process_time()
        value = fn()
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - started_cpu)
    return best, best_cpu, value


def load_and_reconstruct(path: Path) -> tuple[Session, int]:
    # The session is returned so that freeing it (as a run never does) is not part of the timing.
    session = Session.load(path)
    context = SessionConversation(session).context()
    session.totals()
    return session, len(context)


def append_cost(session: Session, n: int) -> list[float]:
    times = []
    for i in range(n):
        message = UserMessage(content=f"appended {i} " + FILLER)
        started = time.perf_counter()
        session.append_message(message)
        times.append(time.perf_counter() - started)
    return times


class InstantModel:
    info = ModelInfo(provider="bench", id="instant", api="mock", context_window=200_000)

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        yield Done(message=AssistantMessage(content=[TextContent(text="## Goal\nbenchmark summary")],
                                            provider="bench", model="instant", api="mock", usage=Usage()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 100k-entry files")
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    with tempfile.TemporaryDirectory(prefix="opi-bench-") as tmp:
        root = Path(tmp)
        print("load + reconstruct (best of 3; parse every line, rebuild the active branch's context, totals)")
        for count in sizes:
            for label, every in (("compacted", 500), ("uncompacted", None)):
                path = root / f"{label}-{count}.jsonl"
                write_file(path, count, every)
                mb = path.stat().st_size / 1e6
                seconds, cpu, (session, context) = timed(lambda p=path: load_and_reconstruct(p))
                entries = len(session.entries)
                del session
                print(f"  {count:>7} entries {label:<11} {mb:7.1f} MB  {seconds * 1000:8.1f} ms wall "
                      f"{cpu * 1000:8.1f} ms CPU  ({entries} entries, context {context} messages)")

        print("\nappend (write + fsync of one ~1 KB message entry; median of 200)")
        fresh = Session.create(root / "fresh.jsonl", cwd="/bench")
        for _ in range(10):
            fresh.append_message(UserMessage(content="warm-up"))
        at_10 = statistics.median(append_cost(fresh, 200))
        big = root / f"compacted-{sizes[-1]}.jsonl"
        started = time.perf_counter()
        loaded = Session.load(big)
        loaded.open_for_append()
        open_seconds = time.perf_counter() - started
        at_big = statistics.median(append_cost(loaded, 200))
        print(f"  at entry 10:        {at_10 * 1e6:8.0f} µs per entry ({1 / at_10:,.0f} entries/s)")
        print(f"  at entry {sizes[-1]:,}: {at_big * 1e6:8.0f} µs per entry ({1 / at_big:,.0f} entries/s) "
              f"(opening that file for append: {open_seconds * 1000:.0f} ms)")
        memory = Session.in_memory("/bench")
        no_fsync = statistics.median(append_cost(memory, 2_000))
        print(f"  without a file (in-memory, no fsync): {no_fsync * 1e6:.1f} µs per entry")

        print("\ncompaction (instant model, so this is opi's own work: measure, cut, serialise, persist)")
        for count in sizes:
            path = root / f"uncompacted-{count}.jsonl"
            session = Session.load(path)
            session.open_for_append()
            conversation = SessionConversation(session)
            started = time.perf_counter()
            result = compact(conversation, InstantModel(), config=CompactionConfig(), reason="manual")
            seconds = time.perf_counter() - started
            assert result is not None
            print(f"  {count:>7} messages in context: {seconds * 1000:8.1f} ms "
                  f"({result.summarized_messages} summarised, {result.kept_messages} kept, "
                  f"{result.tokens_before:,} → {result.tokens_after:,} tokens)")
            session.close()


if __name__ == "__main__":
    main()
