"""`python -m fireact.pipeline`: build_data → train → evaluate the fine-tuned agent and, by
config, the prompted base model on the same questions; one parent MLflow run with a child
run per stage, ending with the comparison table (prompted vs fine-tuned).

With `improve=<conf/improve member>` (dpo, rft, grpo) the fine-tuned agent then learns from its own
experience, in `improve.rounds` rounds: it samples on training questions (a `generate` stage),
trains again from its model with the improve config's objective (a second `train` stage; for
grpo, which samples online as it trains, that stage alone), and
each round's agent is evaluated on the same questions and compared, question by question,
with the fine-tuned one.

The pipeline's config composes the stages' config groups at top level (conf/pipeline.yaml).
Each stage receives its part (`stage_config`): its own conf/<stage>.yaml, every key of which the
pipeline also has taken from the pipeline's config, after the stage's changes (a config object:
the trained model to evaluate, an improve step's `sample` or `train`). Every stage writes under
`stages_dir`, in a folder named by a hash of the config it runs with, linked from the run
folder: every run or sweep job with the same data (the same trajectories, however the mix was
spelled) and training settings shares one trained model, and one evaluation of each agent on the
same questions (a lock makes parallel jobs wait for it), in any experiment. Rerunning reuses
every stage: build_data is deterministic, a finished training is kept (an interrupted one
resumes from its checkpoint), and evaluations resume.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from filelock import FileLock

from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.table import Table

from fireact import tracking
from fireact.build_data import build_data, built
from fireact.data.export import MANIFEST
from fireact.entry import stage_main
from fireact.terminal import show
from fireact.evaluate import manifest as manifests, stats
from fireact.evaluate.files import read_scores
from fireact.evaluate.plots import line_chart
from fireact.evaluate.run import evaluate
from fireact.generate import generate
from fireact.train.result import TrainedModel, last_checkpoint
from fireact.train.run import train

COMPARED = (
    "n", "em", "em_ci_low", "em_ci_high", "f1", "f1_ci_low", "f1_ci_high", "turns_mean", "turns_std",
    "format_error_rate", "prompt_tokens_mean", "completion_tokens_mean", "latency_mean", "time_per_trial",
    "cost_per_trial",
)

Changes = Mapping | DictConfig  # a part of a config: {"model": {"path": ...}}, an improve step's `train`


def apply_changes(part: DictConfig, changes: Changes) -> None:
    """Each key of `changes` into `part`: a config group's member (a mapping with a `_target_`) or a
    plain value replaces what is there, any other mapping is merged into it (so `optimizer: {lr: ...}`
    changes one setting). Interpolations stay, resolved later against `part`."""
    if OmegaConf.is_config(changes):
        changes = OmegaConf.to_container(changes, resolve=False)
    for key, value in changes.items():
        if isinstance(value, Mapping) and "_target_" not in value and OmegaConf.is_dict(part.get(key)):
            part[key] = OmegaConf.merge(part[key], value)
        else:
            part[key] = value


def stage_config(cfg: DictConfig, stage: str, out_dir: Path, *changes: Changes) -> DictConfig:
    """The config `stage` runs with, writing to `out_dir`: conf/<stage>.yaml, every key of which the
    pipeline's config also has (its groups, seed, experiment_name, n, ...) taken from it after
    `changes`, resolved there (so `backend.model: ${model}` follows a changed model.path)."""
    part = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    part.pop("hydra", None)
    part.paths.output_dir = str(out_dir)
    for change in changes:
        apply_changes(part, change)
    resolved = OmegaConf.to_container(part, resolve=True)
    stage_cfg = compose(config_name=stage)
    with open_dict(stage_cfg):
        stage_cfg.pop("hydra", None)
        for key in list(stage_cfg):
            if key in resolved:
                stage_cfg[key] = resolved[key]
        if "tracker" not in resolved:  # ~tracker on the pipeline: no stage is tracked either
            stage_cfg.pop("tracker", None)
    return stage_cfg


def shared_stage_dir(cfg: DictConfig, folder: str, stage: str, changes: list[Changes], root: Path) -> Path:
    """stages_dir/<folder>-<hash of the stage's config>, linked as root/<folder>. The hash is of the
    config `stage` runs with, less what only says where it runs or is logged (its output folder,
    threads, MLflow experiment and tracker, the agent's label), so a changed default in a config
    file trains anew instead of reusing a stage made under the old one, and experiments that train
    or evaluate alike (make small, table2's and lora_vs_full's full arm) share the stage."""
    settings = stage_config(cfg, stage, Path("<stage folder>"), *changes)
    with open_dict(settings):
        for label in ("experiment_name", "threads", "tracker", "agent"):
            settings.pop(label, None)
    key = hashlib.sha256(OmegaConf.to_yaml(settings).encode()).hexdigest()[:12]
    shared = Path(cfg.stages_dir).resolve() / f"{folder}-{key}"
    shared.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    link = root / folder
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} is a folder, where the pipeline links its shared stage folder {shared}: "
                              f"move it away (an older pipeline wrote it), or run in another folder (hydra.run.dir=...)")
    if link.is_symlink() and link.resolve() != shared:  # made under other settings
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(shared, target_is_directory=True)
    return shared


def run_evaluate(cfg: DictConfig, agent: str, changes: list[Changes], root: Path) -> tuple[Path, dict]:
    """`evaluate` of the agent named `agent` in a shared stage folder linked as root/evaluate_<agent>:
    jobs that evaluate the same agent on the same questions (a sweep's jobs, all starting from one
    fine-tuned model) share its trajectories, the first writing them; every job still logs its own
    evaluate run, tagged with the agent's name."""
    out_dir = shared_stage_dir(cfg, f"evaluate_{agent.replace('-', '')}", "evaluate", changes, root)
    with FileLock(out_dir.with_suffix(".lock")):
        return out_dir, evaluate(stage_config(cfg, "evaluate", out_dir, *changes, {"agent": agent}))


def run_build_data(cfg: DictConfig, root: Path) -> Path:
    """build_data in its shared stage folder. Returns the folder named by the files it wrote,
    stages_dir/data-<hash of their hashes in its manifest>, a link to the first build that wrote
    them: mixes spelled differently that select the same trajectories (method_mix=react with n=500
    or with n=null, react_cot and react_cot_reflexion with reflexion=0) train one model."""
    out_dir = shared_stage_dir(cfg, "build_data", "build_data", [], root)
    with FileLock(out_dir.with_suffix(".lock")):
        if not built(out_dir):
            build_data(stage_config(cfg, "build_data", out_dir))
    written = json.loads((out_dir / MANIFEST).read_text())["outputs"]  # {file: sha256}, pairs included
    data = out_dir.parent / f"data-{manifests.json_hash(written)}"
    with FileLock(data.with_suffix(".lock")):
        if not data.exists():  # absent, or a link to a build since deleted
            data.unlink(missing_ok=True)
            data.symlink_to(out_dir, target_is_directory=True)
    return data


def train_once(cfg: DictConfig, folder: str, changes: list[Changes], root: Path) -> TrainedModel:
    """`train` with these changes in its shared stage folder: kept once finished, resumed when interrupted."""
    out_dir = shared_stage_dir(cfg, folder, "train", changes, root)
    with FileLock(out_dir.with_suffix(".lock")):  # a parallel job with the same settings waits, then reuses
        if (done := TrainedModel.read(out_dir)) is not None:  # kept; delete the folder to train again
            return done
        resume = [{"resume": True}] if last_checkpoint(out_dir) is not None else []
        return TrainedModel(train(stage_config(cfg, "train", out_dir, *changes, *resume)))


def run_improve(cfg: DictConfig, trained: TrainedModel, root: Path) -> list[tuple[str, TrainedModel]]:
    """improve.rounds rounds: the agent samples on training questions, then trains from its model on
    what it found; round 1 starts from the SFT model, each later round from the one before.
    Returns each round's (name, trained model)."""
    model, rounds = trained.folder(), []
    for number in range(1, cfg.improve.rounds + 1):
        name = cfg.improve.name if cfg.improve.rounds == 1 else f"{cfg.improve.name}-{number}"
        start = {"model": {"path": model}}
        data = []
        if cfg.improve.sample is not None:  # grpo has none: the policy samples online as it trains
            sample = [start, cfg.improve.sample]
            # Named by round, not by method: methods that sample alike share the stage (keyed by its config).
            samples_dir = shared_stage_dir(cfg, f"sample_{number}", "generate", sample, root)
            with FileLock(samples_dir.with_suffix(".lock")):
                generate(stage_config(cfg, "generate", samples_dir, *sample))  # resumes: only missing samples run
            data = [{"data": {"path": str(samples_dir)}}]
        improved = train_once(cfg, name, [start, cfg.improve.train, *data], root)
        rounds.append((name, improved))
        if number < cfg.improve.rounds:  # the next round starts from this one's model
            model = improved.folder()
    return rounds


def pipeline(cfg: DictConfig) -> dict[str, dict]:
    root = Path(cfg.output_dir)
    with tracking.start_run(cfg, stage="pipeline"):
        trained = train_once(cfg, "train", [{"data": {"path": str(run_build_data(cfg, root))}}], root)
        results, folders = {}, {}
        # method.format=auto: each agent is prompted in the format its model was trained in (fewshot: the base)
        folders["fine-tuned"], results["fine-tuned"] = run_evaluate(cfg, "fine-tuned", [trained.agent()], root)
        comparisons = []  # (agent, baseline, MLflow metric prefix), each on the same questions
        if cfg.prompted:
            folders["prompted"], results["prompted"] = run_evaluate(cfg, "prompted", [], root)
            comparisons.append(("fine-tuned", "prompted", "paired"))
        rounds = []
        if cfg.get("improve"):  # absent unless improve=<member>
            for name, improved in run_improve(cfg, trained, root):
                rounds.append(name)
                folders[name], results[name] = run_evaluate(cfg, name, [improved.agent()], root)
                comparisons.append((name, "fine-tuned", f"paired_{name.replace('-', '')}"))
        tracking.log_metrics({f"{name.replace('-', '')}_{key}": s[key] for name, s in results.items() for key in COMPARED})
        paired = {(agent, baseline): stats.compare(read_scores(folders[agent]), read_scores(folders[baseline]))
                  for agent, baseline, _ in comparisons}
        stats.adjust_for_multiple(list(paired.values()))
        differ = {(agent, baseline): manifests.differences(manifests.read(folders[agent]), manifests.read(folders[baseline]))
                  for agent, baseline, _ in comparisons}
        for agent, baseline, prefix in comparisons:
            tracking.log_metrics({f"{prefix}_{key}": value for key, value in paired[agent, baseline].items()})
        tables = write_comparison(results, paired, differ, root)
        if rounds:
            plot_rounds(results, rounds, root)
        for name in ("comparison.md", "comparison.csv", "paired.json", "rounds.png"):
            if (root / name).exists():
                tracking.log_artifact(root / name)
    show(*tables)
    for (agent, baseline), result in paired.items():
        print("\n".join(verdict_lines(result, agent, baseline, differ[agent, baseline])))
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


def verdict_lines(result: dict, agent: str, baseline: str, differ: dict[str, list[str]]) -> list[str]:
    """The paired test's verdict, after a line saying the two are not comparable when their
    evaluations' environments differ (fireact.evaluate.manifest)."""
    line = manifests.incomparable(agent, baseline, differ)
    return [*([line] if line else []), stats.verdict(result, agent, baseline)]


def paired_rows(result: dict, agent: str, baseline: str, differ: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """A paired test's rows: (column of the tables/paired.json artifact, row as printed, value)."""
    settings = "; ".join(f"{group}: {', '.join(keys)}" for group, keys in differ.items() if keys)
    return [
        ("questions paired", "questions paired", str(result["n_paired"])),
        ("EM difference", "EM difference", stats.with_interval(result, "em_diff")),
        ("F1 difference", "F1 difference", stats.with_interval(result, "f1_diff")),
        ("only the agent right (EM)", f"only {agent} right (EM)", str(result["only_a_right"])),
        ("only the baseline right (EM)", f"only {baseline} right (EM)", str(result["only_b_right"])),
        ("McNemar exact p (EM)", "McNemar exact p (EM)", f"{result['mcnemar_p']:.3g}"),
        *([("Holm-adjusted p (EM)", "Holm-adjusted p over the comparisons (EM)", f"{result['mcnemar_p_holm']:.3g}")]
          if "mcnemar_p_holm" in result else []),
        *([("questions missing (failures)", "questions missing (counted as failures)",
            f"{agent} {result['missing_a']}, {baseline} {result['missing_b']}")]
          if result["missing_a"] or result["missing_b"] else []),
        *([("settings that differ", "settings that differ (manifest)", settings)] if settings else []),
    ]


def write_comparison(results: dict[str, dict], paired: dict[tuple[str, str], dict],
                     differ: dict[tuple[str, str], dict[str, list[str]]], root: Path) -> list[Table]:
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
        rows = paired_rows(result, agent, baseline, differ[agent, baseline])
        paired_table.append({"agent": agent, "baseline": baseline, **{column: value for column, _, value in rows}})
        pairs = Table(title=f"{agent} - {baseline}, question by question (95% paired-bootstrap intervals)")
        pairs.add_column("")
        pairs.add_column("value", justify="right")
        for _, name, value in rows:
            pairs.add_row(name, value)
        tables.append(pairs)
        lines += ["", f"| {agent} - {baseline} | paired |", "| --- | --- |", *(f"| {n} | {v} |" for _, n, v in rows),
                  "", *verdict_lines(result, agent, baseline, differ[agent, baseline])]
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
