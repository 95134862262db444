"""The report entry point over runs in a real MLflow server: made with the tracking API, and by a
real Hydra multirun of the rescore entry point."""

import os
import re
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from fireact import tracking
from fireact.evaluate.rescore import rescore
from fireact.evaluate.files import write_evaluation
from fireact.evaluate.summary import summarize
from fireact.paths import REPO_ROOT, data_dir
from fireact.report import report
from tests.conftest import logged_table
from fireact.tasks import HotpotQA
from fireact.trajectory_files import read_trajectory_file
from tests.tracking.conftest import RELEASED_7B

# (model choice, finetune param or None for a prompted run, training set size, EM)
RUNS = [
    ("llama2_7b", None, None, 0.148),
    ("llama2_7b", "lora", 100, 0.020),
    ("llama2_7b", "lora", 500, 0.250),
    ("llama2_7b", "lora", 500, 0.262),  # the same cells again, newer: `last` keeps this one
    ("llama2_13b", "lora", 500, 0.344),
    ("llama2_13b", "full", 500, 0.380),
]


def artifact_paths(run_id, path=""):
    found = []
    for entry in mlflow.MlflowClient().list_artifacts(run_id, path):
        found += artifact_paths(run_id, entry.path) if entry.is_dir else [entry.path]
    return found


def test_report_pivots_runs_into_tables_and_plots(tracking_uri, compose_cfg, released_7b, tmp_path):
    for index, (model, finetune, n, em) in enumerate(RUNS):
        cfg = compose_cfg("rescore", "experiment_name=report-api", f"+model={model}")
        params = {k: v for k, v in {"finetune": finetune, "n": n}.items() if v is not None}
        with tracking.start_run(cfg, stage="evaluate", params=params):
            trajectories = released_7b[10 * index: 10 * index + 10]
            summary = summarize(trajectories)
            tracking.log_evaluation(summary, write_evaluation(trajectories, summary, tmp_path / f"run{index}"))
            tracking.log_metrics({"em": em})  # the number the table should show
    with tracking.start_run(compose_cfg("rescore", "experiment_name=report-api"), stage="train"):
        tracking.log_metrics({"em": 0.99})  # another stage: left out of the default stage=evaluate

    cfg = compose_cfg("report", "experiments=[report-api]", "turns.label=[model,finetune]", "turns.max_runs=3")
    tables = report(cfg)
    out_dir = tmp_path / "out"

    by_finetune = tables["em_by_model_finetune"]
    assert list(by_finetune.columns) == ["full", "lora", "none"]  # `none`: the prompted run
    assert by_finetune.loc["llama2_7b", "lora"] == pytest.approx(26.2)
    assert by_finetune.loc["llama2_7b", "none"] == pytest.approx(14.8)
    assert by_finetune.loc["llama2_13b", "full"] == pytest.approx(38.0)
    assert pd.isna(by_finetune.loc["llama2_13b", "none"])
    scaling = tables["data_scaling"]
    assert list(scaling.index) == [100, 500]  # numeric order; the prompted run (no n) is left out
    assert scaling.loc[100, "llama2_7b"] == pytest.approx(2.0)
    assert scaling.loc[500, "llama2_7b"] == pytest.approx(26.2)
    assert "noise_robustness" not in tables  # no run has a noise param: skipped
    assert len(tables["turns"]) == 3

    for name in ("em_by_model_finetune", "data_scaling"):
        assert pd.read_csv(out_dir / "tables" / f"{name}.csv").shape[0] == len(tables[name])
        assert "llama2_7b" in (out_dir / "tables" / f"{name}.md").read_text()
        assert (out_dir / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out_dir / "plots" / "turns.png").exists()
    assert "EM (%) by model and fine-tuning" in (out_dir / "report.md").read_text()
    # each run logged EM's 95% interval over its 10 questions: the cells show it, the title the count
    markdown = (out_dir / "tables" / "em_by_model_finetune.md").read_text()
    assert "questions per cell: 10)" in markdown and re.search(r"26\.2 \[\d+\.\d, \d+\.\d\]", markdown)

    runs = mlflow.search_runs(experiment_names=["report-api"], filter_string="tags.stage = 'report'")
    assert len(runs) == 1
    logged = artifact_paths(runs["run_id"].iloc[0])
    assert {"report.md", "tables/em_by_model_finetune.md", "tables/data_scaling.csv",
            "plots/data_scaling.png", "plots/turns.png"} <= set(logged)
    shown = logged_table(runs["run_id"].iloc[0], "tables/em_by_model_finetune.json")
    assert "llama2_7b" in set(shown["model"]) and "26.2 [" in str(shown.loc[shown["model"] == "llama2_7b", "lora"].iloc[0])


def test_report_names_a_missing_experiment(tracking_uri, compose_cfg):
    with pytest.raises(ValueError, match="no MLflow experiment 'never-made'"):
        report(compose_cfg("report", "experiments=[never-made]"))


