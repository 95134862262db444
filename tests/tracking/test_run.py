"""start_run against a real MLflow server: params, tags, config artifact, nesting, failure, checks."""

import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fireact import tracking
from fireact.child_server import free_port
from fireact.paths import REPO_ROOT
from tests.tracking.conftest import RELEASED_7B


def test_run_records_config_choices_tags_and_config_yaml(tracking_uri, compose_cfg, tmp_path):
    cfg = compose_cfg("rescore", "experiment_name=run-basics", "+model=llama2_7b", "task.n=20")
    with tracking.start_run(cfg, stage="evaluate") as run:
        tracking.log_metrics({"em": 0.25, "n": 20, "label": "not a number"})
        tracking.log_metrics({"loss": 1.5}, step=3)
    record = mlflow.get_run(run.run_id)
    params, tags = record.data.params, record.data.tags
    assert record.info.status == "FINISHED"
    assert mlflow.get_experiment(record.info.experiment_id).name == "run-basics"
    assert params["task.n"] == "20" and params["task._target_"] == "fireact.tasks.HotpotQA"
    assert params["model"] == "llama2_7b" and params["task"] == "hotpotqa"  # group choices
    assert params["model.path"] == "meta-llama/Llama-2-7b-chat-hf"  # conf/model/llama2_7b.yaml, flattened
    assert tags["stage"] == "evaluate" and len(tags["git_commit"]) == 40
    assert tags["overrides"] == "experiment_name=run-basics +model=llama2_7b task.n=20"
    assert tags["mlflow.runName"].startswith("evaluate experiment_name=run-basics")
    assert record.data.metrics == {"em": 0.25, "n": 20.0, "loss": 1.5}
    history = MlflowClient().get_metric_history(run.run_id, "loss")
    assert [m.step for m in history] == [3]
    config = yaml.safe_load(open(mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="config.yaml", dst_path=str(tmp_path))))
    assert config["task"]["n"] == 20 and "hydra" not in config


def test_nested_runs_share_the_experiment_and_point_at_the_parent(tracking_uri, compose_cfg):
    cfg = compose_cfg("rescore", "experiment_name=run-nesting")
    with tracking.start_run(cfg, stage="pipeline") as parent:
        with tracking.start_run(cfg, stage="train") as child:
            assert tracking.active_run() is child
            tracking.log_metrics({"loss": 0.5})
        assert tracking.active_run() is parent
    assert tracking.active_run() is None
    child_record = mlflow.get_run(child.run_id)
    assert child_record.data.tags["mlflow.parentRunId"] == parent.run_id
    assert child_record.data.tags["stage"] == "train"
    assert child_record.info.experiment_id == parent.experiment_id
    assert child_record.data.metrics == {"loss": 0.5}
    assert mlflow.get_run(parent.run_id).data.metrics == {}


def test_a_failing_block_marks_the_run_failed(tracking_uri, compose_cfg):
    cfg = compose_cfg("rescore", "experiment_name=run-failure")
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.start_run(cfg, stage="evaluate") as run:
            raise RuntimeError("boom")
    assert mlflow.get_run(run.run_id).info.status == "FAILED"
    assert tracking.active_run() is None


def test_unreachable_server_fails_before_the_block_and_names_the_uri(compose_cfg, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"  # bound then released: nobody listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    cfg = compose_cfg("rescore")
    entered = False
    with pytest.raises(tracking.TrackingUnavailable, match=f"{dead}.*cannot be reached.*~tracker"):
        with tracking.start_run(cfg, stage="evaluate"):
            entered = True
    assert not entered


def test_config_uri_wins_over_the_environment(compose_cfg, monkeypatch, mlflow_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = compose_cfg("rescore", f"tracker.tracking_uri={dead}")
    with pytest.raises(tracking.TrackingUnavailable, match=dead):
        tracking.check(cfg)


def test_removing_the_tracker_turns_tracking_off(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # would fail if used
    cfg = compose_cfg("rescore", "~tracker")
    with tracking.start_run(cfg, stage="evaluate") as run:
        assert run is None and tracking.active_run() is None
        tracking.log_metrics({"em": 1.0})
        tracking.log_artifact(tmp_path / "does-not-matter")


def test_local_sqlite_store_keeps_artifacts_beside_the_database(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "store"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cfg = compose_cfg("rescore", f"tracker.tracking_uri={uri}", "experiment_name=local store")
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with tracking.start_run(cfg, stage="evaluate") as run:
        tracking.log_artifact(note)
    assert (store / "artifacts" / "local_store" / run.run_id / "artifacts" / "note.txt").read_text() == "hello"
    assert MlflowClient(uri).get_run(run.run_id).data.tags["stage"] == "evaluate"


def test_a_stage_in_another_process_nests_under_the_pipeline_run(tracking_uri, compose_cfg, tmp_path):
    cfg = compose_cfg("rescore", "experiment_name=cross-process")
    with tracking.start_run(cfg, stage="pipeline") as parent:
        # what a pipeline hands to a stage it launches as a subprocess
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "FIREACT_PARENT_RUN_ID": parent.run_id}
        done = subprocess.run(
            [sys.executable, "-m", "fireact.rescore", "task.n=5", f"files=[{RELEASED_7B}]",
             "experiment_name=elsewhere", f"hydra.run.dir={tmp_path / 'stage'}"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    runs = mlflow.search_runs([parent.experiment_id], filter_string="tags.stage = 'rescore'")
    stage = runs[runs["tags.mlflow.parentRunId"] == parent.run_id]
    assert len(stage) == 1  # in the pipeline's experiment, not "elsewhere"
    files = runs[runs["tags.mlflow.parentRunId"] == stage["run_id"].iloc[0]]
    assert len(files) == 1 and files["metrics.n"].iloc[0] == 5
    assert mlflow.get_experiment_by_name("elsewhere") is None


def test_an_unknown_parent_run_is_named(tracking_uri, compose_cfg):
    cfg = compose_cfg("rescore", "tracker.parent_run_id=0123456789abcdef0123456789abcdef")
    with pytest.raises(ValueError, match="parent_run_id=0123456789abcdef0123456789abcdef.*names no run"):
        with tracking.start_run(cfg, stage="evaluate"):
            pass


def test_datasets_are_run_inputs_shared_by_content(tracking_uri, compose_cfg):
    cfg = compose_cfg("rescore", "experiment_name=run-datasets")
    table = pd.DataFrame({"task": ["hotpotqa"] * 3, "method": ["react", "react", "cot"], "qid": ["1", "2", "3"]})
    ids = []
    for rows in (table, table, table.iloc[:2]):
        with tracking.start_run(cfg, stage="train") as run:
            tracking.log_dataset(rows, name="mix", source="/data/mix", context="training")
        ids.append(run.run_id)
    (first, again, fewer) = [mlflow.get_run(i).inputs.dataset_inputs[0] for i in ids]
    assert first.dataset.name == "mix" and first.dataset.digest == again.dataset.digest != fewer.dataset.digest
    assert {t.key: t.value for t in first.tags} == {"mlflow.data.context": "training", "hotpotqa/cot": "1", "hotpotqa/react": "2"}
