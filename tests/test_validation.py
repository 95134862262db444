"""Bad configs and inputs stop the entry points before any compute: a non-zero exit, one
message that names what is wrong and how to fix it, and nothing written to the output folder.

The CASES are real `python -m fireact.<entry> ...` runs; they start together (a module
fixture) so the interpreter starts overlap, and each is checked by its own test. The
IN_PROCESS cases call the same entry functions in this process (cheaper: no interpreter
start), checking the same message and the same empty folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fireact.paths import REPO_ROOT
from tests.tracking.conftest import free_port

NO_KEYS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SERPAPI_API_KEY")
# name: (entry point, overrides, extra environment, substrings the message must hold)
CASES = {
    "unknown_group_member": ("evaluate", ["model=llama9_70b"], {}, [
        "Could not find 'model/llama9_70b'", "Available options in 'model'", "smollm2_135m"]),
    "missing_model_path": ("evaluate", ["model.path=/nonexistent/model", "task.n=1"], {}, [
        "model.path='/nonexistent/model' is not a checkpoint folder", "set model.path to a folder"]),
    "n_larger_than_the_split": ("evaluate", ["task.n=100000"], {}, [
        "split 'dev' has 7405 questions", "n=100000 asks for more. Lower n."]),
    "negative_ratio": ("build_data", ["method_mix.react=-1"], {}, [
        "method_mix.react = -1: weights cannot be negative", "0 leaves it out"]),
    "tracking_server_down": ("evaluate", ["task.n=1"], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"}, [
        "MLflow tracking server http://127.0.0.1:{port} cannot be reached", "~tracker", "Nothing was computed"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path, float]]:
    root = tmp_path_factory.mktemp("validation")
    port = str(free_port())  # nothing listens there

    def run(name: str):
        entry, overrides, env, _ = CASES[name]
        environ = {k: v for k, v in os.environ.items() if k not in NO_KEYS}
        environ.update({k: v.format(port=port) for k, v in env.items()})
        tracker = [] if "MLFLOW_TRACKING_URI" in env else ["~tracker"]
        out = root / name / "out"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", f"fireact.{entry}", *overrides, *tracker,
             f"hydra.run.dir={root / name / 'hydra'}", f"output_dir={out}"],
            cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=600,
        )
        return name, (done, out, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return {**dict(pool.map(run, CASES)), "port": port}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_config_stops_with_one_clear_message_and_writes_nothing(runs, name):
    done, out, _ = runs[name]
    expected = [text.format(port=runs["port"]) for text in CASES[name][3]]
    assert done.returncode != 0, done.stdout[-2000:]
    for text in expected:
        assert text in done.stderr, f"{text!r} not in:\n{done.stderr[-3000:]}"
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


IN_PROCESS = {
    "missing_api_key": ("evaluate", ["model=gpt4", "backend=openai", "task.n=1"], [
        "needs an API key in the environment variable OPENAI_API_KEY", "export OPENAI_API_KEY="]),
    "missing_api_key_generate": ("generate", ["model=gpt4", "backend=openai", "task.n=1"], [
        "needs an API key in the environment variable OPENAI_API_KEY"]),
    "missing_tool_key": ("evaluate", ["tool=serpapi", "task.n=1"], [
        "needs a SerpAPI key in the environment variable SERPAPI_API_KEY", "tool=recorded_search"]),
    "n_larger_than_the_split_generate": ("generate", ["task.n=100000"], [
        "split 'train' has 723 questions; start=0 n=100000 asks for more. Lower n."]),
    "empty_ratios": ("build_data", ["task_mix.hotpotqa=0"], [
        "every weight is zero, so nothing would be selected", "give one a weight > 0"]),
    "no_rounds": ("evaluate", ["method.max_rounds=0", "task.n=1"], [
        "method.max_rounds=0: must be an integer >= 1; set method.max_rounds"]),
    "no_tokens": ("evaluate", ["method.max_tokens=0", "task.n=1"], [
        "method.max_tokens=0: must be an integer >= 1; set method.max_tokens"]),
    "negative_retries": ("generate", ["method.max_retries=-1", "task.n=1"], [
        "method.max_retries=-1: must be an integer >= 0"]),
    "no_rounds_cot": ("evaluate", ["method=cot", "+method.max_rounds=0", "task.n=1"], [
        "method.max_rounds=0: must be an integer >= 1"]),
    "no_questions_in_flight": ("evaluate", ["in_flight=0", "task.n=1"], ["in_flight=0: must be an integer >= 1"]),
}


@pytest.mark.parametrize("name", list(IN_PROCESS))
def test_in_process_a_bad_config_raises_one_clear_error_and_writes_nothing(name, compose_cfg, tmp_path, monkeypatch):
    from fireact.build_data import build_data
    from fireact.evaluate.run import evaluate
    from fireact.generate import generate

    for key in NO_KEYS:
        monkeypatch.delenv(key, raising=False)
    entry, overrides, expected = IN_PROCESS[name]
    out = tmp_path / "out"
    run = {"evaluate": evaluate, "generate": generate, "build_data": build_data}[entry]
    with pytest.raises(Exception) as error:
        run(compose_cfg(entry, *overrides, "~tracker", f"output_dir={out}"))
    for text in expected:
        assert text in str(error.value), str(error.value)
    assert not out.exists()
