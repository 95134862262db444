"""`python -m fireact.pipeline` end to end at toy scale, as a user runs it: build_data → train
(LoRA on the embedded model) → evaluate fine-tuned and prompted, one parent MLflow run with
a child run per stage, the comparison table; a rerun reuses every stage."""

import json
import os
import subprocess
import sys

import mlflow
import yaml

from fireact.paths import REPO_ROOT
from tests.conftest import logged_table

TOY = [
    "n=6", "questions=2",
    "trainer.max_steps=2", "data.max_length=384", "data.batch_size=2", "data.val_fraction=0",
    "method.max_rounds=2", "method.max_tokens=40", "method.max_retries=0",
    "experiment_name=pipeline-test",
]


def run_pipeline(tmp_path, store, run="run", *overrides):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    return subprocess.run(
        [sys.executable, "-m", "fireact.pipeline", *TOY, f"hydra.run.dir={tmp_path / run}",
         f"stages_dir={tmp_path / 'stages'}", *overrides],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )


def test_pipeline_end_to_end_and_rerun(tmp_path):
    store = tmp_path / "mlflow.db"
    first = run_pipeline(tmp_path, store)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    assert "prompted vs fine-tuned" in first.stdout and "make ui" in first.stdout
    assert len((run / "build_data" / "trajectories.jsonl").read_text().splitlines()) == 6
    assert (run / "train" / "adapter" / "adapter_config.json").exists()
    for agent in ("evaluate_finetuned", "evaluate_prompted"):
        lines = (run / agent / "trajectories.jsonl").read_text().splitlines()
        assert len(lines) == 2
    finetuned = json.loads((run / "evaluate_finetuned" / "trajectories.jsonl").read_text().splitlines()[0])
    prompted = json.loads((run / "evaluate_prompted" / "trajectories.jsonl").read_text().splitlines()[0])
    assert finetuned["prompt_tokens"] < prompted["prompt_tokens"]  # zero-shot vs few-shot prompts
    comparison = (run / "comparison.md").read_text()
    assert comparison.splitlines()[2].startswith("| prompted |") and "McNemar exact p" in comparison
    assert set(json.loads((run / "paired.json").read_text())["fine-tuned - prompted"]) >= {"n_paired", "em_diff", "mcnemar_p"}

    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(experiment_names=["pipeline-test"])
    stages = sorted(runs["tags.stage"])
    assert stages == ["build_data", "evaluate", "evaluate", "pipeline", "train"]
    parent = runs[runs["tags.stage"] == "pipeline"].iloc[0]
    children = runs[runs["tags.stage"] != "pipeline"]
    assert (children["tags.mlflow.parentRunId"] == parent["run_id"]).all()
    assert "metrics.finetuned_em" in runs and "metrics.prompted_em" in runs
    inputs = {stage: [mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs for run_id in runs[runs["tags.stage"] == stage]["run_id"]]
              for stage in ("evaluate", "train")}
    evaluations = [dataset for run_inputs in inputs["evaluate"] for dataset in run_inputs]
    assert len(evaluations) == 2 and len({d.dataset.digest for d in evaluations}) == 1  # both agents, the same questions
    assert evaluations[0].dataset.name == "hotpotqa:dev[0:2]"
    assert {t.key: t.value for t in evaluations[0].tags}["mlflow.data.context"] == "evaluation"
    (training,) = inputs["train"][0]
    assert {t.key: t.value for t in training.tags} == {"mlflow.data.context": "training", "hotpotqa/react": "6"}
    for run_id in runs[runs["tags.stage"] == "evaluate"]["run_id"]:  # one trace per question and agent
        traces = mlflow.search_traces(locations=[parent["experiment_id"]], run_id=run_id, return_type="list")
        assert len(traces) == 2 and all(t.info.assessments for t in traces)
    comparison_table = logged_table(parent["run_id"], "tables/comparison.json")
    assert list(comparison_table["agent"]) == ["prompted", "fine-tuned"] and "em" in comparison_table
    paired_table = logged_table(parent["run_id"], "tables/paired.json")
    assert list(paired_table["agent"]) == ["fine-tuned"] and list(paired_table["baseline"]) == ["prompted"]

    second = run_pipeline(tmp_path, store)  # every stage's output is reused
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 already written, 0 to run" in second.stderr or "0 to run" in second.stdout + second.stderr
    assert json.loads((run / "train" / "train_summary.json").read_text())["optimizer_steps"] == 2

    # another run that changes only the evaluation, and spells the same mix differently (no CoT
    # taken), trains nothing: it selects the same trajectories, so it links the same trained model
    noisy = run_pipeline(tmp_path, store, "noisy", "noise=none_obs", "prompted=false",
                         "method_mix=react_cot", "method_mix.cot=0")
    assert noisy.returncode == 0, noisy.stderr[-3000:]
    assert len([p for p in (tmp_path / "stages").glob("build_data-*") if p.is_dir()]) == 2
    assert (tmp_path / "noisy" / "train").resolve() == (run / "train").resolve()
    # evaluations are shared stages too, keyed by their config: the noisy one is its own
    assert (run / "evaluate_finetuned").is_symlink()
    assert len([p for p in (tmp_path / "stages").glob("evaluate_finetuned-*") if p.is_dir()]) == 2
    assert len([p for p in (tmp_path / "stages").glob("train-*") if p.is_dir()]) == 1
    runs = mlflow.search_runs(experiment_names=["pipeline-test"])
    assert sorted(runs["tags.stage"]).count("train") == 1
    assert (runs["params.noise"] == "none_obs").sum() == 1  # the noisy pipeline run (its stages inherit it in reports)


