"""MLflow runs: where they go (conf/tracker/mlflow.yaml), starting and nesting them, logging.

    with tracking.start_run(cfg, stage="evaluate"):   # checks the store first, logs the config
        ...
        tracking.log_metrics({"em": 0.3})              # to the innermost run started here

The tracking URI is `tracker.tracking_uri`, else $MLFLOW_TRACKING_URI, else the local store
sqlite:///<repo>/mlruns/mlflow.db with artifacts in <repo>/mlruns/artifacts (what `make ui`
shows). Tracking is on when the config has a `tracker` (conf/tracker/mlflow.yaml); without one
(the override ~tracker) it is off and the module-level log functions do nothing. Only the first
process of a multi-process job (rank 0) tracks.
"""

from __future__ import annotations

import logging
import numbers
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import mlflow
import pandas as pd
from filelock import FileLock
from hydra.utils import instantiate
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
from omegaconf import OmegaConf

from fireact.errors import Unavailable
from fireact.paths import REPO_ROOT
from fireact.config_tree import resolved_config
from fireact.tracking.config import clip, run_params, run_tags
from fireact.secrets import Redactor
from fireact.tracking.traces import TraceLogger

log = logging.getLogger(__name__)

LOCAL_STORE = REPO_ROOT / "mlruns"


class TrackingUnavailable(Unavailable):
    """The tracking store cannot be reached; raised before any work starts."""


def local_store_uri() -> str:
    return f"sqlite:///{LOCAL_STORE / 'mlflow.db'}"


def display_uri(uri: str) -> str:
    """The URI without user:password@, for messages."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    return uri


@dataclass
class MLflowTracker:
    """Where runs are logged: the `tracker` group, conf/tracker/mlflow.yaml."""

    tracking_uri: str | None = None
    experiment_name: str = "fireact"
    artifact_location: str | None = None
    parent_run_id: str | None = None
    connect_timeout_s: float = 5.0
    traces: float = 1.0  # the share of questions whose trajectories are logged as traces (fireact.tracking.traces)

    def __post_init__(self) -> None:
        if not 0.0 <= self.traces <= 1.0:
            raise ValueError(f"tracker.traces={self.traces}: the share of questions traced must be in [0, 1] "
                             f"(1: every question, 0: none)")

    @property
    def uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri()

    def check(self) -> None:
        """Fail now, naming the URI, if the store cannot be reached (a server's /health, a
        local database's folder). A local database is created (or its schema migrated) here, by
        one process at a time: MLflow's migrations fail when two processes run them at once, as
        the jobs of a parallel sweep on a fresh clone do."""
        uri = self.uri
        scheme = urlsplit(uri).scheme
        fix = (
            "Start the server, point MLFLOW_TRACKING_URI (or tracker.tracking_uri) at a running one, "
            "or run without tracking with the override ~tracker. Nothing was computed."
        )
        if scheme in ("http", "https"):
            try:
                response = httpx.get(uri.rstrip("/") + "/health", timeout=self.connect_timeout_s)
            except httpx.HTTPError as err:
                raise TrackingUnavailable(
                    f"MLflow tracking server {display_uri(uri)} cannot be reached ({type(err).__name__}: {err}). {fix}"
                ) from err
            if response.status_code != 200:
                raise TrackingUnavailable(
                    f"MLflow tracking server {display_uri(uri)} answered /health with HTTP {response.status_code}. {fix}"
                )
        elif scheme in ("sqlite", "file", ""):
            folder = _local_path(uri).parent if scheme == "sqlite" else _local_path(uri)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise TrackingUnavailable(f"MLflow store {uri}: cannot create {folder} ({err}). {fix}") from err
            if scheme == "sqlite":
                with FileLock(f"{_local_path(uri)}.lock"):
                    MlflowClient(uri).search_experiments(max_results=1)

    def ensure_experiment(self, client: MlflowClient) -> str:
        """The experiment's id, created (with its artifact folder) if it does not exist yet."""
        name = self.experiment_name
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=self._artifact_location(name))
            except MlflowException:  # a parallel job of the same multirun created it meanwhile
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise ValueError(
                f"MLflow experiment {name!r} in {display_uri(self.uri)} is deleted: restore it "
                f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) or set "
                f"tracker.experiment_name to another name"
            )
        return experiment.experiment_id

    def _artifact_location(self, name: str) -> str | None:
        if self.artifact_location:
            return self.artifact_location
        if urlsplit(self.uri).scheme == "sqlite":  # next to the database, one folder per experiment
            return str(_local_path(self.uri).parent / "artifacts" / re.sub(r"[^\w.\-]", "_", name))
        return None  # a server or a file store chooses


