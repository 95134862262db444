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
from pathlib import Path

from fireact.child_server import free_port
from fireact.evaluate.stats import interval, mcnemar_exact
from fireact.retriever.process import serving
from fireact.tasks import HotpotQA
from fireact.tasks.metrics import normalize_answer
from fireact.tools.recorded_search import RecordedSearch
from fireact.tools.retriever import RetrieverSearch


def hit(observation: str, gold: str) -> float:
    return float(normalize_answer(gold) in normalize_answer(observation))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--topk", type=int, default=3)
    args = parser.parse_args()
    questions = HotpotQA(shuffle_seed=233, n=args.n).questions()
    with serving(free_port()) as url:
        retriever = RetrieverSearch(url=f"{url}/retrieve", topk=args.topk)
        recorded = RecordedSearch()
        ours = [hit(retriever.run("search", q.question), q.gold) for q in questions]
        theirs = [hit(recorded.run("search", q.question), q.gold) for q in questions]
        info = retriever.server
        retriever.close()
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
