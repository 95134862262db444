"""One greedy hf rollout over HotpotQA questions with the recorded search, timed, with the code
the Python path gives: run it for two commits in turns to compare a change's rollout speed and
trajectories (bench/NOTES.md, "The rollout's scheduler as an object").

    git worktree add ../before <commit>
    PYTHONPATH=../before/src .venv/bin/python bench/rollout_ab.py --format fewshot > before.json
    PYTHONPATH=src .venv/bin/python bench/rollout_ab.py --format fewshot > after.json

Prints one JSON object: seconds, and each trajectory's qid, answer, completion tokens and actions.
"""

import argparse
import json
import time

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fireact.agents.methods import ReAct
from fireact.agents.rollout import Rollout
from fireact.paths import CONF_DIR
from fireact.tasks import HotpotQA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", default="fewshot", choices=["fewshot", "alpaca"])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", ["backend=hf", "backend.device=cpu", "backend.dtype=float32"])
    llm, tool = instantiate(cfg.backend), instantiate(cfg.tool)
    task = HotpotQA(n=args.questions, shuffle_seed=233)
    method = ReAct(format=args.format, max_rounds=args.max_rounds, max_tokens=args.max_tokens, max_retries=1)
    rollout = Rollout(llm, method, task, tool)
    start = time.perf_counter()
    trajectories = rollout.run(task.questions())
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "trajectories": [
        [t.qid, t.answer, t.completion_tokens, [s.action_text for s in t.steps]] for t in trajectories]}))


if __name__ == "__main__":
    main()