def test_stage_folder_follows_the_config_files_not_only_the_overrides(tmp_path):
    """A default changed in a config file (here LoRA's rank) gives a new stage folder, so a
    pipeline rerun trains anew instead of reusing a model made under the old default."""
    import shutil

    from hydra import compose, initialize_config_dir

    from fireact.pipeline import shared_stage_dir

    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)

    def train_folder() -> str:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name="pipeline", overrides=[*TOY, f"stages_dir={tmp_path / 'stages'}"])
            return shared_stage_dir(cfg, "train", "train", [{"data": {"path": "/data"}}], tmp_path / "run").name

    first = train_folder()
    assert train_folder() == first  # the same files: the same folder
    lora = conf / "finetune" / "lora.yaml"
    assert "\n  r: 8\n" in lora.read_text()
    lora.write_text(lora.read_text().replace("\n  r: 8\n", "\n  r: 16\n"))
    changed = train_folder()
    assert changed != first
    assert (tmp_path / "run" / "train").resolve().name == changed  # the run folder's link follows


def test_improve_samples_from_the_merged_sft_model_and_names_the_fix_when_nothing_pairs(tmp_path):
    """improve=dpo at toy scale: the SFT model (LoRA, merged) samples on training questions in its
    own stage folder; a toy model finds no question with both a success and a failure, so the DPO
    stage stops with the message that says what to change (the real runs: experiments/self_improvement.md)."""
    store = tmp_path / "mlflow.db"
    unmerged = run_pipeline(tmp_path, store, "unmerged", "improve=dpo", "prompted=false")
    assert unmerged.returncode != 0 and "add merge=true to the pipeline's command line" in unmerged.stderr
    improved = run_pipeline(tmp_path, store, "improved", "improve=dpo", "prompted=false", "improve.questions=2",
                            "improve.samples=2", "improve.temperature=1.0", "merge=true")
    assert improved.returncode != 0 and "no question has both a success and a failure" in improved.stderr
    samples = tmp_path / "improved" / "sample_1"
    written = [json.loads(line) for name in ("trajectories.jsonl", "failures.jsonl") if (samples / name).exists()
               for line in (samples / name).read_text().splitlines()]
    assert sorted((t["qid"], t["sample"]) for t in written) == [("train-102", 0), ("train-102", 1), ("train-35", 0), ("train-35", 1)]
    sampled_with = yaml.safe_load((samples / "run_config.yaml").read_text())
    assert sampled_with["model"]["path"].endswith("merged")  # the SFT model samples, not the base model


def test_improve_grpo_trains_online_from_the_sft_model_and_pairs_it_against_it(tmp_path):
    """improve=grpo at toy scale: no sample stage; the GRPO stage starts from the merged SFT
    model, its agent (an adapter on that model) is evaluated and paired against the fine-tuned one."""
    store = tmp_path / "mlflow.db"
    # 2 questions in groups of 2, one step of one batch (the pipeline's trainer.max_steps=2 caps it)
    toy_grpo = ["improve.questions=2", "improve.train.data.batch_size=2", "improve.train.objective.group_size=2"]
    result = run_pipeline(tmp_path, store, "grpo", "improve=grpo", "prompted=false", "merge=true", *toy_grpo)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "grpo"
    assert not (run / "sample_1").exists()
    grpo = json.loads((run / "grpo" / "train_summary.json").read_text())
    assert grpo["objective"] == "grpo" and grpo["model"].endswith("merged") and grpo["step_metrics"][0]["turns"] <= 2
    evaluated = yaml.safe_load((run / "evaluate_grpo" / "run_config.yaml").read_text())
    assert evaluated["model"]["path"].endswith("merged") and evaluated["model"]["adapter"].endswith("adapter")
    assert set(json.loads((run / "paired.json").read_text())) == {"grpo - fine-tuned"}
    assert (run / "rounds.png").stat().st_size > 0
