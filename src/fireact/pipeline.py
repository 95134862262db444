"""`python -m fireact.pipeline`: build_data → train → evaluate the fine-tuned agent and, by
config, the prompted base model on the same questions; one parent MLflow run with a child
run per stage, ending with the comparison table (prompted vs fine-tuned).

With `improve=<conf/improve member>` (dpo, rft, grpo) the fine-tuned agent then learns from its own
experience, in `improve.rounds` rounds: it samples on training questions (a `generate` stage),
trains again from its model with the improve config's objective (a second `train` stage; for
grpo, which samples online as it trains, that stage alone), and
each round's agent is evaluated on the same questions and compared, question by question,
with the fine-tuned one.

Each stage is its own entry point's config (conf/<stage>.yaml) composed with the overrides
in `stages.<stage>`, exactly as on that stage's command line, plus the shared `seed` and
`experiment_name`. Every stage writes under `stages_dir`, in a folder named by a hash of its
whole config, linked from the run folder: every run or sweep job with the same data and
training settings shares one trained model, and one evaluation of each agent on the same
questions (a lock makes parallel jobs wait for it). Rerunning
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

from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from fireact import tracking
from fireact.build_data import build_data
from fireact.entry import stage_main
from fireact.evaluate import stats
from fireact.evaluate.plots import line_chart
from fireact.evaluate.run import evaluate
from fireact.generate import generate
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
    return compose_stage(cfg, stage, out_dir, stage_overrides(cfg, stage, extra))


def compose_stage(cfg: DictConfig, config_name: str, out_dir: Path, overrides: list[str]) -> DictConfig:
    """conf/<config_name>.yaml with `overrides`, writing to `out_dir`, in the pipeline's experiment."""
    shared = [f"experiment_name={cfg.experiment_name}", f"paths.output_dir={quoted(out_dir)}"]
    stage_cfg = compose(config_name=config_name, overrides=shared + list(overrides))
    with open_dict(stage_cfg):
        stage_cfg.pop("hydra", None)
    return stage_cfg


def improve_overrides(cfg: DictConfig, step: str, extra: list[str]) -> list[str]:
    """An improve step's command line: seed, improve.<step>, then `extra`."""
    return [f"seed={cfg.seed}", *cfg.improve[step], *extra]


def rollout_method_overrides(cfg: DictConfig) -> list[str]:
    """The evaluation's method settings (extra.evaluate's method.*) for the rollouts of online
    training (data=rollouts keeps its method under data.method): the agent samples as it is evaluated."""
    return [f"data.{override}" for override in cfg.extra.evaluate if override.startswith("method.")]


def trained_model_overrides(summary: dict) -> list[str]:
    """How `evaluate` loads what `train` wrote: an adapter on the model it was trained from (the
    base model, or an improve step's starting model), a full model, or a hosted job's model (by
    name, so its format cannot sit beside its weights: the chat format it was trained in)."""
    outputs = summary["outputs"]
    if "adapter" in outputs:
        return [f"model.path={quoted(summary['model'])}", f"model.adapter={quoted(outputs['adapter'])}"]
    if "fine_tuned_model" in outputs:
        return [f"model.path={quoted(outputs['fine_tuned_model'])}", "method.format=chat"]
    return [f"model.path={quoted(outputs['model'])}"]


def shared_stage_dir(cfg: DictConfig, stage: str, overrides: list[str], root: Path, config_name: str | None = None) -> Path:
    """stages_dir/<stage>-<hash of the stage's whole config>, linked as root/<stage>; the config is
    conf/<config_name or stage>.yaml with `overrides`. The hash is of the composed config (its
    output folder and experiment name aside), so a changed default in a config file trains anew
    instead of reusing a stage made under the old one."""
    settings = compose_stage(cfg, config_name or stage, Path("<stage folder>"), overrides)
    settings.experiment_name = None
    key = hashlib.sha256(OmegaConf.to_yaml(settings).encode()).hexdigest()[:12]
    shared = Path(cfg.stages_dir).resolve() / f"{stage}-{key}"
    shared.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    link = root / stage
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} is a folder, where the pipeline links its shared stage folder {shared}: "
                              f"move it away (an older pipeline wrote it), or run in another folder (hydra.run.dir=...)")
    if link.is_symlink() and link.resolve() != shared:  # made under other settings
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(shared, target_is_directory=True)
    return shared


def run_evaluate(cfg: DictConfig, folder: str, extra: list[str], root: Path) -> tuple[Path, dict]:
    """`evaluate` in a shared stage folder linked as root/<folder>: jobs that evaluate the same agent
    on the same questions (a sweep's jobs, all starting from one fine-tuned model) share its
    trajectories, the first writing them; every job still logs its own evaluate run."""
    overrides = stage_overrides(cfg, "evaluate", extra)
    out_dir = shared_stage_dir(cfg, folder, overrides, root, config_name="evaluate")
    with FileLock(out_dir.with_suffix(".lock")):
        return out_dir, evaluate(compose_stage(cfg, "evaluate", out_dir, overrides))


