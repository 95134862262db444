"""Every experiment config (conf/experiment/*.yaml) composes with the entry point its header
names, for every value its multirun grid sweeps; the pipeline's stage configs compose from
it; its report config composes; and the Makefile has a target for it. Compose only: no runs.
"""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Transformer
from omegaconf import DictConfig, OmegaConf, open_dict

from tests.conftest import CONF_DIR

EXPERIMENT_DIR = CONF_DIR / "experiment"
MAKEFILE = CONF_DIR.parent / "Makefile"
EXPERIMENTS = sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml"))
# Not the paper's (no _small variant, no report): make run, make small, make sft_vs_rl.
SINGLE_RUNS = {"quickstart", "small", "sft_vs_rl"}
PAPER = [e for e in EXPERIMENTS if e not in SINGLE_RUNS and not e.endswith("_small")]
REPORTS = sorted(p.stem for p in (EXPERIMENT_DIR / "report").glob("*.yaml"))


def entry_point(experiment: str) -> str:
    """The entry point named by the command in the experiment's header comment."""
    text = (EXPERIMENT_DIR / f"{experiment}.yaml").read_text()
    found = re.search(rf"python -m fireact\.([\w.]+) (?:-m )?experiment={experiment}\b", text)
    assert found, f"conf/experiment/{experiment}.yaml: its comment should give the command `python -m fireact.<entry> -m experiment={experiment}`"
    return found.group(1)


def compose_job(config_name: str, overrides: list[str], out_dir: Path) -> tuple[DictConfig, DictConfig]:
    """(job config, hydra config) as a job of a multirun would see them; GlobalHydra stays
    initialised so that stage configs can be composed from the job config."""
    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
    cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
    HydraConfig.instance().set_config(cfg)
    hydra_cfg = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, hydra_cfg


def swept_values(key: str, value: str) -> list[str]:
    """The values one hydra.sweeper.params entry sweeps (an interval: its two ends), as override strings."""
    override = OverridesParser.create().parse_override(f"{key}={value}")
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        return [str(sweep.start), str(sweep.end)]
    values = [str(v) for v in override.sweep_iterator(transformer=Transformer.encode)]
    if override.is_range_sweep():  # Optuna's range includes its stop
        values.append(str(sweep.stop))
    return values


def grid_overrides(experiment: str, tmp_path: Path) -> list[list[str]]:
    """One override list per swept value: that value, the other keys at their first values."""
    _, hydra_cfg = compose_job(entry_point(experiment), [f"experiment={experiment}"], tmp_path)
    params = hydra_cfg.sweeper.params or {}
    grid = {str(k): swept_values(str(k), str(v)) for k, v in params.items()}
    cases = []
    for key, values in grid.items():
        for value in values:
            cases.append([f"{key}={value}", *(f"{k}={vs[0]}" for k, vs in grid.items() if k != key)])
    return cases or [[]]


def check_job(experiment: str, overrides: list[str], tmp_path: Path) -> None:
    entry = entry_point(experiment)
    cfg, hydra_cfg = compose_job(entry, [f"experiment={experiment}", *overrides], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["experiment_name"] == experiment
    if "task_questions" in resolved:  # each task's own question count reaches the task (Bamboogle has 125)
        assert resolved["task"]["n"] == resolved["task_questions"][hydra_cfg.runtime.choices.task]
    if entry == "pipeline":  # each stage's config, with the changes the pipeline makes to it
        from fireact.pipeline import stage_config

        start = {"model": {"path": "/sft"}}
        stages = [("build_data", []), ("train", [{"data": {"path": "/data"}}]), ("evaluate", []), ("evaluate", [start])]
        if cfg.get("improve"):
            if cfg.improve.sample is not None:
                stages.append(("generate", [start, cfg.improve.sample]))
            stages.append(("train", [start, cfg.improve.train, {"data": {"path": "/samples"}}]))
        for stage, changes in stages:
            OmegaConf.to_container(stage_config(cfg, stage, tmp_path / stage, *changes), resolve=True)


def test_there_are_the_paper_experiments():
    assert {"table1_prompting", "table2_finetune", "table3_noise", "table3_bamboogle", "lora_vs_full",
            "fig3_scaling", "fig4_method_mix", "table4_multimethod", "table5_prompting",
            "table5_multitask", "mix_grid", "mix_optuna"} <= set(PAPER)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_header_names_an_entry_point(experiment):
    text = (EXPERIMENT_DIR / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert entry_point(experiment) in {"pipeline", "evaluate"}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_swept_value_composes_with_its_entry_point(experiment, tmp_path):
    """Each value of each hydra.sweeper.params key, as a job of `-m experiment=NAME` gets it;
    for the pipeline also each stage's config."""
    try:
        for overrides in grid_overrides(experiment, tmp_path):
            check_job(experiment, overrides, tmp_path)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("experiment", PAPER)
def test_every_paper_experiment_has_a_small_variant_and_a_report(experiment):
    assert f"{experiment}_small" in EXPERIMENTS
    small = (EXPERIMENT_DIR / f"{experiment}_small.yaml").read_text()
    assert re.search(rf"^\s+- {experiment}$", small, re.M), f"{experiment}_small should include {experiment} in its defaults"
    scale = re.findall(r"^\s+- shared/(cpu_recipe|cpu_prompting)$", small, re.M)
    assert len(scale) == 1, f"{experiment}_small should say its CPU scale by including one of shared/cpu_recipe|cpu_prompting"
    report = {"table5_prompting": "table5_multitask"}.get(experiment, experiment)
    assert report in REPORTS


@pytest.mark.parametrize("report", REPORTS)
def test_every_report_composes_and_its_tables_are_valid(report, tmp_path):
    from fireact.report import TableSpec

    try:
        cfg, _ = compose_job("report", [f"+experiment/report={report}"], tmp_path)
        resolved = OmegaConf.to_container(cfg, resolve=True)
    finally:
        GlobalHydra.instance().clear()
    assert set(resolved["experiments"]) <= set(EXPERIMENTS) and resolved["tables"]
    assert set(resolved["tables"]) == set(resolved["experiment_tables"]), "report.yaml's own tables should be replaced"
    for spec in resolved["tables"].values():
        TableSpec(**spec)


def test_every_paper_experiment_has_a_make_target():
    makefile = MAKEFILE.read_text()
    run = set(re.findall(r"-m experiment=(\w+)\$\(SIZE\)", makefile))
    reported = set(re.findall(r"\+experiment/report=(\w+)", makefile))
    assert set(PAPER) == run, f"experiments without a make target: {set(PAPER) - run}; targets without an experiment: {run - set(PAPER)}"
    assert set(REPORTS) == reported
    targets = re.findall(r"^([\w-]+):.*## ", makefile, re.M)
    assert {"table1", "table2", "noise", "bamboogle", "lora_vs_full", "scaling", "fig4", "multimethod",
            "multitask", "mixgrid", "mixoptuna", "run", "small", "sft_vs_rl"} <= set(targets)


@pytest.mark.parametrize("launcher", ["joblib", "submitit_slurm"])
def test_the_make_launchers_compose_with_an_experiment(launcher, tmp_path):
    """make ... LAUNCHER=joblib|submitit_slurm adds hydra/launcher=<it> to the multirun."""
    try:
        _, hydra_cfg = compose_job("pipeline", ["experiment=mix_grid_small", f"hydra/launcher={launcher}"], tmp_path)
    finally:
        GlobalHydra.instance().clear()
    assert launcher.split("_")[0] in hydra_cfg.launcher._target_.lower()
    assert hydra_cfg.sweep.dir.startswith("multirun/")