def _local_path(uri: str) -> Path:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).absolute()
    return Path(urlsplit(uri).path if uri.startswith("file:") else uri).absolute()


@dataclass
class TrackedRun:
    """One MLflow run started by `start_run`; every value passes the run's Redactor."""

    run_id: str
    experiment_id: str
    uri: str
    redactor: Redactor
    scratch: Path
    client: MlflowClient = field(repr=False)
    traces: float = 1.0

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Numeric entries of `metrics` (others are skipped: summaries mix in counts and labels)."""
        now = int(time.time() * 1000)
        entries = [
            Metric(re.sub(r"[^\w.\-/ :]", "_", str(key)), float(value), now, step or 0)
            for key, value in metrics.items()
            if isinstance(value, numbers.Real)
        ]
        if entries:
            self.client.log_batch(self.run_id, metrics=entries)

    def log_params(self, params: Mapping[str, Any]) -> None:
        masked = self.redactor.tree({str(k): clip(str(v), MAX_PARAM_VAL_LENGTH) for k, v in params.items()})
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in masked.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        masked = self.redactor.tree({str(k): clip(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()})
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in masked.items()])

    def log_dataset(self, table: pd.DataFrame, name: str, source: str | Path, context: str) -> None:
        """A data set the run used, as an MLflow dataset input (the runs table's Dataset column):
        its digest is of the table's content, so runs on the same data share it; tagged with
        `context` (evaluation, training) and, when the table has task and method columns, the
        rows per task/method."""
        with warnings.catch_warnings():  # a plain path resolves to a local source, with a warning
            warnings.simplefilter("ignore")
            dataset = mlflow.data.from_pandas(table, source=str(source), name=name)
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        if {"task", "method"} <= set(table.columns):
            counts = table.groupby(["task", "method"]).size()
            tags += [InputTag(f"{task}/{method}", str(count)) for (task, method), count in counts.items()]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])

    def log_table(self, table: pd.DataFrame, artifact_file: str) -> None:
        """A table artifact (`artifact_file`: a .json path) that the run's Artifacts tab shows as a table."""
        masked = table.map(lambda value: self.redactor.text(value) if isinstance(value, str) else value)
        self.client.log_table(self.run_id, masked.rename(columns=str), artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file or a folder; a text file that holds a secret is logged as a masked copy."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"cannot log artifact {path}: it does not exist")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            folder = artifact_path if path.is_file() else _join(artifact_path, path.name, *file.relative_to(path).parent.parts)
            self.client.log_artifact(self.run_id, str(self.redactor.file(file, self.scratch)), folder)

    def log_text(self, text: str, artifact_file: str) -> None:
        target = self.scratch / "text" / artifact_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.redactor.text(text), encoding="utf-8")
        self.log_artifact(target, str(Path(artifact_file).parent) if Path(artifact_file).parent.parts else None)


def _join(*parts: str | None) -> str | None:
    kept = [p for p in parts if p]
    return "/".join(kept) or None


_active: list[TrackedRun] = []


def tracker_for(cfg: Any) -> MLflowTracker | None:
    """The config's `tracker` built, or None when tracking is off: no tracker (~tracker), or a
    secondary process of a multi-process job."""
    tracker_cfg = cfg.get("tracker") if hasattr(cfg, "get") else None
    if tracker_cfg is None or secondary_rank():
        return None
    return instantiate(tracker_cfg)


def secondary_rank() -> bool:
    # Set by torchrun (RANK) and by Lightning's launchers in the processes they start.
    return any(int(os.environ.get(name, "0") or 0) > 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def check(cfg: Any) -> None:
    """Raise TrackingUnavailable now if the config's tracking store cannot be reached."""
    tracker = tracker_for(cfg)
    if tracker is not None:
        tracker.check()


@contextmanager
def start_run(
    cfg: Any,
    stage: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[TrackedRun | None]:
    """An MLflow run for one stage of work, or None when the config turns tracking off.

    Checks the store before anything else, then logs the resolved config as flat params (and
    each config group's choice under the group's name), config.yaml as an artifact, and tags:
    stage, git commit, overrides, Hydra's output and sweep folders. Inside another
    `start_run` it is a child run of that one, in the same experiment. The run ends FINISHED,
    or FAILED if the block raises.
    """
    tracker = tracker_for(cfg)
    if tracker is None:
        log.info("MLflow tracking off: the config has no tracker (tracker=mlflow turns it on)")
        yield None
        return
    parent = _active[-1] if _active else None
    uri = parent.uri if parent else tracker.uri
    if parent is None:
        tracker.check()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    config = resolved_config(cfg)
    redactor = Redactor.for_config(config)
    parent_id = parent.run_id if parent else tracker.parent_run_id
    if parent:
        experiment_id = parent.experiment_id
    elif parent_id:
        try:
            experiment_id = client.get_run(parent_id).info.experiment_id
        except MlflowException as err:
            raise ValueError(
                f"tracker.parent_run_id={parent_id} (or FIREACT_PARENT_RUN_ID) names no run in "
                f"{display_uri(uri)}: unset it, or give the id of a running run there"
            ) from err
    else:
        experiment_id = tracker.ensure_experiment(client)
    all_tags = {**run_tags(stage, redactor), **{k: str(v) for k, v in (tags or {}).items()}}
    name = run_name or " ".join(filter(None, [stage, all_tags.get("overrides")]))
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=redactor.text(clip(name, 250)),
        nested=parent is not None,
        parent_run_id=parent_id,
        tags=redactor.tree(all_tags),
    ) as active:
        scratch = Path(tempfile.mkdtemp(prefix="fireact-tracking-"))
        traces = parent.traces if parent else tracker.traces  # like the store: the outermost run's setting
        run = TrackedRun(active.info.run_id, experiment_id, uri, redactor, scratch, client, traces)
        try:
            run.log_params({**run_params(cfg, redactor, choices=parent is None), **(params or {})})
            run.log_text(OmegaConf.to_yaml(redactor.tree(config)), "config.yaml")
            log.info("MLflow run %s (%s) in experiment %s at %s", run.run_id, stage, experiment_id, display_uri(uri))
            _active.append(run)
            yield run
        finally:
            if _active and _active[-1] is run:
                _active.pop()
            shutil.rmtree(scratch, ignore_errors=True)


def active_run() -> TrackedRun | None:
    """The innermost run started by `start_run` and not yet ended."""
    return _active[-1] if _active else None


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    if (run := active_run()) is not None:
        run.log_metrics(metrics, step)


def log_params(params: Mapping[str, Any]) -> None:
    if (run := active_run()) is not None:
        run.log_params(params)


def set_tags(tags: Mapping[str, Any]) -> None:
    if (run := active_run()) is not None:
        run.set_tags(tags)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    if (run := active_run()) is not None:
        run.log_artifact(path, artifact_path)


def log_dataset(table: pd.DataFrame, name: str, source: str | Path, context: str) -> None:
    if (run := active_run()) is not None:
        run.log_dataset(table, name, source, context)


def log_evaluation(summary: Mapping[str, float], files: Mapping[str, Path]) -> None:
    """An evaluation's summary as metrics and its files (fireact.evaluate.files) as artifacts, the
    turns plot under plots/."""
    if (run := active_run()) is not None:
        run.log_metrics(summary)
        for name, path in files.items():
            run.log_artifact(path, "plots" if name == "turns_plot" else None)


def log_table(table: pd.DataFrame, artifact_file: str) -> None:
    if (run := active_run()) is not None:
        run.log_table(table, artifact_file)


def trace_logger(tags: Mapping[str, Any] | None = None) -> TraceLogger | None:
    """A TraceLogger (fireact.tracking.traces) for the innermost run, or None when tracking is off
    or the run traces nothing (tracker.traces=0)."""
    run = active_run()
    if run is None or run.traces == 0:
        return None
    return TraceLogger(run.run_id, run.experiment_id, run.redactor, run.traces, dict(tags or {}))