def run_build_data(cfg: DictConfig, root: Path) -> Path:
    out_dir = shared_stage_dir(cfg, "build_data", stage_overrides(cfg, "build_data"), root)
    with FileLock(out_dir.with_suffix(".lock")):
        if not (out_dir / "manifest.json").exists():  # written last: the data is complete
            build_data(stage_config(cfg, "build_data", out_dir))
    return out_dir


def run_train(cfg: DictConfig, data_dir: Path, root: Path) -> dict:
    return train_once(cfg, "train", stage_overrides(cfg, "train", [f"data.path={quoted(data_dir)}"]), root)


def train_once(cfg: DictConfig, stage: str, overrides: list[str], root: Path) -> dict:
    """`train` with these overrides in its shared stage folder: kept once finished, resumed when interrupted."""
    out_dir = shared_stage_dir(cfg, stage, overrides, root, config_name="train")
    with FileLock(out_dir.with_suffix(".lock")):  # a parallel job with the same settings waits, then reuses
        done = out_dir / "train_summary.json"
        if done.exists():  # a finished training is kept; delete the folder to train again
            return json.loads(done.read_text())
        resume = ["resume=true"] if (out_dir / "checkpoints" / "last.ckpt").exists() else []
        return train(compose_stage(cfg, "train", out_dir, [*overrides, *resume]))


def start_model(trained: dict) -> str:
    """The fine-tuned model as one folder, what an improve step starts from and keeps as its reference."""
    outputs = trained["outputs"]
    folder = outputs.get("model") or outputs.get("merged")
    if folder is None:
        raise ValueError("improve needs the fine-tuned model as one folder, but train wrote only a LoRA adapter; "
                         "add merge=true to the training (\"extra.train=[merge=true]\") or use use.finetune=full")
    return folder


def run_improve(cfg: DictConfig, trained: dict, root: Path) -> list[tuple[str, dict]]:
    """improve.rounds rounds: the agent samples on training questions, then trains from its model on
    what it found; round 1 starts from the SFT model, each later round from the one before.
    Returns each round's (name, train summary)."""
    model, rounds = start_model(trained), []
    for number in range(1, cfg.improve.rounds + 1):
        name = cfg.improve.name if cfg.improve.rounds == 1 else f"{cfg.improve.name}-{number}"
        if cfg.improve.sample is None:  # online (grpo): the policy samples as it trains
            data = rollout_method_overrides(cfg)
        else:
            # The agent samples as it is evaluated (extra.evaluate: rounds, tokens).
            sample = improve_overrides(cfg, "sample", [*cfg.extra.evaluate, f"model.path={quoted(model)}"])
            # Named by round, not by method: methods that sample alike share the stage (keyed by its config).
            samples_dir = shared_stage_dir(cfg, f"sample_{number}", sample, root, config_name="generate")
            with FileLock(samples_dir.with_suffix(".lock")):
                generate(compose_stage(cfg, "generate", samples_dir, sample))  # resumes: only missing samples run
            data = [f"data.path={quoted(samples_dir)}"]
        improved = train_once(cfg, name, improve_overrides(cfg, "train", [f"model.path={quoted(model)}", *data]), root)
        rounds.append((name, improved))
        if number < cfg.improve.rounds:  # the next round starts from this one's model
            model = start_model(improved)
    return rounds


def pipeline(cfg: DictConfig) -> dict[str, dict]:
    root = Path(cfg.output_dir)
    with tracking.start_run(cfg, stage="pipeline"):
        trained = run_train(cfg, run_build_data(cfg, root), root)
        results, folders = {}, {}
        # method.format=auto: each agent is prompted in the format its model was trained in (fewshot: the base)
        folders["fine-tuned"], results["fine-tuned"] = run_evaluate(cfg, "evaluate_finetuned", trained_model_overrides(trained), root)
        comparisons = []  # (agent, baseline, MLflow metric prefix), each on the same questions
        if cfg.prompted:
            folders["prompted"], results["prompted"] = run_evaluate(cfg, "evaluate_prompted", [], root)
            comparisons.append(("fine-tuned", "prompted", "paired"))
        rounds = []
        if cfg.get("improve"):  # absent unless improve=<member>
            for name, improved in run_improve(cfg, trained, root):
                rounds.append(name)
                folders[name], results[name] = run_evaluate(cfg, f"evaluate_{name}", trained_model_overrides(improved), root)
                comparisons.append((name, "fine-tuned", f"paired_{name.replace('-', '')}"))
        tracking.log_metrics({f"{name.replace('-', '')}_{key}": s[key] for name, s in results.items() for key in COMPARED})
        paired = {}
        for agent, baseline, prefix in comparisons:
            paired[agent, baseline] = stats.compare(per_question_scores(folders[agent]), per_question_scores(folders[baseline]))
            tracking.log_metrics({f"{prefix}_{key}": value for key, value in paired[agent, baseline].items()})
        tables = write_comparison(results, paired, root)
        if rounds:
            plot_rounds(results, rounds, root)
        for name in ("comparison.md", "comparison.csv", "paired.json", "rounds.png"):
            if (root / name).exists():
                tracking.log_artifact(root / name)
    Console().print(*tables)
    for (agent, baseline), result in paired.items():
        print(stats.verdict(result, agent, baseline))
    if cfg.note:
        print(cfg.note)
    print(f"pipeline folder: {root}\nMLflow: `make ui`, then http://127.0.0.1:5000 (experiment {cfg.experiment_name!r})")
    return results


