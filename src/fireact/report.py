"""Paper-style tables and plots from MLflow runs: `python -m fireact.report` (conf/report.yaml).

    python -m fireact.report experiments=[table2]
    python -m fireact.report experiments=[fig3] 'tables={scaling: {rows: data.n, cols: model, metric: em, plot: line}}'

Runs of the named experiments (a multirun's jobs, say) are pivoted by their params: each table
puts one param on the rows, another on the columns and a metric in the cells. A child run
(a pipeline stage) takes the params it lacks from its parent run. Tables (markdown, CSV) and
plots (PNG) are written under the output folder and logged as artifacts of a `report` run.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from fireact import tracking
from fireact.entry import stage_main
from fireact.evaluate import manifest as manifests, stats
from fireact.evaluate.files import PER_QUESTION, read_scores
from fireact.evaluate.plots import bar_chart, line_chart, turns_boxplot
from fireact.tracking import compare_view

log = logging.getLogger(__name__)
# MLflow draws a progress bar per downloaded artifact: a dozen per_question.csv would bury the report.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

AGGREGATIONS = ("last", "mean", "max", "min", "count")
PLOTS = ("bar", "line")


class TableSkipped(ValueError):
    """The runs lack what a table needs (its params or metric)."""


@dataclass
class TableSpec:
    """rows, cols: params (or tags.X) to pivot on; metric: the cell value; agg: how runs that
    share a cell combine (last = the most recent run); plot: bar, line or null. reference:
    {rows: VALUE} or {cols: VALUE}: each other row (column) is paired with that one, question by
    question, within each column (row); {rows: VALUE, cols: VALUE}: every other cell is paired with
    that cell (a grid's origin): `paired_tests`. average: a last row, the mean of each
    column over the rows that have a value in every column (a macro average over datasets, as
    Search-R1's papers report it; shown without an interval). where: {param: value}: the table
    takes only the runs with these values (Table 5's prompted rows: {agent: prompted}, where
    the fine-tuned runs have the same `method`)."""

    rows: str
    cols: str | None = None
    metric: str = "em"
    agg: str = "last"
    plot: str | None = "bar"
    scale: float = 1.0  # 100: EM as a percentage, as the paper prints it
    title: str = ""
    reference: dict | None = None
    average: bool = False
    where: dict | None = None

    def __post_init__(self):
        if self.agg not in AGGREGATIONS:
            raise ValueError(f"table agg {self.agg!r} is not one of {AGGREGATIONS}")
        if self.reference is not None and (not self.reference or not all(
                axis in ("rows", "cols") and getattr(self, axis) for axis in self.reference)):
            raise ValueError(f"table reference {self.reference!r}: give {{rows: VALUE}}, {{cols: VALUE}} or both (a cell), "
                             f"axes the table has, and the value every other row, column or cell is paired with")
        if self.plot not in (*PLOTS, None):
            raise ValueError(f"table plot {self.plot!r} is not one of {PLOTS} or null")

    def select(self, runs: pd.DataFrame) -> pd.DataFrame:
        """The runs the table is built from: those with the `where` values."""
        keep = pd.Series(True, index=runs.index)
        for key, value in (self.where or {}).items():
            keep &= runs[column(key)].astype(str) == str(value) if column(key) in runs else False
        return runs[keep]

    def keys(self) -> list[str]:
        """The run-table columns a cell is keyed by: the rows param, then the cols param if any."""
        return [column(self.rows)] + ([column(self.cols)] if self.cols else [])

    def reference_keys(self) -> dict[str, str]:
        """{run-table column: value} of the reference arm."""
        return {column(getattr(self, axis)): str(value) for axis, value in (self.reference or {}).items()}

    def arm_name(self, run: pd.Series | dict) -> str:
        """An arm as the paired table names it: its value on the reference axis, or key=value for a cell."""
        keys = self.reference_keys()
        if len(keys) == 1:
            return str(run[next(iter(keys))])
        return ", ".join(f"{key.removeprefix('params.')}={run[key]}" for key in keys)


def column(key: str) -> str:
    """A run-table column: `model` -> params.model; tags.X and metrics.X stay as they are."""
    return key if key.startswith(("params.", "tags.", "metrics.")) else f"params.{key}"


def newest_pipeline_experiment() -> str:
    """The experiment of the newest pipeline run in the store (experiments=null)."""
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    newest = client.search_runs(experiments, "tags.stage = 'pipeline'", order_by=["attributes.start_time DESC"],
                                max_results=1) if experiments else []
    if not newest:
        raise ValueError(f"no pipeline run in {tracking.display_uri(mlflow.get_tracking_uri())} to report on; "
                         f"run one (make run), or name the experiments: experiments=[NAME,...]")
    name = client.get_experiment(newest[0].info.experiment_id).name
    log.info("reporting experiment %r, the newest pipeline run's (experiments=[NAME,...] picks others)", name)
    return name


def load_runs(experiments: list[str], filter_string: str = "") -> pd.DataFrame:
    """Every run of the named experiments (newest first), children completed with their parents' params."""
    client = mlflow.MlflowClient()
    ids = []
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            known = sorted(e.name for e in client.search_experiments())
            raise ValueError(
                f"no MLflow experiment {name!r} in {tracking.display_uri(mlflow.get_tracking_uri())}; "
                f"it has {known}. Set experiments=[NAME,...]"
            )
        ids.append(experiment.experiment_id)
    runs = mlflow.search_runs(experiment_ids=ids, filter_string=filter_string, order_by=["attributes.start_time DESC"])
    return inherit_parent_params(runs)


def inherit_parent_params(runs: pd.DataFrame) -> pd.DataFrame:
    """Fill each run's missing params from its parent's, grandparent's, ... (those in `runs`)."""
    parent_col = "tags.mlflow.parentRunId"
    if runs.empty or parent_col not in runs:
        return runs
    runs = runs.copy()
    params = [c for c in runs if c.startswith("params.")]
    by_id = runs.set_index("run_id")
    for index, parent in runs[parent_col].items():
        seen = set()
        while isinstance(parent, str) and parent in by_id.index and parent not in seen:
            seen.add(parent)
            missing = [c for c in params if pd.isna(runs.at[index, c])]
            runs.loc[index, missing] = by_id.loc[parent, missing].to_numpy()
            parent = by_id.at[parent, parent_col]
    return runs


def pivot(runs: pd.DataFrame, spec: TableSpec, missing: str = "none") -> pd.DataFrame:
    """The metric by rows × cols. A run without the rows param is left out; one without the
    cols param shows under `missing` (a prompted run has no `finetune`, say)."""
    keys = spec.keys()
    metric = f"metrics.{spec.metric}"
    absent = [c for c in [metric, *keys] if c not in runs or runs[c].isna().all()]
    if absent:
        # Group choices and top-level keys; the dotted config keys are in the UI.
        present = sorted(
            c[len("params."):] for c in runs
            if c.startswith("params.") and "." not in c[len("params."):] and runs[c].notna().any()
        )
        raise TableSkipped(f"no run has {', '.join(absent)} (the runs have params {', '.join(present)}, ...)")
    data = runs[runs[metric].notna() & runs[keys[0]].notna()].copy()
    data[keys] = data[keys].fillna(missing)
    grouped = data.sort_values("start_time").groupby(keys)[metric]
    cells = grouped.last() if spec.agg == "last" else grouped.agg(spec.agg)
    table = cells.unstack(keys[1]) if spec.cols else cells.to_frame(spec.metric)
    table.index.name, table.columns.name = spec.rows, spec.cols
    return _sorted(table)


def incomparable_rows(runs: pd.DataFrame, spec: TableSpec, missing: str = "none") -> list[str]:
    """A line per table row whose cells were measured in different environments (the runs' manifest
    params, fireact.evaluate.manifest.ENVIRONMENT): the cells a row sets side by side must be comparable.
    Each cell is its newest run, as `last` pivots; runs without a manifest are unknown, never flagged.
    What the columns vary on purpose (cols: task, tool or noise) is not a difference."""
    keys = spec.keys()
    varied = varied_on_purpose([spec.cols])
    environment = [f"params.manifest.{key}" for key in manifests.ENVIRONMENT
                   if key not in varied and f"params.manifest.{key}" in runs]
    if not environment or any(key not in runs for key in keys):
        return []
    lines = []
    for row, group in newest_cells(runs, keys, missing).groupby(keys[0]):
        differing = [key.removeprefix("params.manifest.") for key in environment if group[key].dropna().nunique() > 1]
        if differing:
            lines.append(f"NOT COMPARABLE: the cells of row {row!r} were measured in different settings "
                         f"(differing: {', '.join(differing)}).")
    return lines


def varied_on_purpose(params: list[str | None]) -> set[str]:
    """The manifest keys a table sets side by side on purpose: those of the config groups (task,
    tool, noise: manifest.GROUP_KEYS) among `params`, the axes it pivots or pairs on."""
    return {key for param in params if param for key in manifests.GROUP_KEYS.get(param, ())}


def newest_cells(runs: pd.DataFrame, keys: list[str], missing: str) -> pd.DataFrame:
    """Each table cell's newest run (what `last` pivots), a row each."""
    data = runs[runs[keys[0]].notna()].copy()
    data[keys] = data[keys].fillna(missing)
    return data.sort_values("start_time").groupby(keys).tail(1)


def cell_runs(runs: pd.DataFrame, spec: TableSpec, missing: str) -> pd.DataFrame:
    """The runs behind a table's cells: each cell's newest run with the metric under `last`, all of
    them under the other aggregations."""
    keys = spec.keys()
    data = runs[runs[f"metrics.{spec.metric}"].notna()]
    return newest_cells(data, keys, missing) if spec.agg == "last" else data[data[keys[0]].notna()]


def paired_tests(runs: pd.DataFrame, spec: TableSpec, missing: str, scratch: Path) -> pd.DataFrame | None:
    """Each arm of the table against its reference (spec.reference), question by question, from the
    runs' per_question.csv: the EM and F1 differences with 95% paired-bootstrap intervals, the
    questions only one got right, McNemar's exact p and, over the table's comparisons, Holm's;
    `settings` names what differs in their manifests (NOT COMPARABLE: their environments, less what
    the reference axis varies on purpose, as a noise table's rows do the noise). None without a
    reference; pairs whose runs logged no per-question table are left out, logged."""
    if not spec.reference:
        return None
    reference_keys = spec.reference_keys()
    keys = spec.keys()
    if any(key not in runs for key in keys):
        return None
    [group_key] = [key for key in keys if key not in reference_keys] or [None]
    other = group_key.removeprefix("params.") if group_key else None
    reference_name = spec.arm_name(reference_keys)
    varied = varied_on_purpose([getattr(spec, axis) for axis in spec.reference])
    cells = newest_cells(runs, keys, missing)
    rows, tests, read = [], [], {}  # read: each run's per-question scores, downloaded once
    def scores_of(run_id: str):
        if run_id not in read:
            read[run_id] = per_question_scores(run_id, scratch)
        return read[run_id]

    for group, cell in (cells.groupby(group_key) if group_key else [("", cells)]):
        is_reference = pd.concat([cell[key].astype(str) == value for key, value in reference_keys.items()], axis=1).all(axis=1)
        if not is_reference.any():
            log.warning("table reference %s: no run in %s", reference_name, group)
            continue
        baseline = cell[is_reference].iloc[0]
        for _, arm in cell[~is_reference].iterrows():
            scores = [scores_of(run["run_id"]) for run in (arm, baseline)]
            if None in scores:
                log.warning("no per_question.csv in run %s or %s: %s not paired", arm["run_id"], baseline["run_id"],
                            spec.arm_name(arm))
                continue
            test = stats.compare(*scores)
            differ = manifests.differences(*(
                {key.removeprefix("params.manifest."): run[key] for key in run.index
                 if key.startswith("params.manifest.") and pd.notna(run[key])} for run in (arm, baseline)))
            environment = [key for key in differ["environment"] if key not in varied]
            rows.append({**({other: group} if other else {}), "arm": spec.arm_name(arm), "reference": reference_name,
                         "settings": "NOT COMPARABLE: " + ", ".join(environment) if environment
                         else ", ".join(differ["protocol"])})
            tests.append(test)
    stats.adjust_for_multiple(tests)
    for row, test in zip(rows, tests):
        row.update({"questions": int(test["n_paired"]), "EM difference": stats.with_interval(test, "em_diff"),
                    "F1 difference": stats.with_interval(test, "f1_diff"), "only arm right": int(test["only_a_right"]),
                    "only reference right": int(test["only_b_right"]), "McNemar p": f"{test['mcnemar_p']:.3g}",
                    **({"Holm p": f"{test['mcnemar_p_holm']:.3g}"} if "mcnemar_p_holm" in test else {})})
    return pd.DataFrame(rows).set_index("arm") if rows else None


def per_question_scores(run_id: str, scratch: Path) -> dict[str, dict[str, float]] | None:
    """{qid: {em, f1}} from a run's per_question.csv artifact, or None if it logged none."""
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PER_QUESTION,
                                                   dst_path=str(scratch / run_id))
    except (MlflowException, OSError):
        return None
    return read_scores(Path(path).parent)


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in numeric order when every row key is a number (data sizes), else as strings."""
    name = table.index.name
    numbers = pd.to_numeric(table.index, errors="coerce")
    if not numbers.isna().any():
        table = table.set_axis(numbers, axis=0)
    table = table.sort_index()
    table.index.name = name
    return table


def turn_distributions(runs: pd.DataFrame, label_keys: list[str] | None, max_runs: int) -> dict[str, list[int]]:
    """Turns per question of the newest runs that logged per_question.csv, labelled by params
    (`label_keys`; None: the params that differ among those runs)."""
    found: dict[str, list[int]] = {}
    if "metrics.turns_mean" in runs:  # runs that logged an evaluation (log_evaluation)
        runs = runs[runs["metrics.turns_mean"].notna()]
    if label_keys is None:
        label_keys = differing_params(runs.head(max_runs))
    with tempfile.TemporaryDirectory() as scratch:
        for _, run in runs.head(max_runs * 4).iterrows():
            if len(found) == max_runs:
                break
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run["run_id"], artifact_path="per_question.csv", dst_path=f"{scratch}/{run['run_id']}"
                )
            except (MlflowException, OSError):
                continue  # a run without the table (a parent run, a training run)
            values = {k.removeprefix("tags."): run.get(column(k)) for k in label_keys}
            label = " ".join(f"{k}={v}" for k, v in values.items() if isinstance(v, str)) or str(
                run.get("tags.mlflow.runName", ""))
            label = label if label not in found else f"{label} ({run['run_id'][:6]})"
            found[label] = pd.read_csv(path)["turns"].astype(int).tolist()
    return found


# Params that differ between any two runs without saying what was compared.
NOT_LABELS = ("output_dir", "paths.", "hydra", "seed", "experiment_name", "tracker.", "threads", "trainer.default_root_dir")


def differing_params(runs: pd.DataFrame) -> list[str]:
    """What tells the runs apart, as labels: the agent's name (tag `agent`, the pipeline's) and the
    config groups' choices and top-level keys whose values differ among the runs; when none do,
    the other config keys that differ. Folders and paths are left out (they differ by a hash)."""
    def differs(key: str) -> bool:
        values = runs[column(key)].dropna().astype(str)
        return values.nunique() > 1 and not values.str.contains("/").any()

    keys = [c.removeprefix("params.") for c in runs if c.startswith("params.")]
    keys = [k for k in keys if not k.startswith(NOT_LABELS) and "_target_" not in k and differs(k)]
    tags = ["tags.agent"] if "tags.agent" in runs and differs("tags.agent") else []
    top = [k for k in keys if "." not in k and "/" not in k]
    return [*tags, *(top or ([] if tags else keys))]


def select_runs(runs: pd.DataFrame, stage: str | None) -> pd.DataFrame:
    """Runs of `stage` (tag), or of every stage but earlier reports when stage is None."""
    if "tags.stage" not in runs:
        return runs
    runs = runs[runs["tags.stage"] != "report"]
    return runs[runs["tags.stage"] == stage] if stage else runs


def interval_tables(runs: pd.DataFrame, spec: TableSpec, table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The 95% interval's (low, high) tables, shaped like `table`, when its runs logged them
    (METRIC_ci_low and METRIC_ci_high: evaluate's EM and F1) and each cell is one run's value
    (agg=last; a mean of several runs has no such interval); None otherwise."""
    if spec.agg != "last":
        return None
    try:
        bounds = [pivot(runs, replace(spec, metric=f"{spec.metric}_{end}")) * spec.scale for end in ("ci_low", "ci_high")]
    except TableSkipped:
        return None
    if spec.cols is None:  # a one-column table is named by its metric
        bounds = [bound.set_axis(table.columns, axis=1) for bound in bounds]
    low, high = (bound.reindex_like(table) for bound in bounds)
    return low, high


