"""How often a search for the question itself puts the gold answer in front of the agent, on the 500
HotpotQA evaluation questions: `tool=retriever` over the offline corpus (top-k passages of
`python -m fireact.retriever`, the real server on loopback) against `recorded_search` (one
recorded Google answer). A hit: the normalised gold answer (the task's normalisation) occurs in
the normalised observation. Prints each rate with its 95% interval and the paired McNemar test.

    .venv/bin/python bench/retriever_recall.py [--n 500] [--topk 3]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fireact.evaluate.stats import interval, mcnemar_exact
from fireact.tasks import HotpotQA
from fireact.tasks.metrics import normalize_answer
from fireact.tools.recorded_search import RecordedSearch
from fireact.tools.retriever import RetrieverSearch

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def hit(observation: str, gold: str) -> float:
    return float(normalize_answer(gold) in normalize_answer(observation))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--topk", type=int, default=3)
    args = parser.parse_args()
    questions = HotpotQA(shuffle_seed=233, n=args.n).questions()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "fireact.retriever", f"port={port}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the retriever did not start:\n{server.stdout.read()[-3000:]}")
            time.sleep(0.5)
        retriever = RetrieverSearch(url=f"http://{HOST}:{port}/retrieve", topk=args.topk)
        recorded = RecordedSearch()
        ours = [hit(retriever.run("search", q.question), q.gold) for q in questions]
        theirs = [hit(recorded.run("search", q.question), q.gold) for q in questions]
        info = retriever.server
        retriever.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    only_ours, only_theirs, p = mcnemar_exact(ours, theirs)
    result = {
        "questions": len(questions), "topk": args.topk, "corpus": info,
        "retriever_hit": sum(ours) / len(ours), "retriever_ci": interval(ours),
        "recorded_search_hit": sum(theirs) / len(theirs), "recorded_search_ci": interval(theirs),
        "only_retriever": only_ours, "only_recorded_search": only_theirs, "mcnemar_p": p,
    }
    print(json.dumps(result, indent=2))
    Path(__file__).with_name("retriever_recall.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