def plot_rounds(results: dict[str, dict], rounds: list[str], root: Path) -> Path:
    """rounds.png: EM with its 95% interval for the fine-tuned agent (round 0) and each improve round's."""
    names = ["fine-tuned", *rounds]
    index = pd.Index(range(len(names)), name="improve round (0: the fine-tuned agent)")
    em, low, high = ([results[name][key] for name in names] for key in ("em", "em_ci_low", "em_ci_high"))
    table = pd.DataFrame({"EM": em}, index=index)
    bounds = (pd.DataFrame({"EM": low}, index=index), pd.DataFrame({"EM": high}, index=index))
    return line_chart(table, root / "rounds.png", f"EM per round: {', '.join(names)}", "EM", bounds=bounds)


def per_question_scores(folder: Path) -> dict[str, dict[str, float]]:
    """{qid: {em, f1}} from an evaluation's per_question.csv (the questions it was run on)."""
    table = pd.read_csv(folder / "per_question.csv", dtype={"qid": str})
    return {row.qid: {"em": float(row.em), "f1": float(row.f1)} for row in table.itertuples()}


def paired_rows(result: dict, agent: str, baseline: str) -> list[tuple[str, str, str]]:
    """A paired test's rows: (column of the tables/paired.json artifact, row as printed, value)."""
    return [
        ("questions paired", "questions paired", str(result["n_paired"])),
        ("EM difference", "EM difference", stats.with_interval(result, "em_diff")),
        ("F1 difference", "F1 difference", stats.with_interval(result, "f1_diff")),
        ("only the agent right (EM)", f"only {agent} right (EM)", str(result["only_a_right"])),
        ("only the baseline right (EM)", f"only {baseline} right (EM)", str(result["only_b_right"])),
        ("McNemar exact p (EM)", "McNemar exact p (EM)", f"{result['mcnemar_p']:.3g}"),
    ]


def write_comparison(results: dict[str, dict], paired: dict[tuple[str, str], dict], root: Path) -> list[Table]:
    """comparison.csv and .md (one row per agent), paired.json ({"<agent> - <baseline>": test}),
    the same as table artifacts of the pipeline's run (tables/comparison.json, tables/paired.json:
    the run's Artifacts tab shows them as tables), and the printed tables: one row per metric
    (the metric columns do not fit an 80-column terminal), then each paired test."""
    agents = sorted(results, key=lambda name: (name != "prompted", name != "fine-tuned", name))
    with (root / "comparison.csv").open("w", newline="") as out:
        csv.writer(out).writerows([["agent", *COMPARED], *([name, *(results[name][k] for k in COMPARED)] for name in agents)])
    shown = [key for key in COMPARED if not key.endswith(("_ci_low", "_ci_high"))]
    table = Table(title=f"{' vs '.join(agents)}, on the same questions (EM, F1: 95% bootstrap intervals)")
    table.add_column("metric")
    for name in agents:
        table.add_column(name, justify="right")
    for key in shown:
        table.add_row(key, *(stats.with_interval(results[name], key) for name in agents))
    lines = ["| agent | " + " | ".join(shown) + " |", "|" + " --- |" * (len(shown) + 1)]
    lines += ["| " + " | ".join([name, *(stats.with_interval(results[name], key) for key in shown)]) + " |" for name in agents]
    tracking.log_table(pd.DataFrame([{"agent": name, **{key: stats.with_interval(results[name], key) for key in shown}}
                                     for name in agents]), "tables/comparison.json")
    tables, paired_table = [table], []
    for (agent, baseline), result in paired.items():
        rows = paired_rows(result, agent, baseline)
        paired_table.append({"agent": agent, "baseline": baseline, **{column: value for column, _, value in rows}})
        pairs = Table(title=f"{agent} - {baseline}, question by question (95% paired-bootstrap intervals)")
        pairs.add_column("")
        pairs.add_column("value", justify="right")
        for _, name, value in rows:
            pairs.add_row(name, value)
        tables.append(pairs)
        lines += ["", f"| {agent} - {baseline} | paired |", "| --- | --- |", *(f"| {n} | {v} |" for _, n, v in rows),
                  "", stats.verdict(result, agent, baseline)]
    if paired:
        tracking.log_table(pd.DataFrame(paired_table), "tables/paired.json")
        (root / "paired.json").write_text(json.dumps({f"{a} - {b}": result for (a, b), result in paired.items()}, indent=2))
    (root / "comparison.md").write_text("\n".join(lines) + "\n")
    return tables


@stage_main("pipeline")
def main(cfg: DictConfig) -> float:
    """The fine-tuned agent's EM: the objective a sweeper (Optuna) maximises."""
    return pipeline(cfg)["fine-tuned"]["em"]


if __name__ == "__main__":
    main()
