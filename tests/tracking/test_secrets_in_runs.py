"""API keys in the environment, the config and the data reach no param, tag, name or artifact."""

import dataclasses
from pathlib import Path

import mlflow
import torch
import pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset

from fireact import tracking
from fireact.evaluate.files import write_evaluation
from fireact.evaluate.summary import summarize
from fireact.tracking.lightning import MLflowLogger

ENV_SECRETS = {
    "OPENAI_API_KEY": "sk-openai-test-0123456789abcdef",
    "SERPAPI_API_KEY": "serpapi-test-9f8e7d6c5b4a3210",
    "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz012345",
}
CONFIG_SECRET = "config-only-secret-5566778899"
HPARAM_SECRET = "sk-module-hparam-secret-000111222"
ALL_SECRETS = [*ENV_SECRETS.values(), CONFIG_SECRET, HPARAM_SECRET]


class TinyRegression(pl.LightningModule):
    def __init__(self, lr: float = 0.1, api_key: str = HPARAM_SECRET):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def everything_recorded(run_id: str, scratch: Path) -> str:
    """Params (keys and values), tags, metric names and every artifact's bytes of a run, as text."""
    record = mlflow.get_run(run_id)
    parts = [f"{k}={v}" for k, v in {**record.data.params, **record.data.tags}.items()]
    parts += list(record.data.metrics) + [record.info.run_name]
    folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="", dst_path=str(scratch / run_id))
    parts += [p.read_bytes().decode("utf-8", "replace") for p in Path(folder).rglob("*") if p.is_file()]
    return "\n".join(parts)


def test_no_secret_is_recorded(tracking_uri, compose_cfg, released_7b, monkeypatch, tmp_path):
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    cfg = compose_cfg(
        "rescore", "experiment_name=secrets",
        f"+backend.api_key={CONFIG_SECRET}",                      # a secret-named key
        "+tool.endpoint='https://serpapi.com/search?engine=google'",
        f"+notes={ENV_SECRETS['SERPAPI_API_KEY']}",               # an env secret under an innocent key
        "+backend.api_key_env=OPENAI_API_KEY",
    )
    leaky = dataclasses.replace(released_7b[0], question=f"what is {ENV_SECRETS['OPENAI_API_KEY']}?")
    trajectories = [leaky, *released_7b[1:5]]
    with tracking.start_run(cfg, stage="pipeline") as parent:
        summary = summarize(trajectories)
        tracking.log_evaluation(summary, write_evaluation(trajectories, summary, tmp_path / "eval"))
        with tracking.start_run(cfg, stage="train") as child:
            trainer = pl.Trainer(
                max_steps=3, logger=MLflowLogger(), log_every_n_steps=1, accelerator="cpu",
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=tmp_path,
            )
            data = DataLoader(TensorDataset(torch.randn(12, 2), torch.randn(12, 1)), batch_size=4)
            trainer.fit(TinyRegression(), data)
            tracking.log_metrics({"after_fit": 1.0})

    for run in (parent, child):
        recorded = everything_recorded(run.run_id, tmp_path / "downloads")
        for secret in ALL_SECRETS:
            assert secret not in recorded, f"a secret reached run {run.run_id}"

    parent_record, child_record = mlflow.get_run(parent.run_id), mlflow.get_run(child.run_id)
    # what the secrets were replaced by, and that the rest is still there
    assert parent_record.data.params["backend.api_key"] == "***"
    assert parent_record.data.params["notes"] == "***"
    assert parent_record.data.params["backend.api_key_env"] == "OPENAI_API_KEY"
    assert parent_record.data.params["tool.endpoint"] == "https://serpapi.com/search?engine=google"
    assert "+backend.api_key=***" in parent_record.data.tags["overrides"]
    # the training curves and the module's hyperparameters went into the train run
    assert len(mlflow.MlflowClient().get_metric_history(child.run_id, "train/loss")) == 3
    assert child_record.data.params["hparams/lr"] == "0.1"
    assert child_record.data.params["hparams/api_key"] == "***"
    assert child_record.data.metrics["after_fit"] == 1.0
    assert child_record.info.status == "FINISHED"
