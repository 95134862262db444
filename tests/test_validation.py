"""Bad configs and inputs stop the entry points before any compute: an exit code (2 for bad input,
3 for a service that is down; 1 where Hydra itself refuses the command line), the message that names
what is wrong and how to fix it with no traceback, nothing written to the output folder, and no
MLflow run opened in the tracking store.

The CASES are real `python -m fireact.<entry> ...` runs, each tracked in its own SQLite store;
they start together (a module fixture) so the interpreter starts overlap, and each is checked by
its own test. The IN_PROCESS cases call the same entry functions in this process (cheaper: no
interpreter start), checking the same message and the same empty folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from fireact.child_server import free_port
from fireact.paths import REPO_ROOT

NO_KEYS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SERPAPI_API_KEY")
DEAD = "http://127.0.0.1:{port}"  # nothing listens there
# name: (entry point, overrides, extra environment, exit code, substrings the message must hold)
CASES = {
    "unknown_group_member": ("evaluate", ["model=llama9_70b"], {}, 1, [
        "Could not find 'model/llama9_70b'", "Available options in 'model'", "smollm2_135m"]),
    "missing_model_path": ("evaluate", ["model.path=/nonexistent/model", "task.n=1"], {}, 2, [
        "model.path='/nonexistent/model' is not a checkpoint folder", "set model.path to a folder"]),
    "n_larger_than_the_split": ("evaluate", ["task.n=100000"], {}, 2, [
        "split 'dev' has 7405 questions", "n=100000 asks for more. Lower n."]),
    "no_questions": ("evaluate", ["task.n=0"], {}, 2, [
        "task.n=0: the number of questions must be an integer >= 1; set task.n=1 or more"]),
    "n_not_a_number": ("evaluate", ["task.n=abc"], {}, 2, ["task.n='abc': the number of questions must be an integer"]),
    "negative_ratio": ("build_data", ["method_mix.react=-1"], {}, 2, [
        "method_mix.react = -1: weights cannot be negative", "0 leaves it out"]),
    "no_epochs": ("train", ["trainer.max_epochs=0"], {}, 2, [
        "trainer.max_epochs=0 trains nothing; set trainer.max_epochs=1 or more"]),
    "missing_data_path": ("train", ["data.path=/nonexistent/x.jsonl"], {}, 2, [
        "data.path='/nonexistent/x.jsonl' does not exist; point it at a trajectory JSONL"]),
    "negative_learning_rate": ("train", ["optimizer.lr=-1"], {}, 2, [
        "optimizer.lr=-1: the learning rate must be a number > 0"]),
    "llm_server_down": ("evaluate", ["backend=openai", f"backend.base_url={DEAD}/v1", "model.path=served", "task.n=1"],
                        {}, 3, [f"the LLM server at {DEAD}/v1 cannot be reached", "Connection refused",
                                "backend.base_url", "Nothing was run"]),
    "tracking_server_down": ("evaluate", ["task.n=1"], {"MLFLOW_TRACKING_URI": DEAD}, 3, [
        f"MLflow tracking server {DEAD} cannot be reached", "~tracker", "Nothing was computed"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path, str]]:
    root = tmp_path_factory.mktemp("validation")
    port = str(free_port())

    def run(name: str):
        entry, overrides, env, _, _ = CASES[name]
        store = f"sqlite:///{root / name / 'mlflow.db'}"
        environ = {k: v for k, v in os.environ.items() if k not in NO_KEYS}
        environ.update({"MLFLOW_TRACKING_URI": store, **{k: v.format(port=port) for k, v in env.items()}})
        out = root / name / "out"
        done = subprocess.run(
            [sys.executable, "-m", f"fireact.{entry}", *(o.format(port=port) for o in overrides),
             f"hydra.run.dir={root / name / 'hydra'}", f"output_dir={out}"],
            cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=600,
        )
        return name, (done, out, store)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return {**dict(pool.map(run, CASES)), "port": port}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_config_stops_with_one_clear_message_and_writes_nothing(runs, name):
    done, out, store = runs[name]
    _, _, _, code, texts = CASES[name]
    assert done.returncode == code, done.stderr[-3000:]
    for text in texts:
        assert text.format(port=runs["port"]) in done.stderr, f"{text!r} not in:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    if Path(store.removeprefix("sqlite:///")).exists():  # no run opened, not even one deleted since
        client = MlflowClient(store)
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        assert not experiments or not client.search_runs(experiments, run_view_type=ViewType.ALL)


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
