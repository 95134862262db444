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

from filelock import FileLock

import hydra
from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from fireact import tracking
from fireact.build_data import build_data
from fireact.evaluate.run import evaluate
from fireact.train.run import train

COMPARED = ("em", "f1", "turns_mean", "turns_std", "prompt_tokens_mean", "completion_tokens_mean", "time_per_trial", "cost_per_trial")


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
        results = {}
        finetuned = trained_model_overrides(trained) + [f"method.format={cfg.finetuned_format}"]
        results["fine-tuned"] = evaluate(stage_config(cfg, "evaluate", root / "evaluate_finetuned", finetuned))
        if cfg.prompted:
            results["prompted"] = evaluate(stage_config(cfg, "evaluate", root / "evaluate_prompted", ["method.format=fewshot"]))
        tracking.log_metrics({f"{name.replace('-', '')}_{key}": s[key] for name, s in results.items() for key in COMPARED})
        table = write_comparison(results, root)
        tracking.log_artifact(root / "comparison.md")
        tracking.log_artifact(root / "comparison.csv")
    Console().print(table)
    print(f"pipeline folder: {root}\nMLflow: `make ui`, then http://127.0.0.1:5000 (experiment {cfg.experiment_name!r})")
    return results


def write_comparison(results: dict[str, dict], root: Path) -> Table:
    agents = sorted(results, reverse=True)
    rows = [[name, *(f"{results[name][key]:.4g}" for key in COMPARED)] for name in agents]
    # Printed with one row per metric: nine metric columns do not fit an 80-column terminal.
    table = Table(title="prompted vs fine-tuned")
    table.add_column("metric")
    for name in agents:
        table.add_column(name, justify="right")
    for i, key in enumerate(COMPARED, start=1):
        table.add_row(key, *(row[i] for row in rows))
    with (root / "comparison.csv").open("w", newline="") as out:
        csv.writer(out).writerows([["agent", *COMPARED], *rows])
    lines = ["| agent | " + " | ".join(COMPARED) + " |", "|" + " --- |" * (len(COMPARED) + 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    (root / "comparison.md").write_text("\n".join(lines) + "\n")
    return table


@hydra.main(config_path="../../conf", config_name="pipeline", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """The fine-tuned agent's EM: the objective a sweeper (Optuna) maximises."""
    return pipeline(cfg)["fine-tuned"]["em"]


if __name__ == "__main__":
    main()