def questions_per_cell(runs: pd.DataFrame, spec: TableSpec) -> str:
    """The distinct question counts (the runs' metric `n`) the table's cells stand on."""
    try:
        sizes = sorted({int(n) for n in pivot(runs, replace(spec, metric="n")).stack().dropna()})
    except TableSkipped:
        return "?"
    return ", ".join(map(str, sizes))


def with_intervals(table: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame, digits: int) -> pd.DataFrame:
    """The cells as `value [low, high]`."""
    shown = table.astype(object)
    for row in table.index:
        for col in table.columns:
            value = table.at[row, col]
            low_end, high_end = low.at[row, col], high.at[row, col]
            shown.at[row, col] = ("-" if pd.isna(value) else f"{value:.{digits}f}" if pd.isna(low_end)
                                  else f"{value:.{digits}f} [{low_end:.{digits}f}, {high_end:.{digits}f}]")
    return shown


def write_table(table: pd.DataFrame, name: str, title: str, out_dir: Path, digits: int, shown: pd.DataFrame | None = None) -> str:
    """tables/<name>.csv and .md (the md shows `shown`, e.g. cells with intervals, if given), and the shown
    table as the report run's table artifact tables/<name>.json; returns the markdown."""
    folder = out_dir / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{name}.csv")
    shown = shown if shown is not None else table.round(digits)
    tracking.log_table(shown.reset_index(), f"tables/{name}.json")
    body = shown.to_markdown(missingval="-")
    markdown = f"## {title}\n\n{body}\n"
    (folder / f"{name}.md").write_text(markdown)
    return markdown


