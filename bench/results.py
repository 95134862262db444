"""Render bench/RESULTS.md from the JSON written by bench/rollout.py and bench/train.py.

    .venv/bin/python bench/results.py bench/rollout.json bench/train.json > bench/RESULTS.md
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

# Why a target can be missed on this machine; printed only under a missed target.
WHY = {
    "rollout_fewshot": "the baseline's per-question prefill of the ~950-token few-shot prefix is what the prefix cache "
    "removes; the rest (decoding, the recorded search, parsing) is not faster per token, and on 2 shared cores the "
    "batched decode gains little over one row.",
    "rollout_alpaca": "zero-shot prompts share only the Alpaca header (under the 32-token minimum for a cached "
    "prefix), so ours gains only from batching and from building the stop-string criterion once; each question's "
    "own cache is not yet kept between rounds, so every round re-encodes that question's history.",
    "same": "greedy argmax over float32 logits computed with other matrix shapes (batched rows, a cached prefix) can "
    "flip a near-tie, after which the trajectory differs.",
    "train_speed": "length grouping removes the padding to the cutoff; what remains is the model's compute per real "
    "token, and on 2 cores shared with other jobs both sides slow down unevenly.",
    "train_memory": "the loss is taken over full-vocabulary (49,152) float32 logits for every token of the batch; "
    "those logits, their softmax and their gradient dominate peak memory, not the 135M weights or the LoRA state.",
    "rollout_memory": "the float32 model, the recorded-search corpus and the batch's KV caches (prefix expanded to "
    "each row) add up.",
}


def line(name, value, target, met, key) -> str:
    status = "met" if met else f"**missed** by {abs(value - target) / target:.0%} - {WHY[key]}"
    return f"| {name} | {value:.2f} | {target} | {status} |"


def main(rollout_json: str, train_json: str) -> None:
    rollout = json.loads(Path(rollout_json).read_text())
    train = json.loads(Path(train_json).read_text())
    by_format = {r["format"]: r for r in rollout["results"]}
    tr = train["results"]
    s = rollout["settings"]
    out = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, "
        f"machine {platform.platform()}, {os.cpu_count()} CPU cores, torch threads {rollout['torch_threads']}, "
        "embedded SmolLM2-135M-Instruct in float32 on CPU. Ratios are ours/baseline measured in one run.",
        "",
        f"## Rollouts (bench/rollout.py --questions {s['questions']} --max-rounds {s['max_rounds']} "
        f"--max-tokens {s['max_tokens']} --max-retries {s['max_retries']})",
        "",
        "| format | baseline trials/s | ours trials/s | ratio | baseline gen tok/s | ours gen tok/s | ratio | same trajectory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rollout["results"]:
        out.append(
            f"| {r['format']} | {r['baseline_trials_per_s']:.4f} | {r['ours_trials_per_s']:.4f} | {r['ratio_trials']:.2f}x "
            f"| {r['baseline_gen_tokens_per_s']:.2f} | {r['ours_gen_tokens_per_s']:.2f} | {r['ratio_gen_tokens']:.2f}x "
            f"| {r['same_trajectory_share']:.0%} |"
        )
    out += [
        "",
        f"Peak RSS of the rollout process (both sides, one model): {rollout['peak_rss_gb']:.2f} GB.",
        "",
        f"## LoRA training (bench/train.py --examples {train['settings']['examples']} --cutoff {train['settings']['cutoff']})",
        "",
        "| side | seconds | non-pad tok/s | examples/s | peak RSS GB | mean loss |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("baseline", "ours"):
        r = tr[name]
        out.append(f"| {name} | {r['seconds']:.1f} | {r['tokens_per_s']:.2f} | {r['examples_per_s']:.4f} "
                   f"| {r['peak_rss_gb']:.2f} | {r['mean_loss']:.4f} |")
    out += ["", f"Ratio ours/baseline non-pad tokens/s: {train['ratio_tokens']:.2f}x.", "", "## Targets", "",
            "| target | measured | goal | status |", "|---|---|---|---|"]
    if "fewshot" in by_format:
        f = by_format["fewshot"]
        out.append(line("prompted ReAct hf trials/s ratio", f["ratio_trials"], 4, f["ratio_trials"] >= 4, "rollout_fewshot"))
        out.append(line("prompted ReAct same trajectory share", f["same_trajectory_share"], 0.95,
                        f["same_trajectory_share"] >= 0.95, "same"))
    if "alpaca" in by_format:
        a = by_format["alpaca"]
        out.append(line("fine-tuned format zero-shot trials/s ratio", a["ratio_trials"], 3, a["ratio_trials"] >= 3, "rollout_alpaca"))
    out.append(line("training non-pad tokens/s ratio", train["ratio_tokens"], 1.5, train["ratio_tokens"] >= 1.5, "train_speed"))
    out.append(line("LoRA training peak RSS GB (ours)", tr["ours"]["peak_rss_gb"], 3, tr["ours"]["peak_rss_gb"] <= 3, "train_memory"))
    out.append(line("rollout peak RSS GB", rollout["peak_rss_gb"], 2, rollout["peak_rss_gb"] <= 2, "rollout_memory"))
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: bench/results.py ROLLOUT_JSON TRAIN_JSON > bench/RESULTS.md")
    main(*sys.argv[1:])