def test_report_over_a_hydra_multirun(tracking_uri, compose_cfg, tmp_path):
    """`rescore -m task.n=50,100`: one experiment, a run per job; the report pivots them by task.n."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    done = subprocess.run(
        [sys.executable, "-m", "fireact.rescore", "-m", "task.n=50,100", f"files=[{RELEASED_7B}]",
         "experiment_name=multirun-report", f"hydra.sweep.dir={sweep}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]

    cfg = compose_cfg("report", "experiments=[multirun-report]", "stage=rescore", "+tables.by_n={rows: task.n, metric: em}")
    table = report(cfg)["by_n"]

    trajectories = read_trajectory_file(data_dir() / RELEASED_7B, task="hotpotqa")[0]
    expected = {n: rescore(trajectories, task, task.questions()).summary["em"]
                for n, task in ((n, HotpotQA(split="dev", n=n, shuffle_seed=233)) for n in (50, 100))}
    assert list(table.index) == [50, 100]
    assert table["em"].tolist() == pytest.approx([expected[50], expected[100]])
    sweep_dirs = mlflow.search_runs(experiment_names=["multirun-report"])["tags.hydra_sweep_dir"]
    assert set(sweep_dirs.dropna()) == {str(sweep)}


def test_report_by_default_reports_the_newest_pipeline_and_labels_runs_by_what_differs(tracking_uri, compose_cfg,
                                                                                     released_7b, tmp_path):
    with tracking.start_run(compose_cfg("rescore", "experiment_name=older-pipeline"), stage="pipeline"):
        pass
    with tracking.start_run(compose_cfg("rescore", "experiment_name=newest-pipeline"), stage="pipeline"):
        for index, noise in enumerate(("clean", "none_obs")):
            with tracking.start_run(compose_cfg("rescore", "experiment_name=newest-pipeline"), stage="evaluate",
                                    params={"noise": noise}):
                trajectories = released_7b[10 * index: 10 * index + 10]
                summary = summarize(trajectories)
                tracking.log_evaluation(summary, write_evaluation(trajectories, summary, tmp_path / noise))
    cfg = compose_cfg("report", "tables={}")
    tables = report(cfg)
    assert cfg.experiments == ["newest-pipeline"] and cfg.experiment_name == "newest-pipeline"
    assert sorted(tables["turns"].index) == ["noise=clean", "noise=none_obs"]


def test_report_pairs_each_arm_with_its_reference_question_by_question(tracking_uri, compose_cfg, released_7b, tmp_path):
    """reference: {rows: react}: every other row is paired with react's run in its column over the
    per-question tables the runs logged; Holm over the comparisons; manifests that differ are named."""
    from dataclasses import replace

    base = released_7b[:40]
    right = sum(t.em == 1.0 for t in base)
    arms = {"react": base, "cot": [replace(t, em=1.0) for t in base[:10]] + base[10:],
            "io": [replace(t, em=0.0) for t in base]}
    for name, trajectories in arms.items():
        cfg = compose_cfg("rescore", "experiment_name=report-paired", "+model=llama2_7b")
        params = {"arm": name, "manifest.tool": "retriever" if name == "io" else "recorded_search"}
        with tracking.start_run(cfg, stage="evaluate", params=params):
            summary = summarize(trajectories)
            tracking.log_evaluation(summary, write_evaluation(trajectories, summary, tmp_path / name))
    cfg = compose_cfg("report", "experiments=[report-paired]", "turns=null", "~tables",
                      "+tables={em: {rows: arm, cols: model, metric: em, reference: {rows: react}, average: true}}")
    tables = report(cfg)
    assert tables["em"].loc["average", "llama2_7b"] == pytest.approx(tables["em"].drop("average")["llama2_7b"].mean())
    paired = pd.read_csv(tmp_path / "out" / "tables" / "em_paired.csv", index_col="arm")
    assert set(paired.index) == {"cot", "io"} and set(paired["reference"]) == {"react"}
    assert paired.loc["cot", "only arm right"] == sum(t.em != 1.0 for t in base[:10])
    assert paired.loc["io", "only reference right"] == right and paired.loc["io", "only arm right"] == 0
    assert (paired["questions"] == 40).all() and "Holm p" in paired
    assert paired.loc["io", "settings"] == "NOT COMPARABLE: tool" and pd.isna(paired.loc["cot", "settings"])
    assert "each arm against react, question by question" in (tmp_path / "out" / "report.md").read_text()


def test_report_pairs_arms_that_differ_in_what_the_reference_axis_varies(tracking_uri, compose_cfg, released_7b, tmp_path):
    """reference: {rows: clean} with rows: noise: the arms' manifests differ in noise on purpose,
    which is not a difference in settings; any other environment key still is."""
    for noise, tool in (("clean", "recorded_search"), ("none_obs", "recorded_search"), ("random_obs", "retriever")):
        params = {"noise": noise, "manifest.noise": f'{{"name": "{noise}"}}', "manifest.tool": tool}
        with tracking.start_run(compose_cfg("rescore", "experiment_name=report-noise"), stage="evaluate", params=params):
            summary = summarize(released_7b[:20])
            tracking.log_evaluation(summary, write_evaluation(released_7b[:20], summary, tmp_path / noise))
    cfg = compose_cfg("report", "experiments=[report-noise]", "turns=null", "~tables",
                      "+tables={em: {rows: noise, metric: em, reference: {rows: clean}}}")
    report(cfg)
    paired = pd.read_csv(tmp_path / "out" / "tables" / "em_paired.csv", index_col="arm")
    assert pd.isna(paired.loc["none_obs", "settings"]) and paired.loc["random_obs", "settings"] == "NOT COMPARABLE: tool"


def test_a_table_takes_only_the_runs_its_where_names(tracking_uri, compose_cfg, released_7b, tmp_path):
    """Table 5's report holds prompted and fine-tuned runs that share `method`: the prompted table
    must not show a newer fine-tuned run in its ReAct row."""
    from dataclasses import replace

    for agent, right in (("prompted", 2), ("fine-tuned", 6)):
        trajectories = [replace(t, em=1.0 if i < right else 0.0) for i, t in enumerate(released_7b[:20])]
        with tracking.start_run(compose_cfg("rescore", "experiment_name=report-agents"), stage="evaluate",
                                params={"method": "react", "agent": agent}):
            summary = summarize(trajectories)
            tracking.log_evaluation(summary, write_evaluation(trajectories, summary, tmp_path / agent))
    cfg = compose_cfg("report", "experiments=[report-agents]", "turns=null", "~tables",
                      "+tables={prompted: {rows: method, plot: null, where: {agent: prompted}},"
                      " finetuned: {rows: method, plot: null, where: {agent: fine-tuned}},"
                      " nobody: {rows: method, plot: null, where: {agent: dpo}}}")
    tables = report(cfg)
    assert tables["prompted"].loc["react", "em"] == pytest.approx(0.1)
    assert tables["finetuned"].loc["react", "em"] == pytest.approx(0.3)
    assert "nobody" not in tables


def test_report_pairs_every_cell_of_a_grid_with_its_origin(tracking_uri, compose_cfg, released_7b, tmp_path):
    """reference: {rows: 0, cols: 0}: a grid's cells (here CoT x Reflexion fractions) are each
    paired with the origin cell, ReAct alone, named by both keys."""
    from dataclasses import replace

    base = released_7b[:30]
    for cot, reflexion in ((0, 0), (0, 1), (1, 0), (1, 1)):
        flipped = 5 * (cot + 2 * reflexion)  # the first `flipped` questions made right
        trajectories = [replace(t, em=1.0) for t in base[:flipped]] + base[flipped:]
        cfg = compose_cfg("rescore", "experiment_name=report-grid")
        with tracking.start_run(cfg, stage="evaluate", params={"cot": cot, "reflexion": reflexion}):
            summary = summarize(trajectories)
            tracking.log_evaluation(summary, write_evaluation(trajectories, summary, tmp_path / f"{cot}{reflexion}"))
    cfg = compose_cfg("report", "experiments=[report-grid]", "turns=null", "~tables",
                      "+tables={em: {rows: cot, cols: reflexion, metric: em, plot: null, reference: {rows: 0, cols: 0}}}")
    report(cfg)
    paired = pd.read_csv(tmp_path / "out" / "tables" / "em_paired.csv", index_col="arm")
    assert sorted(paired.index) == ["cot=0, reflexion=1", "cot=1, reflexion=0", "cot=1, reflexion=1"]
    assert set(paired["reference"]) == {"cot=0, reflexion=0"} and "reflexion" not in paired
    wrong = [t.em != 1.0 for t in base]
    for arm, flipped in (("cot=1, reflexion=0", 5), ("cot=0, reflexion=1", 10), ("cot=1, reflexion=1", 15)):
        assert paired.loc[arm, "only arm right"] == sum(wrong[:flipped]) and paired.loc[arm, "only reference right"] == 0
    assert "each cell against cot=0, reflexion=0" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("bad, named", [
    ({"agg": "median"}, "agg 'median'"), ({"plot": "pie"}, "plot 'pie'"),
    ({"reference": {"cols": "react"}}, "axes the table has"), ({"reference": {}}, "give {rows: VALUE}"),
])
def test_a_table_spec_names_what_is_wrong_with_it(bad, named):
    from fireact.report import TableSpec

    with pytest.raises(ValueError, match=re.escape(named)):
        TableSpec(rows="method", **bad)
