"""`python -m fireact.pipeline`: build_data → train → evaluate the fine-tuned agent and, by
config, the prompted base model on the same questions; one parent MLflow run with a child
run per stage, ending with the comparison table (prompted vs fine-tuned).

Each stage is its own entry point's config (conf/<stage>.yaml) composed with the overrides
in `stages.<stage>`, exactly as on that stage's command line, plus the shared `seed` and
`experiment_name`. build_data and train write under `stages_dir`, in a folder named by a hash
of their overrides, linked from the run folder: every run or sweep job with the same data and
training settings shares one trained model (a lock makes parallel jobs wait for it). Rerunning
reuses every stage: build_data is deterministic, a finished training is kept (an interrupted one
resumes from its checkpoint), and evaluations resume.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pandas as pd
from filelock import FileLock

import hydra
from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from fireact import tracking
from fireact.build_data import build_data
from fireact.evaluate import stats
from fireact.evaluate.run import evaluate
from fireact.train.run import train

COMPARED = (
    "n", "em", "em_ci_low", "em_ci_high", "f1", "f1_ci_low", "f1_ci_high", "turns_mean", "turns_std",
    "format_error_rate", "prompt_tokens_mean", "completion_tokens_mean", "latency_mean", "time_per_trial",
    "cost_per_trial",
)


def quoted(path) -> str:
    """A path as a Hydra override value (run folders are named like `n=100,noise=clean`)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def stage_overrides(cfg: DictConfig, stage: str, extra: list[str] = ()) -> list[str]:
    """The stage's command line: seed, stages.<stage>, extra.<stage>, then `extra` (n=None is n=null)."""
    overrides = [f"seed={cfg.seed}", *cfg.stages[stage], *cfg.extra[stage], *extra]
    return [o.removesuffix("=None") + "=null" if o.endswith("=None") else o for o in overrides]


def stage_config(cfg: DictConfig, stage: str, out_dir: Path, extra: list[str] = ()) -> DictConfig:
    shared = [f"experiment_name={cfg.experiment_name}", f"paths.output_dir={quoted(out_dir)}"]
    stage_cfg = compose(config_name=stage, overrides=shared + stage_overrides(cfg, stage, extra))
    with open_dict(stage_cfg):
        stage_cfg.pop("hydra", None)
    return stage_cfg


def trained_model_overrides(summary: dict) -> list[str]:
    """How `evaluate` loads what `train` wrote: an adapter on the base model, or a full model."""
    outputs = summary["outputs"]
    if "adapter" in outputs:
        return [f"model.adapter={quoted(outputs['adapter'])}"]
    return [f"model.path={quoted(outputs['model'])}"]


def shared_stage_dir(cfg: DictConfig, stage: str, extra: list[str], root: Path) -> Path:
    """stages_dir/<stage>-<hash of the stage's whole config>, linked as root/<stage>. The hash is
    of the composed config (its output folder and experiment name aside), so a changed default
    in a config file trains anew instead of reusing a stage made under the old one."""
    settings = stage_config(cfg, stage, Path("<stage folder>"), extra)
    settings.experiment_name = None
    key = hashlib.sha256(OmegaConf.to_yaml(settings).encode()).hexdigest()[:12]
    shared = Path(cfg.stages_dir).resolve() / f"{stage}-{key}"
    shared.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    link = root / stage
    if link.is_symlink() and link.resolve() != shared:  # made under other settings
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(shared, target_is_directory=True)
    return shared


def run_build_data(cfg: DictConfig, root: Path) -> Path:
    out_dir = shared_stage_dir(cfg, "build_data", [], root)
    with FileLock(out_dir.with_suffix(".lock")):
        if not (out_dir / "manifest.json").exists():  # written last: the data is complete
            build_data(stage_config(cfg, "build_data", out_dir))
    return out_dir


def run_train(cfg: DictConfig, data_dir: Path, root: Path) -> dict:
    data = [f"data.path={quoted(data_dir)}"]
    out_dir = shared_stage_dir(cfg, "train", data, root)
    with FileLock(out_dir.with_suffix(".lock")):  # a parallel job with the same settings waits, then reuses
        done = out_dir / "train_summary.json"
        if done.exists():  # a finished training is kept; delete the folder to train again
            return json.loads(done.read_text())
        resume = ["resume=true"] if (out_dir / "checkpoints" / "last.ckpt").exists() else []
        return train(stage_config(cfg, "train", out_dir, [*data, *resume]))


