"""Rollout speed: the batched hf backend with its shared-prefix KV cache against the paper's
inference style, on the same model, questions, greedy decoding and recorded search.

    .venv/bin/python bench/rollout.py                      # the defaults below (a few minutes on 2 CPU cores)
    .venv/bin/python bench/rollout.py --questions 64 --max-rounds 6 --max-tokens 96 --repeats 2

--questions N     HotpotQA dev questions (HotpotQA(n=N, shuffle_seed=233)), default 32
--max-rounds R    rounds per question (method.max_rounds), default 3
--max-tokens T    tokens per reply (method.max_tokens), default 48
--max-retries K   re-asks of a reply with no action (method.max_retries), default 1
--formats F...    fewshot (prompted ReAct) and/or alpaca (fine-tuned format, zero-shot), default both
--repeats N       baseline/ours pairs per format; the order alternates between pairs, default 1
--json PATH       also write the figures there (bench/RESULTS.md is made from it by `make bench`)

Baseline: one question at a time, one `model.generate` call per round with
`stop_strings=` (a stop-string criterion built per call), the whole prompt encoded every round.
Ours: fireact.agents.rollout.Rollout over all questions with fireact.llm.hf.HFBackend (batches
of 8, the few-shot prefix encoded once and its KV cache reused). Both run in this process, with
the same agent loop (Rollout), so only the inference differs. vLLM is not benchmarked here.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fireact.agents.methods import ReAct
from fireact.agents.rollout import Rollout
from fireact.llm.base import LLM, Completion, cut_at_stop
from fireact.llm.hf import HFBackend
from fireact.tasks import HotpotQA

CONF = Path(__file__).resolve().parents[1] / "conf"
MODEL = {"name": "SmolLM2-135M-Instruct", "path": "embedded:smollm2-135m-instruct"}


class PaperStyleGenerate(LLM):
    """The released inference style: each prompt alone, a fresh generate(stop_strings=...) call."""

    backend = "hf-baseline"

    def __init__(self, ours: HFBackend):
        self.model, self.lm, self.tokenizer = ours.model, ours.lm, ours.tokenizer

    def generate(self, prompts, stop=(), max_tokens=256):
        completions = []
        for prompt in prompts:
            ids = self.tokenizer(prompt, return_tensors="pt")
            with torch.inference_mode():
                out = self.lm.generate(
                    **ids, max_new_tokens=max_tokens, do_sample=False, stop_strings=list(stop) or None,
                    tokenizer=self.tokenizer, pad_token_id=self.tokenizer.pad_token_id,
                )
            new = out[0, ids["input_ids"].shape[1] :].tolist()
            end = next((i for i, t in enumerate(new) if t == self.tokenizer.eos_token_id), len(new))
            text, stopped = cut_at_stop(self.tokenizer.decode(new[:end], skip_special_tokens=True), stop)
            completions.append(Completion(text, ids["input_ids"].shape[1], len(new), "stop" if stopped else "length"))
        return completions


def run_once(name, llm, method, task, tool, questions, one_at_a_time):
    rollout = Rollout(llm, method, task, tool, labels={"backend": llm.backend})
    start = time.perf_counter()
    if one_at_a_time:
        trajectories = [t for q in questions for t in rollout.run([q])]
    else:
        trajectories = rollout.run(questions)
    seconds = time.perf_counter() - start
    tokens = sum(t.completion_tokens for t in trajectories)
    return {"name": name, "seconds": seconds, "trials_per_s": len(questions) / seconds,
            "generated_tokens_per_s": tokens / seconds, "generated_tokens": tokens, "trajectories": trajectories}


def same(a, b) -> bool:
    key = lambda t: ([(s.thought, s.action, s.argument, s.observation) for s in t.steps], t.answer)
    return key(a) == key(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-retries", type=int, default=1)
    parser.add_argument("--formats", nargs="+", default=["fewshot", "alpaca"], choices=["fewshot", "alpaca"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    task = HotpotQA(n=args.questions, shuffle_seed=233)
    questions = task.questions()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        tool = instantiate(compose(config_name="tool/recorded_search").tool)
    ours = HFBackend(MODEL, device="cpu", dtype="float32", batch_size=8)
    baseline = PaperStyleGenerate(ours)
    print(f"torch threads {torch.get_num_threads()}, {len(questions)} questions, max_rounds {args.max_rounds}, "
          f"max_tokens {args.max_tokens}, max_retries {args.max_retries}", flush=True)

    results = []
    for fmt in args.formats:
        method = ReAct(format=fmt, max_rounds=args.max_rounds, max_tokens=args.max_tokens, max_retries=args.max_retries)
        runs = {"baseline": [], "ours": []}
        for repeat in range(args.repeats):
            order = [("baseline", baseline, True), ("ours", ours, False)]
            for name, llm, alone in order if repeat % 2 == 0 else order[::-1]:
                run = run_once(name, llm, method, task, tool, questions, alone)
                runs[name].append(run)
                print(f"  {fmt:8s} {name:8s} {run['seconds']:7.1f} s  {run['trials_per_s']:.3f} trials/s  "
                      f"{run['generated_tokens_per_s']:.1f} gen tok/s", flush=True)
        base, mine = runs["baseline"][-1], runs["ours"][-1]
        best = lambda rs, k: max(r[k] for r in rs)
        result = {
            "format": fmt,
            "baseline_trials_per_s": best(runs["baseline"], "trials_per_s"),
            "ours_trials_per_s": best(runs["ours"], "trials_per_s"),
            "baseline_gen_tokens_per_s": best(runs["baseline"], "generated_tokens_per_s"),
            "ours_gen_tokens_per_s": best(runs["ours"], "generated_tokens_per_s"),
            "same_trajectory_share": sum(map(same, base["trajectories"], mine["trajectories"])) / len(questions),
        }
        result["ratio_trials"] = result["ours_trials_per_s"] / result["baseline_trials_per_s"]
        result["ratio_gen_tokens"] = result["ours_gen_tokens_per_s"] / result["baseline_gen_tokens_per_s"]
        results.append(result)
        print(f"{fmt}: ours/baseline {result['ratio_trials']:.2f}x trials/s, {result['ratio_gen_tokens']:.2f}x gen tok/s, "
              f"same trajectory {result['same_trajectory_share']:.0%}", flush=True)

    print("vllm backend: not benchmarked (this bench times the hf backend only; see bench/RESULTS.md)", flush=True)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    print(f"peak RSS {peak_gb:.2f} GB", flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "settings": vars(args) | {"json": str(args.json)}, "machine": platform.platform(),
            "torch_threads": torch.get_num_threads(), "results": results, "peak_rss_gb": peak_gb,
        }, indent=2))


if __name__ == "__main__":
    main()
