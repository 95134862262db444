"""MLflow tracking for every entry point (conf/tracker/mlflow.yaml); see fireact.tracking.run."""

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
    log_evaluation,
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
    "log_params", "log_table", "set_tags", "start_run", "trace_logger", "tracker_for",
]