def report(cfg: DictConfig) -> dict[str, pd.DataFrame]:
    """Build every table of cfg.tables (and the turn distributions) from the runs; returns the tables."""
    tracker = tracking.tracker_for(cfg)
    if tracker is None:
        raise ValueError("the report reads MLflow runs: keep tracker=mlflow (and set MLFLOW_TRACKING_URI for a server)")
    tracker.check()
    if cfg.screenshot:
        compare_view.chromium()  # missing: say so before any table is built
    mlflow.set_tracking_uri(tracker.uri)
    if cfg.experiments is None:
        cfg.experiments = [newest_pipeline_experiment()]
    cfg.experiment_name = cfg.experiment_name or cfg.experiments[0]
    runs = select_runs(load_runs(list(cfg.experiments), cfg.filter), cfg.stage)
    if runs.empty:
        raise ValueError(
            f"no runs to report in experiments {list(cfg.experiments)} with stage={cfg.stage!r} "
            f"and filter={cfg.filter!r}; run some first, or change stage/filter"
        )
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tracking.start_run(cfg, stage="report"):
        log.info("%d runs from %s", len(runs), list(cfg.experiments))
        tables, sections, shown = build_tables(runs, cfg, out_dir)
        if not tables:
            raise ValueError(f"no table could be built from the {len(runs)} runs; see the warnings above for what they lack")
        if cfg.screenshot:
            compare_view.screenshot(tracker.uri, shown, out_dir / "plots" / "compare_runs.png")
            sections.append(f"![MLflow's comparison of the {len(shown)} runs in the tables](plots/compare_runs.png)\n")
        (out_dir / "report.md").write_text("\n".join([f"# Report: {', '.join(cfg.experiments)} ({len(runs)} runs)\n", *sections]))
        for part in ("tables", "plots", "report.md"):
            if (out_dir / part).exists():
                tracking.log_artifact(out_dir / part)
    print("\n".join(sections))
    print(f"report: {out_dir / 'report.md'}")
    return tables


