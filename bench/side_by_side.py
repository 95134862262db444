"""Two of our processes on one machine: two evaluations started side by side against the same two
one after another, with no settings given (each process takes its share of the cores,
fireact.threads) and, for the before, with `threads=<all cores>` each (what torch does by
default: every process takes every core).

    .venv/bin/python bench/side_by_side.py                  # 2 questions, 2 rounds of 48 tokens each
    .venv/bin/python bench/side_by_side.py --questions 4 --json bench/side_by_side.json

Every run is `python -m fireact.evaluate task.n=N method.max_rounds=2 method.max_tokens=48 ~tracker`
in a fresh folder (the model load included), the same questions in all. Printed: each arm's wall
time for both evaluations and its speed-up over one after another (the target: 1.4x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fireact.threads import cores


def evaluation(folder: Path, questions: int, threads: int | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "fireact.evaluate", f"task.n={questions}", "method.max_rounds=2",
               "method.max_tokens=48", "~tracker", f"hydra.run.dir={folder}"]
    if threads is not None:
        command.append(f"threads={threads}")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            sys.exit(f"an evaluation failed ({process.args}):\n{err[-2000:]}")


def timed(root: Path, name: str, questions: int, side_by_side: bool, threads: int | None) -> float:
    start = time.perf_counter()
    if side_by_side:
        wait([evaluation(root / f"{name}-{i}", questions, threads) for i in range(2)])
    else:
        for i in range(2):
            wait([evaluation(root / f"{name}-{i}", questions, threads)])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wait([evaluation(root / "warm-up", 1, None)])  # then the page cache holds the model and the data
        seconds = {
            "one_after_another": timed(root, "sequential", args.questions, side_by_side=False, threads=None),
            "side_by_side_shared": timed(root, "shared", args.questions, side_by_side=True, threads=None),
            "side_by_side_all_cores": timed(root, "all", args.questions, side_by_side=True, threads=cores()),
        }
    result = {
        "questions": args.questions, "cores": cores(), "seconds": seconds,
        "speedup_shared": seconds["one_after_another"] / seconds["side_by_side_shared"],
        "speedup_all_cores": seconds["one_after_another"] / seconds["side_by_side_all_cores"],
    }
    print(f"two evaluations of {args.questions} questions on {cores()} cores:")
    for name, value in seconds.items():
        print(f"  {name:<24} {value:6.1f} s  ({seconds['one_after_another'] / value:.2f}x one after another)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
