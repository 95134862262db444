"""transformers' continuous batching (`generate_batch`: paged KV cache, prefix block sharing)
against fireact's hf backend (fireact.llm.hf: shared-prefix attention, a slot per request), on CPU.

    .venv/bin/python bench/continuous_batching.py --questions 32 --max-tokens 48

The same work on both sides: the first-round prompts of prompted ReAct (few-shot) for the bench's
HotpotQA questions, greedy, `--max-tokens` new tokens, stopping only at end-of-sequence (the
library takes no stop strings). Each side runs --repeats times (default 2), the order
alternating; the best time counts. Printed: seconds, generated tokens per second, the ratio, and the share of prompts whose
text is the same on both sides.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from fireact.agents.methods import ReAct
from fireact.llm.embedded import resolve_model_path
from fireact.llm.hf import HFBackend
from fireact.tasks import HotpotQA

MODEL = {"name": "SmolLM2-135M-Instruct", "path": "embedded:smollm2-135m-instruct"}


def ours(hf: HFBackend, prompts: list[str], max_tokens: int) -> list[tuple[str, int]]:
    hf.clear_caches()  # start cold: no prefix cache from the other run
    return [(c.text, c.completion_tokens) for c in hf.generate(prompts, max_tokens=max_tokens)]


def library(lm, tokenizer, prompts: list[str], max_tokens: int) -> list[tuple[str, int]]:
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    config = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    outputs = lm.generate_batch(inputs=ids, generation_config=config, progress_bar=False)
    by_prompt = sorted(outputs.values(), key=lambda o: int(o.request_id.rsplit("_", 1)[-1]))
    # Text up to end-of-sequence (counted as generated, as the hf backend counts it).
    return [(tokenizer.decode(o.generated_tokens, skip_special_tokens=True), len(o.generated_tokens)) for o in by_prompt]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)

    task = HotpotQA(n=args.questions, shuffle_seed=233)
    prompter = ReAct(format="fewshot").prompter(task)
    prompts = [prompter(q.question, [], 1) for q in task.questions()]
    hf = HFBackend(MODEL, device="cpu", dtype="float32", batch_size=max(32, len(prompts)))
    lm = AutoModelForCausalLM.from_pretrained(resolve_model_path(MODEL["path"]), dtype=torch.float32,
                                              attn_implementation="sdpa").eval()
    sides = {"fireact": lambda: ours(hf, prompts, args.max_tokens),
             "transformers generate_batch": lambda: library(lm, hf.tokenizer, prompts, args.max_tokens)}
    best, tokens = {}, {}
    for repeat in range(args.repeats):
        for name in (list(sides) if repeat == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            with torch.inference_mode():
                out = sides[name]()
            seconds = time.perf_counter() - start
            best[name] = min(best.get(name, float("inf")), seconds)
            tokens[name] = out
            print(f"  {name}: {seconds:.1f} s, {sum(n for _, n in out) / seconds:.1f} gen tok/s", flush=True)
    same = sum(a[0] == b[0] for a, b in zip(*tokens.values())) / len(prompts)
    mine, theirs = best["fireact"], best["transformers generate_batch"]
    print(f"{len(prompts)} prompts, {args.max_tokens} tokens: fireact {mine:.1f} s, transformers generate_batch "
          f"{theirs:.1f} s: fireact is {theirs / mine:.2f}x as fast; same text for {same:.0%} of the prompts")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "seconds": best,
                                         "same_text_share": same, "fireact_speedup": theirs / mine}, indent=2))


if __name__ == "__main__":
    main()