def build_tables(runs: pd.DataFrame, cfg: DictConfig, out_dir: Path) -> tuple[dict[str, pd.DataFrame], list[str], pd.DataFrame]:
    """Each table of cfg.tables and the turn distributions, written with their plots; the markdown;
    and the runs the tables show (a run that failed or was replaced by a newer one is not among them)."""
    tables, sections, cell_run_ids = {}, [], set()
    for name, options in cfg.tables.items():
        spec = TableSpec(**OmegaConf.to_container(options, resolve=True))
        table_runs = spec.select(runs)
        title = spec.title or f"{spec.metric} by {spec.rows}" + (f" × {spec.cols}" if spec.cols else "")
        try:
            table = pivot(table_runs, spec, cfg.missing) * spec.scale
        except TableSkipped as why:
            log.warning("table %s skipped: %s", name, why)
            continue
        if spec.average:
            table.loc["average"] = table.dropna().mean()
        tables[name] = table
        cell_run_ids.update(cell_runs(table_runs, spec, cfg.missing)["run_id"])
        bounds = interval_tables(table_runs, spec, table)
        shown = None
        if bounds is not None:
            shown = with_intervals(table, *bounds, cfg.digits)
            title += f" (95% bootstrap intervals; questions per cell: {questions_per_cell(table_runs, spec)})"
        sections.append(write_table(table, name, title, out_dir, cfg.digits, shown))
        sections += [f"{line}\n" for line in incomparable_rows(table_runs, spec, cfg.missing)]
        with tempfile.TemporaryDirectory() as scratch:
            paired = paired_tests(table_runs, spec, cfg.missing, Path(scratch))
        if paired is not None:
            arms = getattr(spec, next(iter(spec.reference))) if len(spec.reference) == 1 else "cell"
            holm = f"; Holm over the {len(paired)} comparisons" if len(paired) > 1 else ""
            sections.append(write_table(paired, f"{name}_paired", f"{title}: each {arms} against "
                                        f"{spec.arm_name(spec.reference_keys())}, question by question (95% paired-bootstrap intervals{holm})",
                                        out_dir, cfg.digits, paired))
        if spec.plot:
            plot = bar_chart if spec.plot == "bar" else line_chart
            plot(table, out_dir / "plots" / f"{name}.png", title, spec.metric, bounds)
            sections.append(f"![{title}](plots/{name}.png)\n")
    label = list(cfg.turns.label) if cfg.turns and cfg.turns.label is not None else None
    turns = turn_distributions(runs, label, cfg.turns.max_runs) if cfg.turns else {}
    if turns:
        turns_boxplot(turns, out_dir / "plots" / "turns.png", "turns per trajectory")
        stats = pd.DataFrame({label: pd.Series(values).describe() for label, values in turns.items()}).T
        tables["turns"] = stats
        sections += [write_table(stats, "turns", "turns per trajectory", out_dir, cfg.digits), "![turns](plots/turns.png)\n"]
    return tables, sections, runs[runs["run_id"].isin(cell_run_ids)]


@stage_main("report")
def main(cfg: DictConfig) -> None:
    report(cfg)


if __name__ == "__main__":
    main()
