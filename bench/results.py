"""Render bench/RESULTS.md from the JSON written by bench/rollout.py, bench/train.py and
bench/side_by_side.py (optional).

    .venv/bin/python bench/results.py bench/rollout.json bench/train.json bench/side_by_side.json > bench/RESULTS.md

Every target of the issue gets a row, met or missed (with the likely reason when missed); a
target whose run is missing from the JSON (a format or backend left out) is marked "not run".
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

FORMATS = {"fewshot": "prompted ReAct (few-shot)", "alpaca": "fine-tuned format (alpaca, zero-shot)"}
# Speed-up of trials/s over the paper-style baseline, per backend and format.
SPEEDUP = {("hf", "fewshot"): 8, ("hf", "alpaca"): 6, ("vllm", "fewshot"): 12, ("vllm", "alpaca"): 9}
STRAGGLER_KEPT = 0.9  # the stream engine's heavy-tailed-tool throughput over its fast-tool one
SAME_TRAJECTORY = 1.0  # greedy decoding: the same trajectory for every question
TRAIN_SPEEDUP = 1.5
TRAIN_RSS_GB = 3
ROLLOUT_RSS_GB = 2
TRACING_OVERHEAD = 0.05  # hf+traces' time over hf's, minus 1
SIDE_BY_SIDE_SPEEDUP = 1.4  # two evaluations side by side over one after another
PEAK_SHARE = 0.75  # the hf rollout's forward FLOPs per second over the fp32 matmul peak

# The rollout bench's floor: with 32 questions the run lasts at least as long as its longest question.
CRITICAL_PATH = ("requests join the running batch as they come (continuous batching), so the engine is never held "
                 "by a batch; but a question's tokens are decoded one step after another, and the run ends with "
                 "its longest question (up to (1 + max_retries) x max_rounds asks of max_tokens: 288 steps at "
                 "the bench's defaults), its last steps decoding a row or two.")

# Why a target can be missed on this machine; printed only under a missed target.
WHY = {
    ("hf", "fewshot"): CRITICAL_PATH + " On the hf backend a step costs about 50 ms with one row (the float32 "
    "weights are read once a step, whatever the rows) and 140 ms with 17-32; a run profiled with bench/profile_hf.py "
    "(bench/NOTES.md, 2026-12-02, 32 questions): 283 decoding steps, 136 of them with one row left.",
    ("hf", "alpaca"): CRITICAL_PATH + " Zero-shot prompts share no prefix worth caching, so each newcomer's encoding "
    "is its own forward.",
    ("vllm", "fewshot"): CRITICAL_PATH + " vLLM's CPU engine runs eager (no torch.compile) unless --vllm-compile; "
    "check that backend.cpu_reserved_cores=0 gave it both cores.",
    ("vllm", "alpaca"): CRITICAL_PATH + " vLLM's eager CPU engine gains only from batching, and the last steps "
    "hold few rows.",
    "same": "greedy argmax over float32 logits computed with other kernels or matrix shapes (batched rows, a cached "
    "prefix, vLLM's paged attention) can flip a near-tie, after which the trajectory differs.",
    "train_speed": "length grouping removes the padding to the cutoff; what remains is the model's compute per real "
    "token, and on 2 cores shared with other jobs both sides slow down unevenly.",
    "train_memory": "activations kept for the backward pass grow with the batch's tokens (~1.9 MB a token for "
    "SmolLM2-135M in float32 without gradient checkpointing); check the run used "
    "finetune.gradient_checkpointing=true and a batch no longer than the one measured here.",
    "tracing": "each trace is written span by span (a few SQL statements each) and its assessments after it, on a "
    "thread beside the rollout: on 2 cores that thread's Python and SQLite time is taken from torch's compute. "
    "tracker.traces below 1 traces a share of the questions.",
    "rollout_memory": "the libraries (torch, transformers, mlflow, hydra: 0.5 GB in the main venv), the float32 "
    "weights (0.54 GB), the running batch's KV cache in float32 (~46 KB a token: a slot per row, each with room for "
    "its prompt and a reply of REPLY_ROOM tokens, more as a reply needs them, all as wide as the widest; grown by a "
    "quarter, trimmed when half the slots are free: 0.45-0.6 GB at the peaks profiled) and the histories kept "
    "between rounds (backend.history_cache_tokens, 16384 tokens at most: ~0.75 GB; 0.1-0.15 GB at those peaks; the "
    "few-shot prefix is kept once). The straggler process runs six rollouts one after another, the last two with "
    "long replies, whose rows hold the longest caches; its peak rose run after run (the table's last column) while "
    "the dropped histories' pages stayed in the heap, which HFBackend.clear_caches() now gives back (malloc_trim; "
    "bench/NOTES.md, peak RSS). backend.batch_size=16 or a smaller history cache trade speed for memory.",
    "side_by_side": "each process computes with its share of the cores only once it has read the register "
    "(fireact.threads: when its stage starts, then every few seconds); the model loads and Python work between "
    "forwards do not divide over threads, so they overlap well, but the forwards of two processes compete for "
    "memory bandwidth.",
    "compute": "decoding is two thirds of the hf time, and each decoding step multiplies one row per running "
    "question by every weight matrix: products of at most 32 rows by 576 x 1536 matrices, too skinny to reach the "
    "peak of a 2048-square product. Profiled (bench/NOTES.md, what remains is decoding): MKL's sgemm on the MLP's "
    "60 matrices takes 16 ms a pass at 1 row (reading their 0.21 GB of float32 weights: 13 GB/s) and 43 ms at 32 "
    "rows (60-80 GFLOP/s), and the run's tail decodes a few rows. A share of the peak counts work, not progress: "
    "the baseline re-encodes the whole prompt every round, so on prompted ReAct it reaches the hf share while 9x "
    "slower; zero-shot prompts are short, so less of the fine-tuned format's work is encoding.",
    "stragglers": "a slow call holds only its own question, but the questions it holds leave the batches: with "
    "fewer rows the engine's steps do less work each, and a question held in its last round ends the run late.",
}


def status(met: bool | None, value: float, goal: float, key) -> str:
    if met is None:
        return "not run"
    return "met" if met else f"**missed** by {abs(value - goal) / goal:.1%}: {WHY[key]}"


def peak_share(gflops_per_s: float | None, peak: float | None) -> str:
    return f"{gflops_per_s / peak:.0%}" if gflops_per_s and peak else "-"


def rollout_section(rollout: dict) -> list[str]:
    s = rollout["settings"]
    out = [
        f"## Rollouts (bench/rollout.py --questions {s['questions']} --max-rounds {s['max_rounds']} "
        f"--max-tokens {s['max_tokens']} --max-retries {s['max_retries']} --repeats {s['repeats']} "
        f"--backends {' '.join(s.get('backends', ['hf']))})",
        "",
        "Ratios are over the baseline (one question at a time, `generate(stop_strings=...)`, the whole prompt encoded "
        "every round) in the same run; same trajectory: the share of questions whose steps and answer equal the "
        "baseline's.",
        "",
        "| format | backend | seconds | trials/s | ratio | gen tok/s | ratio | same trajectory | share of peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    peak = rollout.get("matmul_peak_gflops")
    for r in rollout["results"]:
        out.append(f"| {r['format']} | baseline | {r['baseline_seconds']:.1f} | {r['baseline_trials_per_s']:.4f} | 1x "
                   f"| {r['baseline_gen_tokens_per_s']:.2f} | 1x | - | {peak_share(r.get('baseline_gflops_per_s'), peak)} |")
        for name, b in r["backends"].items():
            out.append(f"| {r['format']} | {name} | {b['seconds']:.1f} | {b['trials_per_s']:.4f} | {b['ratio_trials']:.2f}x "
                       f"| {b['gen_tokens_per_s']:.2f} | {b['ratio_gen_tokens']:.2f}x | {b['same_trajectory_share']:.0%} "
                       f"| {peak_share(b.get('gflops_per_s'), peak)} |")
    out += ["", f"Peak RSS of the rollout process (baseline and hf, one float32 model): {rollout['peak_rss_gb']:.2f} GB."]
    if peak:
        out += ["", f"Share of peak: the forward passes' FLOPs per second (2 x parameters x tokens processed, padding "
                "included, plus attention over the cached context; bench/compute.py) over the fp32 matmul peak "
                f"(torch.mm, 2048 square), which measured {peak:.1f} GFLOP/s. vLLM is not counted (its engine runs in "
                "processes of its own)."]
    v = rollout.get("vllm")
    if v:
        out += ["", f"vLLM: engine start {v['engine_start_s']:.1f} s and a warm-up request {v['warmup_s']:.1f} s "
                f"(not counted in trials/s), {v['dtype']}, {'eager' if v['enforce_eager'] else 'torch.compile'}, "
                f"prefix caching on, fixed KV cache {v['kv_cache_gib']:g} GiB; its engine processes held at most "
                f"{v['engine_peak_pss_gb']:.2f} GB (summed PSS)."]
    return out


def straggler_section(rollout: dict) -> list[str]:
    r = rollout.get("stragglers")
    if not r:
        return []
    lat = r["latency"]
    out = [
        "## Stragglers (hf, prompted ReAct, search over a loopback HTTP server: bench/slow_search.py)",
        "",
        f"Fast: every call {lat['fast_s'] * 1000:.0f} ms. Heavy-tailed: {lat['slow_share']:.0%} of the calls "
        f"{lat['slow_s']:g} s, the rest {lat['fast_s'] * 1000:.0f} ms (drawn per call, the same draws for both "
        "engines). Long replies: fast calls, replies allowed "
        f"{r.get('long_max_tokens', '-')} tokens instead of {r.get('max_tokens', '-')} (one that misses the stop "
        "string runs that long). Stream: each question its own stream (fireact.agents.rollout); barrier: every "
        "question's round before any next round (gather_s=None), the loop as it was before. Run in a process of "
        f"its own ({r.get('python', 'the Python of bench/rollout.py')}).",
        "",
        "| engine | case | seconds | trials/s | slow calls | tokens a question (median, most) | peak RSS so far (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in r["runs"].items():
        engine, case = name.split("/")
        tokens = (f"{run['median_question_tokens']}, {run['max_question_tokens']}" if "max_question_tokens" in run
                  else "-")
        high_water = f"{run['peak_rss_gb_so_far']:.2f}" if "peak_rss_gb_so_far" in run else "-"
        out.append(f"| {engine} | {case} | {run['seconds']:.1f} | {run['trials_per_s']:.4f} "
                   f"| {run['slow_calls']} of {run['tool_calls']} | {tokens} | {high_water} |")
    out += ["", f"Throughput kept with heavy-tailed tools: stream {r['kept']['stream']:.0%}, barrier "
            f"{r['kept']['barrier']:.0%}. Same trajectories across the fast and heavy-tailed runs: "
            f"{r['same_trajectory_share']:.0%}. Peak RSS of that process (the hf side alone): {r['peak_rss_gb']:.2f} GB."]
    if "long_replies_stream_over_barrier" in r:
        out += ["", f"Long replies: the stream engine's throughput is {r['long_replies_stream_over_barrier']:.2f}x the "
                f"barrier's (same trajectories: {r['long_replies_same_trajectory_share']:.0%}). The stream engine's "
                "asks join the running batch (a row leaves it when its reply ends); the barrier's wait for every "
                "question's round, so a long reply holds them all."]
    return out


def train_section(train: dict) -> list[str]:
    s = train["settings"]
    out = [
        f"## LoRA training (bench/train.py --examples {s['examples']} --cutoff {s['cutoff']} "
        f"--gradient-checkpointing {s.get('gradient_checkpointing', 'off')}; bench/train.json, as last measured)",
        "",
        "| side | seconds | non-pad tok/s | examples/s | peak RSS GB | mean loss |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("baseline", "ours"):
        r = train["results"][name]
        out.append(f"| {name} | {r['seconds']:.1f} | {r['tokens_per_s']:.2f} | {r['examples_per_s']:.4f} "
                   f"| {r['peak_rss_gb']:.2f} | {r['mean_loss']:.4f} |")
    return out + ["", f"Ratio ours/baseline non-pad tokens/s: {train['ratio_tokens']:.2f}x."]


def side_by_side_section(side: dict) -> list[str]:
    s, one = side["seconds"], side["seconds"]["one_after_another"]
    rows = [("one after another", one), ("side by side, each its share of the cores (no settings)", s["side_by_side_shared"]),
            ("side by side, each on every core (threads=%d each: torch's default)" % side["cores"], s["side_by_side_all_cores"])]
    return [
        f"## Two evaluations at once (bench/side_by_side.py --questions {side['questions']}; bench/side_by_side.json)",
        "",
        "| how the two ran | seconds for both | vs one after another |",
        "|---|---|---|",
        *(f"| {name} | {value:.1f} | {one / value:.2f}x |" for name, value in rows),
    ]


def targets(rollout: dict, train: dict, side_by_side: dict | None) -> list[str]:
    out = ["## Targets", "", "| target | measured | goal | status |", "|---|---|---|---|"]
    by_format = {r["format"]: r for r in rollout["results"]}
    for (backend, fmt), goal in SPEEDUP.items():
        b = by_format.get(fmt, {}).get("backends", {}).get(backend)
        value = b["ratio_trials"] if b else float("nan")
        out.append(f"| {backend} {FORMATS[fmt]} trials/s vs baseline | {'-' if b is None else f'{value:.2f}x'} "
                   f"| >= {goal}x | {status(None if b is None else value >= goal, value, goal, (backend, fmt))} |")
    for fmt in FORMATS:
        for backend in ("hf", "vllm"):
            b = by_format.get(fmt, {}).get("backends", {}).get(backend)
            value = b["same_trajectory_share"] if b else float("nan")
            out.append(f"| {backend} {FORMATS[fmt]} same trajectory as baseline | {'-' if b is None else f'{value:.0%}'} "
                       f"| >= {SAME_TRAJECTORY:.0%} "
                       f"| {status(None if b is None else value >= SAME_TRAJECTORY, value, SAME_TRAJECTORY, 'same')} |")
    peak = rollout.get("matmul_peak_gflops")
    for fmt in FORMATS:
        b = by_format.get(fmt, {}).get("backends", {}).get("hf")
        value = b["gflops_per_s"] / peak if b and peak and "gflops_per_s" in b else None
        out.append(f"| hf {FORMATS[fmt]} share of the fp32 matmul peak | {'-' if value is None else f'{value:.0%}'} "
                   f"| >= {PEAK_SHARE:.0%} "
                   f"| {status(None if value is None else value >= PEAK_SHARE, value or 0, PEAK_SHARE, 'compute')} |")
    for fmt in FORMATS:
        b = by_format.get(fmt, {}).get("backends", {}).get("hf+traces")
        value = b["tracing_overhead"] if b else float("nan")
        out.append(f"| hf {FORMATS[fmt]} time with MLflow traces vs without | {'-' if b is None else f'{value:+.1%}'} "
                   f"| <= +{TRACING_OVERHEAD:.0%} "
                   f"| {status(None if b is None else value <= TRACING_OVERHEAD, value, TRACING_OVERHEAD, 'tracing')} |")
    ratio = train["ratio_tokens"]
    out.append(f"| training non-pad tokens/s vs baseline | {ratio:.2f}x | >= {TRAIN_SPEEDUP}x "
               f"| {status(ratio >= TRAIN_SPEEDUP, ratio, TRAIN_SPEEDUP, 'train_speed')} |")
    rss = train["results"]["ours"]["peak_rss_gb"]
    out.append(f"| LoRA training peak RSS (ours) | {rss:.2f} GB | <= {TRAIN_RSS_GB} GB "
               f"| {status(rss <= TRAIN_RSS_GB, rss, TRAIN_RSS_GB, 'train_memory')} |")
    stragglers = rollout.get("stragglers")
    if stragglers:
        kept = stragglers["kept"]
        out.append(f"| stream engine throughput kept with heavy-tailed tools (barrier: {kept['barrier']:.0%}) "
                   f"| {kept['stream']:.0%} | >= {STRAGGLER_KEPT:.0%} "
                   f"| {status(kept['stream'] >= STRAGGLER_KEPT, kept['stream'], STRAGGLER_KEPT, 'stragglers')} |")
        same = stragglers["same_trajectory_share"]
        out.append(f"| stream and barrier engines, fast and heavy-tailed tools: same trajectories | {same:.0%} | 100% "
                   f"| {status(same >= 1, same, 1, 'same')} |")
        rss, side = stragglers["peak_rss_gb"], "hf process, alone"
    else:
        rss, side = rollout["peak_rss_gb"], "baseline and hf process"
    out.append(f"| rollout peak RSS ({side}) | {rss:.2f} GB | <= {ROLLOUT_RSS_GB} GB "
               f"| {status(rss <= ROLLOUT_RSS_GB, rss, ROLLOUT_RSS_GB, 'rollout_memory')} |")
    speedup = side_by_side["speedup_shared"] if side_by_side else float("nan")
    out.append(f"| two evaluations side by side vs one after another | "
               f"{'-' if side_by_side is None else f'{speedup:.2f}x'} | >= {SIDE_BY_SIDE_SPEEDUP}x "
               f"| {status(None if side_by_side is None else speedup >= SIDE_BY_SIDE_SPEEDUP, speedup, SIDE_BY_SIDE_SPEEDUP, 'side_by_side')} |")
    return out


def render(rollout: dict, train: dict, side_by_side: dict | None, measured: datetime.datetime) -> str:
    out = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (rollouts finished {measured:%Y-%m-%d %H:%M UTC}), "
        f"machine {platform.platform()}, {os.cpu_count()} CPU cores, torch threads {rollout['torch_threads']}, "
        "embedded SmolLM2-135M-Instruct in float32 on CPU. Ratios are measured within one run. How the "
        "figures were reached (profiles, the choices behind the defaults): [NOTES.md](NOTES.md).",
        "",
        *rollout_section(rollout),
        "",
        *straggler_section(rollout),
        "",
        *train_section(train),
        "",
        *(side_by_side_section(side_by_side) + [""] if side_by_side else []),
        *targets(rollout, train, side_by_side),
    ]
    return "\n".join(out)


def main(rollout_json: str, train_json: str, side_by_side_json: str | None = None) -> None:
    measured = datetime.datetime.fromtimestamp(Path(rollout_json).stat().st_mtime, datetime.timezone.utc)
    read = lambda path: json.loads(Path(path).read_text())  # noqa: E731
    print(render(read(rollout_json), read(train_json), read(side_by_side_json) if side_by_side_json else None, measured))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: bench/results.py ROLLOUT_JSON TRAIN_JSON [SIDE_BY_SIDE_JSON] > bench/RESULTS.md")
    main(*sys.argv[1:])
