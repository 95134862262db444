"""finetune=openai against a loopback server speaking the fine-tuning API, faults included."""

import json

import pytest

from fireact.formats import Chat
from fireact.train.run import train

from tests.train.conftest import train_config
from tests.train.finetune_server import FineTuneServer, FineTuneState


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")


def openai_config(out_dir, data, server, *overrides):
    return train_config(out_dir, data, "finetune=openai", "model=gpt35", f"finetune.base_url={server.base_url}",
                        "finetune.poll_seconds=0.01", "finetune.max_retries=2", *overrides)


def test_uploads_the_chat_export_creates_the_job_and_records_the_model(shortest, write_trajectories, tmp_path, api_key):
    trajectories = shortest[:5]
    data = write_trajectories(trajectories)
    # A rate limit on the upload and a server error on a status check: both retried by the SDK.
    state = FineTuneState(faults=[("/v1/files", 429, {"Retry-After": "1"}), ("/v1/fine_tuning/jobs/", 500, {})])
    out = tmp_path / "run"
    with FineTuneServer(state) as server:
        summary = train(openai_config(out, data, server, "finetune.n_epochs=3"))

    assert summary["outputs"]["fine_tuned_model"] == "ft:gpt-3.5-turbo-0613:fireact::ftjob-1"
    uploaded = state.files["file-1"]
    assert uploaded["purpose"] == "fine-tune"
    assert [json.loads(line) for line in uploaded["content"].decode().splitlines()] == [Chat().record(t) for t in trajectories]
    job = state.jobs["ftjob-1"]
    assert job["model"] == "gpt-3.5-turbo-0613" and job["suffix"] == "fireact"
    assert job["method"] == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}
    assert state.requests.count(("POST", "/v1/files")) == 2  # the 429, then the upload
    record = json.loads((out / "openai_job.json").read_text())
    assert record["status"] == "succeeded" and record["fine_tuned_model"] == summary["outputs"]["fine_tuned_model"]


def test_a_failed_job_is_an_error_with_the_reason(shortest, write_trajectories, tmp_path, api_key):
    state = FineTuneState(final_status="failed", running_polls=1)
    with FineTuneServer(state) as server, pytest.raises(RuntimeError, match="ftjob-1 ended failed: Line 3: too few"):
        train(openai_config(tmp_path / "run", write_trajectories(shortest[:2]), server))


def test_an_interrupted_wait_resumes_without_uploading_again(shortest, write_trajectories, tmp_path, api_key):
    data = write_trajectories(shortest[:2])
    out = tmp_path / "run"
    state = FineTuneState(running_polls=3)
    with FineTuneServer(state) as server:
        with pytest.raises(TimeoutError, match="ftjob-1 still validating_files.*resume=true"):
            train(openai_config(out, data, server, "finetune.timeout_seconds=0"))
        summary = train(openai_config(out, data, server, "resume=true"))
    assert summary["outputs"]["fine_tuned_model"].endswith("::ftjob-1")
    assert len(state.files) == 1 and len(state.jobs) == 1


def test_missing_key_or_local_model_is_a_clear_error(shortest, write_trajectories, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = write_trajectories(shortest[:2])
    with FineTuneServer(FineTuneState()) as server:
        with pytest.raises(RuntimeError, match=r"\$OPENAI_API_KEY"):
            train(openai_config(tmp_path / "a", data, server))
        with pytest.raises(Exception, match="add model=gpt35"):
            train(train_config(tmp_path / "b", data, "finetune=openai"))
