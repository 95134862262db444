"""MLflow tracking for every entry point (conf/tracker/mlflow.yaml); see fireact.tracking.run."""

from fireact.tracking.run import (
    LOCAL_STORE,
    MLflowTracker,
    TrackedRun,
    TrackingUnavailable,
    active_run,
    check,
    display_uri,
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

__all__ = [
    "LOCAL_STORE", "MLflowTracker", "TrackedRun", "TrackingUnavailable", "active_run", "check", "display_uri",
    "local_store_uri", "log_artifact", "log_dataset", "log_evaluation", "log_metrics",
    "log_params", "log_table", "set_tags", "start_run", "trace_logger", "tracker_for",
]
