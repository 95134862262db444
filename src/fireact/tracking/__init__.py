"""MLflow tracking for every entry point (conf/logger/mlflow.yaml); see fireact.tracking.run."""

from fireact.tracking.evaluation import log_evaluation, per_question_table, write_evaluation
from fireact.tracking.run import (
    LOCAL_STORE,
    MLflowTracker,
    TrackedRun,
    TrackingUnavailable,
    active_run,
    check,
    local_store_uri,
    log_artifact,
    log_dataset,
    log_metrics,
    log_params,
    log_table,
    set_tags,
    start_run,
    trace_logger,
    tracker_for,
)
from fireact.tracking.secrets import Redactor, is_secret_name

__all__ = [
    "LOCAL_STORE", "MLflowTracker", "Redactor", "TrackedRun", "TrackingUnavailable", "active_run", "check",
    "is_secret_name", "local_store_uri", "log_artifact", "log_dataset", "log_evaluation", "log_metrics",
    "log_params", "log_table", "per_question_table", "set_tags", "start_run", "trace_logger", "tracker_for", "write_evaluation",
]
