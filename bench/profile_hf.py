"""Where the hf backend's rollout time goes: prompt encoding against decoding steps.

    .venv/bin/python bench/profile_hf.py --format fewshot --questions 32
    .venv/bin/python bench/profile_hf.py --history-cache-tokens 0    # each round encoded whole

The bench's work (bench/rollout.py's defaults: HotpotQA questions, 3 rounds of 48 tokens, 1
re-ask, recorded search, the stream engine) on the hf backend, every forward of the model timed:
a forward over more than one column per row encodes prompts (the shared prefix, or newcomers'
new tokens), one over a single column is a decoding step of the running batch. Printed per
encoding forward (rows x columns fed, seconds), the decoding steps by how many rows they decode,
then the totals, the longest question's generated tokens (each a decoding step after the one
before: the run's critical path), the peak RSS and the highest resident size after a forward.
"""

from __future__ import annotations

import argparse
import time

from fireact.agents.methods import ReAct
from fireact.agents.rollout import Rollout
from fireact.llm.hf import HFBackend
from fireact.tasks import HotpotQA

from memory import peak_rss_gb, resident_bytes
from rollout import MODEL, recorded_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", default="fewshot", choices=["fewshot", "alpaca"])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--history-cache-tokens", type=int, default=16384)
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens per reply (144: the straggler bench's long replies)")
    args = parser.parse_args()

    task = HotpotQA(n=args.questions, shuffle_seed=233)
    tool = recorded_search()
    hf = HFBackend(MODEL, device="cpu", dtype="float32", history_cache_tokens=args.history_cache_tokens)
    method = ReAct(format=args.format, max_rounds=3, max_tokens=args.max_tokens, max_retries=1)
    forwards = []  # (rows, columns fed, seconds)
    forward = hf.lm.forward

    highest = [0, ""]  # the highest resident size after a forward, and which forward it was

    def timed_forward(*a, **kw):
        start = time.perf_counter()
        out = forward(*a, **kw)
        forwards.append((*kw["input_ids"].shape, time.perf_counter() - start))
        if (now := resident_bytes()) > highest[0]:
            highest[:] = now, f"forward {len(forwards)} ({forwards[-1][0]} rows x {forwards[-1][1]} columns)"
        return out

    hf.lm.forward = timed_forward
    steps = []  # (rows decoding, seconds) per decoding step of the running batch
    decode_step = hf._decode_step

    def timed_step(batch):
        decoding, start = sum(row is not None and not row.ended for row in batch.rows), time.perf_counter()
        decode_step(batch)
        steps.append((decoding, time.perf_counter() - start))

    hf._decode_step = timed_step
    start = time.perf_counter()
    trajectories = Rollout(hf, method, task, tool).run(task.questions())
    total = time.perf_counter() - start
    encoding = [f for f in forwards if f[1] > 1]
    for rows, columns, seconds in encoding:
        print(f"encoding {rows:2d} rows x {columns:4d} columns: {seconds:5.2f} s")
    for low, high in ((1, 1), (2, 4), (5, 16), (17, 32), (33, 10**6)):
        bucket = [seconds for rows, seconds in steps if low <= rows <= high]
        if bucket:
            print(f"decoding steps with {low}-{high} rows: {len(bucket):4d} steps, {sum(bucket):5.1f} s, "
                  f"{sum(bucket) / len(bucket) * 1000:5.1f} ms a step")
    print(f"{args.format}, {args.questions} questions: {total:.1f} s; encoding {sum(f[2] for f in encoding):.1f} s "
          f"({sum(f[0] * f[1] for f in encoding)} row-columns); decoding {sum(s for _, s in steps):.1f} s "
          f"({len(steps)} steps, {sum(r for r, _ in steps) / max(len(steps), 1):.1f} rows a step); the longest "
          f"question generated {max(t.completion_tokens for t in trajectories)} tokens; peak RSS "
          f"{peak_rss_gb():.2f} GB; the highest after a forward "
          f"{highest[0] / 2**30:.2f} GB, after {highest[1]}")


if __name__ == "__main__":
    main()
