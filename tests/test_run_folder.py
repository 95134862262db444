"""run_config.yaml (fireact.run_folder): a folder's results are resumed only under the settings they were written with."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fireact.agents.runner import resolve_method_format
from fireact.evaluate.run import evaluate, not_results
from fireact.generate import not_results as generate_not_results
from fireact.generate import generate
from fireact.paths import REPO_ROOT
from fireact.tasks import HotpotQA
from fireact.run_folder import (RUN_CONFIG, SLUG_CHARS, ConfigMismatch, RunFolder, differences, folder_name,
                                result_config)
from fireact.trajectory import Step, Trajectory
from fireact.trajectory_files import append_jsonl
from tests.conftest import compose_config

SMALL = ["task.n=2", "method.max_rounds=2", "~tracker"]


def test_result_config_leaves_out_speed_bookkeeping_and_secrets(compose_cfg, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-0123456789abcdefXYZ")
    cfg = compose_cfg("evaluate", "backend=openai", "model=gpt4", "+backend.api_key=sk-inline-0123456789abcdefghij",
                      "+model.note=sk-test-key-0123456789abcdefXYZ")
    config = result_config(cfg, not_results(cfg))
    assert config["model"]["name"] == "gpt-4-0613" and config["method"]["max_rounds"] == 11 and config["seed"] == 0
    assert config["task"]["shuffle_seed"] == 233 and "n" not in config["task"]
    for key in ("output_dir", "resume", "in_flight", "tool_workers", "tracker", "paths", "experiment_name", "hydra"):
        assert key not in config
    assert "concurrency" not in config["backend"] and "timeout_s" not in config["backend"]
    assert "api_key" not in config["backend"] and config["backend"]["api_key_env"] == "OPENAI_API_KEY"
    assert config["model"]["note"] == "***"
    assert "sk-" not in yaml.safe_dump(config)


def test_differences_name_each_changed_added_or_removed_key():
    old = {"method": {"max_rounds": 2, "format": "fewshot"}, "seed": 0, "noise": {"p": 0.5}}
    new = {"method": {"max_rounds": 3, "format": "fewshot"}, "seed": 0, "tool": {"k": [1, 2]}}
    assert differences(old, new) == [
        ("method.max_rounds", 2, 3), ("noise.p", 0.5, "<absent>"), ("tool.k", "<absent>", [1, 2]),
    ]
    assert differences(old, old) == []


def test_the_record_round_trips_through_yaml(compose_cfg, tmp_path):
    cfg = compose_cfg("evaluate", "noise=none_obs", "noise.p=0.25", "model.price.prompt_per_1k=1e-05")
    folder = RunFolder(tmp_path / "out", cfg, results=["trajectories.jsonl"], not_results=not_results(cfg))
    folder.record()
    (tmp_path / "out" / "trajectories.jsonl").write_text("{}\n")
    folder.check()  # the same settings, read back from YAML: no difference
    assert yaml.safe_load((tmp_path / "out" / RUN_CONFIG).read_text())["noise"]["p"] == 0.25


def test_a_folder_without_results_or_without_a_record_is_not_refused(compose_cfg, tmp_path, caplog):
    cfg = compose_cfg("evaluate")
    folder = RunFolder(tmp_path, cfg, results=["trajectories.jsonl"], not_results=not_results(cfg))
    (tmp_path / RUN_CONFIG).write_text("seed: 99\n")
    folder.check()  # a record but no results: nothing would be mixed
    (tmp_path / RUN_CONFIG).unlink()
    (tmp_path / "trajectories.jsonl").write_text("{}\n")
    folder.check()  # results written before settings were recorded: resumed with a warning
    assert "no run_config.yaml" in caplog.text


def recorded(out_dir, cfg, left_out=not_results, results=("trajectories.jsonl",)) -> None:
    """run_config.yaml as the stage writes it: method.format=auto resolved first, as evaluate and generate do."""
    resolve_method_format(cfg)
    RunFolder(out_dir, cfg, results=list(results), not_results=left_out(cfg)).record()


def written_folder(out_dir, n=2):
    """A folder that holds a trajectory for each of the first n evaluation questions."""
    for q in HotpotQA(n=n, shuffle_seed=233).questions():
        append_jsonl(out_dir / "trajectories.jsonl", Trajectory(
            task="hotpotqa", qid=q.qid, question=q.question, gold=q.gold, em=1.0, f1=1.0,
            steps=[Step("I know.", "finish", q.gold, "Episode finished, reward = True")], answer=q.gold,
        ))


def test_evaluate_resumes_its_own_folder_and_refuses_another_configs(compose_cfg, tmp_path):
    out = tmp_path  # compose_cfg writes here
    cfg = compose_cfg("evaluate", *SMALL)
    recorded(out, cfg)
    written_folder(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # Same settings (n, in_flight, batch size and workers may change): finished without building anything.
    summary = evaluate(compose_cfg("evaluate", *SMALL, "in_flight=1", "tool_workers=1", "backend.batch_size=0"))
    assert summary["n"] == 2 and summary["em"] == 1.0

    with pytest.raises(ConfigMismatch) as refused:
        evaluate(compose_cfg("evaluate", *SMALL, "method.max_rounds=5", "seed=1", "backend.batch_size=0"))
    message = str(refused.value)
    assert str(out) in message
    assert "method.max_rounds: 2 (in the folder) -> 5 (now)" in message and "seed: 0 (in the folder) -> 1 (now)" in message
    assert "output_dir=" in message and f"delete {out}" in message and "resume=false" in message
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before


def test_resume_false_keeps_the_old_files_until_new_work_is_written(compose_cfg, tmp_path):
    out = tmp_path  # compose_cfg writes here
    recorded(out, compose_cfg("evaluate", *SMALL))
    written_folder(out)
    before = (out / "trajectories.jsonl").read_bytes()
    with pytest.raises(Exception, match="batch_size"):  # the backend cannot be built: nothing was replaced
        evaluate(compose_cfg("evaluate", *SMALL, "method.max_rounds=5", "resume=false", "backend.batch_size=0"))
    assert (out / "trajectories.jsonl").read_bytes() == before


def test_generate_refuses_another_configs_folder(compose_cfg, tmp_path):
    out = tmp_path  # compose_cfg writes here
    recorded(out, compose_cfg("generate", *SMALL), generate_not_results, results=("trajectories.jsonl", "failures.jsonl"))
    (out / "failures.jsonl").write_text("{}\n")
    with pytest.raises(ConfigMismatch, match=r"(?s)noise.p: '<absent>'|noise._target_: 'fireact.tools.noise.Clean' \(in the folder\)"):
        generate(compose_cfg("generate", *SMALL, "noise=none_obs"))


def test_the_entry_point_stops_before_any_work_with_the_message(tmp_path):
    out = tmp_path / "run"
    first = [sys.executable, "-m", "fireact.evaluate", "task.n=2", "~tracker", f"hydra.run.dir={out}"]
    recorded(out, compose_config("evaluate", ["task.n=2", "~tracker"], out_dir=out))
    written_folder(out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    changed = subprocess.run([*first, "model.path=/elsewhere/model", "method=cot"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode != 0
    assert f"output folder {out} holds results written under other settings" in changed.stderr
    assert "model.path: 'embedded:smollm2-135m-instruct' (in the folder) -> '/elsewhere/model' (now)" in changed.stderr
    assert "method._target_: 'fireact.agents.methods.ReAct' (in the folder) -> 'fireact.agents.methods.CoT' (now)" in changed.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name in before} == before
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("overrides", [
    "task.n=2", "method=cot,task.n=50", "data_source.paths=[/work/x/uxdata/good.jsonl],data_source=trajectories",
    "+model.adapter=outputs/train/run_abc123/adapter,backend.base_url=http://127.0.0.1:8000/v1",
    "experiment=" + "very_long_name_" * 8,
])
def test_a_run_folder_is_named_so_that_it_can_be_passed_back_unquoted(overrides, compose_cfg):
    name = folder_name(overrides)
    slug, digest = name.rsplit("_", 1)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name) and len(slug) <= SLUG_CHARS and len(digest) == 6
    assert folder_name(overrides) == name and folder_name(overrides + ",seed=1") != name  # same command, same folder
    assert compose_cfg("evaluate", f"model.adapter=outputs/train/{name}/adapter").model.adapter.endswith(f"/{name}/adapter")
    assert folder_name("") == "default"


def test_each_single_run_links_latest_to_its_folder(tmp_path):
    """Two runs (stopped at once by a bad task.n, which is quick): latest is the second one's folder."""
    for overrides in (["task.n=0"], ["task.n=0", "seed=1"]):
        done = subprocess.run([sys.executable, "-m", "fireact.evaluate", *overrides, "~tracker"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
    runs = tmp_path / "outputs" / "evaluate"
    first, second = (folder_name(f"{seed}task.n=0,~tracker") for seed in ("", "seed=1,"))
    assert sorted(p.name for p in runs.iterdir()) == sorted(["latest", first, second])
    assert (runs / "latest").readlink() == Path(second)