def pipeline(cfg: DictConfig) -> dict[str, dict]:
    root = Path(cfg.output_dir)
    with tracking.start_run(cfg, stage="pipeline"):
        trained = run_train(cfg, run_build_data(cfg, root), root)
        results, folders = {}, {}
        finetuned = trained_model_overrides(trained) + [f"method.format={cfg.finetuned_format}"]
        folders["fine-tuned"] = root / "evaluate_finetuned"
        results["fine-tuned"] = evaluate(stage_config(cfg, "evaluate", folders["fine-tuned"], finetuned))
        if cfg.prompted:
            folders["prompted"] = root / "evaluate_prompted"
            results["prompted"] = evaluate(stage_config(cfg, "evaluate", folders["prompted"], ["method.format=fewshot"]))
        tracking.log_metrics({f"{name.replace('-', '')}_{key}": s[key] for name, s in results.items() for key in COMPARED})
        paired = None
        if cfg.prompted:  # the same questions: compared question by question
            scores = {name: per_question_scores(folder) for name, folder in folders.items()}
            paired = stats.compare(scores["fine-tuned"], scores["prompted"])
            tracking.log_metrics({f"paired_{key}": value for key, value in paired.items()})
        tables = write_comparison(results, paired, root)
        for name in ("comparison.md", "comparison.csv", "paired.json"):
            if (root / name).exists():
                tracking.log_artifact(root / name)
    Console().print(*tables)
    if paired is not None:
        print(stats.verdict(paired, "fine-tuned", "prompted"))
    if cfg.note:
        print(cfg.note)
    print(f"pipeline folder: {root}\nMLflow: `make ui`, then http://127.0.0.1:5000 (experiment {cfg.experiment_name!r})")
    return results


def per_question_scores(folder: Path) -> dict[str, dict[str, float]]:
    """{qid: {em, f1}} from an evaluation's per_question.csv (the questions it was run on)."""
    table = pd.read_csv(folder / "per_question.csv", dtype={"qid": str})
    return {row.qid: {"em": float(row.em), "f1": float(row.f1)} for row in table.itertuples()}


def write_comparison(results: dict[str, dict], paired: dict[str, float] | None, root: Path) -> list[Table]:
    """comparison.csv and .md (one row per agent), paired.json, and the printed tables: one row
    per metric (the metric columns do not fit an 80-column terminal), then the paired test."""
    agents = sorted(results, reverse=True)
    with (root / "comparison.csv").open("w", newline="") as out:
        csv.writer(out).writerows([["agent", *COMPARED], *([name, *(results[name][k] for k in COMPARED)] for name in agents)])
    shown = [key for key in COMPARED if not key.endswith(("_ci_low", "_ci_high"))]
    table = Table(title="prompted vs fine-tuned, on the same questions (EM, F1: 95% bootstrap intervals)")
    table.add_column("metric")
    for name in agents:
        table.add_column(name, justify="right")
    for key in shown:
        table.add_row(key, *(stats.with_interval(results[name], key) for name in agents))
    lines = ["| agent | " + " | ".join(shown) + " |", "|" + " --- |" * (len(shown) + 1)]
    lines += ["| " + " | ".join([name, *(stats.with_interval(results[name], key) for key in shown)]) + " |" for name in agents]
    if paired is not None:
        (root / "paired.json").write_text(json.dumps(paired, indent=2))
        rows = [
            ("questions paired", str(paired["n_paired"])),
            ("EM difference", stats.with_interval(paired, "em_diff")),
            ("F1 difference", stats.with_interval(paired, "f1_diff")),
            ("only fine-tuned right (EM)", str(paired["only_a_right"])),
            ("only prompted right (EM)", str(paired["only_b_right"])),
            ("McNemar exact p (EM)", f"{paired['mcnemar_p']:.3g}"),
        ]
        pairs = Table(title="fine-tuned - prompted, question by question (95% paired-bootstrap intervals)")
        pairs.add_column("")
        pairs.add_column("value", justify="right")
        for name, value in rows:
            pairs.add_row(name, value)
        lines += ["", "| fine-tuned - prompted | paired |", "| --- | --- |", *(f"| {n} | {v} |" for n, v in rows),
                  "", stats.verdict(paired, "fine-tuned", "prompted")]
    (root / "comparison.md").write_text("\n".join(lines) + "\n")
    return [table] if paired is None else [table, pairs]


@hydra.main(config_path="../../conf", config_name="pipeline", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """The fine-tuned agent's EM: the objective a sweeper (Optuna) maximises."""
    return pipeline(cfg)["fine-tuned"]["em"]


if __name__ == "__main__":
    main()
