"""An evaluation's files on disk (write_evaluation) and in the MLflow run (tracking.log_evaluation)."""

import json

import mlflow
import pandas as pd
import pytest

from fireact import tracking
from fireact.evaluate.summary import summarize
from fireact.evaluate.files import PER_QUESTION_COLUMNS, write_evaluation
from fireact.trajectory_files import write_jsonl


def artifact_paths(run_id, path=""):
    found = []
    for entry in mlflow.MlflowClient().list_artifacts(run_id, path):
        found += artifact_paths(run_id, entry.path) if entry.is_dir else [entry.path]
    return sorted(found)


def test_log_evaluation_writes_and_logs_metrics_table_plot_and_trajectories(tracking_uri, compose_cfg, released_7b, tmp_path):
    trajectories = released_7b[:40]
    summary = summarize(trajectories, n_questions=50)
    out_dir = tmp_path / "eval"
    cfg = compose_cfg("rescore", "experiment_name=evaluation-artifacts")
    with tracking.start_run(cfg, stage="evaluate") as run:
        files = write_evaluation(trajectories, summary, out_dir, title="7b, first 40")
        tracking.log_evaluation(summary, files)

    table = pd.read_csv(files["per_question"], dtype={"qid": str})
    assert list(table.columns) == PER_QUESTION_COLUMNS
    assert table["qid"].tolist() == [t.qid for t in trajectories]
    assert table["turns"].tolist() == [t.turns for t in trajectories]
    assert table["em"].sum() == sum(t.em for t in trajectories)
    assert set(table["method_used"]) <= {"react", "cot", "reflexion"}
    assert files["turns_plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(files["summary"].read_text()) == summary

    record = mlflow.get_run(run.run_id)
    assert record.data.metrics["em"] == pytest.approx(summary["em"])
    assert record.data.metrics["turns_mean"] == pytest.approx(summary["turns_mean"])
    assert record.data.metrics["n"] == 50
    assert artifact_paths(run.run_id) == [
        "config.yaml", "per_question.csv", "plots/turns.png", "summary.json", "trajectories.jsonl",
    ]


def test_an_existing_trajectories_file_is_kept_as_is(released_7b, tmp_path):
    out_dir = tmp_path / "eval"
    write_jsonl(out_dir / "trajectories.jsonl", released_7b[:3])
    before = (out_dir / "trajectories.jsonl").read_text()
    files = write_evaluation(released_7b[:5], summarize(released_7b[:5]), out_dir)
    assert files["trajectories"].read_text() == before
    assert len(pd.read_csv(files["per_question"])) == 5
