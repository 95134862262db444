"""Where the hf backend's rollout time goes: prompt encoding against decoding steps.

    .venv/bin/python bench/profile_hf.py --format fewshot --questions 32
    .venv/bin/python bench/profile_hf.py --history-cache-tokens 0    # each round encoded whole

The bench's work (bench/rollout.py's defaults: HotpotQA questions, 3 rounds of 48 tokens, 1
re-ask, recorded search, the stream engine) on the hf backend, every forward of the model timed:
a forward over more than one column per row encodes prompts (the shared prefix, or a batch's
new tokens), one over a single column is a decoding step. Printed per batch (rows, seconds)
and per encoding forward (rows x columns fed, seconds), then the totals and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

from fireact.agents.methods import ReAct
from fireact.agents.rollout import Rollout
from fireact.llm.hf import HFBackend
from fireact.tasks import HotpotQA

from rollout import MODEL, recorded_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", default="fewshot", choices=["fewshot", "alpaca"])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--history-cache-tokens", type=int, default=16384)
    args = parser.parse_args()

    task = HotpotQA(n=args.questions, shuffle_seed=233)
    tool = recorded_search()
    hf = HFBackend(MODEL, device="cpu", dtype="float32", history_cache_tokens=args.history_cache_tokens)
    method = ReAct(format=args.format, max_rounds=3, max_tokens=48, max_retries=1)
    forwards = []  # (rows, columns fed, seconds)
    forward = hf.lm.forward

    def timed_forward(*a, **kw):
        start = time.perf_counter()
        out = forward(*a, **kw)
        forwards.append((*kw["input_ids"].shape, time.perf_counter() - start))
        return out

    hf.lm.forward = timed_forward
    decode = hf._decode

    def timed_decode(prompts, *a):
        start = time.perf_counter()
        out = decode(prompts, *a)
        print(f"batch of {len(prompts):2d} rows: {time.perf_counter() - start:5.1f} s", flush=True)
        return out

    hf._decode = timed_decode
    start = time.perf_counter()
    Rollout(hf, method, task, tool).run(task.questions())
    total = time.perf_counter() - start
    encoding = [f for f in forwards if f[1] > 1]
    for rows, columns, seconds in encoding:
        print(f"encoding {rows:2d} rows x {columns:4d} columns: {seconds:5.2f} s")
    print(f"{args.format}, {args.questions} questions: {total:.1f} s; encoding {sum(f[2] for f in encoding):.1f} s "
          f"({sum(f[0] * f[1] for f in encoding)} row-columns); decoding {sum(f[2] for f in forwards if f[1] == 1):.1f} s "
          f"({sum(1 for f in forwards if f[1] == 1)} steps); peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
