"""`evaluate` end to end with the real embedded model, recorded_search and the hf backend."""

import json

import pytest

from fireact.evaluate.run import evaluate
from fireact.trajectory_files import read_jsonl

SMALL = ["task.n=3", "method.max_rounds=2", "method.max_tokens=48", "method.max_retries=1"]


@pytest.mark.slow
def test_evaluate_defaults_write_trajectories_and_summary_then_resume(compose_cfg, tmp_path):
    cfg = compose_cfg("evaluate", *SMALL)
    summary = evaluate(cfg)
    trajectories, report = read_jsonl(tmp_path / "trajectories.jsonl")
    assert report.failures == [] and len(trajectories) == 3
    written = json.loads((tmp_path / "summary.json").read_text())
    manifest = written.pop("manifest")
    assert written == summary and (manifest["tool"], manifest["questions"], manifest["max_rounds"]) == ("recorded_search", 3, 2)
    assert summary["n"] == 3 and 0.0 <= summary["em"] <= 1.0 and summary["turns_mean"] >= 1
    t = trajectories[0]
    assert (t.backend, t.model, t.tool, t.noise, t.method, t.task) == ("hf", "SmolLM2-135M-Instruct", "recorded_search", "clean", "react", "hotpotqa")
    assert t.prompt_tokens > 900 and t.completion_tokens > 0 and t.steps

    # A torn last line (a kill mid-write) and a missing question: only that one is redone.
    path = tmp_path / "trajectories.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:40])
    again = evaluate(compose_cfg("evaluate", *SMALL))
    redone, report = read_jsonl(path)
    assert report.failures == [] and [x.qid for x in redone] == [x.qid for x in trajectories]
    timing = ("time_per_trial", "latency_mean", "throughput")
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in summary.items() if k not in timing}
