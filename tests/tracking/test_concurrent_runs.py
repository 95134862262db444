"""Two processes logging to one MLflow experiment at the same time (a real `mlflow server` on
loopback) lose nothing and mix nothing up: every run, param, tag, metric step and config
artifact of both is there, and the experiment they both created on first use exists once."""

import subprocess
import sys

from mlflow.tracking import MlflowClient

from fireact.paths import REPO_ROOT

RUNS, STEPS = 4, 15
WRITER = """
import sys, time
from pathlib import Path
from fireact import tracking

uri, experiment, tag, ready, runs, steps = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
tracker = {"_target_": "fireact.tracking.MLflowTracker", "tracking_uri": uri, "experiment_name": experiment}
def together(stage):  # wait until both processes got here (a peer that died: stop waiting)
    (ready / f"{stage}-{tag}").touch()
    start = time.monotonic()
    while len(list(ready.glob(f"{stage}-*"))) < 2:
        if time.monotonic() - start > 120:
            sys.exit(f"{tag}: the other writer never reached {stage!r}")
        time.sleep(0.01)

together("ready")  # start together: both find the experiment missing and create it
for i in range(runs):
    cfg = {"tracker": tracker, "writer": tag, "index": i, "model": {"name": f"model-{tag}-{i}"}}
    with tracking.start_run(cfg, stage="concurrency", run_name=f"{tag}-{i}", tags={"writer": tag}):
        if i == 0:
            together("open")  # both first runs are open before either logs a metric
        for step in range(steps):
            tracking.log_metrics({"loss": (i + 1) / (step + 1), "accuracy": step / steps}, step=step)
        tracking.log_params({"label": f"{tag}-{i}"})
        tracking.log_metrics({"final": float(i)})
print("done", tag)
"""


def test_two_processes_logging_to_one_experiment_at_once_lose_nothing(mlflow_server, tmp_path):
    experiment = "two-writers"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, mlflow_server, experiment, tag, str(tmp_path), str(RUNS), str(STEPS)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tag in ("p1", "p2")
    ]
    outputs = [writer.communicate(timeout=600) for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], [err[-3000:] for _, err in outputs]

    client = MlflowClient(mlflow_server)
    found = [e for e in client.search_experiments() if e.name == experiment]
    assert len(found) == 1  # created once, though both processes found it missing
    runs = client.search_runs([found[0].experiment_id], max_results=1000)
    assert sorted(run.info.run_name for run in runs) == sorted(f"{tag}-{i}" for tag in ("p1", "p2") for i in range(RUNS))
    spans = {tag: (min(r.info.start_time for r in runs if r.data.tags["writer"] == tag),
                   max(r.info.end_time for r in runs if r.data.tags["writer"] == tag)) for tag in ("p1", "p2")}
    assert spans["p1"][0] < spans["p2"][1] and spans["p2"][0] < spans["p1"][1]  # they wrote at the same time
    for run in runs:
        tag, i = run.info.run_name.split("-")
        i = int(i)
        assert run.info.status == "FINISHED"
        params, tags = run.data.params, run.data.tags
        assert (params["writer"], params["index"], params["model.name"], params["label"]) == (tag, str(i), f"model-{tag}-{i}", f"{tag}-{i}")
        assert tags["writer"] == tag and tags["stage"] == "concurrency"
        assert run.data.metrics["final"] == i
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
        assert history == [(step, (i + 1) / (step + 1)) for step in range(STEPS)]
        assert len(client.get_metric_history(run.info.run_id, "accuracy")) == STEPS
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]


def test_two_processes_starting_on_a_fresh_local_store_both_run(tmp_path):
    """The jobs of a parallel sweep on a fresh clone create the local sqlite store together: one
    creates and migrates it while the other waits (MLflow's migrations run twice at once fail)."""
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, store, "fresh-store", tag, str(tmp_path), "1", "3"],
                         cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("p1", "p2")
    ]
    outputs = [writer.communicate(timeout=600) for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], [err[-3000:] for _, err in outputs]
    runs = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("fresh-store").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["p1-0", "p2-0"]
