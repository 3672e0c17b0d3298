"""Wall time and CPU of one action run: `opi action --dry-run` answering the demo's `/opi` comment on a
copy of examples/repo, with the recorded model (`replay:`), so the tools (read, edit, bash running the
tests) run for real and no network is used. This is the path the broker/agent split adds a process and a
uid switch to.

    python benchmarks/action_run.py                  # this checkout
    python benchmarks/action_run.py --code /tmp/old  # another checkout of the project, for a before/after

Prints one JSON object: median and min wall seconds and the median CPU seconds of the whole process tree
over `--runs` runs (after one warm-up run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def prepare(work: Path) -> Path:
    repo = work / "repo"
    shutil.copytree(EXAMPLES / "repo", repo)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=bench", "-c", "user.email=b@example.com", "commit", "-q", "-m", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (work / "runner-temp").mkdir()
    return repo


def one_run(code: Path) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="opi-bench-action-") as tmp:
        work = Path(tmp)
        repo = prepare(work)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "ACTIONS_", "INPUT_"))}
        env.update(RUNNER_TEMP=str(work / "runner-temp"), PYTHONPATH=str(code))
        argv = [sys.executable, "-m", "bot", "action", "--dry-run", "--event", str(EXAMPLES / "event.json"),
                "--event-name", "issue_comment", "--model", f"replay:{EXAMPLES / 'session.jsonl'}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"the run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose `bot` package runs")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    one_run(args.code)  # warm-up: page cache, bytecode
    results = [one_run(args.code) for _ in range(args.runs)]
    walls, cpus = [w for w, _ in results], [c for _, c in results]
    print(json.dumps({"code": str(args.code), "runs": args.runs, "as_root": os.geteuid() == 0,
                      "wall_median_s": round(statistics.median(walls), 3), "wall_min_s": round(min(walls), 3),
                      "cpu_median_s": round(statistics.median(cpus), 3)}))


if __name__ == "__main__":
    main()
